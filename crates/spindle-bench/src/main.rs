//! `spindle-bench`: runs issue 3's benchmark suite and prints the results table.
//!
//! ```text
//! cargo build --release -p spindle-cli && cargo run --release -p spindle-bench -- [--runs N] [--only NAME] [--quick]
//! ```
//!
//! See BENCHMARKS.md for what each workload and floor does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spindle_bench::async_calls::{self, Completion, Host};
use spindle_bench::machine::Machine;
use spindle_bench::programs::{self, FRAME_LOOP_COMMAND, PLAIN_VM_COMMAND};
use spindle_bench::report::table;
use spindle_bench::suite::{self, Programs, Runner, Samples, Sizes, Timing, Workload};
use spindle_bench::{frame_loop, plain_vm, Error, Result};

#[derive(Parser)]
#[command(
    name = "spindle-bench",
    about = "Spindle's benchmark suite: each workload beside its plain-Luau floor (issue 3)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Rounds to run; the table shows medians.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Run only these workloads (repeat, or separate with commas): spawn_wait, defer_flat,
    /// delay_timers, wait_cycles, memory, async_calls, hand_coroutines, compute, signal_fire,
    /// frame_10k.
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    only: Vec<Workload>,
    /// A tenth of the counts, for a fast look (the targets are for the full counts).
    #[arg(long)]
    quick: bool,
    /// Measure CPU time (user + system) instead of wall time: steadier on a loaded machine.
    #[arg(long)]
    cpu_time: bool,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Subcommand)]
enum Internal {
    /// Runs a script on a Luau VM with no scheduler: how the suite runs the floors.
    #[command(name = PLAIN_VM_COMMAND, hide = true)]
    PlainVm {
        file: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs COUNT game-loop entities (SCRIPT) for 300 frames through the library: frame_10k.
    #[command(name = FRAME_LOOP_COMMAND, hide = true)]
    FrameLoop {
        /// Record the trace, taken every frame.
        #[arg(long)]
        trace: bool,
        file: PathBuf,
        count: u64,
    },
}

fn parse_workload(name: &str) -> std::result::Result<Workload, String> {
    Workload::from_name(name).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Internal::PlainVm { file, args }) => plain_vm::run_file(&file, args),
        Some(Internal::FrameLoop { trace, file, count }) => {
            frame_loop::run_file(&file, count, trace)
        }
        None => run_suite(&cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("spindle-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_suite(cli: &Cli) -> Result<()> {
    if cfg!(debug_assertions) {
        return Err(Error::new(
            "this is a debug build, whose timings mean nothing: run `cargo run --release -p spindle-bench`",
        ));
    }
    let workloads = if cli.only.is_empty() {
        Workload::ALL.to_vec()
    } else {
        Workload::ALL
            .into_iter()
            .filter(|w| cli.only.contains(w))
            .collect()
    };
    let sizes = if cli.quick { Sizes::QUICK } else { Sizes::FULL };
    let timing = if cli.cpu_time {
        Timing::Cpu
    } else {
        Timing::Wall
    };
    let programs = Programs {
        spindle: programs::spindle_binary()?,
        plain_vm: std::env::current_exe()
            .map_err(|e| Error::new(format!("cannot find this executable's path: {e}")))?,
        lune: programs::find_on_path("lune"),
    };
    let with_lune = programs.lune.is_some();
    let jobs = suite::jobs(&workloads, &sizes, with_lune);
    let machine = Machine::current();

    let mut samples = Samples::default();
    for round in 1..=cli.runs {
        for job in &jobs {
            let label = format!(
                "[{round}/{}] {:<8} {} {}",
                cli.runs,
                match job.runner {
                    Runner::PlainVm => "floor",
                    runner => suite::runner_name(runner),
                },
                job.script.file,
                job.count
            );
            match suite::run_job(job, &programs, timing)? {
                Ok(sample) => {
                    eprintln!(
                        "{label}: {:.3} s, {} MB",
                        sample.seconds,
                        sample.peak_rss_kb / 1024
                    );
                    samples.add(job, sample);
                }
                Err(why) => {
                    eprintln!("{label}: failed: {why}");
                    samples.add_lune_failure(job, why);
                }
            }
        }
        if workloads.contains(&Workload::AsyncCalls) {
            for completion in Completion::ALL {
                for host in Host::ALL {
                    let elapsed =
                        async_calls::measure(host, completion, sizes.async_calls, timing)?;
                    eprintln!(
                        "[{round}/{}] in-process async_calls {} {}, {}: {:.3} s",
                        cli.runs,
                        sizes.async_calls,
                        completion.name(),
                        host.name(),
                        elapsed.as_secs_f64()
                    );
                    samples.add_async(host, completion, elapsed.as_secs_f64());
                }
            }
        }
    }

    let mut rows = Vec::new();
    for workload in &workloads {
        rows.extend(suite::rows(*workload, &sizes, &samples, with_lune)?);
    }
    println!(
        "spindle-bench{}{}: medians of {} runs, {}{}",
        if cli.quick { " --quick" } else { "" },
        if cli.cpu_time { " --cpu-time" } else { "" },
        cli.runs,
        timing.name(),
        if with_lune {
            ""
        } else {
            " (no lune on PATH: no Lune column)"
        }
    );
    println!("{machine}");
    println!("- spindle: {}", programs.spindle.display());
    if let Some(lune) = &programs.lune {
        println!("- lune: {}", lune.display());
    }
    println!();
    print!("{}", table(&rows));
    let missed: Vec<&str> = rows
        .iter()
        .filter(|row| row.met() == Some(false))
        .map(|row| row.workload.as_str())
        .collect();
    println!();
    if missed.is_empty() {
        println!("Every target met.");
    } else {
        println!("Targets not met: {}.", missed.join("; "));
    }
    Ok(())
}
