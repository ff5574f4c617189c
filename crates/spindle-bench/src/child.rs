//! Running one program as a child process and measuring it as a whole: wall time from spawn to
//! exit, and the child's own peak resident set size from `wait4`'s resource usage (not
//! `RUSAGE_CHILDREN`, which is the largest of all children so far).
//!
//! A child that runs past its time limit is killed, so a hung workload ends the suite with an
//! error instead of hanging it.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// One finished run of a program.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// From just before the spawn to the moment the child was seen to exit.
    pub wall: Duration,
    /// The child's CPU time, user and system.
    pub cpu: Duration,
    /// The child's peak resident set size, in KiB.
    pub peak_rss_kb: u64,
    /// How it exited.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Runs `program` with `args` to its end, or kills it after `limit`.
pub fn measure(program: &Path, args: &[&OsStr], limit: Duration) -> Result<Measurement> {
    let describe = || {
        let mut line = program.display().to_string();
        for arg in args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    };
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("cannot start `{}`: {e}", describe())))?;
    let pid = child.id() as libc::pid_t;

    let (exited, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) with a pid and a signal number touches no memory. The pid is still
            // the child's: the main thread reaps it only after this thread has been joined.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });

    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut text);
        text
    });
    let mut stdout = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_end(&mut stdout);
    let stderr = stderr_reader.join().unwrap_or_default();

    // Wait for the child to end without reaping it, so that its pid stays its own (a zombie's)
    // until the watchdog is done with it; then reap it and read its resource usage.
    // SAFETY: an all-zero `siginfo_t` is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; the out-pointer points to a live local.
    unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    let wall = started.elapsed();
    let _ = exited.send(());
    let killed = watchdog.join().unwrap_or(false);
    let mut raw_status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; both out-pointers point to live locals.
    let waited = unsafe { libc::wait4(pid, &mut raw_status, 0, &mut usage) };

    if waited != pid {
        return Err(Error::new(format!(
            "waiting for `{}` failed: {}",
            describe(),
            std::io::Error::last_os_error()
        )));
    }
    if killed {
        return Err(Error::new(format!(
            "`{}` ran longer than {} s and was killed",
            describe(),
            limit.as_secs()
        )));
    }
    read.map_err(|e| Error::new(format!("cannot read the output of `{}`: {e}", describe())))?;
    Ok(Measurement {
        wall,
        cpu: cpu_time(&usage),
        // Linux reports ru_maxrss in KiB.
        peak_rss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        status: ExitStatus::from_raw(raw_status),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// User plus system time in a resource usage record.
pub fn cpu_time(usage: &libc::rusage) -> Duration {
    let part = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    part(usage.ru_utime) + part(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit: Duration) -> Result<Measurement> {
        measure(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(script)],
            limit,
        )
    }

    #[test]
    fn captures_output_status_and_a_peak_rss() {
        let run = sh("echo out; echo err >&2; exit 3", Duration::from_secs(60)).unwrap();
        assert_eq!(run.stdout, "out\n");
        assert_eq!(run.stderr, "err\n");
        assert_eq!(run.status.code(), Some(3));
        assert!(run.peak_rss_kb > 0);
        assert!(run.cpu <= run.wall + Duration::from_millis(50));
    }

    #[test]
    fn peak_rss_is_the_childs_own_not_the_largest_so_far() {
        // 64 MiB held by one child must not show up in the next, small one.
        let big = sh(
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(big.peak_rss_kb > 60 * 1024, "{} KiB", big.peak_rss_kb);
        let small = sh("true", Duration::from_secs(60)).unwrap();
        assert!(small.peak_rss_kb < 32 * 1024, "{} KiB", small.peak_rss_kb);
    }

    #[test]
    fn a_child_past_its_limit_is_killed_with_a_clear_error() {
        let error = sh("exec sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(error.to_string().contains("was killed"), "{error}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let error =
            measure(Path::new("/nonexistent/prog"), &[], Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/prog"), "{error}");
    }
}
