//! `spindle`: runs Luau scripts under Spindle's task scheduler.
//!
//! Exit status: 0 when every task ended without an uncaught error, 1 when any did, 2 when the
//! script could not be loaded or the command line was wrong.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
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
mod dump;
mod error_values;
mod limits;
mod module_types;
mod repl;
mod require;
mod setup;
mod suggest;
mod test_runner;
mod timeline;

#[derive(Parser)]
#[command(
    name = "spindle",
    version,
    about = "Run Luau scripts under a Roblox-compatible task scheduler",
    after_help = MAIN_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Luau script as the main task, until no task is left.
    #[command(override_usage = "spindle run [OPTIONS] FILE [ARGS]...", after_help = RUN_HELP)]
    Run {
        #[command(flatten)]
        options: RunOptions,
        /// The script, then its arguments (the chunk's `...`, also `process.args`).
        // One positional whose first value is FILE: `trailing_var_arg` makes clap stop looking
        // for options once it has begun, which a FILE of its own followed by ARGS would not.
        #[arg(value_name = "FILE", required = true, num_args = 1.., trailing_var_arg = true)]
        script: Vec<OsString>,
    },
    /// Run the tests of `*.test.luau` and `*.spec.luau` files, under a virtual clock.
    #[command(after_help = TEST_HELP)]
    Test(test_runner::TestOptions),
    /// Write type definitions and editor settings for luau-lsp into a project.
    #[command(after_help = SETUP_HELP)]
    Setup(setup::SetupOptions),
    /// Read Luau lines at a prompt and run each as a task, printing its values.
    #[command(after_help = REPL_HELP)]
    Repl {
        #[command(flatten)]
        options: RunOptions,
    },
}

const MAIN_HELP: &str = "\
Examples:
  spindle run main.luau one two      run a script with two arguments
  spindle test                       run the *.test.luau files under .
  spindle repl                       Luau at a prompt, task.wait included
  spindle setup                      types and luau-lsp settings for this project

`spindle help COMMAND` tells more of each.";

const RUN_HELP: &str = "\
Options go before FILE: every word after it is the script's, `--help` and `--` included.
Exit status: 0 when every task ended cleanly, 1 when one ended with an uncaught error, the
code given to process.exit, or 2 when the script could not be loaded.

Examples:
  spindle run main.luau one two
  spindle run --virtual-time --timeout 5 simulation.luau
  spindle run --report-stuck --timeline trace.json server.luau   # Ctrl-\\ lists live tasks";

const TEST_HELP: &str = "\
Each file runs in a VM of its own, files in parallel; each test is a task with a watchdog.
Under the virtual clock `task.wait(3600)` returns at once.

Example:
  spindle test tests/ --timeout 5 -j 4";

const SETUP_HELP: &str = "\
Writes .spindle/types/ (globals.d.luau and a module file per @spindle/NAME), the alias
\"spindle\" in .luaurc and luau-lsp's settings in .vscode/settings.json. Settings already
there are kept; running it again changes nothing.

Example:
  $ spindle setup my-project";

const REPL_HELP: &str = "\
An entry is an expression (its values are printed) or statements; one left open goes on at
the `>>` prompt. Tasks started at the prompt keep running between entries. Ctrl-C stops the
running entry, Ctrl-D ends the session. Locals end with their entry: keep values in globals.

Example:
  $ spindle repl
  > task.wait(0.5) >= 0.5
  true
  > json = require(\"@spindle/json\")
  > json.decode('{\"a\": [1, 2]}')
  { a = { 1, 2 } }";

/// How a script runs: its clock and its limits.
#[derive(Args)]
struct RunOptions {
    /// Stop a task that runs SECONDS without yielding ("Script timeout"); others go on.
    #[arg(long, value_name = "SECONDS", value_parser = limits::seconds)]
    timeout: Option<Duration>,
    /// Let other tasks run after a task ran SECONDS without yielding, then go on with it.
    #[arg(long, value_name = "SECONDS", value_parser = limits::seconds)]
    time_slice: Option<Duration>,
    /// Cap the VM's memory (512M, 2G): a task whose allocation fails ends; others go on.
    #[arg(long, value_name = "SIZE", value_parser = limits::size)]
    memory_limit: Option<usize>,
    /// Virtual clock: when no task is ready, time jumps to the next timer.
    #[arg(long)]
    virtual_time: bool,
    /// Run on Luau's interpreter alone, without compiling to native code.
    #[arg(long)]
    no_native: bool,
    /// At the end, list tasks nothing can resume (with creation sites, also for Ctrl-\ dumps).
    #[arg(long)]
    report_stuck: bool,
    /// Write every resumption to FILE as a Chrome trace (open it in ui.perfetto.dev).
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
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
        Command::Setup(options) => setup::run(&options),
        Command::Repl { options } => match repl::run(&options) {
            Ok(status) => status,
            Err(LoadError(message)) => {
                eprintln!("spindle: {message}");
                ExitCode::from(2)
            }
        },
    }
}

/// A scheduler for `lua` as `options` ask, with the task library and `require` installed;
/// its error handler prints each uncaught error (an error value by its contents, see
/// [`error_values`]), except the ones `process.exit` raises to end
/// the run.
fn build_scheduler(lua: &Lua, options: &RunOptions, exit: &Exit) -> Result<Scheduler, LoadError> {
    let ending = exit.clone();
    let values = error_values::install(lua).map_err(|e| LoadError(e.to_string()))?;
    let mut builder = Scheduler::builder()
        .native_code(!options.no_native)
        .on_error(move |_, error| {
            if ending.requested().is_none() {
                eprintln!("{}", error_values::report(&values, error));
            }
        });
    if options.virtual_time {
        builder = builder.clock(Clock::from(VirtualClock::new()));
    }
    // Reading the stack at each spawn costs about 1,200 instructions (BENCHMARKS.md): only
    // when a flag asks to see the tasks.
    builder = builder.record_creation_sites(options.report_stuck || options.timeline.is_some());
    if let Some(limit) = options.timeout {
        builder = builder.timeout(limit);
    }
    if let Some(slice) = options.time_slice {
        builder = builder.time_slice(slice);
    }
    let scheduler = builder.build(lua).map_err(|e| LoadError(e.to_string()))?;
    scheduler
        .install_task_library()
        .map_err(|e| LoadError(e.to_string()))?;
    require::install(&scheduler).map_err(|e| LoadError(e.to_string()))?;
    Ok(scheduler)
}

/// Runs `script[0]` with the rest of `script` as its arguments (clap requires at least FILE).
fn run(options: &RunOptions, script: &[OsString]) -> Result<ExitCode, LoadError> {
    let (file, args) = script.split_first().expect("clap requires FILE");
    let file = Path::new(file);
    let source = std::fs::read(file).map_err(|e| {
        let mut message = format!("cannot read '{}': {e}", file.display());
        if e.kind() == std::io::ErrorKind::NotFound {
            if let Some(near) = suggest::closest_luau_file(file) {
                message.push_str(&format!("\n  did you mean '{}'?", near.display()));
            }
        }
        LoadError(message)
    })?;
    let lua = Lua::new();
    let exit = Exit::new();
    let scheduler = build_scheduler(&lua, options, &exit)?;
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

    apply_memory_limit(&lua, options)?;

    // The scheduler runs on a current-thread tokio runtime, which the network library needs;
    // the main task starts inside it, so that a top-level `net.serve` can bind.
    let runtime = async_runtime()?;
    let _entered = runtime.enter();
    let timeline = match &options.timeline {
        Some(path) => Some(timeline::TimelineFile::create(path, file).map_err(|e| {
            LoadError(format!(
                "cannot create the timeline '{}': {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    if timeline.is_some() {
        scheduler.start_timeline();
    }
    // Listening from before the script starts: from now on Ctrl-\ dumps the tasks.
    let mut watch = dump::Watch::new(timeline);
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    let failed = |scheduler: &Scheduler| scheduler.error_count() > 0;
    let started = scheduler.spawn(main, args);
    let finished = started
        .and_then(|_| runtime.block_on(watch.drive(&scheduler, exit.run(&scheduler, sleeper))));
    if let Err(message) = watch.finish(&scheduler) {
        eprintln!("spindle: {message}");
    }
    if let Err(error) = finished {
        eprintln!("spindle: {error}");
        return Ok(ExitCode::from(1));
    }
    // A run that `process.exit` ended dropped its tasks: none is stuck.
    if options.report_stuck && exit.requested().is_none() {
        if let Some(report) = dump::stuck(&scheduler) {
            eprint!("{report}");
        }
    }
    Ok(ExitCode::from(exit.status(failed(&scheduler))))
}

/// Sets `--memory-limit`: last, so that the limit is the script's, what is loaded so far
/// counting against it.
fn apply_memory_limit(lua: &Lua, options: &RunOptions) -> Result<(), LoadError> {
    if let Some(limit) = options.memory_limit {
        let used = lua.used_memory();
        if limit <= used {
            return Err(LoadError(format!(
                "--memory-limit {limit} is not more than the {used} bytes the VM uses before the script starts"
            )));
        }
        lua.set_memory_limit(limit)
            .map_err(|e| LoadError(format!("cannot set the memory limit: {e}")))?;
    }
    Ok(())
}

/// The current-thread tokio runtime that scripts run on (the network library needs one).
///
/// Luau's `print` writes into C's standard output buffer, which holds a whole block when the
/// output is a pipe or a file: a server logging to a pipe would show its lines minutes late.
/// The buffer is flushed whenever the runtime is about to sleep (every task waits on a timer,
/// I/O or the host), so a script's output appears by the time it waits, and a script that
/// prints in a busy loop still writes in blocks.
fn async_runtime() -> Result<tokio::runtime::Runtime, LoadError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(|| {
            // SAFETY: `fflush(NULL)` flushes every C output stream; it takes no pointer of
            // ours and runs no Lua.
            unsafe {
                libc::fflush(std::ptr::null_mut());
            }
        })
        .build()
        .map_err(|e| LoadError(format!("cannot start the async runtime: {e}")))
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
