//! The host's handle on a scheduler: building it, spawning tasks by id, reading their outcomes
//! once, stepping cycles and ending a run.
//!
//! The handle is the only owner the host has; the `task` functions hold the scheduler's state
//! too, so dropping the handle ends the run (futures dropped, threads closed) and makes those
//! functions refuse further work.

use std::rc::Rc;
use std::time::Duration;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Table, Thread};

use crate::args::unpack;
use crate::clock::Clock;
use crate::error::{Error, Result, TaskError};
use crate::scheduler::{ErrorHandler, Inner, StoredOutcome};
use crate::tasks::TaskId;

/// Roblox's limit on nested deferrals (SEMANTICS rule 3).
pub const DEFAULT_MAX_DEFER_DEPTH: u32 = 80;

/// Configures a [`Scheduler`] before it is attached to a `Lua`.
///
/// ```
/// use spindle::{Clock, Scheduler, VirtualClock};
///
/// let lua = mlua::Lua::new();
/// let scheduler = Scheduler::builder()
///     .clock(Clock::from(VirtualClock::new()))
///     .max_defer_depth(10)
///     .on_error(|error| eprintln!("task failed: {error}"))
///     .build(&lua)?;
/// # Ok::<(), spindle::Error>(())
/// ```
#[must_use]
pub struct SchedulerBuilder {
    clock: Clock,
    max_defer_depth: u32,
    on_error: Option<ErrorHandler>,
}

impl SchedulerBuilder {
    /// The clock that `task.wait` and `task.delay` measure against (default: the real clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How many levels of `task.defer` from inside deferred tasks run at one resumption point
    /// before a deferral is refused (default 80, as Roblox).
    pub fn max_defer_depth(mut self, depth: u32) -> Self {
        self.max_defer_depth = depth;
        self
    }

    /// Receives every task that ends with an uncaught error, and every error the scheduler
    /// reports itself. The default writes the message and traceback to stderr.
    pub fn on_error(mut self, handler: impl Fn(&TaskError) + 'static) -> Self {
        self.on_error = Some(Rc::new(handler));
        self
    }

    /// Attaches the scheduler to `lua`. A `Lua` has at most one scheduler.
    pub fn build(self, lua: &Lua) -> Result<Scheduler> {
        if lua.app_data_ref::<Attached>().is_some() {
            return Err(Error::Lua(mlua::Error::runtime(
                "this Lua already has a Spindle scheduler",
            )));
        }
        let on_error = self
            .on_error
            .unwrap_or_else(|| Rc::new(default_error_handler));
        let inner = Rc::new(Inner::new(lua, self.clock, self.max_defer_depth, on_error)?);
        lua.set_app_data(Attached);
        Ok(Scheduler {
            lua: lua.clone(),
            inner,
        })
    }
}

fn default_error_handler(error: &TaskError) {
    eprintln!("{error}");
}

/// Marks a `Lua` that has a scheduler.
struct Attached;

/// A Roblox-compatible task scheduler for one `Lua`.
///
/// The scheduler owns the tasks: threads made by `task.spawn`, `task.defer`, `task.delay`, by
/// the host's [`spawn`](Scheduler::spawn) family, and threads that called a scheduler function.
/// Drive it with [`run`](Scheduler::run) (async, any runtime), [`run_blocking`](Scheduler::run_blocking),
/// or one [`cycle`](Scheduler::cycle) per frame.
///
/// ```
/// use spindle::Scheduler;
///
/// let lua = mlua::Lua::new();
/// let scheduler = Scheduler::new(&lua)?;
/// scheduler.install_task_library()?;
/// let main = lua.load(r#"
///     local order = {}
///     task.defer(function() table.insert(order, "deferred") end)
///     task.wait(0.01)
///     table.insert(order, "waited")
///     return table.concat(order, ", ")
/// "#).into_function()?;
/// let id = scheduler.spawn(main, ())?;
/// scheduler.run_blocking()?;
/// assert_eq!(scheduler.take_result::<String>(id)?.unwrap().into_result()?, "deferred, waited");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Scheduler {
    pub(crate) lua: Lua,
    pub(crate) inner: Rc<Inner>,
}

/// How a task ended, as read by [`Scheduler::take_result`].
#[derive(Debug)]
pub enum Outcome<R> {
    /// The task's function returned these values.
    Finished(R),
    /// The task ended with an uncaught error (already reported to the error handler).
    Failed(TaskError),
    /// The task was cancelled.
    Cancelled,
}

impl<R> Outcome<R> {
    /// The values, or an error describing the failure or cancellation.
    pub fn into_result(self) -> std::result::Result<R, TaskError> {
        match self {
            Outcome::Finished(values) => Ok(values),
            Outcome::Failed(error) => Err(error),
            Outcome::Cancelled => Err(TaskError::new(
                None,
                "task was cancelled".into(),
                String::new(),
            )),
        }
    }
}

/// Where a task stands, as seen by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// The scheduler holds the task: running, queued or suspended by a scheduler function.
    Scheduled,
    /// The task ended and its outcome waits for [`Scheduler::take_result`].
    Done,
    /// Not known: never a task of this scheduler, its outcome already taken, or it yielded with
    /// a plain `coroutine.yield` and now belongs to whoever resumes it.
    Unknown,
}

/// What one [`Scheduler::cycle`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Tasks resumed because their timer came due.
    pub timers: usize,
    /// Tasks resumed (or futures polled) because a future woke them.
    pub wakeups: usize,
    /// Deferred resumptions run while draining the deferred queue.
    pub deferred: usize,
    /// Tasks that ended with an uncaught error during the cycle.
    pub errors: usize,
}

impl CycleReport {
    /// Whether the cycle resumed anything at all.
    pub fn is_idle(&self) -> bool {
        self.timers == 0 && self.wakeups == 0 && self.deferred == 0
    }
}

/// Something that becomes a task's thread: a function (run in a new thread) or a thread.
pub trait IntoThread {
    /// Converts into the thread to resume.
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)>;
}

impl IntoThread for Function {
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((lua.create_thread(self)?, true))
    }
}

impl IntoThread for Thread {
    fn into_thread(self, _: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((self, false))
    }
}

impl Scheduler {
    /// A builder with the defaults: real clock, defer depth 80, errors to stderr.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            clock: Clock::real(),
            max_defer_depth: DEFAULT_MAX_DEFER_DEPTH,
            on_error: None,
        }
    }

    /// A scheduler with the default settings, attached to `lua`.
    pub fn new(lua: &Lua) -> Result<Scheduler> {
        Self::builder().build(lua)
    }

    /// The `Lua` this scheduler runs.
    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// The clock the scheduler reads.
    pub fn clock(&self) -> &Clock {
        self.inner.clock()
    }

    /// Installs the `task` library as the global `task` and returns the table.
    ///
    /// It also replaces `coroutine.resume`, `coroutine.wrap` and `coroutine.close` with versions
    /// that behave as Luau's own, except that a coroutine resumed by hand which blocks in an
    /// mlua async function becomes the scheduler's (the resumer sees a suspension with no
    /// values, as with `task.wait`), and that closing a task's thread ends its pending work.
    pub fn install_task_library(&self) -> Result<Table> {
        let library = self.inner.library(&self.lua)?;
        let globals = self.lua.globals();
        globals.set("task", &library.task)?;
        let coroutine: Table = globals.get("coroutine")?;
        coroutine.set("resume", library.resume)?;
        coroutine.set("wrap", library.wrap)?;
        coroutine.set("close", library.close)?;
        Ok(library.task)
    }

    /// Spawns `f` (a function or a thread) with `args` and resumes it at once, then drains the
    /// deferred queue as a resumption point does. The task's outcome is kept for
    /// [`take_result`](Self::take_result).
    pub fn spawn(&self, f: impl IntoThread, args: impl IntoLuaMulti) -> Result<TaskId> {
        let (thread, _) = f.into_thread(&self.lua)?;
        let args = args.into_lua_multi(&self.lua)?;
        Ok(self.inner.host_spawn(&self.lua, &thread, args)?)
    }

    /// Queues `f` with `args` for the next resumption point, like `task.defer`.
    pub fn defer(&self, f: impl IntoThread, args: impl IntoLuaMulti) -> Result<TaskId> {
        let (thread, fresh) = f.into_thread(&self.lua)?;
        let args = args.into_lua_multi(&self.lua)?;
        let id = self.inner.adopt_for_host(&thread)?;
        self.inner.defer(&self.lua, id, args, fresh)?;
        Ok(id)
    }

    /// Resumes `f` with `args` on the first cycle at or after `delay` from now, like `task.delay`.
    pub fn delay(
        &self,
        delay: Duration,
        f: impl IntoThread,
        args: impl IntoLuaMulti,
    ) -> Result<TaskId> {
        let (thread, fresh) = f.into_thread(&self.lua)?;
        let args = args.into_lua_multi(&self.lua)?;
        let id = self.inner.adopt_for_host(&thread)?;
        self.inner.delay(&self.lua, id, Some(delay), args, fresh)?;
        Ok(id)
    }

    /// Cancels a task as `task.cancel` does. Returns whether the task was still scheduled.
    pub fn cancel(&self, id: TaskId) -> Result<bool> {
        self.inner.cancel_task(id)
    }

    /// Where the task stands.
    pub fn status(&self, id: TaskId) -> TaskStatus {
        self.inner.status(id)
    }

    /// Takes the outcome of a task the host spawned, once it has ended. Returns `None` while it
    /// is still scheduled, and after the outcome was taken. The outcome is freed when taken.
    pub fn take_result<R: FromLuaMulti>(&self, id: TaskId) -> Result<Option<Outcome<R>>> {
        Ok(match self.inner.take_outcome(id) {
            None => None,
            Some(StoredOutcome::Finished(key)) => {
                let values: Table = self.lua.registry_value(&key)?;
                self.lua.remove_registry_value(key)?;
                let values = unpack(&values)?;
                Some(Outcome::Finished(R::from_lua_multi(values, &self.lua)?))
            }
            Some(StoredOutcome::Failed(error)) => Some(Outcome::Failed(error)),
            Some(StoredOutcome::Cancelled) => Some(Outcome::Cancelled),
        })
    }

    /// Drops a task's stored outcome without reading it.
    pub fn forget(&self, id: TaskId) {
        self.inner.take_outcome(id);
    }

    /// Runs one cycle: resumes the timers due now and the tasks whose futures woke, in that order,
    /// then drains the deferred queue. A game engine calls this once per frame.
    pub fn cycle(&self) -> Result<CycleReport> {
        self.inner.cycle(&self.lua)
    }

    /// Whether anything is left that could still resume a task: a deferred resumption, a timer
    /// that will fire, or a task blocked in a Rust future.
    pub fn has_work(&self) -> bool {
        self.inner.has_work()
    }

    /// The earliest deadline of a live timer, on the scheduler's clock.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.inner.next_deadline()
    }

    /// The number of tasks the scheduler holds (running, queued or suspended by it).
    pub fn task_count(&self) -> usize {
        self.inner.task_count()
    }

    /// How many cycles have run so far, by any driver.
    pub fn cycle_count(&self) -> u64 {
        self.inner.cycle_count()
    }

    /// How many errors have been reported to the error handler so far.
    pub fn error_count(&self) -> u64 {
        self.inner.error_count()
    }

    /// Ends the run: every task is dropped without error, every pending future dropped and every
    /// timer forgotten (SEMANTICS rule 18). The scheduler stays usable.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // Pending futures may hold `Lua` clones: drop them so the `Lua` can be freed.
        let _ = self.inner.shutdown();
        self.inner.close();
        let _ = self.lua.remove_app_data::<Attached>();
    }
}
