//! `spindle`: runs Luau scripts under Spindle's task scheduler.
//!
//! Exit status: 0 when every task ended without an uncaught error, 1 when any did, 2 when the
//! script could not be loaded or the command line was wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spindle::mlua::{self, Lua};
use spindle::Scheduler;

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
    Run {
        /// The script to run.
        file: PathBuf,
        /// Passed to the script as the chunk's `...`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Why a script could not be started.
struct LoadError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { file, args } => match run(&file, args) {
            Ok(status) => status,
            Err(LoadError(message)) => {
                eprintln!("spindle: {message}");
                ExitCode::from(2)
            }
        },
    }
}

fn run(file: &Path, args: Vec<String>) -> Result<ExitCode, LoadError> {
    let source = std::fs::read(file)
        .map_err(|e| LoadError(format!("cannot read '{}': {e}", file.display())))?;
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).map_err(|e| LoadError(e.to_string()))?;
    scheduler
        .install_task_library()
        .map_err(|e| LoadError(e.to_string()))?;
    let main = lua
        .load(&source[..])
        .set_name(format!("@{}", file.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(|e| LoadError(load_error_message(file, &e)))?;

    let failed = |scheduler: &Scheduler| scheduler.error_count() > 0;
    let started = scheduler.spawn(main, mlua::Variadic::from_iter(args));
    let finished = started.and_then(|_| async_io::block_on(scheduler.run(async_io::Timer::at)));
    if let Err(error) = finished {
        eprintln!("spindle: {error}");
        return Ok(ExitCode::from(1));
    }
    Ok(if failed(&scheduler) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn load_error_message(file: &Path, error: &mlua::Error) -> String {
    match error {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => format!("cannot load '{}': {other}", file.display()),
    }
}
