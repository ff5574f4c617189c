//! `spindle`: runs Luau scripts under Spindle's task scheduler.
//!
//! Exit status: 0 when every task ended without an uncaught error, 1 when any did, 2 when the
//! script could not be loaded or the command line was wrong.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use spindle::mlua::{self, Lua};
use spindle::{Clock, Scheduler, VirtualClock};
use spindle_std::process::{Exit, ProcessInfo};

/// mimalloc as the binary's allocator, under the opt-in `mimalloc` feature: it lost to the
/// system allocator overall (BENCHMARKS.md, "Allocator"). The library never sets one.
/// `--memory-limit` holds with any allocator: mlua counts the VM's memory in its own
/// allocation function, which calls this one.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod builtins;
mod limits;
mod require;
mod test_runner;

#[derive(Parser)]
#[command(
    name = "spindle",
    version,
    about = "Run Luau scripts under a Roblox-compatible task scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Luau script as the main task, until no task is left.
    #[command(override_usage = "spindle run [OPTIONS] FILE [ARGS]...")]
    Run {
        #[command(flatten)]
        options: RunOptions,
        /// The script to run, then the words passed to it as the chunk's `...`. Options go before
        /// FILE: every word after it is the script's, `--help` and `--` included. The words
        /// reach Lua as the bytes they are, UTF-8 or not.
        // One positional whose first value is FILE: `trailing_var_arg` makes clap stop looking
        // for options once it has begun, which a FILE of its own followed by ARGS would not.
        #[arg(value_name = "FILE", required = true, num_args = 1.., trailing_var_arg = true)]
        script: Vec<OsString>,
    },
    /// Run the tests of `*.test.luau` and `*.spec.luau` files, each file in a VM of its own,
    /// under a virtual clock.
    #[command(after_help = "Example: spindle test tests/ --timeout 5 -j 4")]
    Test(test_runner::TestOptions),
}

/// How a script runs: its clock and its limits.
#[derive(Args)]
struct RunOptions {
    /// Stop a task that runs longer than SECONDS without yielding, with the error
    /// "Script timeout: exhausted allowed execution time"; the other tasks go on.
    #[arg(long, value_name = "SECONDS", value_parser = limits::seconds)]
    timeout: Option<Duration>,
    /// Suspend a task that runs longer than SECONDS without yielding and let the others run
    /// before it goes on, so that a busy loop cannot starve them.
    #[arg(long, value_name = "SECONDS", value_parser = limits::seconds)]
    time_slice: Option<Duration>,
    /// Cap the memory of the Lua VM, e.g. 512M or 2G: a task whose allocation fails gets a
    /// "not enough memory" error and ends; the others go on.
    #[arg(long, value_name = "SIZE", value_parser = limits::size)]
    memory_limit: Option<usize>,
    /// Run under a virtual clock: when no task is ready, time jumps to the next timer, so
    /// `task.wait(600)` returns 600 at once.
    #[arg(long)]
    virtual_time: bool,
    /// Run on Luau's interpreter alone. By default the script is compiled to native code where
    /// Luau supports it (x86-64 and arm64), which changes nothing but its speed.
    #[arg(long)]
    no_native: bool,
}

/// Why a script could not be started.
struct LoadError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { options, script } => match run(&options, &script) {
            Ok(status) => status,
            Err(LoadError(message)) => {
                eprintln!("spindle: {message}");
                ExitCode::from(2)
            }
        },
        Command::Test(options) => test_runner::run(&options),
    }
}

/// Runs `script[0]` with the rest of `script` as its arguments (clap requires at least FILE).
fn run(options: &RunOptions, script: &[OsString]) -> Result<ExitCode, LoadError> {
    let (file, args) = script.split_first().expect("clap requires FILE");
    let file = Path::new(file);
    let source = std::fs::read(file)
        .map_err(|e| LoadError(format!("cannot read '{}': {e}", file.display())))?;
    let lua = Lua::new();
    let exit = Exit::new();
    let ending = exit.clone();
    // The errors `process.exit` raises in the code still running are the run's end, not failures.
    let mut builder = Scheduler::builder()
        .native_code(!options.no_native)
        .on_error(move |_, error| {
            if ending.requested().is_none() {
                eprintln!("{error}");
            }
        });
    if options.virtual_time {
        builder = builder.clock(Clock::from(VirtualClock::new()));
    }
    if let Some(limit) = options.timeout {
        builder = builder.timeout(limit);
    }
    if let Some(slice) = options.time_slice {
        builder = builder.time_slice(slice);
    }
    let scheduler = builder.build(&lua).map_err(|e| LoadError(e.to_string()))?;
    scheduler
        .install_task_library()
        .map_err(|e| LoadError(e.to_string()))?;
    require::install(&scheduler).map_err(|e| LoadError(e.to_string()))?;
    lua.set_app_data(ProcessInfo::with_os_args(args.to_vec(), exit.clone()));
    let main = lua
        .load(&source[..])
        .set_name(format!("@{}", file.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(|e| LoadError(load_error_message(file, &e)))?;
    let args = args
        .iter()
        .map(|arg| lua.create_string(arg_bytes(arg)))
        .collect::<mlua::Result<mlua::Variadic<_>>>()
        .map_err(|e| LoadError(format!("cannot pass the arguments: {e}")))?;

    if let Some(limit) = options.memory_limit {
        let used = lua.used_memory();
        if limit <= used {
            return Err(LoadError(format!(
                "--memory-limit {limit} is not more than the {used} bytes the VM uses before the script starts"
            )));
        }
        // Set last, so that the limit is the script's: what is loaded so far counts against it.
        lua.set_memory_limit(limit)
            .map_err(|e| LoadError(format!("cannot set the memory limit: {e}")))?;
    }

    // The scheduler runs on a current-thread tokio runtime, which the network library needs;
    // the main task starts inside it, so that a top-level `net.serve` can bind.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError(format!("cannot start the async runtime: {e}")))?;
    let _entered = runtime.enter();
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    let failed = |scheduler: &Scheduler| scheduler.error_count() > 0;
    let started = scheduler.spawn(main, args);
    let finished = started.and_then(|_| runtime.block_on(exit.run(&scheduler, sleeper)));
    if let Err(error) = finished {
        eprintln!("spindle: {error}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::from(exit.status(failed(&scheduler))))
}

/// An argument as the bytes of a Lua string: on unix the bytes the process was given, UTF-8 or
/// not, since Lua strings are bytes.
#[cfg(unix)]
fn arg_bytes(arg: &OsStr) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(arg.as_bytes())
}

/// Elsewhere an argument that is not Unicode has no byte form of its own: it is converted with
/// U+FFFD in place of what cannot be.
#[cfg(not(unix))]
fn arg_bytes(arg: &OsStr) -> std::borrow::Cow<'_, [u8]> {
    match arg.to_string_lossy() {
        std::borrow::Cow::Borrowed(text) => std::borrow::Cow::Borrowed(text.as_bytes()),
        std::borrow::Cow::Owned(text) => std::borrow::Cow::Owned(text.into_bytes()),
    }
}

/// A compile error names the file and line itself; Luau's refusal of a file that looks like
/// bytecode does not, so the file is named here.
fn load_error_message(file: &Path, error: &mlua::Error) -> String {
    let name = file.display().to_string();
    match error {
        mlua::Error::SyntaxError { message, .. } if message.contains(&name) => message.clone(),
        mlua::Error::SyntaxError { message, .. } => format!("cannot load '{name}': {message}"),
        other => format!("cannot load '{name}': {other}"),
    }
}
