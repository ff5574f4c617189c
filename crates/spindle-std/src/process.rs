//! `@spindle/process`: the script's arguments, the environment, the working directory, the
//! platform, and how the run ends (`exit`, `exitCode`).
//!
//! `process.exit(code)` ends the whole run, not only the calling task. From the moment it is
//! called no more Lua code runs: the VM interrupt (which Luau calls at every call, return and
//! loop back-edge) raises an error in whatever runs, at every interrupt, so neither a `pcall`
//! around the call nor a coroutine the task resumed by hand can go on. The driver
//! ([`Exit::run`]) returns once the cycle that called `exit` is over, the host then shuts the
//! scheduler down ([`spindle::Scheduler::shutdown`]: tasks, timers and futures dropped,
//! destructors run) and ends the process with the code, from its `main`, so buffers are flushed.
//! The errors the interrupt raises are not failures of the script: a host hides them from its
//! error handler while [`Exit::requested`] is `Some`.
//!
//! Invariant: once an exit is requested it stays requested, with the first code given.

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use mlua::{Lua, LuaString, Table};
use spindle::{Scheduler, Sleeper};

/// The error raised in any Lua code that runs after `process.exit`.
pub const EXIT_MESSAGE: &str = "process.exit: the run is ending";

/// The Lua side of `@spindle/process`.
const PROCESS_LUAU: &str = include_str!("process.luau");

/// What `@spindle/process` tells the script about its process.
#[derive(Clone)]
pub struct ProcessInfo {
    /// The script's arguments, as the bytes they are (`process.args`).
    pub args: Vec<Vec<u8>>,
    /// Shared with the host: how the script asked the run to end.
    pub exit: Exit,
}

impl ProcessInfo {
    /// The arguments of a command line, as bytes (on unix the bytes the process was given,
    /// UTF-8 or not; elsewhere converted with U+FFFD where they are not Unicode).
    pub fn with_os_args(args: impl IntoIterator<Item = OsString>, exit: Exit) -> ProcessInfo {
        let args = args.into_iter().map(os_bytes).collect();
        ProcessInfo { args, exit }
    }
}

#[cfg(unix)]
fn os_bytes(arg: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    arg.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(arg: OsString) -> Vec<u8> {
    arg.to_string_lossy().into_owned().into_bytes()
}

/// How a script asked its run to end: the code given to `process.exit`, and the
/// `process.exitCode` it set. Cloning shares it.
#[derive(Clone, Default)]
pub struct Exit(Rc<ExitState>);

#[derive(Default)]
struct ExitState {
    requested: Cell<Option<u8>>,
    code: Cell<Option<u8>>,
    /// The driver waiting in [`Exit::run`], woken when an exit is requested.
    waker: RefCell<Option<Waker>>,
}

impl Exit {
    /// No exit requested, no exit code set.
    pub fn new() -> Exit {
        Exit::default()
    }

    /// The code given to `process.exit`, once it was called.
    pub fn requested(&self) -> Option<u8> {
        self.0.requested.get()
    }

    /// The code the script set with `process.exitCode = n`, if it set one.
    pub fn exit_code(&self) -> Option<u8> {
        self.0.code.get()
    }

    /// The process's exit status at the end of the run: the code given to `process.exit`;
    /// otherwise `process.exitCode` (0 if unset), made 1 if it is 0 and a task `failed` with
    /// an uncaught error.
    pub fn status(&self, failed: bool) -> u8 {
        if let Some(code) = self.requested() {
            return code;
        }
        match self.exit_code().unwrap_or(0) {
            0 if failed => 1,
            code => code,
        }
    }

    /// What `process.exit(code)` does: records the code (the first one wins), stops every Lua
    /// code that runs from now on through the VM interrupt, and wakes [`Exit::run`].
    pub fn request(&self, lua: &Lua, code: u8) {
        if self.0.requested.get().is_none() {
            self.0.requested.set(Some(code));
        }
        lua.set_interrupt(|_| Err(mlua::Error::runtime(EXIT_MESSAGE)));
        if let Some(waker) = self.0.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Drives `scheduler` as [`Scheduler::run`] does, until no work is left or until a
    /// script calls `process.exit`; in that case the scheduler is shut down before this
    /// returns (every task, timer and future dropped).
    pub async fn run(&self, scheduler: &Scheduler, sleeper: impl Sleeper) -> spindle::Result<()> {
        let end = Ended {
            exit: self,
            scheduler,
        };
        scheduler.run_until(sleeper, end).await?;
        if self.requested().is_some() {
            scheduler.shutdown()?;
        }
        Ok(())
    }
}

/// Completes when a script asked to exit, or when the scheduler has no work left.
struct Ended<'a> {
    exit: &'a Exit,
    scheduler: &'a Scheduler,
}

impl Future for Ended<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.exit.requested().is_some() || !self.scheduler.has_work() {
            return Poll::Ready(());
        }
        *self.exit.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Builds the `@spindle/process` module: `args`, `env`, `cwd`, `os`, `arch`, `endianness`,
/// `exit(code?)` and the settable `exitCode`.
pub fn module(lua: &Lua, info: ProcessInfo) -> mlua::Result<Table> {
    let args = lua.create_sequence_from(
        info.args
            .iter()
            .map(|arg| lua.create_string(arg))
            .collect::<mlua::Result<Vec<_>>>()?,
    )?;
    args.set_readonly(true);

    let primitives = lua.create_table()?;
    primitives.raw_set("args", args)?;
    primitives.raw_set("cwd", cwd())?;
    primitives.raw_set("os", std::env::consts::OS)?;
    primitives.raw_set("arch", std::env::consts::ARCH)?;
    primitives.raw_set(
        "endianness",
        if cfg!(target_endian = "big") {
            "big"
        } else {
            "little"
        },
    )?;
    primitives.raw_set("getenv", lua.create_function(getenv)?)?;
    primitives.raw_set("setenv", lua.create_function(setenv)?)?;
    primitives.raw_set("envpairs", lua.create_function(envpairs)?)?;
    let exit = info.exit.clone();
    primitives.raw_set(
        "exit",
        lua.create_function(move |lua, code: u8| {
            exit.request(lua, code);
            Ok(())
        })?,
    )?;
    let exit = info.exit.clone();
    primitives.raw_set(
        "getcode",
        lua.create_function(move |_, ()| Ok(exit.exit_code()))?,
    )?;
    let exit = info.exit;
    primitives.raw_set(
        "setcode",
        lua.create_function(move |_, code: u8| {
            exit.0.code.set(Some(code));
            Ok(())
        })?,
    )?;
    primitives.raw_set("EXIT_MESSAGE", EXIT_MESSAGE)?;
    let build = lua
        .load(PROCESS_LUAU)
        .set_name("=[spindle process]")
        .into_function()?;
    build.call(primitives)
}

/// The working directory with a separator at its end, as Lune gives it (`process.cwd ..
/// "file"`); empty when it cannot be read.
fn cwd() -> String {
    let mut cwd = std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    if !cwd.is_empty() && !cwd.ends_with(std::path::MAIN_SEPARATOR) {
        cwd.push(std::path::MAIN_SEPARATOR);
    }
    cwd
}

fn getenv(lua: &Lua, key: LuaString) -> mlua::Result<Option<LuaString>> {
    let Ok(key) = key.to_str() else {
        return Ok(None);
    };
    if key.is_empty() || key.contains(['=', '\0']) {
        return Ok(None);
    }
    match std::env::var_os(&*key) {
        Some(value) => Ok(Some(lua.create_string(os_bytes(value))?)),
        None => Ok(None),
    }
}

/// Sets (or with `nil`, removes) a variable. Returns a refusal's text, or nil.
fn setenv(_: &Lua, (key, value): (LuaString, Option<LuaString>)) -> mlua::Result<Option<String>> {
    let Ok(key) = key.to_str() else {
        return Ok(Some("the name is not valid UTF-8".into()));
    };
    if key.is_empty() {
        return Ok(Some("the name is empty".into()));
    }
    if key.contains(['=', '\0']) {
        return Ok(Some("the name holds '=' or a NUL character".into()));
    }
    match value {
        Some(value) => {
            let Ok(value) = value.to_str() else {
                return Ok(Some("the value is not valid UTF-8".into()));
            };
            if value.contains('\0') {
                return Ok(Some("the value holds a NUL character".into()));
            }
            std::env::set_var(&*key, &*value);
        }
        None => std::env::remove_var(&*key),
    }
    Ok(None)
}

/// A snapshot of the environment, as a table from names to values.
fn envpairs(lua: &Lua, (): ()) -> mlua::Result<Table> {
    let vars = lua.create_table()?;
    for (key, value) in std::env::vars_os() {
        vars.raw_set(
            lua.create_string(os_bytes(key))?,
            lua.create_string(os_bytes(value))?,
        )?;
    }
    Ok(vars)
}
