//! `net-bench`: the network benchmark. For each workload (`hello`, `yield`, `json`: see
//! `spindle_bench::net`), wrk (`-t1 -c64`, loopback) against `spindle run
//! scripts/net_WORKLOAD.luau`, the raw-hyper `hyper-hello PORT WORKLOAD`, and Lune 0.11 when
//! `lune` is on `PATH`, in the same rounds; prints each server's median requests per second and
//! per second of the server's own CPU time, and each server's ratio to raw hyper. After each
//! timed run it opens `--idle` keep-alive connections (1,000), each after one request, and
//! reports the growth of the server's resident memory per connection.
//!
//! ```text
//! cargo build --release -p spindle-cli -p spindle-bench && target/release/net-bench [--runs 3] [--seconds 5] [--workload hello]
//! target/release/net-bench --callgrind   # user-space instructions per request, under valgrind
//! ```
//!
//! With `--callgrind` each server runs under valgrind's callgrind, and the figure is the
//! instructions the server ran per request, counted from after the warm-up to the end of the
//! measured run: repeatable whatever else the machine is doing, but blind to the kernel's share
//! (the system calls, which the servers make alike: one read and one write a request).
//!
//! Without wrk on `PATH` it says so and exits 0 (CI does not install it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use spindle_bench::net::{parse_wrk, NetWorkload, WrkRun, JSON_REQUEST};
use spindle_bench::programs::{find_on_path, spindle_binary, workspace_root};
use spindle_bench::report::median;
use spindle_bench::{Error, Result};

#[derive(Parser)]
#[command(
    name = "net-bench",
    about = "wrk against spindle run, raw hyper and Lune (hello, yield, json)"
)]
struct Cli {
    /// Rounds; each server runs once per round and the report shows medians.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Seconds of each measured wrk run (after a one-second warm-up; 3 s under --callgrind).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// One workload (hello, yield or json) instead of all three.
    #[arg(long, value_parser = parse_workload)]
    workload: Option<NetWorkload>,
    /// Count each server's instructions per request under valgrind's callgrind instead of
    /// timing it.
    #[arg(long)]
    callgrind: bool,
    /// Idle keep-alive connections opened after each timed run, to weigh the server's memory
    /// per connection (0: not measured; servers default to at most 1,024 connections).
    #[arg(long, default_value_t = 1000)]
    idle: u32,
}

fn parse_workload(name: &str) -> std::result::Result<NetWorkload, String> {
    NetWorkload::from_name(name)
        .ok_or_else(|| format!("no workload {name:?}: hello, yield or json"))
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
    /// The arguments before the port.
    args: Vec<String>,
    /// The arguments after the port.
    after: Vec<String>,
}

/// What is measured of each server in each round.
#[derive(Clone, Copy)]
enum Figure {
    /// Requests per second, and per second of the server's CPU time.
    Rates,
    /// Instructions per request under callgrind.
    Instructions,
}

fn run(cli: &Cli) -> Result<()> {
    if cfg!(debug_assertions) {
        return Err(Error::new("a debug build measures nothing: use --release"));
    }
    let Some(wrk) = find_on_path("wrk") else {
        println!("net-bench: wrk is not on PATH (apt-get install wrk); nothing measured");
        return Ok(());
    };
    let tools = Tools {
        wrk,
        taskset: find_on_path("taskset"),
        valgrind: match cli.callgrind {
            false => None,
            true => Some(
                find_on_path("valgrind")
                    .zip(find_on_path("callgrind_control"))
                    .ok_or_else(|| {
                        Error::new("--callgrind needs valgrind and callgrind_control")
                    })?,
            ),
        },
        body: write_json_script()?,
    };
    let figure = if cli.callgrind {
        Figure::Instructions
    } else {
        Figure::Rates
    };
    let lune = find_on_path("lune");
    if lune.is_none() {
        eprintln!("net-bench: lune is not on PATH; Lune is left out");
    }
    let workloads = match cli.workload {
        Some(one) => vec![one],
        None => NetWorkload::ALL.to_vec(),
    };
    for workload in workloads {
        let servers = servers(workload, lune.as_deref())?;
        let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        let mut failed: Vec<Option<String>> = vec![None; servers.len()];
        let mut idles: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for round in 1..=cli.runs {
            for (i, server) in servers.iter().enumerate() {
                if failed[i].is_some() {
                    continue;
                }
                let (first, second, idle) = match measure(cli, workload, server, &tools) {
                    Ok(figures) => figures,
                    // A peer that fails (Lune 0.11 panics under the yield workload) is reported
                    // as failed; Spindle and its baseline must not.
                    Err(error) if i >= 2 => {
                        let reason = error.to_string();
                        let first_line = reason.lines().next().unwrap_or("").to_string();
                        eprintln!("[{}] {} failed: {reason}", workload.name(), server.name);
                        failed[i] = Some(first_line);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                match figure {
                    Figure::Rates => eprintln!(
                        "[{} {round}/{}] {:<8} {first:>10.0} req/s, {second:>10.0} req per server CPU-second{}",
                        workload.name(), cli.runs, server.name,
                        idle.map(|bytes| format!(", {:.1} KiB per idle connection", bytes / 1024.0)).unwrap_or_default()
                    ),
                    Figure::Instructions => eprintln!(
                        "[{} {round}/{}] {:<8} {first:>10.0} instructions per request ({second} requests)",
                        workload.name(), cli.runs, server.name
                    ),
                }
                firsts[i].push(first);
                seconds[i].push(second);
                idles[i].extend(idle);
            }
        }
        let figures = Figures {
            firsts,
            seconds,
            idles,
            failed,
        };
        report(
            cli,
            workload,
            figure,
            &servers,
            &figures,
            tools.taskset.is_some(),
        );
    }
    Ok(())
}

/// The servers of a workload: Spindle first, raw hyper second (the baseline), Lune if found.
fn servers(workload: NetWorkload, lune: Option<&Path>) -> Result<Vec<Server>> {
    let exe = std::env::current_exe().map_err(|e| Error::new(e.to_string()))?;
    let scripts = workspace_root().join("crates/spindle-bench/scripts");
    let script = |suffix: &str| {
        scripts
            .join(format!("net_{}{suffix}", workload.name()))
            .display()
            .to_string()
    };
    let mut servers = vec![
        Server {
            name: "spindle",
            program: spindle_binary()?,
            args: vec!["run".into(), script(".luau")],
            after: Vec::new(),
        },
        Server {
            name: "hyper",
            program: exe.with_file_name("hyper-hello"),
            args: Vec::new(),
            after: vec![workload.name().into()],
        },
    ];
    if let Some(lune) = lune {
        servers.push(Server {
            name: "lune",
            program: lune.to_path_buf(),
            args: vec!["run".into(), script(".lune.luau")],
            after: Vec::new(),
        });
    }
    Ok(servers)
}

fn report(
    cli: &Cli,
    workload: NetWorkload,
    figure: Figure,
    servers: &[Server],
    figures: &Figures,
    pinned: bool,
) {
    let Figures {
        firsts,
        seconds,
        idles,
        failed,
    } = figures;
    let medians = |figures: &[Vec<f64>]| -> Vec<f64> {
        figures.iter().map(|f| median(f).unwrap_or(0.0)).collect()
    };
    let (firsts, seconds, idles) = (medians(firsts), medians(seconds), medians(idles));
    println!(
        "{}: wrk -t1 -c{} -d{}s, loopback, median of {} rounds{}{}",
        workload.name(),
        cli.connections,
        cli.seconds,
        cli.runs,
        if pinned {
            ", server on CPU 1 and wrk on CPU 0"
        } else {
            ""
        },
        match figure {
            Figure::Rates => "",
            Figure::Instructions => ", servers under callgrind",
        }
    );
    for (i, server) in servers.iter().enumerate() {
        if let Some(reason) = &failed[i] {
            println!("  {:<8} failed: {reason}", server.name);
            continue;
        }
        match figure {
            Figure::Rates => println!(
                "  {:<8} {:>10.0} req/s ({:.2}x hyper)   {:>10.0} req per server CPU-second ({:.2}x hyper){}",
                server.name,
                firsts[i],
                firsts[i] / firsts[1],
                seconds[i],
                seconds[i] / seconds[1],
                match cli.idle {
                    0 => String::new(),
                    n => format!("   {:.1} KiB per idle connection ({n} open)", idles[i] / 1024.0),
                }
            ),
            Figure::Instructions => println!(
                "  {:<8} {:>10.0} instructions per request ({:.2}x hyper)",
                server.name,
                firsts[i],
                firsts[i] / firsts[1]
            ),
        }
    }
}

/// Each server's figures over the rounds (see [`measure`]), or why it failed.
struct Figures {
    firsts: Vec<Vec<f64>>,
    seconds: Vec<Vec<f64>>,
    /// Bytes of resident memory per idle keep-alive connection.
    idles: Vec<Vec<f64>>,
    failed: Vec<Option<String>>,
}

/// What the measurements run with.
struct Tools {
    wrk: PathBuf,
    taskset: Option<PathBuf>,
    /// valgrind and callgrind_control, under `--callgrind`.
    valgrind: Option<(PathBuf, PathBuf)>,
    /// The wrk script that posts [`JSON_REQUEST`] (the `json` workload).
    body: tempfile_path::TempPath,
}

/// Starts `server`, warms it up, measures it with wrk, and kills it. Returns requests per
/// second and per server CPU-second, and the bytes of resident memory per idle connection
/// (`--idle`); or (under callgrind) instructions per request and the request count.
fn measure(
    cli: &Cli,
    workload: NetWorkload,
    server: &Server,
    tools: &Tools,
) -> Result<(f64, f64, Option<f64>)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::new(format!("no free port: {e}")))?
        .port();
    let profile =
        std::env::temp_dir().join(format!("net-bench-callgrind.{}.{port}", std::process::id()));
    let mut command = match &tools.valgrind {
        None => pinned(tools.taskset.as_deref(), "1", &server.program),
        Some((valgrind, _)) => {
            let mut command = pinned(tools.taskset.as_deref(), "1", valgrind);
            command
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", profile.display()))
                .arg(&server.program);
            command
        }
    };
    command
        .args(&server.args)
        .arg(port.to_string())
        .args(&server.after)
        .stdout(Stdio::null())
        .stderr(if tools.valgrind.is_some() {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
    let mut child = Killed(
        command
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {}: {e}", server.program.display())))?,
    );
    let patience = if tools.valgrind.is_some() { 60 } else { 10 };
    wait_for(port, &mut child.0, Duration::from_secs(patience))?;
    let url = format!("http://127.0.0.1:{port}/");
    let connections = format!("-c{}", cli.connections);
    let mut wrk_args = vec!["-t1".to_string(), connections];
    if workload == NetWorkload::Json {
        wrk_args.push("-s".into());
        wrk_args.push(tools.body.0.display().to_string());
    }
    let with = |duration: &str| -> Vec<String> {
        let mut args = wrk_args.clone();
        args.push(duration.into());
        args.push(url.clone());
        args
    };
    let warm_up = if tools.valgrind.is_some() {
        "-d3s"
    } else {
        "-d1s"
    };
    wrk_run(tools, &with(warm_up))?;
    let duration = format!("-d{}s", cli.seconds);
    match &tools.valgrind {
        None => {
            let before = cpu_seconds(child.0.id())?;
            let output = wrk_run(tools, &with(&duration))?;
            let cpu = cpu_seconds(child.0.id())? - before;
            let run = parse_wrk(&output)?;
            let idle = match cli.idle {
                0 => None,
                count => Some(idle_memory(port, child.0.id(), workload, count)?),
            };
            Ok((
                run.requests_per_second,
                run.requests as f64 / cpu.max(0.01),
                idle,
            ))
        }
        Some((_, control)) => {
            let pid = child.0.id().to_string();
            callgrind_control(control, "-z", &pid)?;
            let output = wrk_run(tools, &with(&duration))?;
            callgrind_control(control, "-d", &pid)?;
            let run: WrkRun = parse_wrk(&output)?;
            let instructions = dumped_instructions(&profile)?;
            Ok((
                instructions / run.requests as f64,
                run.requests as f64,
                None,
            ))
        }
    }
}

/// Opens `count` connections to the server on `port`, each sending one request and reading its
/// whole answer, and keeps them open (keep-alive) while the server idles: returns the growth
/// of the server's resident memory divided by `count`. Measured after a timed run, so the
/// server's allocator has met connections before; the wrk run's 64 connections closed just
/// before, so up to 64 of these may reuse their memory (at most 6% of 1,000).
fn idle_memory(port: u16, pid: u32, workload: NetWorkload, count: u32) -> Result<f64> {
    use std::io::{Read, Write};
    let request = match workload {
        NetWorkload::Json => format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{JSON_REQUEST}",
            JSON_REQUEST.len()
        ),
        _ => "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_string(),
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = resident_bytes(pid)?;
    let mut open = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| Error::new(format!("idle connection refused: {e}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .and_then(|()| stream.write_all(request.as_bytes()))
            .map_err(|e| Error::new(format!("idle connection: {e}")))?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while !answered(&answer) {
            match stream.read(&mut buffer) {
                Ok(0) => return Err(Error::new("the server closed an idle connection")),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(e) => return Err(Error::new(format!("idle connection: {e}"))),
            }
        }
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(Error::new(
                "an idle connection's request was not answered 200",
            ));
        }
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = resident_bytes(pid)?;
    drop(open);
    Ok((after as f64 - before as f64) / f64::from(count))
}

/// Whether `answer` holds a whole response: its head and `Content-Length` bytes of body.
fn answered(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= end + 4 + length
}

/// The resident memory of process `pid` (`VmRSS` in `/proc/PID/status`), in bytes.
fn resident_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::new(format!("cannot read the server's memory: {e}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| Error::new(format!("no VmRSS in /proc/{pid}/status")))
}

fn callgrind_control(control: &Path, verb: &str, pid: &str) -> Result<()> {
    let status = Command::new(control)
        .args([verb, pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::new(format!("cannot run callgrind_control: {e}")))?;
    if !status.success() {
        return Err(Error::new(format!("callgrind_control {verb} {pid} failed")));
    }
    Ok(())
}

/// The instructions in the dump `callgrind_control -d` wrote (`PROFILE.1`), from its
/// `summary:` or `totals:` line.
fn dumped_instructions(profile: &Path) -> Result<f64> {
    let dump = PathBuf::from(format!("{}.1", profile.display()));
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&dump) {
            let total = text.lines().find_map(|line| {
                let rest = line
                    .strip_prefix("summary:")
                    .or_else(|| line.strip_prefix("totals:"))?;
                rest.split_whitespace().next()?.parse::<f64>().ok()
            });
            if let Some(total) = total {
                let _ = std::fs::remove_file(&dump);
                return Ok(total);
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(Error::new(format!(
                "no callgrind dump at {}",
                dump.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes the wrk script that posts the `json` workload's body.
fn write_json_script() -> Result<tempfile_path::TempPath> {
    let path = std::env::temp_dir().join(format!("net-bench-json.{}.lua", std::process::id()));
    let script = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{JSON_REQUEST}]]\n"
    );
    std::fs::write(&path, script)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(tempfile_path::TempPath(path))
}

/// A file removed when the benchmark ends.
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
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

fn wrk_run(tools: &Tools, args: &[String]) -> Result<String> {
    let output = pinned(tools.taskset.as_deref(), "0", &tools.wrk)
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

/// Waits until the server accepts connections, up to `patience`.
fn wait_for(port: u16, child: &mut Child, patience: Duration) -> Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::new(format!("the server exited early: {status}")));
        }
        if started.elapsed() > patience {
            return Err(Error::new(format!(
                "the server did not listen within {} s",
                patience.as_secs()
            )));
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
