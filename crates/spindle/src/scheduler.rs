//! The host's handle on a scheduler: building it, spawning tasks, reading their outcomes once,
//! stepping cycles and ending a run.
//!
//! [`Scheduler`] is the only owner the host has; the `task` functions hold the scheduler's state
//! too, so dropping the handle ends the run (futures dropped, threads closed), puts back the
//! standard `coroutine` functions, and makes the `task` functions refuse further work.
//! A [`Task`] handle is what keeps a task's outcome for the host: dropping it lets the outcome go.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Table, Thread};

use crate::clock::Clock;
use crate::core::TaskId;
use crate::engine::{
    BudgetCheck, CycleReport, ErrorHandler, FrameWork, Frames, Inner, PhaseFire, StoredOutcome,
    TaskEnd, TaskStatus,
};
use crate::error::{Error, Result, TaskError};
use crate::signal::{Signal, SignalBehavior};
use crate::task_lib::Library;
use crate::vm;
use crate::watchdog::{self, Budget};

mod async_fn;
mod census;
mod detached;
mod drive;
mod frames;
mod lookup;
mod scripts;
mod signals;
mod timeline;
mod trace;

pub use detached::Ended;
pub use drive::Resumed;
pub use lookup::WeakScheduler;
pub use scripts::ScriptEnd;

/// Roblox's limit on nested deferrals (contract rule 3).
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
///     .on_error(|_scheduler, error| eprintln!("task failed: {error}"))
///     .build(&lua)?;
/// # Ok::<(), spindle::Error>(())
/// ```
#[must_use]
pub struct SchedulerBuilder {
    clock: Clock,
    max_defer_depth: u32,
    watchdog: Budget,
    general_path_only: bool,
    on_error: Option<HostErrorHandler>,
    on_task_end: Option<TaskEndHandler>,
    on_adopt: Option<AdoptHandler>,
    phases: Vec<String>,
    waits_before: Option<String>,
    budget: Option<BudgetCheck>,
    signal_behavior: SignalBehavior,
    memory_limit: Option<usize>,
    native_code: Option<bool>,
    creation_sites: bool,
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

    /// Stops a task that runs longer than `limit` in one resumption without yielding, with
    /// the error [`TIMEOUT_MESSAGE`](crate::TIMEOUT_MESSAGE) and its traceback, as Roblox's
    /// `ScriptContext:SetTimeout`. `pcall` inside the task cannot catch it; the other tasks go on.
    /// The time of tasks it resumes with `task.spawn` is not counted against it. Off by default.
    ///
    /// The watchdog uses Luau's VM interrupt; a tight loop runs about 30% slower while it is
    /// on. The VM has one interrupt slot, which mlua's `Lua::set_interrupt` writes too, so the
    /// watchdog chains with the host's interrupt rather than replace it or be replaced by it:
    ///
    /// - one set before `build` is called after the watchdog's at every interrupt, and is put
    ///   back when the scheduler is dropped;
    /// - one set (or removed with `Lua::remove_interrupt`) after `build` takes the slot until
    ///   the next resumption of a task, which puts the watchdog's back in front of it. Set it
    ///   outside tasks: one set from a Rust function that a task calls leaves the rest of that
    ///   resumption unwatched.
    ///
    /// At an interrupt where the watchdog stops or slices the task, the host's is not called.
    /// A host interrupt that returns an error raises it in the running task, as it would with
    /// no scheduler; one that yields makes the task's yield a plain `coroutine.yield()`
    /// (contract rule 11), so a task suspended so no longer belongs to the scheduler.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spindle::Scheduler;
    ///
    /// let lua = mlua::Lua::new();
    /// let errors = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    /// let seen = errors.clone();
    /// let scheduler = Scheduler::builder()
    ///     .timeout(Duration::from_millis(50))
    ///     .on_error(move |_, error| seen.borrow_mut().push(error.message.clone()))
    ///     .build(&lua)?;
    /// scheduler.install_task_library()?;
    /// let hang = lua.load("pcall(function() while true do end end)").into_function()?;
    /// scheduler.spawn(hang, ())?;
    /// scheduler.run_blocking()?;
    /// assert_eq!(*errors.borrow(), [spindle::TIMEOUT_MESSAGE]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.watchdog.timeout = Some(limit);
        self
    }

    /// Time slicing: a task that runs longer than `slice` in one resumption without yielding is
    /// suspended where it is and queued behind the tasks due next cycle, so a busy loop cannot
    /// starve the others. It goes on from the same point, as if it had called `task.wait()`.
    /// Off by default; may be combined with [`timeout`](Self::timeout), which applies where a
    /// task cannot be suspended (inside a metamethod, or a coroutine it resumed by hand).
    /// It shares the VM interrupt with the host's as [`timeout`](Self::timeout) tells.
    pub fn time_slice(mut self, slice: Duration) -> Self {
        self.watchdog.slice = Some(slice);
        self
    }

    /// Receives, with the scheduler, every task that ends with an uncaught error, and every
    /// error the scheduler reports itself. The default writes the message and traceback to
    /// stderr. The handler may use the scheduler as the end hook may
    /// ([`on_task_end`](Self::on_task_end)): restart a task, cancel another, read a handle's
    /// outcome. It is not called while the last handle on the scheduler is being dropped, nor
    /// after. A handler that panics stops nothing: the panic is caught (after the panic hook has
    /// printed it) and the scheduler goes on. An error that comes while the handler runs (a task
    /// it started failed at once) is handed to it once it returns, so the handler never nests.
    pub fn on_error(mut self, handler: impl Fn(&Scheduler, &TaskError) + 'static) -> Self {
        self.on_error = Some(Rc::new(handler));
        self
    }

    /// Called each time a task leaves the scheduler, with the scheduler, the task's id and how
    /// it ended ([`TaskEnd`]): finished, failed, cancelled, released to whoever resumes its
    /// thread, or dropped by [`Scheduler::shutdown`]. Every task the scheduler held ends once.
    /// Not called while the last handle on the scheduler is being dropped, nor after. The hook
    /// may use the scheduler (start tasks, read outcomes, cancel); driving it or shutting it
    /// down from the hook is refused with [`Error::Reentrant`] inside a cycle or a
    /// [`shutdown`](Scheduler::shutdown) (tasks the hook starts during a shutdown are not
    /// dropped by it). An end that comes while the hook runs (a task it started ended at once)
    /// is told once the hook returns, so the hook never nests. A hook that panics stops
    /// nothing, as an error handler.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use spindle::{Scheduler, TaskEnd};
    ///
    /// let lua = mlua::Lua::new();
    /// let ends = Rc::new(RefCell::new(Vec::new()));
    /// let seen = ends.clone();
    /// let scheduler = Scheduler::builder()
    ///     .on_error(|_, _| {})
    ///     .on_task_end(move |_scheduler, id, end| {
    ///         let end = match end {
    ///             TaskEnd::Finished => "finished".to_string(),
    ///             TaskEnd::Failed(error) => format!("failed: {}", error.message),
    ///             other => format!("{other:?}"),
    ///         };
    ///         seen.borrow_mut().push((id, end));
    ///     })
    ///     .build(&lua)?;
    /// scheduler.install_task_library()?;
    /// let ok = scheduler.spawn(lua.load("return 1").into_function()?, ())?;
    /// let bad = scheduler.spawn(lua.load("error('no', 0)").into_function()?, ())?;
    /// assert_eq!(
    ///     *ends.borrow(),
    ///     [(ok.id(), "finished".to_string()), (bad.id(), "failed: no".to_string())]
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_task_end(mut self, hook: impl Fn(&Scheduler, TaskId, TaskEnd<'_>) + 'static) -> Self {
        self.on_task_end = Some(Rc::new(hook));
        self
    }

    /// Called each time a thread that is no task becomes one by waiting on the scheduler: a
    /// coroutine that calls `task.wait`, `Signal:Wait` or a Rust async function (Spindle's or
    /// mlua's) without having been spawned. A script's `coroutine.resume` of such a coroutine
    /// is one way (the scheduler resumes it when its wait ends, as Roblox does); mlua's
    /// `Thread::resume` from Rust is another, which a host may not expect, and which this hook
    /// makes seen: the thread is a task from then on ([`Scheduler::task_of`] finds it, the
    /// scheduler resumes it, [`Scheduler::cancel`] ends it). [`Scheduler::resume`] tells the
    /// same through [`Resumed::Pending`](crate::Resumed::Pending).
    ///
    /// The hook gets the scheduler, the new task's id and its thread, which is running (or,
    /// for an mlua async function, suspended in it) at that point: it cannot be cancelled
    /// from the hook. Adoptions that come while the hook runs are told once it returns, and a
    /// hook that panics stops nothing, as with [`on_task_end`](Self::on_task_end).
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use spindle::Scheduler;
    ///
    /// let lua = mlua::Lua::new();
    /// let adopted = Rc::new(RefCell::new(Vec::new()));
    /// let seen = adopted.clone();
    /// let scheduler = Scheduler::builder()
    ///     .on_adopt(move |_scheduler, id, _thread| seen.borrow_mut().push(id))
    ///     .build(&lua)?;
    /// scheduler.install_task_library()?;
    /// // Resumed behind the scheduler's back, the coroutine waits: it becomes a task.
    /// let co = lua.create_thread(lua.load("task.wait(0.01) return 'done'").into_function()?)?;
    /// co.resume::<()>(())?;
    /// assert_eq!(*adopted.borrow(), [scheduler.task_of(&co).unwrap()]);
    /// scheduler.run_blocking()?;
    /// assert_eq!(co.status(), mlua::thread::ThreadStatus::Finished);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_adopt(mut self, hook: impl Fn(&Scheduler, TaskId, &Thread) + 'static) -> Self {
        self.on_adopt = Some(Rc::new(hook));
        self
    }

    /// The phases of a frame, in order, for [`Scheduler::frame`]: each gets a signal
    /// ([`Scheduler::phase`]) fired with the frame's `dt`. Timers and woken futures resume
    /// before the first phase unless [`resume_waits_before`](Self::resume_waits_before) names
    /// another.
    pub fn phases<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.phases = names.into_iter().map(Into::into).collect();
        self
    }

    /// The phase before whose signal a frame resumes due timers (`task.wait`, `task.delay`)
    /// and tasks whose futures woke; Roblox resumes them before `Heartbeat`.
    pub fn resume_waits_before(mut self, phase: impl Into<String>) -> Self {
        self.waits_before = Some(phase.into());
        self
    }

    /// Caps the wall time one [`Scheduler::frame`] spends resuming ready tasks: once `budget`
    /// has passed since the frame began, the ready tasks left over wait for the next frame,
    /// where they run first, in order. A frame always resumes at least one ready task.
    /// A frame has one budget: this replaces a [`frame_budget_fn`](Self::frame_budget_fn)
    /// given before, and the last one given is the one kept.
    pub fn frame_budget(self, budget: Duration) -> Self {
        self.frame_budget_fn(move |work| work.elapsed < budget)
    }

    /// A frame budget decided by `check`, asked before each ready task after the first:
    /// `true` lets the frame resume it, `false` carries it and the rest to the next frame.
    /// [`frame_budget`](Self::frame_budget) is `check(work) = work.elapsed < budget`; a check on
    /// [`FrameWork::resumed`] gives a budget in tasks, which is deterministic. Like
    /// `frame_budget`, it replaces the budget given before.
    pub fn frame_budget_fn(mut self, check: impl FnMut(&FrameWork) -> bool + 'static) -> Self {
        self.budget = Some(Box::new(check));
        self
    }

    /// For tests of Spindle itself: every resumption and `task.wait` goes through mlua's
    /// general path, never through a raw lane (`lua_resume` directly). A scenario run both
    /// ways must behave and trace the same; the raw lanes exist only for speed.
    #[doc(hidden)]
    pub fn general_path_only(mut self) -> Self {
        self.general_path_only = true;
        self
    }

    /// Caps the memory of the whole Lua VM at `bytes` (as `Lua::set_memory_limit`), from the
    /// end of [`build`](Self::build): a task whose allocation fails gets a `not enough memory`
    /// error and ends, the others go on, and the scheduler's own bookkeeping (closing threads,
    /// reporting errors) works past the limit (contract rule 23). What the VM holds already
    /// counts: `build` fails with [`Error::MemoryLimit`] if it holds `bytes` or more. The
    /// host may change the limit later with `Lua::set_memory_limit`.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Whether chunks loaded into the VM from [`build`](Self::build) on are compiled to native
    /// code by Luau's code generator: the scheduler's own libraries and every chunk the host
    /// loads after, since the switch is the VM's (mlua's `Lua::enable_jit`, which the host may
    /// also flip itself; a function keeps the code it was loaded with). Without this call the
    /// VM's setting stands, which is on in a new `Lua`. Native code behaves as the
    /// interpreter does, for scripts and for the scheduler (timeouts, time slices, `task.wait`,
    /// memory limits, error lines and tracebacks); it only runs faster. Only where
    /// [`native_code_supported`](crate::native_code_supported): elsewhere everything runs on
    /// the interpreter and this does nothing.
    ///
    /// Luau compiles every function of a chunk, except a chunk's top level without loops,
    /// whatever its comments say: `--!native` also raises that chunk's optimization level to 2,
    /// as `--!optimize 2` does; a chunk without `--!native` but with `@native` functions gets
    /// those functions compiled, and no others.
    pub fn native_code(mut self, on: bool) -> Self {
        self.native_code = Some(on);
        self
    }

    /// What `Signal.new()` and [`Scheduler::create_signal`] make, and how phase signals run
    /// their handlers (default [`SignalBehavior::Deferred`], as Roblox).
    pub fn signal_behavior(mut self, behavior: SignalBehavior) -> Self {
        self.signal_behavior = behavior;
        self
    }

    /// Records where each task is created (the script's file and line that spawned it), for
    /// [`Scheduler::tasks`] and [`Scheduler::creation_site`]. Off by default: reading the
    /// caller's stack at every spawn costs about 1,200 instructions, 10% of a task that is
    /// spawned and waits once (see BENCHMARKS.md), which a host pays only when it wants to see
    /// its tasks.
    pub fn record_creation_sites(mut self, on: bool) -> Self {
        self.creation_sites = on;
        self
    }

    /// Attaches the scheduler to `lua`. A `Lua` has at most one scheduler.
    pub fn build(self, lua: &Lua) -> Result<Scheduler> {
        // A dropped scheduler may leave its mark behind (see `Shared::drop`): only a live one
        // counts.
        if lua
            .app_data_ref::<Attached>()
            .is_some_and(|attached| attached.0.strong_count() > 0)
        {
            return Err(Error::AlreadyAttached);
        }
        for (i, name) in self.phases.iter().enumerate() {
            if self.phases[..i].contains(name) {
                return Err(Error::InvalidPhases(format!(
                    "SchedulerBuilder::phases: the phase {name:?} is declared twice"
                )));
            }
        }
        let timer_phase = match &self.waits_before {
            None => 0,
            Some(name) => self.phases.iter().position(|n| n == name).ok_or_else(|| {
                Error::InvalidPhases(format!(
                    "SchedulerBuilder::resume_waits_before: no phase is called {name:?} \
                     (the phases are {:?})",
                    self.phases
                ))
            })?,
        };
        if let Some(on) = self.native_code {
            // First, so that the scheduler's own chunks follow it.
            vm::set_native_code(lua, on);
        }
        // The host's handler needs the scheduler, which does not exist yet: it is put in its
        // place below, before anything can fail.
        let on_error: ErrorHandler = Rc::new(default_error_handler);
        let frames = Frames::new(self.phases, timer_phase, self.budget);
        let inner = Rc::new(Inner::new(
            lua,
            self.clock,
            self.max_defer_depth,
            self.watchdog,
            on_error,
            frames,
        )?);
        inner.set_general_path_only(self.general_path_only);
        if self.creation_sites {
            inner.record_creation_sites(Some(lua));
        }
        let mut shared = Shared {
            lua: lua.clone(),
            inner,
            lib: RefCell::new(None),
            signal_behavior: self.signal_behavior,
            phases: Vec::new(),
        };
        let signals = (0..shared.inner.frames().names().len())
            .map(|_| {
                let library = shared.library()?.signal;
                library.create(&shared.inner, mlua::Value::Nil)
            })
            .collect::<mlua::Result<Vec<_>>>()?;
        let fire = |signal: &Signal| -> PhaseFire {
            let signal = signal.clone();
            Rc::new(move |dt| signal.fire(dt))
        };
        shared
            .inner
            .frames()
            .set_phases(signals.iter().map(fire).collect());
        shared.phases = signals;
        if !self.watchdog.is_unlimited() {
            watchdog::install(lua);
        }
        let scheduler = Scheduler {
            shared: Rc::new(shared),
        };
        if let Some(handler) = self.on_error {
            let weak = Rc::downgrade(&scheduler.shared);
            scheduler
                .shared
                .inner
                .set_error_handler(Rc::new(move |error| {
                    if let Some(shared) = weak.upgrade() {
                        handler(&Scheduler { shared }, error);
                    }
                }));
        }
        if let Some(hook) = self.on_task_end {
            let weak = Rc::downgrade(&scheduler.shared);
            scheduler.shared.inner.set_end_hook(Rc::new(move |id, end| {
                if let Some(shared) = weak.upgrade() {
                    hook(&Scheduler { shared }, id, end);
                }
            }));
        }
        if let Some(hook) = self.on_adopt {
            let weak = Rc::downgrade(&scheduler.shared);
            scheduler
                .shared
                .inner
                .set_adopt_hook(Rc::new(move |id, thread| {
                    if let Some(shared) = weak.upgrade() {
                        hook(&Scheduler { shared }, id, thread);
                    }
                }));
        }
        if lua
            .try_set_app_data(Attached(Rc::downgrade(&scheduler.shared)))
            .is_err()
        {
            // The host holds a borrow of the `Lua`'s app data: the mark cannot be set, and a
            // scheduler that `from_lua` cannot find (nor a second `build` see) is refused.
            return Err(Error::Lua(mlua::Error::runtime(
                "cannot attach a scheduler while the Lua's app data is borrowed",
            )));
        }
        // Last, so that the limit does not fail the build half-way.
        if let Some(limit) = self.memory_limit {
            let used = lua.used_memory();
            if limit <= used {
                return Err(Error::MemoryLimit { limit, used });
            }
            lua.set_memory_limit(limit)?;
        }
        Ok(scheduler)
    }
}

/// The host's error handler, as the builder keeps it.
type HostErrorHandler = Rc<dyn Fn(&Scheduler, &TaskError)>;

/// The host's end hook, as the builder keeps it.
type TaskEndHandler = Rc<dyn Fn(&Scheduler, TaskId, TaskEnd<'_>)>;

/// The host's adoption hook, as the builder keeps it.
type AdoptHandler = Rc<dyn Fn(&Scheduler, TaskId, &Thread)>;

fn default_error_handler(error: &TaskError) {
    eprintln!("{error}");
}

/// Marks a `Lua` that has a scheduler, and finds it ([`Scheduler::from_lua`]).
struct Attached(Weak<Shared>);

/// A Roblox-compatible task scheduler for one `Lua`.
///
/// The scheduler owns the tasks: threads made by `task.spawn`, `task.defer`, `task.delay`, by
/// the host's [`spawn`](Scheduler::spawn) family, and threads that called a scheduler function.
/// Drive it with [`run`](Scheduler::run) (async, any runtime, until no work is left),
/// [`run_until`](Scheduler::run_until) or [`run_forever`](Scheduler::run_forever) (async,
/// serving: the driver sleeps while no work is left), [`run_blocking`](Scheduler::run_blocking),
/// or one [`cycle`](Scheduler::cycle) or [`frame`](Scheduler::frame) per frame. Await a task
/// the host started with [`join`](Scheduler::join).
///
/// A `Scheduler` is a handle: clones share one scheduler, which ends (as
/// [`shutdown`](Scheduler::shutdown) ends a run, and detaching from its `Lua`) when the last
/// handle is dropped. A Rust function that Lua calls reaches it with
/// [`Scheduler::from_lua`]; a value that must not keep it alive holds a
/// [`WeakScheduler`](crate::WeakScheduler). A handle holds the `Lua` strongly: do not store one
/// inside that `Lua` (app data, userdata, a function's captures), which would keep both alive
/// for ever.
///
/// Resume a task's thread from Rust only through the scheduler ([`spawn`](Scheduler::spawn)),
/// not with mlua's `Thread::resume`: a task blocked in an mlua async function that is resumed
/// behind the scheduler's back polls its future with no waker, and the scheduler would wait
/// for a wake-up that never comes. From Lua, `coroutine.resume` is safe.
///
/// Spindle keeps its mark on a task's thread in Luau's per-thread user data
/// (`lua_setthreaddata`); a host that sets that pointer on a task's thread hides the task from
/// the scheduler.
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
/// let task = scheduler.spawn(main, ())?;
/// scheduler.run_blocking()?;
/// assert_eq!(scheduler.take_result::<String>(&task)?.unwrap().into_result()?, "deferred, waited");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Scheduler {
    shared: Rc<Shared>,
}

/// What the clones of one [`Scheduler`] share; dropped with the last of them.
pub(crate) struct Shared {
    pub(crate) lua: Lua,
    pub(crate) inner: Rc<Inner>,
    /// Filled on first use: the `task` table and the functions that go with it.
    lib: RefCell<Option<Library>>,
    /// What `Signal.new()` makes when given no behaviour.
    signal_behavior: SignalBehavior,
    /// The phases' signals, in order.
    phases: Vec<Signal>,
}

/// A task the host started, and a claim on its outcome.
///
/// The handle is not the task: dropping it detaches the task, which runs on. While a handle
/// lives, the outcome (values, error or cancellation) is kept for [`Scheduler::take_result`];
/// the first read takes it. Cloning the handle, or starting the same thread twice, gives two
/// handles to one task, and the outcome is kept until both are dropped or it is read.
///
/// The scheduler records an outcome only when it sees the task end. A task that yields with a
/// plain `coroutine.yield`, or that a script resumes by hand out of a scheduler suspension,
/// belongs to whoever resumes it from then on (contract rule 11): its outcome is
/// [`Outcome::Released`] with the values it yielded (status [`TaskStatus::Released`]).
///
/// One identity per thread: until that release is read or every handle dropped, the thread
/// keeps the task's id. Spawned again (by a script's `task.spawn`, `defer` or `delay`, or the
/// host's [`spawn`](Scheduler::spawn) family), or waiting on the scheduler after a hand resume,
/// it is the same task again, status [`TaskStatus::Scheduled`], and this handle reads how it
/// ends next. Once the release is read, a later spawn makes a new task.
pub struct Task {
    id: TaskId,
    scheduler: Weak<Inner>,
}

impl Task {
    /// The task's id, as in [`TaskError::task`] and for [`Scheduler::status`] and
    /// [`Scheduler::cancel`]. Like the handle, it names a task of its own scheduler only.
    pub fn id(&self) -> TaskId {
        self.id
    }
}

impl Task {
    /// Whether the task has ended (or its scheduler is gone): the scheduler no longer holds
    /// it. Its outcome may still wait for [`Scheduler::take_result`].
    pub fn is_finished(&self) -> bool {
        self.scheduler
            .upgrade()
            .is_none_or(|scheduler| scheduler.status(self.id) != TaskStatus::Scheduled)
    }
}

/// The future of [`Scheduler::join`]: the task's outcome, once it ends.
///
/// It owns what it needs (a claim on the outcome, as a [`Task`] handle has, and a weak hold on
/// the scheduler), so it is `'static` and can be moved into a spawned future or a
/// `select`. It does not keep the scheduler alive: if every [`Scheduler`] handle is dropped
/// first, it resolves to [`Error::NoOutcome`].
#[must_use = "a join does nothing unless awaited"]
pub struct Join<R> {
    scheduler: Weak<Shared>,
    /// A claim of its own, so that the outcome is kept for the join even if the caller drops
    /// its handle meanwhile.
    task: Task,
    /// The key its waker is registered under, once it waited.
    key: Option<u64>,
    values: std::marker::PhantomData<fn() -> R>,
}

impl<R: FromLuaMulti> Future for Join<R> {
    type Output = Result<Outcome<R>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(shared) = this.scheduler.upgrade() else {
            return Poll::Ready(Err(Error::NoOutcome(this.task.id)));
        };
        Scheduler { shared }.poll_join(this.task.id, &mut this.key, cx)
    }
}

impl<R> Drop for Join<R> {
    fn drop(&mut self) {
        // A join given up on (a timeout, a `select`) leaves no waker behind for as long as
        // the task lives.
        if let (Some(key), Some(shared)) = (self.key.take(), self.scheduler.upgrade()) {
            shared.inner.forget_join(self.task.id, key);
        }
    }
}

impl<R> fmt::Debug for Join<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Join").field(&self.task.id).finish()
    }
}

/// Another handle on the same task, with a claim of its own: the outcome is kept until every
/// handle is dropped or one of them reads it.
impl Clone for Task {
    fn clone(&self) -> Task {
        if let Some(scheduler) = self.scheduler.upgrade() {
            scheduler.claim(self.id);
        }
        Task {
            id: self.id,
            scheduler: self.scheduler.clone(),
        }
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("tasks", &self.task_count())
            .field("cycles", &self.cycle_count())
            .field("errors", &self.error_count())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Task").field(&self.id).finish()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.upgrade() {
            scheduler.forget_outcome(self.id);
        }
    }
}

impl From<&Task> for TaskId {
    fn from(task: &Task) -> TaskId {
        task.id
    }
}

/// How a task ended, as read by [`Scheduler::take_result`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome<R> {
    /// The task's function returned these values.
    Finished(R),
    /// The task ended with an uncaught error (already reported to the error handler).
    Failed(TaskError),
    /// The task was cancelled.
    Cancelled,
    /// The scheduler let the task go without its ending: it yielded these values with a plain
    /// `coroutine.yield` (none when it left otherwise: resumed by hand out of a scheduler
    /// suspension), and its thread belongs to whoever resumes it (contract rule 11).
    Released(R),
}

impl<R> Outcome<R> {
    /// The values, or an error describing the failure or cancellation.
    pub fn into_result(self) -> std::result::Result<R, TaskError> {
        match self {
            Outcome::Finished(values) => Ok(values),
            Outcome::Failed(error) => Err(error),
            Outcome::Cancelled => Err(TaskError::new(None, "task was cancelled", "")),
            Outcome::Released(_) => Err(TaskError::new(
                None,
                "task left the scheduler with a plain coroutine.yield",
                "",
            )),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for mlua::Function {}
    impl Sealed for mlua::Thread {}
    impl Sealed for &mlua::Function {}
    impl Sealed for &mlua::Thread {}
}

/// What the host may start as a task: a function (run in a new thread) or a suspended thread.
pub trait IntoThread: sealed::Sealed {
    /// The thread to resume, and whether it was made for this call.
    #[doc(hidden)]
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)>;
}

impl IntoThread for Function {
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((lua.create_thread(self)?, true))
    }
}

impl IntoThread for &Function {
    fn into_thread(self, lua: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((lua.create_thread(self.clone())?, true))
    }
}

impl IntoThread for Thread {
    fn into_thread(self, _: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((self, false))
    }
}

impl IntoThread for &Thread {
    fn into_thread(self, _: &Lua) -> mlua::Result<(Thread, bool)> {
        Ok((self.clone(), false))
    }
}

impl Scheduler {
    /// A builder with the defaults: real clock, defer depth 80, errors to stderr.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            clock: Clock::real(),
            max_defer_depth: DEFAULT_MAX_DEFER_DEPTH,
            watchdog: Budget::default(),
            general_path_only: false,
            on_error: None,
            on_task_end: None,
            on_adopt: None,
            phases: Vec::new(),
            waits_before: None,
            budget: None,
            signal_behavior: SignalBehavior::default(),
            memory_limit: None,
            native_code: None,
            creation_sites: false,
        }
    }

    /// A scheduler with the default settings, attached to `lua`.
    pub fn new(lua: &Lua) -> Result<Scheduler> {
        Self::builder().build(lua)
    }

    /// The `Lua` this scheduler runs.
    pub fn lua(&self) -> &Lua {
        &self.shared.lua
    }

    /// The clock the scheduler reads.
    pub fn clock(&self) -> &Clock {
        self.shared.inner.clock()
    }

    /// Installs the `task` library as the global `task` and returns the table, and the signal
    /// constructor as the global `Signal` (`Signal.new(behavior?)`, see [`Signal`]).
    ///
    /// It also replaces `coroutine.resume`, `coroutine.wrap` and `coroutine.close` with versions
    /// that behave as Luau's own, except that a coroutine resumed by hand which blocks in an
    /// mlua async function becomes the scheduler's (the resumer sees a suspension with no
    /// values, as with `task.wait`), and that closing a task's thread ends its pending work.
    /// Call it before `Lua::sandbox(true)`, which makes the globals read-only.
    pub fn install_task_library(&self) -> Result<Table> {
        let library = self.library()?;
        let globals = self.shared.lua.globals();
        globals.set("task", &library.task)?;
        globals.set("Signal", &library.signal.class)?;
        let coroutine: Table = globals.get("coroutine")?;
        coroutine.set("resume", library.resume)?;
        coroutine.set("wrap", library.wrap)?;
        coroutine.set("close", library.close)?;
        Ok(library.task)
    }

    /// The `task` library, built on first use.
    pub(crate) fn library(&self) -> mlua::Result<Library> {
        self.shared.library()
    }

    /// The engine, for the drivers (`run.rs`).
    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.shared.inner
    }

    fn handle(&self, id: TaskId) -> Task {
        Task {
            id,
            scheduler: Rc::downgrade(&self.shared.inner),
        }
    }

    /// Spawns `f` (a function, or a suspended thread) with `args` and resumes it at once, then
    /// drains the deferred queue as a resumption point does. The returned handle keeps the
    /// task's outcome for [`take_result`](Self::take_result). An error in the task is reported
    /// to the error handler, not returned here.
    pub fn spawn(&self, f: impl IntoThread, args: impl IntoLuaMulti) -> Result<Task> {
        let (thread, _) = f.into_thread(&self.shared.lua)?;
        let args = args.into_lua_multi(&self.shared.lua)?;
        Ok(self.handle(self.shared.inner.host_spawn(
            &self.shared.lua,
            &thread,
            args,
            true,
            false,
        )?))
    }

    /// Queues `f` with `args` for the next resumption point, like `task.defer`.
    pub fn defer(&self, f: impl IntoThread, args: impl IntoLuaMulti) -> Result<Task> {
        let (thread, fresh) = f.into_thread(&self.shared.lua)?;
        let args = args.into_lua_multi(&self.shared.lua)?;
        let id = self.shared.inner.adopt_for_host(&thread)?;
        let task = self.handle(id);
        if !self.shared.inner.defer(&self.shared.lua, id, args, fresh)? {
            return Err(Error::DeferDepthExceeded(
                self.shared.inner.max_defer_depth(),
            ));
        }
        Ok(task)
    }

    /// Resumes `f` with `args` on the first cycle at or after `delay` from now, like `task.delay`.
    pub fn delay(
        &self,
        delay: Duration,
        f: impl IntoThread,
        args: impl IntoLuaMulti,
    ) -> Result<Task> {
        let (thread, fresh) = f.into_thread(&self.shared.lua)?;
        let args = args.into_lua_multi(&self.shared.lua)?;
        let id = self.shared.inner.adopt_for_host(&thread)?;
        let task = self.handle(id);
        self.shared
            .inner
            .delay(&self.shared.lua, id, Some(delay), args, fresh)?;
        Ok(task)
    }

    /// Cancels a task as `task.cancel` does. Returns whether the task was still scheduled.
    /// A task that is running (the caller is inside it) cannot be cancelled. A task that left
    /// the scheduler with a plain `coroutine.yield` while a handle claims it
    /// ([`TaskStatus::Released`]) is cancelled by closing its thread, unless something runs the
    /// thread ([`Error::TaskRunning`]) or it became a task again; its outcome becomes
    /// [`Outcome::Cancelled`].
    ///
    /// Takes a [`Task`] handle or a [`TaskId`] (from a handle, or from [`TaskError::task`]).
    /// A task of another scheduler is refused with [`Error::ForeignTask`], whether named by its
    /// handle or by its id: ids carry the identity of their scheduler.
    pub fn cancel(&self, task: impl Into<TaskId>) -> Result<bool> {
        let id = self.own(task.into())?;
        self.shared.inner.cancel_task(&self.shared.lua, id)
    }

    /// Where the task stands. A task of another scheduler, named by its handle or its id, is
    /// [`TaskStatus::Unknown`] here: this scheduler has no such task.
    pub fn status(&self, task: impl Into<TaskId>) -> TaskStatus {
        self.shared.inner.status(task.into())
    }

    /// `id`, if it names a task of this scheduler, or else [`Error::ForeignTask`].
    fn own(&self, id: TaskId) -> Result<TaskId> {
        if self.shared.inner.owns(id) {
            Ok(id)
        } else {
            Err(Error::ForeignTask(id))
        }
    }

    /// Takes the outcome of a task the host started, once it has ended. Returns `None` while it
    /// is still scheduled, and after the outcome was taken. The outcome is freed when taken; if
    /// the values do not convert to `R`, the error is returned and the outcome stays. A handle
    /// of another scheduler's task is refused with [`Error::ForeignTask`].
    pub fn take_result<R: FromLuaMulti>(&self, task: &Task) -> Result<Option<Outcome<R>>> {
        self.own(task.id)?;
        self.take_outcome(task.id)
    }

    fn take_outcome<R: FromLuaMulti>(&self, task: TaskId) -> Result<Option<Outcome<R>>> {
        let Some((stored, claims)) = self.shared.inner.take_outcome(task) else {
            return Ok(None);
        };
        // A finished task's results, or the values a released one yielded, convert to `R`.
        let (key, released) = match stored {
            StoredOutcome::Finished(key) => (key, false),
            StoredOutcome::Released(key) => (key, true),
            StoredOutcome::Failed(error) => return Ok(Some(Outcome::Failed(error))),
            StoredOutcome::Cancelled => return Ok(Some(Outcome::Cancelled)),
        };
        let values = self
            .shared
            .inner
            .outcome_values(key)
            .and_then(|values| R::from_lua_multi(values, &self.shared.lua));
        match values {
            Ok(values) => {
                self.shared.inner.outcome_read(task, key, released);
                Ok(Some(match released {
                    false => Outcome::Finished(values),
                    true => Outcome::Released(values),
                }))
            }
            Err(error) => {
                let stored = match released {
                    false => StoredOutcome::Finished(key),
                    true => StoredOutcome::Released(key),
                };
                self.shared.inner.restore_outcome(task, (stored, claims));
                Err(error.into())
            }
        }
    }

    /// Waits for a task the host started to end, and takes its outcome, as
    /// [`take_result`](Self::take_result) does once the task has ended. Something must drive
    /// the scheduler meanwhile: await it inside [`run_until`](Self::run_until), or beside a
    /// [`run`](Self::run) on the same executor.
    ///
    /// A task that yielded with a plain `coroutine.yield` resolves to [`Outcome::Released`]
    /// (its thread belongs to whoever resumes it, contract rule 11); a join made after its
    /// thread became the same task again waits for its next end ([`Task`]). Fails with
    /// [`Error::NoOutcome`] when no outcome will come: it was taken already (by `take_result` or
    /// another join), or `shutdown` dropped the task, or every `Scheduler` handle was dropped.
    ///
    /// The join is `'static`: it holds a claim of its own on the outcome (as a cloned [`Task`]
    /// does) and only a weak hold on the scheduler, so it can move into a future of its own.
    pub fn join<R: FromLuaMulti>(&self, task: &Task) -> Join<R> {
        Join {
            scheduler: Rc::downgrade(&self.shared),
            task: task.clone(),
            key: None,
            values: std::marker::PhantomData,
        }
    }

    fn poll_join<R: FromLuaMulti>(
        &self,
        task: TaskId,
        key: &mut Option<u64>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Outcome<R>>> {
        self.own(task)?;
        if let Some(outcome) = self.take_outcome::<R>(task)? {
            return Poll::Ready(Ok(outcome));
        }
        if self.shared.inner.status(task) != TaskStatus::Scheduled {
            return Poll::Ready(Err(Error::NoOutcome(task)));
        }
        *key = Some(self.shared.inner.wait_for_end(task, *key, cx.waker()));
        Poll::Pending
    }

    /// Runs one cycle: resumes the timers due now and the tasks whose futures woke, in that order,
    /// then drains the deferred queue. A game engine calls this once per frame.
    pub fn cycle(&self) -> Result<CycleReport> {
        self.shared.inner.cycle(&self.shared.lua)
    }

    /// Whether anything is left that could still resume a task: a deferred resumption, a timer
    /// that will fire, or a task blocked in a Rust future.
    pub fn has_work(&self) -> bool {
        self.shared.inner.has_work()
    }

    /// The earliest deadline of a live timer, on the scheduler's clock
    /// (see [`Clock::instant_at`] for the real instant).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.shared.inner.next_deadline()
    }

    /// The number of tasks the scheduler holds (running, queued or suspended by it).
    pub fn task_count(&self) -> usize {
        self.shared.inner.task_count()
    }

    /// How many cycles have run so far, by any driver.
    pub fn cycle_count(&self) -> u64 {
        self.shared.inner.cycle_count()
    }

    /// How many errors have been reported to the error handler so far.
    pub fn error_count(&self) -> u64 {
        self.shared.inner.error_count()
    }

    /// Hands `error` to the error handler as the scheduler's own reports go, and counts it in
    /// [`error_count`](Self::error_count): for a library on the scheduler whose work failed
    /// where no task could raise it (a task it could not start). A report made while the
    /// handler runs is handed to it once it returns.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let lua = mlua::Lua::new();
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let kept = seen.clone();
    /// let scheduler = spindle::Scheduler::builder()
    ///     .on_error(move |_, error| kept.borrow_mut().push(error.message.clone()))
    ///     .build(&lua)?;
    /// scheduler.report_error(spindle::TaskError::new(None, "server: no task for GET /", ""));
    /// assert_eq!(*seen.borrow(), ["server: no task for GET /"]);
    /// assert_eq!(scheduler.error_count(), 1);
    /// # Ok::<(), spindle::Error>(())
    /// ```
    pub fn report_error(&self, error: TaskError) {
        self.shared.inner.report(error);
    }

    /// Ends the run: every task is dropped without error, every pending future dropped and every
    /// timer forgotten (contract rule 18). The scheduler stays usable. Refused with
    /// [`Error::Reentrant`] inside a cycle, a resumption or another shutdown (from the end
    /// hook).
    pub fn shutdown(&self) -> Result<()> {
        self.shared.inner.shutdown(&self.shared.lua)
    }
}

impl Shared {
    /// The `task` library, built on first use.
    pub(crate) fn library(&self) -> mlua::Result<Library> {
        if let Some(library) = &*self.lib.borrow() {
            return Ok(library.clone());
        }
        let library = crate::task_lib::build(&self.lua, &self.inner, self.signal_behavior)?;
        *self.lib.borrow_mut() = Some(library.clone());
        Ok(library)
    }

    /// Puts back the standard `coroutine` functions that `install_task_library` replaced, where
    /// nothing else replaced them since. Raw accesses only: a script may have put metamethods
    /// on `_G` or `coroutine`, and no script code may run once the scheduler is gone (no
    /// watchdog would stop a loop there).
    fn uninstall_task_library(&self) -> mlua::Result<()> {
        let Some(library) = self.lib.borrow().clone() else {
            return Ok(());
        };
        let pristine = self.inner.pristine();
        let coroutine: Table = self.lua.globals().raw_get("coroutine")?;
        for (name, ours, original) in [
            ("resume", &library.resume, &pristine.resume),
            ("wrap", &library.wrap, &pristine.wrap),
            ("close", &library.close, &pristine.close),
        ] {
            if coroutine.raw_get::<Function>(name).ok().as_ref() == Some(ours) {
                coroutine.raw_set(name, original)?;
            }
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Pending futures may hold `Lua` clones: drop them so the `Lua` can be freed.
        let _ = self.inner.shutdown(&self.lua);
        self.inner.close();
        let _ = self.uninstall_task_library();
        if !self.inner.watchdog().is_unlimited() {
            watchdog::uninstall(&self.lua);
        }
        // The mark is replaced rather than removed: mlua panics on a removal while the host
        // borrows any app data (a Rust function holding `app_data_ref` may drop the last
        // handle). Left in place, the mark's weak reference upgrades to nothing anyway.
        let _ = self.lua.try_set_app_data(Attached(Weak::new()));
    }
}
