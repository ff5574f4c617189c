//! Review of `spindle run`'s limit options: cases found broken by review. Every test here failed
//! when it was written.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn script(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

/// Runs `spindle run`, killing it after `limit`; `None` if it had to be killed.
fn spindle_run_within(
    limit: Duration,
    options: &[&str],
    name: &str,
    source: &str,
) -> Option<Output> {
    let path = script(name, source);
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .args(options)
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the spindle binary runs");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_timeout_too_small_to_be_a_duration_is_refused_not_made_zero() {
    // `limits::seconds` checks that the number is positive, then converts it: 1e-300 seconds
    // becomes Duration::ZERO, a timeout that stops every task at its second check.
    let out = spindle_run_within(
        Duration::from_secs(30),
        &["--timeout", "1e-300"],
        "tiny_timeout.luau",
        "local s = 0\nfor i = 1, 1000 do s += i end\nprint(s)\n",
    )
    .expect("spindle ends");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the script must not run");
    assert!(
        text(&out.stderr).contains("'1e-300' for '--timeout"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn time_slicing_under_virtual_time_lets_a_busy_loop_wait_for_a_delay() {
    // Works with --time-slice alone, and with --virtual-time alone the loop is the script's
    // fault. Together, the sliced task is always due (its continuation is a timer at `now`), so
    // the virtual clock never jumps to the delay and the run spins forever.
    let out = spindle_run_within(
        Duration::from_secs(10),
        &["--virtual-time", "--time-slice", "0.005"],
        "virtual_spin.luau",
        "local done = false\ntask.delay(0.02, function() done = true end)\nwhile not done do end\nprint('released')\n",
    )
    .expect("the run ends instead of spinning forever");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "released\n");
}

#[test]
fn a_memory_limit_below_what_the_vm_already_uses_is_refused_with_exit_status_two() {
    // A limit under the VM's baseline can never let a script run: the value is bad, but the
    // script starts and its first allocation fails ("memory error: not enough memory", exit 1).
    let out = spindle_run_within(
        Duration::from_secs(30),
        &["--memory-limit", "1K"],
        "tiny_limit.luau",
        "local t = {}\nfor i = 1, 100 do t[i] = tostring(i) end\nprint(#t)\n",
    )
    .expect("spindle ends");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("--memory-limit"),
        "{}",
        text(&out.stderr)
    );
}
