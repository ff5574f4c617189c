//! `net-bench`: the network benchmark's hello workload. wrk (`-t1 -c64`, loopback) against
//! `spindle run scripts/net_hello.luau` and against the raw-hyper `hyper-hello`, in the same
//! rounds; prints each server's median requests per second and Spindle's ratio to raw hyper.
//!
//! ```text
//! cargo build --release -p spindle-cli -p spindle-bench && target/release/net-bench [--runs 3] [--seconds 5]
//! ```
//!
//! Without wrk on `PATH` it says so and exits 0 (CI does not install it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use spindle_bench::net::{parse_wrk, WrkRun};
use spindle_bench::programs::{find_on_path, spindle_binary, workspace_root};
use spindle_bench::report::median;
use spindle_bench::{Error, Result};

#[derive(Parser)]
#[command(
    name = "net-bench",
    about = "wrk against spindle run and raw hyper (hello)"
)]
struct Cli {
    /// Rounds; each server runs once per round and the report shows medians.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Seconds of each measured wrk run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("net-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One server under test: how to start it on a port.
struct Server {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

fn run(cli: &Cli) -> Result<()> {
    if cfg!(debug_assertions) {
        return Err(Error::new("a debug build measures nothing: use --release"));
    }
    let Some(wrk) = find_on_path("wrk") else {
        println!("net-bench: wrk is not on PATH (apt-get install wrk); nothing measured");
        return Ok(());
    };
    let taskset = find_on_path("taskset");
    let exe = std::env::current_exe().map_err(|e| Error::new(e.to_string()))?;
    let script = workspace_root().join("crates/spindle-bench/scripts/net_hello.luau");
    let servers = [
        Server {
            name: "spindle",
            program: spindle_binary()?,
            args: vec!["run".into(), script.display().to_string()],
        },
        Server {
            name: "hyper",
            program: exe.with_file_name("hyper-hello"),
            args: Vec::new(),
        },
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 1..=cli.runs {
        for (i, server) in servers.iter().enumerate() {
            let measured = measure(cli, server, &wrk, taskset.as_deref())?;
            let run = measured.run;
            eprintln!(
                "[{round}/{}] {:<8} {:>10.0} req/s ({} requests), {:>10.0} req per server CPU-second",
                cli.runs, server.name, run.requests_per_second, run.requests, measured.per_cpu_second
            );
            rates[i].push(run.requests_per_second);
            per_cpu[i].push(measured.per_cpu_second);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r).unwrap_or(0.0)).collect();
    let cpu_medians: Vec<f64> = per_cpu.iter().map(|r| median(r).unwrap_or(0.0)).collect();
    println!(
        "hello: wrk -t1 -c{} -d{}s, loopback, median of {} rounds{}",
        cli.connections,
        cli.seconds,
        cli.runs,
        if taskset.is_some() {
            ", server on CPU 1 and wrk on CPU 0"
        } else {
            ""
        }
    );
    for ((server, median), cpu) in servers.iter().zip(&medians).zip(&cpu_medians) {
        println!(
            "  {:<8} {median:>10.0} req/s   {cpu:>10.0} req per server CPU-second",
            server.name
        );
    }
    println!(
        "  spindle / raw hyper: {:.2}x in req/s, {:.2}x per server CPU-second",
        medians[0] / medians[1],
        cpu_medians[0] / cpu_medians[1]
    );
    Ok(())
}

/// Starts `server`, warms it up, measures it with wrk, and kills it.
fn measure(cli: &Cli, server: &Server, wrk: &Path, taskset: Option<&Path>) -> Result<Measured> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::new(format!("no free port: {e}")))?
        .port();
    let mut command = pinned(taskset, "1", &server.program);
    command
        .args(&server.args)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = Killed(
        command
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {}: {e}", server.program.display())))?,
    );
    wait_for(port, &mut child.0)?;
    let url = format!("http://127.0.0.1:{port}/");
    let connections = format!("-c{}", cli.connections);
    wrk_run(taskset, wrk, &["-t1", &connections, "-d1s", &url])?;
    let duration = format!("-d{}s", cli.seconds);
    let before = cpu_seconds(child.0.id())?;
    let output = wrk_run(taskset, wrk, &["-t1", &connections, &duration, &url])?;
    let cpu = cpu_seconds(child.0.id())? - before;
    let run = parse_wrk(&output)?;
    Ok(Measured {
        run,
        per_cpu_second: run.requests as f64 / cpu.max(0.01),
    })
}

/// A wrk run and the server's requests per second of its own CPU time (user + system), which
/// a machine shared with other work disturbs less than the wall-time rate.
struct Measured {
    run: WrkRun,
    per_cpu_second: f64,
}

/// The CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error::new(format!("cannot read the server's CPU time: {e}")))?;
    // The fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are the 14th and 15th fields: 12th and 13th after the name.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(Error::new(format!("cannot parse /proc/{pid}/stat")));
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((user + system) / per_second)
}

fn wrk_run(taskset: Option<&Path>, wrk: &Path, args: &[&str]) -> Result<String> {
    let output = pinned(taskset, "0", wrk)
        .args(args)
        .output()
        .map_err(|e| Error::new(format!("cannot run wrk: {e}")))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `program` on `cpu` through taskset, or as it is without it.
fn pinned(taskset: Option<&Path>, cpu: &str, program: &Path) -> Command {
    match taskset {
        Some(taskset) => {
            let mut command = Command::new(taskset);
            command.arg("-c").arg(cpu).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Waits until the server accepts connections, up to ten seconds.
fn wait_for(port: u16, child: &mut Child) -> Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::new(format!("the server exited early: {status}")));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(Error::new("the server did not listen within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A server process, killed when the measurement is over (or fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
