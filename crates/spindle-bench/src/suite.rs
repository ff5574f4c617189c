//! The workloads of issue 3: which processes each one runs, and the table rows made from their
//! medians.
//!
//! A round runs every process the chosen workloads need once, in a fixed order that alternates
//! Spindle, its floor and Lune, so that each shares the machine's noise with the others; the
//! suite runs `--runs` rounds and takes medians. A process needed by two workloads (spawn_wait is
//! delay_timers' yardstick) runs once per round and serves both.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use crate::async_calls::{Completion, Host};
use crate::child::measure;
use crate::error::{Error, Result};
use crate::programs::{plain_vm_args, FRAME_LOOP_COMMAND};
use crate::report::{median, Lune, Row, Target, Unit};
use crate::workload::{self, Script};

/// One workload of the suite, as `--only` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Tasks that each wait once.
    SpawnWait,
    /// Deferrals from the main task.
    DeferFlat,
    /// Timers spread over 50 ms.
    DelayTimers,
    /// Tasks that each wait 100 times.
    WaitCycles,
    /// Peak RSS per waiting task.
    Memory,
    /// Rust async calls through the library (in-process).
    AsyncCalls,
    /// Coroutines resumed by hand, which never meet the scheduler.
    HandCoroutines,
    /// CPU-bound Lua (recursion, a numeric loop, tables and strings) in native code and on the
    /// interpreter, beside the plain VM and Lune.
    Compute,
    /// Handlers on an Immediate and a Deferred signal, fired 300 times, beside the usual
    /// pure-Luau signal pattern.
    SignalFire,
    /// The game loop example's entities for 300 frames, tracing off and on, beside the same
    /// calls and resumptions made by hand.
    Frame10k,
}

impl Workload {
    /// All of them, in table order.
    pub const ALL: [Workload; 10] = [
        Workload::SpawnWait,
        Workload::DeferFlat,
        Workload::DelayTimers,
        Workload::WaitCycles,
        Workload::Memory,
        Workload::AsyncCalls,
        Workload::HandCoroutines,
        Workload::Compute,
        Workload::SignalFire,
        Workload::Frame10k,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Workload::SpawnWait => "spawn_wait",
            Workload::DeferFlat => "defer_flat",
            Workload::DelayTimers => "delay_timers",
            Workload::WaitCycles => "wait_cycles",
            Workload::Memory => "memory",
            Workload::AsyncCalls => "async_calls",
            Workload::HandCoroutines => "hand_coroutines",
            Workload::Compute => "compute",
            Workload::SignalFire => "signal_fire",
            Workload::Frame10k => "frame_10k",
        }
    }

    /// The workload called `name`, or an error listing the names.
    pub fn from_name(name: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                Error::new(format!(
                    "no workload '{name}'; the workloads are {}",
                    names.join(", ")
                ))
            })
    }
}

/// The counts each workload runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// spawn_wait's tasks, also delay_timers' timers (its target compares the two).
    pub spawn_wait: u64,
    /// defer_flat's deferrals.
    pub defer_flat: u64,
    /// wait_cycles' tasks (each waits 100 times).
    pub wait_cycles: u64,
    /// memory's waiting tasks.
    pub memory: u64,
    /// async_calls' calls per run.
    pub async_calls: u64,
    /// hand_coroutines' wrap calls (and as many resume calls).
    pub hand_coroutines: u64,
    /// compute: fib's argument, the Mandelbrot grid's side, the tables' records.
    pub compute: [u64; 3],
    /// signal_fire's handlers (each signal fires 300 times).
    pub signal_fire: u64,
    /// frame_10k's entities (each run is 300 frames).
    pub frame_10k: u64,
}

impl Sizes {
    /// Issue 3's counts.
    pub const FULL: Sizes = Sizes {
        spawn_wait: 200_000,
        defer_flat: 1_000_000,
        wait_cycles: 10_000,
        memory: 1_000_000,
        async_calls: 1_000_000,
        hand_coroutines: 1_000_000,
        compute: [35, 1500, 100_000],
        signal_fire: 10_000,
        frame_10k: 10_000,
    };
    /// A tenth of each (`--quick`).
    pub const QUICK: Sizes = Sizes {
        spawn_wait: 20_000,
        defer_flat: 100_000,
        wait_cycles: 1_000,
        memory: 100_000,
        async_calls: 100_000,
        hand_coroutines: 100_000,
        compute: [30, 470, 10_000],
        signal_fire: 1_000,
        frame_10k: 1_000,
    };
}

/// What runs a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runner {
    /// `spindle run SCRIPT COUNT`.
    Spindle,
    /// `spindle run --no-native SCRIPT COUNT`: Luau's interpreter alone.
    SpindleInterpreter,
    /// `spindle-bench plain-vm SCRIPT COUNT`: the floors' VM with no scheduler.
    PlainVm,
    /// `lune run SCRIPT COUNT`.
    Lune,
    /// `spindle-bench frame-loop SCRIPT COUNT`: the game loop's frames through the library,
    /// tracing off.
    FrameLoop,
    /// `spindle-bench frame-loop --trace SCRIPT COUNT`: the same, tracing on.
    FrameLoopTraced,
}

/// One process to run each round.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// What runs it.
    pub runner: Runner,
    /// The script.
    pub script: &'static Script,
    /// Its count argument.
    pub count: u64,
}

type JobKey = (Runner, &'static str, u64);

impl Job {
    fn key(&self) -> JobKey {
        (self.runner, self.script.file, self.count)
    }
}

fn job(runner: Runner, script: &'static Script, count: u64) -> Job {
    Job {
        runner,
        script,
        count,
    }
}

/// The processes the chosen workloads need, each once, in round order.
pub fn jobs(workloads: &[Workload], sizes: &Sizes, with_lune: bool) -> Vec<Job> {
    use workload::*;
    use Runner::{Lune, PlainVm, Spindle};
    let mut all = Vec::new();
    for w in workloads {
        if *w == Workload::SignalFire {
            let n = sizes.signal_fire;
            all.push(job(Spindle, &SIGNAL_FIRE_IMMEDIATE, n));
            all.push(job(PlainVm, &SIGNAL_FIRE_FLOOR, n));
            all.push(job(Spindle, &SIGNAL_FIRE_DEFERRED, n));
            continue;
        }
        if *w == Workload::Frame10k {
            let n = sizes.frame_10k;
            all.push(job(Runner::FrameLoop, &GAME_LOOP_ENTITY, n));
            all.push(job(PlainVm, &FRAME_10K_FLOOR, n));
            all.push(job(Runner::FrameLoopTraced, &GAME_LOOP_ENTITY, n));
            continue;
        }
        if *w == Workload::Compute {
            for (script, count) in COMPUTE_SCRIPTS.into_iter().zip(sizes.compute) {
                all.push(job(Spindle, script, count));
                all.push(job(PlainVm, script, count));
                if with_lune {
                    all.push(job(Lune, script, count));
                }
                all.push(job(Runner::SpindleInterpreter, script, count));
            }
            continue;
        }
        let (scheduled, floors, count): (&'static Script, Vec<&'static Script>, u64) = match w {
            Workload::SpawnWait => (&SPAWN_WAIT, vec![&SPAWN_WAIT_FLOOR], sizes.spawn_wait),
            Workload::DeferFlat => (
                &DEFER_FLAT,
                vec![&DEFER_FLAT_FLOOR_ALL, &DEFER_FLAT_FLOOR_EACH],
                sizes.defer_flat,
            ),
            Workload::DelayTimers => (&DELAY_TIMERS, vec![], sizes.spawn_wait),
            Workload::WaitCycles => (&WAIT_CYCLES, vec![&WAIT_CYCLES_FLOOR], sizes.wait_cycles),
            Workload::Memory => (&SPAWN_WAIT, vec![&SPAWN_WAIT_FLOOR], sizes.memory),
            Workload::AsyncCalls
            | Workload::Compute
            | Workload::SignalFire
            | Workload::Frame10k => continue,
            // Its own floor: the same script on the plain VM.
            Workload::HandCoroutines => (
                &HAND_COROUTINES,
                vec![&HAND_COROUTINES],
                sizes.hand_coroutines,
            ),
        };
        all.push(job(Spindle, scheduled, count));
        all.extend(floors.into_iter().map(|floor| job(PlainVm, floor, count)));
        if *w == Workload::DelayTimers {
            all.push(job(Spindle, &SPAWN_WAIT, count));
        }
        if *w == Workload::Memory {
            all.push(job(Spindle, &EMPTY, 0));
            all.push(job(PlainVm, &EMPTY, 0));
        }
        if with_lune {
            all.push(job(Lune, scheduled, count));
            if *w == Workload::Memory {
                all.push(job(Lune, &EMPTY, 0));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|j| seen.insert(j.key()));
    all
}

/// The programs that run jobs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The release `spindle` binary.
    pub spindle: PathBuf,
    /// This executable (for the plain VM).
    pub plain_vm: PathBuf,
    /// `lune`, when on `PATH`.
    pub lune: Option<PathBuf>,
}

/// Which time the suite measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Wall time: what a user waits (the default, and what the targets are set in).
    Wall,
    /// User plus system CPU time: steadier on a shared, loaded machine, where wall time also
    /// counts the time other processes held the CPUs.
    Cpu,
}

impl Timing {
    /// How the table's header names it.
    pub fn name(self) -> &'static str {
        match self {
            Timing::Wall => "wall time",
            Timing::Cpu => "CPU time (user + system)",
        }
    }
}

/// How long one process may run before it is killed.
pub const TIME_LIMIT: Duration = Duration::from_secs(300);

/// One verified run of a job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Wall or CPU time, as the suite was asked, in seconds.
    pub seconds: f64,
    /// Peak RSS in KiB.
    pub peak_rss_kb: u64,
}

/// Runs `job` once. A Spindle or floor run that fails or prints the wrong line is an error;
/// Lune's failures are returned as `Ok(Err(why))`, for the table.
pub fn run_job(job: &Job, programs: &Programs, timing: Timing) -> Result<Result<Sample, String>> {
    let path = job.script.path();
    let count = job.count.to_string();
    let (program, mut args): (&PathBuf, Vec<&OsStr>) = match job.runner {
        Runner::Spindle => (&programs.spindle, vec![OsStr::new("run"), path.as_os_str()]),
        Runner::SpindleInterpreter => (
            &programs.spindle,
            vec![
                OsStr::new("run"),
                OsStr::new("--no-native"),
                path.as_os_str(),
            ],
        ),
        Runner::PlainVm => (&programs.plain_vm, plain_vm_args(&path)),
        Runner::Lune => match &programs.lune {
            Some(lune) => (lune, vec![OsStr::new("run"), path.as_os_str()]),
            None => return Ok(Err("lune is not on PATH".into())),
        },
        Runner::FrameLoop => (
            &programs.plain_vm,
            vec![OsStr::new(FRAME_LOOP_COMMAND), path.as_os_str()],
        ),
        Runner::FrameLoopTraced => (
            &programs.plain_vm,
            vec![
                OsStr::new(FRAME_LOOP_COMMAND),
                OsStr::new("--trace"),
                path.as_os_str(),
            ],
        ),
    };
    args.push(OsStr::new(&count));
    let run = measure(program, &args, TIME_LIMIT);
    let verified = run.and_then(|run| {
        if !run.status.success() {
            let stderr: String = run.stderr.chars().take(2000).collect();
            return Err(Error::new(format!(
                "{} {} {count} exited with {}: {stderr}",
                program.display(),
                job.script.file,
                run.status
            )));
        }
        job.script.verify(job.count, &run.stdout)?;
        Ok(Sample {
            seconds: match timing {
                Timing::Wall => run.wall,
                Timing::Cpu => run.cpu,
            }
            .as_secs_f64(),
            peak_rss_kb: run.peak_rss_kb,
        })
    });
    match (job.runner, verified) {
        (Runner::Lune, Err(error)) => Ok(Err(short_reason(&error.to_string()))),
        (_, verified) => verified.map(Ok),
    }
}

/// The first line of an error, short enough for a table cell.
fn short_reason(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    let short: String = line.chars().take(60).collect();
    if short.len() < line.len() {
        format!("{short}...")
    } else {
        short
    }
}

/// Everything measured so far.
#[derive(Debug, Default)]
pub struct Samples {
    processes: HashMap<JobKey, Vec<Sample>>,
    lune_failures: HashMap<JobKey, String>,
    async_calls: HashMap<(Host, Completion), Vec<f64>>,
}

impl Samples {
    /// Records a verified run of `job`.
    pub fn add(&mut self, job: &Job, sample: Sample) {
        self.processes.entry(job.key()).or_default().push(sample);
    }

    /// Records that Lune failed `job`.
    pub fn add_lune_failure(&mut self, job: &Job, why: String) {
        self.lune_failures.insert(job.key(), why);
    }

    /// Records one async_calls run, in seconds.
    pub fn add_async(&mut self, host: Host, completion: Completion, seconds: f64) {
        self.async_calls
            .entry((host, completion))
            .or_default()
            .push(seconds);
    }

    fn medians(&self, key: JobKey) -> Result<(f64, u64)> {
        let samples = self.processes.get(&key).map_or(&[][..], Vec::as_slice);
        let seconds: Vec<f64> = samples.iter().map(|s| s.seconds).collect();
        let rss: Vec<f64> = samples.iter().map(|s| s.peak_rss_kb as f64).collect();
        match (median(&seconds), median(&rss)) {
            (Some(seconds), Some(rss)) => Ok((seconds, rss as u64)),
            _ => Err(Error::new(format!(
                "no samples of {} {} {}",
                runner_name(key.0),
                key.1,
                key.2
            ))),
        }
    }

    /// Lune's median for `key`, or why it has none; `None` when Lune was not run.
    fn lune(&self, key: JobKey, with_lune: bool, value: impl Fn(f64, u64) -> f64) -> Option<Lune> {
        if !with_lune {
            return None;
        }
        if let Some(why) = self.lune_failures.get(&key) {
            return Some(Lune::Failed(why.clone()));
        }
        Some(match self.medians(key) {
            Ok((seconds, rss)) => Lune::Value(value(seconds, rss)),
            Err(_) => Lune::Failed("no run".into()),
        })
    }

    fn async_median(&self, host: Host, completion: Completion) -> Result<f64> {
        let samples = self
            .async_calls
            .get(&(host, completion))
            .map_or(&[][..], Vec::as_slice);
        median(samples)
            .ok_or_else(|| Error::new(format!("no samples of async_calls on {}", host.name())))
    }
}

/// The name of a runner, in errors and progress lines.
pub fn runner_name(runner: Runner) -> &'static str {
    match runner {
        Runner::Spindle => "spindle",
        Runner::SpindleInterpreter => "spindle --no-native",
        Runner::PlainVm => "plain-vm",
        Runner::Lune => "lune",
        Runner::FrameLoop => "frame-loop",
        Runner::FrameLoopTraced => "frame-loop --trace",
    }
}

/// A count as the table shows it: 200k, 1M, 1500.
pub fn size(count: u64) -> String {
    match count {
        c if c >= 1_000_000 && c % 1_000_000 == 0 => format!("{}M", c / 1_000_000),
        c if c >= 1_000 && c % 1_000 == 0 => format!("{}k", c / 1_000),
        c => c.to_string(),
    }
}

/// The rows of `workload`, from the medians in `samples`.
pub fn rows(
    workload: Workload,
    sizes: &Sizes,
    samples: &Samples,
    with_lune: bool,
) -> Result<Vec<Row>> {
    use workload::*;
    use Runner::{Lune as L, PlainVm as P, Spindle as S};
    let time_row = |name: String, spindle: JobKey, floor: JobKey, target: Target| -> Result<Row> {
        let (s_time, s_rss) = samples.medians(spindle)?;
        let (f_time, f_rss) = samples.medians(floor)?;
        Ok(Row {
            workload: name,
            unit: Unit::Seconds,
            spindle: s_time,
            floor: f_time,
            target,
            peak_rss_kb: Some((s_rss, f_rss)),
            lune: samples.lune((L, spindle.1, spindle.2), with_lune, |time, _| time),
        })
    };
    Ok(match workload {
        Workload::SpawnWait => {
            let n = sizes.spawn_wait;
            vec![time_row(
                format!("spawn_wait {}", size(n)),
                (S, SPAWN_WAIT.file, n),
                (P, SPAWN_WAIT_FLOOR.file, n),
                Target::RatioAtMost(1.3),
            )?]
        }
        Workload::DeferFlat => {
            let n = sizes.defer_flat;
            let mut each = time_row(
                format!("defer_flat {} (floor: one at a time)", size(n)),
                (S, DEFER_FLAT.file, n),
                (P, DEFER_FLAT_FLOOR_EACH.file, n),
                Target::None,
            )?;
            // Lune's figure is shown once, on the row whose target counts.
            each.lune = each.lune.map(|_| Lune::NotApplicable);
            vec![
                time_row(
                    format!("defer_flat {} (floor: all made first)", size(n)),
                    (S, DEFER_FLAT.file, n),
                    (P, DEFER_FLAT_FLOOR_ALL.file, n),
                    Target::RatioAtMost(1.3),
                )?,
                each,
            ]
        }
        Workload::DelayTimers => {
            let n = sizes.spawn_wait;
            vec![time_row(
                format!("delay_timers {} (floor: Spindle spawn_wait)", size(n)),
                (S, DELAY_TIMERS.file, n),
                (S, SPAWN_WAIT.file, n),
                Target::RatioAtMost(2.0),
            )?]
        }
        Workload::WaitCycles => {
            let n = sizes.wait_cycles;
            vec![time_row(
                format!("wait_cycles {} x {WAIT_ROUNDS}", size(n)),
                (S, WAIT_CYCLES.file, n),
                (P, WAIT_CYCLES_FLOOR.file, n),
                Target::RatioAtMost(1.3),
            )?]
        }
        Workload::HandCoroutines => {
            let n = sizes.hand_coroutines;
            vec![time_row(
                format!("hand_coroutines {} wrap + {} resume", size(n), size(n)),
                (S, HAND_COROUTINES.file, n),
                (P, HAND_COROUTINES.file, n),
                Target::RatioAtMost(1.15),
            )?]
        }
        Workload::Compute => {
            let mut rows = Vec::new();
            for (script, n) in COMPUTE_SCRIPTS.into_iter().zip(sizes.compute) {
                let name = script.file.trim_end_matches(".luau");
                rows.push(time_row(
                    format!("{name} {n} (floor: plain VM)"),
                    (S, script.file, n),
                    (P, script.file, n),
                    Target::LuneRatioAtMost(1.0),
                )?);
                let mut interpreter = time_row(
                    format!("{name} {n}, --no-native (floor: plain VM, native)"),
                    (Runner::SpindleInterpreter, script.file, n),
                    (P, script.file, n),
                    Target::None,
                )?;
                interpreter.lune = interpreter.lune.map(|_| Lune::NotApplicable);
                rows.push(interpreter);
            }
            rows
        }
        Workload::SignalFire => {
            let n = sizes.signal_fire;
            let mut rows = Vec::new();
            for (behavior, script) in [
                ("Immediate", &SIGNAL_FIRE_IMMEDIATE),
                ("Deferred", &SIGNAL_FIRE_DEFERRED),
            ] {
                let mut row = time_row(
                    format!(
                        "signal_fire {} x {SIGNAL_FIRES} {behavior} (floor: pure-Luau signal)",
                        size(n)
                    ),
                    (S, script.file, n),
                    (P, SIGNAL_FIRE_FLOOR.file, n),
                    Target::RatioAtMost(1.2),
                )?;
                row.lune = row.lune.map(|_| Lune::NotApplicable);
                rows.push(row);
            }
            rows
        }
        Workload::Frame10k => {
            let n = sizes.frame_10k;
            let frames = crate::frame_loop::FRAMES;
            let off = (Runner::FrameLoop, GAME_LOOP_ENTITY.file, n);
            let on = (Runner::FrameLoopTraced, GAME_LOOP_ENTITY.file, n);
            let mut rows = vec![
                time_row(
                    format!(
                        "frame_{} x {frames} frames, trace off (floor: by hand)",
                        size(n)
                    ),
                    off,
                    (P, FRAME_10K_FLOOR.file, n),
                    Target::RatioAtMost(1.3),
                )?,
                time_row(
                    format!(
                        "frame_{} x {frames} frames, trace on (floor: trace off)",
                        size(n)
                    ),
                    on,
                    off,
                    Target::RatioAtMost(1.2),
                )?,
            ];
            for row in &mut rows {
                row.lune = row.lune.take().map(|_| Lune::NotApplicable);
            }
            rows
        }
        Workload::Memory => {
            let n = sizes.memory;
            let per_task = |loaded: u64, empty: u64| loaded.saturating_sub(empty) as f64 / n as f64;
            let (_, spindle) = samples.medians((S, SPAWN_WAIT.file, n))?;
            let (_, spindle_empty) = samples.medians((S, EMPTY.file, 0))?;
            let (_, floor) = samples.medians((P, SPAWN_WAIT_FLOOR.file, n))?;
            let (_, floor_empty) = samples.medians((P, EMPTY.file, 0))?;
            let lune = samples
                .lune((L, SPAWN_WAIT.file, n), with_lune, |_, rss| rss as f64)
                .map(|lune| match (lune, samples.medians((L, EMPTY.file, 0))) {
                    (Lune::Value(rss), Ok((_, empty))) => Lune::Value(per_task(rss as u64, empty)),
                    (Lune::Value(_), Err(_)) => Lune::Failed("no baseline".into()),
                    (other, _) => other,
                });
            vec![Row {
                workload: format!("memory {} waiting", size(n)),
                unit: Unit::KbPerTask,
                spindle: per_task(spindle, spindle_empty),
                floor: per_task(floor, floor_empty),
                target: Target::KbPerTaskAtMost(1.6),
                peak_rss_kb: Some((spindle, floor)),
                lune,
            }]
        }
        Workload::AsyncCalls => {
            let n = sizes.async_calls;
            let mut rows = Vec::new();
            for completion in Completion::ALL {
                let baseline = samples.async_median(Host::MluaCallAsync, completion)?;
                for host in [Host::SpindleOwned, Host::SpindleWithMluaFunction] {
                    rows.push(Row {
                        workload: format!(
                            "async_calls {} {}, {} (floor: call_async)",
                            size(n),
                            completion.name(),
                            host.short_name()
                        ),
                        unit: Unit::Seconds,
                        spindle: samples.async_median(host, completion)?,
                        floor: baseline,
                        target: Target::RatioAtMost(1.5),
                        peak_rss_kb: None,
                        lune: with_lune.then_some(Lune::NotApplicable),
                    });
                }
            }
            rows
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_bad_name_lists_the_good_ones() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Ok(w));
        }
        let error = Workload::from_name("spawnwait").unwrap_err().to_string();
        assert!(
            error.contains("'spawnwait'") && error.contains("delay_timers"),
            "{error}"
        );
    }

    #[test]
    fn delay_timers_alone_still_measures_its_spawn_wait_yardstick() {
        let jobs = jobs(&[Workload::DelayTimers], &Sizes::FULL, false);
        let keys: Vec<_> = jobs
            .iter()
            .map(|j| (j.runner, j.script.file, j.count))
            .collect();
        assert_eq!(
            keys,
            [
                (Runner::Spindle, "delay_timers.luau", 200_000),
                (Runner::Spindle, "spawn_wait.luau", 200_000)
            ]
        );
    }

    #[test]
    fn a_process_two_workloads_need_runs_once_per_round() {
        let jobs = jobs(
            &[Workload::SpawnWait, Workload::DelayTimers],
            &Sizes::QUICK,
            true,
        );
        let spawn_wait = jobs
            .iter()
            .filter(|j| j.runner == Runner::Spindle && j.script.file == "spawn_wait.luau")
            .count();
        assert_eq!(spawn_wait, 1);
        assert!(jobs
            .iter()
            .any(|j| j.runner == Runner::Lune && j.script.file == "delay_timers.luau"));
    }

    #[test]
    fn memory_rows_subtract_each_runners_empty_baseline() {
        let mut samples = Samples::default();
        let sizes = Sizes {
            memory: 1000,
            ..Sizes::QUICK
        };
        let sample = |kb| Sample {
            seconds: 1.0,
            peak_rss_kb: kb,
        };
        for job in jobs(&[Workload::Memory], &sizes, false) {
            let kb = match (job.runner, job.script.file) {
                (Runner::Spindle, "empty.luau") => 5_000,
                (Runner::Spindle, _) => 6_500,
                (Runner::PlainVm, "empty.luau") => 4_000,
                _ => 5_300,
            };
            samples.add(&job, sample(kb));
        }
        let rows = rows(Workload::Memory, &sizes, &samples, false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].spindle, rows[0].floor), (1.5, 1.3));
        assert_eq!(rows[0].met(), Some(true));
    }

    #[test]
    fn a_workload_without_samples_is_an_error_not_a_zero() {
        let error = rows(
            Workload::SpawnWait,
            &Sizes::FULL,
            &Samples::default(),
            false,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no samples of spindle spawn_wait.luau 200000"),
            "{error}"
        );
    }

    #[test]
    fn sizes_read_as_in_the_issue() {
        assert_eq!(size(200_000), "200k");
        assert_eq!(size(1_000_000), "1M");
        assert_eq!(size(1_500), "1500");
    }
}
