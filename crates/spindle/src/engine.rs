//! The engine: the core (`core/`) joined to the VM. It starts each resumption the core asks for,
//! resumes the thread (`resume.rs`), and files the task by how the thread came back.
//!
//! Invariants kept here (the core keeps its own, on tokens and counts):
//! - The core is lent only through [`Inner::core`], whose closure cannot reach Lua: the
//!   collector's finalizers, error handlers and futures may all call back in while Lua runs.
//!   Lua-side storage (threads, arguments) lives outside the core for that reason, and the
//!   futures the engine owns are dropped outside it.
//! - A task's failure, even an internal one such as running out of memory while resuming it, is
//!   reported and ends that task only: a cycle never stops half-way.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mlua::thread::ThreadStatus;
use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Thread, Value};

use crate::async_fn::{failure_values, Call, OwnedFuture, OwnedFutures, Started};
use crate::clock::Clock;
use crate::core::{
    Core, Deferred, Freed, Lineage, NotMade, Origin, Resumption, SchedulerId, Suspension, TaskId,
    TimedWake, TimerEntry, TimerKind, ValuesKey,
};
use crate::error::{Error, Result, TaskError, CANNOT_YIELD};
use crate::trace::{Recorder, TraceEntry, TraceEvent};
use crate::values::{ThreadStore, ValueStore};
use crate::vm::{self, Pristine, ThreadPtr};
use crate::waker::{BorrowedWaker, WakeQueue, WakeTarget};
use crate::watchdog::{Budget, Overrun};

mod census;
mod cycle;
mod frame;
mod memory;
mod resume;
mod scripts;
mod signal_call;
mod signal_wait;
mod timeline;

pub use census::{CreationSite, TaskInfo, TaskState};
pub(crate) use frame::{BudgetCheck, Frames, PhaseFire};
pub use frame::{FrameReport, FrameWork};
pub(crate) use signal_wait::WaitStamp;
pub use timeline::{Cause, Span};

pub(crate) type ErrorHandler = Rc<dyn Fn(&TaskError)>;

/// The key of a released task's thread in [`Inner::released`]: its number within this
/// scheduler (a float only past 2^53 tasks, still unique among the few kept).
fn released_key(id: TaskId) -> f64 {
    id.as_u64() as f64
}

/// The host's end hook, as the engine calls it (the facade adds the scheduler).
pub(crate) type EndHook = Rc<dyn Fn(TaskId, TaskEnd<'_>)>;

/// The host's adoption hook, as the engine calls it (the facade adds the scheduler).
pub(crate) type AdoptHook = Rc<dyn Fn(TaskId, &Thread)>;

/// How a task left the scheduler, as
/// [`SchedulerBuilder::on_task_end`](crate::SchedulerBuilder::on_task_end) tells it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum TaskEnd<'a> {
    /// The task's function returned.
    Finished,
    /// The task ended with an uncaught error, also handed to the error handler (or its results
    /// could not be kept for the host), or a Rust panic unwound through it (the panic goes on
    /// to the host, and is not handed to the error handler).
    Failed(&'a TaskError),
    /// The task was cancelled: `task.cancel`, `coroutine.close` or [`Scheduler::cancel`](crate::Scheduler::cancel).
    Cancelled,
    /// The scheduler let the thread go without its ending: it yielded with a plain
    /// `coroutine.yield` and belongs to whoever resumes it (contract rule 11), or nothing will
    /// ever resume it (a `task.delay` of `math.huge` of a thread that is no task otherwise).
    Released,
    /// [`Scheduler::shutdown`](crate::Scheduler::shutdown) dropped it (contract rule 18).
    Dropped,
}

pub(crate) use crate::vm::resume_mark;

/// A [`TaskEnd`] kept for later.
enum OwnedEnd {
    Finished,
    Failed(TaskError),
    Cancelled,
    Released,
    Dropped,
}

impl OwnedEnd {
    fn of(end: TaskEnd<'_>) -> Self {
        match end {
            TaskEnd::Finished => OwnedEnd::Finished,
            TaskEnd::Failed(error) => OwnedEnd::Failed(error.clone()),
            TaskEnd::Cancelled => OwnedEnd::Cancelled,
            TaskEnd::Released => OwnedEnd::Released,
            TaskEnd::Dropped => OwnedEnd::Dropped,
        }
    }

    fn as_end(&self) -> TaskEnd<'_> {
        match self {
            OwnedEnd::Finished => TaskEnd::Finished,
            OwnedEnd::Failed(error) => TaskEnd::Failed(error),
            OwnedEnd::Cancelled => TaskEnd::Cancelled,
            OwnedEnd::Released => TaskEnd::Released,
            OwnedEnd::Dropped => TaskEnd::Dropped,
        }
    }
}

/// Hands items to a host handler (the error handler, the end hook) one at a time: an item
/// that comes while the handler runs (a task it started ended at once) waits, and is handed
/// over once it returns, in order. Nested instead, a handler that restarts a task failing at
/// once would go one level deeper each time, and a few hundred levels overflow the stack.
struct OneAtATime<T> {
    busy: Cell<bool>,
    waiting: RefCell<std::collections::VecDeque<T>>,
}

impl<T> Default for OneAtATime<T> {
    fn default() -> Self {
        OneAtATime {
            busy: Cell::new(false),
            waiting: RefCell::default(),
        }
    }
}

impl<T> OneAtATime<T> {
    /// Hands `item`, then each item that came meanwhile, to `call`, which returns false once
    /// there is no handler any more (the items still waiting are dropped then); while a call
    /// runs, `item` waits its turn instead. `call` must not unwind.
    fn tell(&self, item: T, mut call: impl FnMut(T) -> bool) {
        if self.busy.replace(true) {
            self.waiting.borrow_mut().push_back(item);
            return;
        }
        let mut next = Some(item);
        while let Some(item) = next {
            if !call(item) {
                self.waiting.borrow_mut().clear();
                break;
            }
            next = self.waiting.borrow_mut().pop_front();
        }
        self.busy.set(false);
    }
}

/// What one [`Scheduler::cycle`](crate::Scheduler::cycle) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CycleReport {
    /// Tasks resumed because their timer came due.
    pub timers: usize,
    /// Tasks resumed (or futures polled) because a future woke them.
    pub wakeups: usize,
    /// Deferred resumptions run while draining the deferred queue.
    pub deferred: usize,
    /// Errors reported to the error handler during the cycle: tasks that ended with an
    /// uncaught error, and errors the scheduler reported itself (such as a refused deferral).
    pub errors: usize,
}

impl CycleReport {
    /// Whether the cycle resumed anything at all.
    pub fn is_idle(&self) -> bool {
        self.timers == 0 && self.wakeups == 0 && self.deferred == 0
    }
}

/// Where a task stands, as seen by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskStatus {
    /// The scheduler holds the task: running, queued or suspended by a scheduler function.
    Scheduled,
    /// The task ended and its outcome waits for [`Scheduler::take_result`](crate::Scheduler::take_result).
    Done,
    /// The scheduler let the task go without its ending, and a host handle still claims it: it
    /// yielded with a plain `coroutine.yield` and its thread belongs to whoever resumes it
    /// (contract rule 11), or nothing will ever resume it. [`Scheduler::take_result`](crate::Scheduler::take_result) reads
    /// [`Outcome::Released`](crate::Outcome::Released). Until then the thread keeps the task's
    /// id: if it becomes a task again (spawned, deferred or delayed again, or waiting after a
    /// hand resume), it is this task again, [`Scheduled`](Self::Scheduled).
    Released,
    /// Not known: never a task of this scheduler, its outcome already taken or its handle
    /// dropped, or dropped by [`Scheduler::shutdown`](crate::Scheduler::shutdown).
    Unknown,
}

/// The core as the engine uses it: threads by raw pointer, outcomes as the host reads them.
type State = Core<ThreadPtr, StoredOutcome>;

pub(crate) struct Inner {
    /// Lent only through [`Inner::core`].
    state: RefCell<State>,
    /// The Spindle futures tasks are blocked on, by slot; dropped outside the core, as
    /// dropping one runs Rust code that may call back in.
    futures: RefCell<OwnedFutures>,
    threads: ThreadStore,
    /// Arguments of pending resumptions, and outcomes waiting for the host.
    values: ValueStore,
    /// Holds, as `threads`, the threads that blocked in an mlua future, weakly keyed: the
    /// replaced `coroutine.resume` tells the scheduler when one of them is resumed by hand and
    /// comes back unblocked. The set is replaced by a fresh one once no task is left, since a
    /// Luau table keeps the capacity of its peak (4 MB after 100,000 blocked threads).
    blocked: Table,
    /// The threads of released tasks whose outcome a host handle still claims
    /// ([`StoredOutcome::Released`]), by the task's number: the host may cancel them, or get
    /// them back with `thread_of`.
    released: Table,
    /// `blocked.threads`, at hand: fetching it by name cost 1,100 of the 9,500 instructions of
    /// a pend-once call of an mlua async function (callgrind). Replaced with it.
    blocked_threads: RefCell<Table>,
    /// Threads of tasks that blocked in an mlua future and woke during the poll, by slot, with
    /// their generation and the stream that polled them: the next cycle resumes them, and
    /// fetching each from the store again cost 740 of the 6,900 instructions of a pend-once
    /// call of an mlua async function, making a new stream 260 more (callgrind). Kept only for
    /// the tasks in the first `WOKEN_AT_HAND` slots, so that the table stays small and few of
    /// mlua's reference slots are held; the others are fetched.
    woken_threads: RefCell<WokenThreads>,
    /// Threads stopped at the end of a time slice, weakly keyed: the replaced
    /// `coroutine.resume` goes on with one of them without passing values.
    sliced: Table,
    wakes: Arc<WakeQueue>,
    /// The wakers of the host's `join`s, by task and by join: woken when the task is freed,
    /// however it ended, and forgotten when the join is dropped. Empty unless the host awaits
    /// a task.
    end_wakers: RefCell<crate::core::TaskMap<Vec<(u64, Waker)>>>,
    /// The key of the next join that registers a waker.
    next_join: Cell<u64>,
    /// Wake-ups from the scheduler's own thread, taken before those in `wakes` (see
    /// `wake_self`).
    own_wakes: RefCell<Vec<WakeTarget>>,
    clock: Clock,
    max_defer_depth: u32,
    watchdog: Budget,
    /// Every resumption and `task.wait` takes mlua's general path, never a raw lane: for tests
    /// that run a scenario both ways and compare (`SchedulerBuilder::general_path_only`).
    general_only: Cell<bool>,
    /// The host's handler, until the host's `Scheduler` is dropped: a handler often holds a
    /// `Lua` clone, which through the library's closures holds this, a cycle that only
    /// dropping the handler breaks.
    on_error: RefCell<Option<ErrorHandler>>,
    /// The errors for the handler, one at a time.
    errors_told: OneAtATime<TaskError>,
    /// The host's end hook, if it set one.
    end_hook: RefCell<Option<EndHook>>,
    /// The ends for the hook, one at a time.
    ends_told: OneAtATime<(TaskId, OwnedEnd)>,
    /// The host's adoption hook, if it set one.
    adopt_hook: RefCell<Option<AdoptHook>>,
    /// The adoptions for the hook, one at a time.
    adoptions_told: OneAtATime<(TaskId, Thread)>,
    errors: Cell<u64>,
    cycles: Cell<u64>,
    /// Set when the host's `Scheduler` is dropped; the `task` functions then refuse to work.
    closed: Cell<bool>,
    pristine: Pristine,
    /// Frame phases, the frame budget and the ready tasks it carried over (`engine/frame.rs`).
    frames: Frames,
    /// The trace, when the host records one.
    trace: Recorder,
    /// What the host's task list shows beside the core: creation sites, signal waits.
    notes: census::Notes,
    /// The timeline of resumptions, when the host records one.
    timeline: timeline::Recorder,
    /// Scripts the host ended while some of their tasks ran, which end with their resumptions
    /// (`engine/scripts.rs`); `any_doomed` says at a glance whether there are any.
    doomed: RefCell<Vec<scripts::Doomed>>,
    any_doomed: Cell<bool>,
}

pub(crate) enum StoredOutcome {
    Finished(Option<ValuesKey>),
    Failed(TaskError),
    Cancelled,
    /// Let go without ending ([`TaskEnd::Released`]), with the values of its plain
    /// `coroutine.yield` when it left through one.
    Released(Option<ValuesKey>),
}

/// A resumption of a thread through mlua, which polls the mlua future it is blocked in.
type LuaStream = mlua::thread::AsyncThread<MultiValue>;

/// What one resumption of a thread the host drives ([`Inner::drive`]) gave.
pub(crate) enum Driven {
    /// A plain `coroutine.yield` of these values: the thread is the host's again.
    Yielded(MultiValue),
    /// It waits on the scheduler, which holds it as this task from now on.
    Pending(TaskId),
    /// It returned these values.
    Finished(MultiValue),
    /// It failed with this error (not handed to the error handler).
    Failed(TaskError),
}

/// What a resumption passes to the thread.
enum Wakeup {
    /// Explicit arguments (from `spawn`, or stored for `defer`/`delay`).
    Args(MultiValue),
    /// A `task.wait` timer: the thread gets the mark and the elapsed seconds.
    Timer(f64),
    /// The mlua future inside the thread woke: resume it to poll again, through the stream
    /// its last resumption made when the scheduler kept it.
    Poll(Option<LuaStream>),
    /// The Spindle future the thread waited on finished.
    Settled(mlua::Result<MultiValue>),
    /// Go on where the watchdog stopped the thread: Luau resumes such a thread with no values.
    /// The thread has run for `ran` since it last yielded of its own accord.
    Continue { ran: Duration },
}

/// How a thread came back from a resumption.
enum Resumed {
    /// Blocked in an mlua future; `woken` if the future woke it during the poll.
    Blocked {
        thread: Thread,
        woken: bool,
        stream: LuaStream,
    },
    /// Yielded these values: a scheduler function set a suspension, or it is a plain yield.
    Yielded(MultiValue),
    Finished(MultiValue),
    /// Not resumable (dead, or started by someone else and now running).
    NotResumable,
    /// Yielded by the watchdog, over its time budget.
    Overran {
        thread: Thread,
        overrun: Overrun,
        /// Run time since the task last yielded of its own accord.
        ran: Duration,
    },
}

/// Either something to do now, or a reason to wait.
pub(crate) enum Next {
    Done,
    Busy,
    /// Sleep until woken, or until this instant.
    Sleep(Option<Instant>),
}

/// Runs `undo` on the state when dropped, so that flags set for the length of a call are
/// cleared even if a panic from a Rust callback unwinds through it (a host may catch it and
/// go on using the scheduler).
struct Restore<'a, F: FnMut(&mut State) + Send>(&'a Inner, F);

impl<F: FnMut(&mut State) + Send> Drop for Restore<'_, F> {
    fn drop(&mut self) {
        self.0.try_core(&mut self.1);
    }
}

/// A table whose keys do not keep their objects alive.
fn weak_set(lua: &Lua) -> mlua::Result<Table> {
    let set = lua.create_table()?;
    let weak_keys = lua.create_table()?;
    weak_keys.raw_set("__mode", "k")?;
    set.set_metatable(Some(weak_keys))?;
    Ok(set)
}

/// Converts seconds from Lua into a delay: negative and NaN count as 0, `None` never fires
/// (`math.huge`; [`Clock::deadline`] refuses [`Clock::MAX_DELAY`] and more). Rounds up to the next
/// nanosecond, so that no wait ends before the time asked for.
pub(crate) fn seconds_to_delay(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Some(Duration::ZERO);
    }
    let delay = Duration::try_from_secs_f64(seconds).ok()?;
    if delay.as_secs_f64() < seconds {
        delay.checked_add(Duration::from_nanos(1))
    } else {
        Some(delay)
    }
}

impl Inner {
    /// Lends the core to `f`. The closure must be `Send`, which one that captures the Lua
    /// state, a Lua value or the engine is not: so no Lua can run while the core is lent.
    #[inline(always)]
    fn core<R>(&self, f: impl FnOnce(&mut State) -> R + Send) -> R {
        f(&mut self.state.borrow_mut())
    }

    /// [`core`](Self::core), or `None` if the core is lent already (a call from inside a
    /// panic's unwinding, or from a C function that must not fail).
    #[inline(always)]
    fn try_core<R>(&self, f: impl FnOnce(&mut State) -> R + Send) -> Option<R> {
        let mut state = self.state.try_borrow_mut().ok()?;
        Some(f(&mut state))
    }

    pub(crate) fn new(
        lua: &Lua,
        clock: Clock,
        max_defer_depth: u32,
        watchdog: Budget,
        on_error: ErrorHandler,
        frames: Frames,
    ) -> mlua::Result<Self> {
        let blocked = lua.create_table()?;
        let blocked_threads = weak_set(lua)?;
        blocked.raw_set("threads", &blocked_threads)?;
        let sliced = weak_set(lua)?;
        Ok(Inner {
            state: RefCell::new(Core::new(SchedulerId::fresh())),
            futures: RefCell::default(),
            threads: ThreadStore::new(lua)?,
            values: ValueStore::new(lua)?,
            blocked,
            released: lua.create_table()?,
            blocked_threads: RefCell::new(blocked_threads),
            woken_threads: RefCell::default(),
            sliced,
            wakes: Arc::new(WakeQueue::default()),
            end_wakers: RefCell::default(),
            next_join: Cell::new(0),
            own_wakes: RefCell::default(),
            clock,
            max_defer_depth,
            watchdog,
            general_only: Cell::new(false),
            on_error: RefCell::new(Some(on_error)),
            errors_told: OneAtATime::default(),
            end_hook: RefCell::new(None),
            ends_told: OneAtATime::default(),
            adopt_hook: RefCell::new(None),
            adoptions_told: OneAtATime::default(),
            errors: Cell::new(0),
            cycles: Cell::new(0),
            closed: Cell::new(false),
            pristine: Pristine::of(lua)?,
            frames,
            trace: Recorder::default(),
            notes: census::Notes::default(),
            timeline: timeline::Recorder::default(),
            doomed: RefCell::default(),
            any_doomed: Cell::new(false),
        })
    }

    pub(crate) fn frames(&self) -> &Frames {
        &self.frames
    }

    pub(crate) fn trace(&self) -> &Recorder {
        &self.trace
    }

    pub(crate) fn timeline(&self) -> &timeline::Recorder {
        &self.timeline
    }

    /// Takes the spans of the timeline that have ended.
    pub(crate) fn take_timeline(&self) -> Vec<timeline::Span> {
        let all = !self.core(|core| core.is_resuming());
        self.timeline.take(all)
    }

    /// Records where each task is created from now on (`lua`), or stops (`None`).
    pub(crate) fn record_creation_sites(&self, lua: Option<&Lua>) {
        self.notes.record_sites(lua);
    }

    /// Records an event when the host records a trace.
    fn record(&self, task: Option<TaskId>, event: TraceEvent) {
        if self.trace.is_on() {
            self.trace.push(TraceEntry {
                cycle: self.cycles.get(),
                task,
                event,
                time: self.clock.now(),
            });
        }
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn wakes(&self) -> &WakeQueue {
        &self.wakes
    }

    /// Queues a wake-up that the scheduler's own thread raises during a resumption (a future
    /// that woke while it was polled). While the shared queue is empty and no driver is parked
    /// on it, the wake-up goes to a plain local list instead, taken before the shared queue:
    /// the order of wake-ups is kept, and the shared queue's lock (two atomic operations to
    /// push, two to take) cost 6% of the time of pend-once calls (perf).
    fn wake_self(&self, target: WakeTarget) {
        if self.wakes.is_idle() {
            self.own_wakes.borrow_mut().push(target);
        } else {
            self.wakes.push(target);
        }
    }

    /// Whether any wake-up is queued.
    fn has_wakes(&self) -> bool {
        !self.own_wakes.borrow().is_empty() || !self.wakes.is_empty()
    }

    /// Hands every queued wake-up to `each`, in the order they came.
    fn take_wakes(&self, mut each: impl FnMut(WakeTarget)) {
        let mut own = std::mem::take(&mut *self.own_wakes.borrow_mut());
        own.drain(..).for_each(&mut each);
        // Given back, so that the list keeps its buffer (`each` queues no wake-up).
        *self.own_wakes.borrow_mut() = own;
        self.wakes.take_each(each);
    }

    pub(crate) fn blocked(&self) -> &Table {
        &self.blocked
    }

    pub(crate) fn sliced(&self) -> &Table {
        &self.sliced
    }

    pub(crate) fn watchdog(&self) -> Budget {
        self.watchdog
    }

    /// Whether a resumption may take a raw lane: not while the watchdog watches each
    /// resumption (through mlua's path), nor when the host asked for the general path only.
    pub(crate) fn raw_lanes(&self) -> bool {
        self.watchdog.is_unlimited() && !self.general_only.get()
    }

    pub(crate) fn set_general_path_only(&self, on: bool) {
        self.general_only.set(on);
    }

    /// Replaces the set of threads blocked in mlua futures with an empty one; only for when no
    /// task is left, so that no thread in it is still blocked.
    fn renew_blocked(&self, lua: &Lua) -> mlua::Result<()> {
        let threads = weak_set(lua)?;
        self.blocked.raw_set("threads", &threads)?;
        *self.blocked_threads.borrow_mut() = threads;
        Ok(())
    }

    pub(crate) fn pristine(&self) -> &Pristine {
        &self.pristine
    }

    pub(crate) fn cycle_count(&self) -> u64 {
        self.cycles.get()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.get()
    }

    pub(crate) fn task_count(&self) -> usize {
        self.core(|core| core.task_count())
    }

    /// Marks the scheduler as dropped by its host.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        let handler = self.on_error.borrow_mut().take();
        drop(handler);
        let hook = self.end_hook.borrow_mut().take();
        drop(hook);
        let hook = self.adopt_hook.borrow_mut().take();
        drop(hook);
    }

    /// Fails when the host's `Scheduler` is gone, so that a `task` function kept by a script
    /// does not schedule work that nothing will run.
    pub(crate) fn ensure_open(&self) -> mlua::Result<()> {
        if self.closed.get() {
            return Err(mlua::Error::runtime(
                "the task scheduler of this Lua state was dropped",
            ));
        }
        Ok(())
    }

    /// Hands the error to the host's handler. A handler that panics is stopped there: the
    /// panic would otherwise unwind out of the cycle and lose the rest of its batch, leaving
    /// tasks that are counted as waiting but are never resumed (a run that never ends).
    /// The panic hook has already written the panic's message.
    ///
    /// An error reported while the handler runs (a task it started failed at once) is handed
    /// to it once it returns, in order: a handler that restarts a task failing at once would
    /// otherwise nest one level deeper each time, and a few hundred levels overflow the stack.
    pub(crate) fn report(&self, error: TaskError) {
        self.errors.set(self.errors.get() + 1);
        if self.on_error.borrow().is_none() {
            return;
        }
        self.errors_told.tell(error, |error| {
            // Cloned out, so that a handler may report again (or drop the scheduler, which
            // takes the handler away: the errors still waiting then go unreported).
            let Some(on_error) = self.on_error.borrow().clone() else {
                return false;
            };
            let handler = std::panic::AssertUnwindSafe(|| on_error(&error));
            let _ = std::panic::catch_unwind(handler);
            true
        });
    }

    /// Puts the host's error handler in place of the one given at build.
    pub(crate) fn set_error_handler(&self, handler: ErrorHandler) {
        *self.on_error.borrow_mut() = Some(handler);
    }

    pub(crate) fn set_end_hook(&self, hook: EndHook) {
        *self.end_hook.borrow_mut() = Some(hook);
    }

    /// Tells the host's end hook that a task left the scheduler. A hook that panics is stopped
    /// there, as an error handler is: the panic would unwind through the engine's bookkeeping.
    /// An end that comes while the hook runs is told after it returns, in order.
    fn task_ended(&self, id: TaskId, end: TaskEnd<'_>) {
        if self.end_hook.borrow().is_none() {
            return;
        }
        self.ends_told.tell((id, OwnedEnd::of(end)), |(id, end)| {
            // Cloned out, so that the hook may start tasks, cancel them or end the scheduler
            // (which takes the hook away: the ends still waiting are not told).
            let Some(hook) = self.end_hook.borrow().clone() else {
                return false;
            };
            let call = std::panic::AssertUnwindSafe(|| hook(id, end.as_end()));
            let _ = std::panic::catch_unwind(call);
            true
        });
    }

    pub(crate) fn set_adopt_hook(&self, hook: AdoptHook) {
        *self.adopt_hook.borrow_mut() = Some(hook);
    }

    /// Tells the host's adoption hook that a thread became a task by calling a scheduler
    /// function, as `task_ended` tells the end hook: one at a time, a panic stopped there.
    fn adopted(&self, id: TaskId, thread: &Thread) {
        if self.adopt_hook.borrow().is_none() {
            return;
        }
        self.adoptions_told
            .tell((id, thread.clone()), |(id, thread)| {
                let Some(hook) = self.adopt_hook.borrow().clone() else {
                    return false;
                };
                let call = std::panic::AssertUnwindSafe(|| hook(id, &thread));
                let _ = std::panic::catch_unwind(call);
                true
            });
    }

    // --- Tasks in and out -------------------------------------------------------------------

    /// The task of a thread that waits on the scheduler, making it one first if it is not: a
    /// thread that calls a scheduler function (`task.wait`, an async function,
    /// `Signal:Wait`) becomes a task without being spawned (started by the task being
    /// resumed), and the host's adoption hook is told.
    pub(crate) fn adopt_waiting(&self, thread: &Thread) -> mlua::Result<TaskId> {
        if let Some(id) = self.find(thread) {
            return Ok(id);
        }
        let id = self.adopt(thread)?;
        self.adopted(id, thread);
        Ok(id)
    }

    /// The thread's task, making it one first if it is not (started by the task being
    /// resumed).
    pub(crate) fn adopt(&self, thread: &Thread) -> mlua::Result<TaskId> {
        self.adopt_from(thread, Origin::Running)
    }

    /// The thread's task, making it one started from `origin` first if it is not. Refused
    /// for a task that would belong to a script the host is ending.
    ///
    /// A thread whose task left the scheduler with a plain yield while a host handle claims
    /// it (the slot is reserved for it) becomes that task again, under its old id (and its
    /// old lineage).
    pub(crate) fn adopt_from(&self, thread: &Thread, origin: Origin) -> mlua::Result<TaskId> {
        // A new thread carries no mark: nothing to look up.
        if let Some(slot) = vm::slot_mark(thread) {
            let ptr = ThreadPtr::of(thread);
            if let Some(id) = self.core(move |core| core.find(slot, ptr)) {
                return Ok(id);
            }
            if let Some(id) = self.reclaim(slot, thread)? {
                return Ok(id);
            }
        }
        self.adopt_new(thread, origin)
    }

    /// Makes the thread a new task; it is none. Inlined into `adopt`: as a call of its own,
    /// it cost 23 instructions a spawned task (callgrind, spawn_wait).
    #[inline(always)]
    pub(crate) fn adopt_new(&self, thread: &Thread, origin: Origin) -> mlua::Result<TaskId> {
        let ptr = ThreadPtr::of(thread);
        let id = match self.core(move |core| core.insert_from(ptr, origin)) {
            Ok(id) => id,
            Err(NotMade::HandlerCall) => {
                // A handler call that is no task yet is running: it becomes one first (the
                // thread may be its runner, which then is that task), so that the new task
                // is started by it (`signal_call.rs`).
                if let Some(id) = self.find_handler_task(thread) {
                    return Ok(id);
                }
                let lua = thread
                    .weak_lua()
                    .try_upgrade()
                    .ok_or_else(|| mlua::Error::runtime("the Lua state is gone"))?;
                self.make_running_handler_task(&lua)?;
                self.core(move |core| core.insert_from(ptr, origin))
                    .map_err(signal_call::not_made_error)?
            }
            Err(not_made) => return Err(signal_call::not_made_error(not_made)),
        };
        vm::set_slot_mark(thread, id.slot());
        if let Err(error) = self.threads.set(id.slot(), thread) {
            // The thread never reached the store, so the slot can be reused at once.
            self.core(|core| {
                core.free(id);
                core.recycle(id.slot());
            });
            // SAFETY: the caller's handle keeps the thread alive.
            unsafe { vm::clear_slot_mark(ptr) };
            return Err(error);
        }
        self.note_creation(id, thread);
        Ok(id)
    }

    /// The released task whose slot is reserved for `thread`, made a task again under its id:
    /// the handles' claims come back from its `Released` outcome, which goes (with its values
    /// and the thread's place in `released`). `None` if the slot is not reserved for it.
    fn reclaim(&self, slot: u32, thread: &Thread) -> mlua::Result<Option<TaskId>> {
        let ptr = ThreadPtr::of(thread);
        let Some((id, outcome)) = self.core(move |core| core.reclaim(slot, ptr)) else {
            return Ok(None);
        };
        if let Err(error) = self.threads.set(id.slot(), thread) {
            // Put back as it was: released, with its outcome.
            self.core(move |core| {
                let claims = core.reserve(id).map_or(0, |freed| freed.claims);
                if let Some(outcome) = outcome {
                    core.keep_outcome(id, outcome, claims);
                }
            });
            return Err(error);
        }
        self.forget_released(id);
        if let Some(outcome) = outcome {
            self.discard_outcome(outcome);
        }
        Ok(Some(id))
    }

    /// The task of `thread`, if it is one: found through the slot mark the thread carries,
    /// checked against the thread the slot holds.
    pub(crate) fn find(&self, thread: &Thread) -> Option<TaskId> {
        let Some(slot) = vm::slot_mark(thread) else {
            // A runner in the middle of a handler call is the call's task, made now.
            return self.find_handler_task(thread);
        };
        let ptr = ThreadPtr::of(thread);
        self.core(move |core| core.find(slot, ptr))
    }

    /// The thread of a task the scheduler holds.
    pub(crate) fn thread_of(&self, id: TaskId) -> Option<Thread> {
        let held = self.core(|core| core.task(id).is_some());
        held.then(|| self.threads.get(id.slot()).ok()).flatten()
    }

    /// [`find`](Self::find) for a raw thread, as a C function of the task library sees it;
    /// `None` as well when the core is lent already.
    ///
    /// # Safety
    /// `thread` must be alive.
    pub(crate) unsafe fn find_raw(&self, thread: ThreadPtr) -> Option<TaskId> {
        // SAFETY: per the caller.
        let slot = unsafe { vm::slot_mark_raw(thread) }?;
        self.try_core(move |core| core.find(slot, thread)).flatten()
    }

    /// Frees the task and returns how many host handles claim its outcome; `None` if it was
    /// not a task any more. Its owned future, if any, is dropped here, outside the borrow.
    fn free_task(&self, id: TaskId) -> Option<u32> {
        let freed = self.core(|core| core.free(id))?;
        if let Some(thread) = freed.thread {
            // SAFETY: the thread store still holds the thread; it lets go just below.
            unsafe { vm::clear_slot_mark(thread) };
        }
        Some(self.vacate(id, freed, true))
    }

    /// [`free_task`](Self::free_task) for an idle task whose slot stays reserved for its
    /// thread ([`Core::reserve`]); the thread keeps its mark, by which `adopt` finds the slot.
    fn reserve_task(&self, id: TaskId) -> Option<u32> {
        let freed = self.core(|core| core.reserve(id))?;
        Some(self.vacate(id, freed, false))
    }

    /// What freeing a task's slot leaves to do outside the core: its future, its thread in the
    /// store, the slot's recycling (unless it is reserved) and the joins to wake. Returns the
    /// claims on the task.
    #[inline(always)]
    fn vacate(&self, id: TaskId, freed: Freed<ThreadPtr>, recycle: bool) -> u32 {
        // Only a task blocked on a Spindle future has one here (one borrow fewer a task).
        let future = matches!(freed.suspension, Suspension::OwnedFuture { .. })
            .then(|| self.futures.borrow_mut().remove(id.slot()))
            .flatten();
        let woken = self.woken_threads.borrow_mut().take(id);
        drop(woken);
        self.threads.clear(freed.slot);
        if recycle {
            self.core(|core| core.recycle(freed.slot));
        }
        drop(future);
        self.wake_joins(id);
        freed.claims
    }

    /// Wakes the host's `join`s of a task that was freed. The check stays inline in
    /// `free_task`: called, it cost 19 instructions a spawned task (callgrind, spawn_wait).
    #[inline(always)]
    fn wake_joins(&self, id: TaskId) {
        if !self.end_wakers.borrow().is_empty() {
            self.wake_joins_of(id);
        }
    }

    /// Wakes the joins of the task, once some join waits.
    #[cold]
    fn wake_joins_of(&self, id: TaskId) {
        let woken = self.end_wakers.borrow_mut().remove(&id);
        woken
            .into_iter()
            .flatten()
            .for_each(|(_, waker)| waker.wake());
    }

    /// Registers the waker of a host's `join` of a task the scheduler still holds, under the
    /// join's key (a fresh one on its first poll), which it returns.
    pub(crate) fn wait_for_end(&self, id: TaskId, key: Option<u64>, waker: &Waker) -> u64 {
        let mut wakers = self.end_wakers.borrow_mut();
        let joins = wakers.entry(id).or_default();
        if let Some(key) = key {
            if let Some((_, known)) = joins.iter_mut().find(|(k, _)| *k == key) {
                if !known.will_wake(waker) {
                    known.clone_from(waker);
                }
                return key;
            }
        }
        let key = key.unwrap_or_else(|| {
            let key = self.next_join.get();
            self.next_join.set(key + 1);
            key
        });
        joins.push((key, waker.clone()));
        key
    }

    /// A join was dropped: its waker goes.
    pub(crate) fn forget_join(&self, id: TaskId, key: u64) {
        let Ok(mut wakers) = self.end_wakers.try_borrow_mut() else {
            return;
        };
        if let Some(joins) = wakers.get_mut(&id) {
            joins.retain(|(k, _)| *k != key);
            if joins.is_empty() {
                wakers.remove(&id);
            }
        }
    }

    /// Frees a task that a Rust panic unwinds through (mlua made its thread dead by raising
    /// the panic in it). It ended as far as the host is concerned: a handle's outcome and
    /// the end hook say it failed. The panic itself goes on to the host; the error handler
    /// is not called for it.
    pub(crate) fn free_unwinding(&self, id: TaskId) {
        let lineage = self.try_core(|core| core.lineage(id)).flatten();
        let Some(claims) = self.free_task(id) else {
            return;
        };
        let error = TaskError::new(
            Some(id),
            "a Rust panic unwound through the task",
            String::new(),
        )
        .started_by(lineage);
        if claims > 0 {
            let kept = StoredOutcome::Failed(error.clone());
            self.try_core(|core| core.keep_outcome(id, kept, claims));
        }
        self.task_ended(id, TaskEnd::Failed(&error));
    }

    /// Frees the task if nothing will resume it and the scheduler is not resuming it: the
    /// thread then belongs to whoever holds it.
    fn release_if_idle(&self, id: TaskId) {
        if self.core(|core| core.is_idle(id)) {
            self.release(id, None);
        }
    }

    /// Frees a task whose thread lives on outside the scheduler; `yielded`: the values of the
    /// plain `coroutine.yield` it left through, kept Lua-side for a host that claims the task.
    pub(super) fn release(&self, id: TaskId, yielded: Option<(&Lua, MultiValue)>) {
        let claimed = self.core(|core| core.task(id).is_some_and(|slot| slot.claims() > 0));
        // Kept for a host that claims the task; a failure to keep them (no memory) only costs
        // the host the thread or the values, not the outcome.
        let mut values = None;
        let mut kept = false;
        if claimed {
            if let Ok(thread) = self.threads.get(id.slot()) {
                kept = self.released.raw_set(released_key(id), thread).is_ok();
            }
            values =
                yielded.and_then(|(lua, yielded)| self.values.store(lua, yielded).ok().flatten());
        }
        // A kept thread keeps its id too, should it become a task again.
        let freed = match kept {
            true => self.reserve_task(id).or_else(|| self.free_task(id)),
            false => self.free_task(id),
        };
        let Some(claims) = freed else {
            self.values.discard(values);
            return;
        };
        if claims > 0 {
            self.core(|core| core.keep_outcome(id, StoredOutcome::Released(values), claims));
        } else {
            self.values.discard(values);
        }
        self.task_ended(id, TaskEnd::Released);
    }

    /// The thread of a released task that a host handle claims.
    pub(crate) fn released_thread(&self, id: TaskId) -> Option<Thread> {
        let released =
            self.core(|core| matches!(core.outcome_mut(id), Some(StoredOutcome::Released(_))));
        released
            .then(|| {
                self.released
                    .raw_get::<Option<Thread>>(released_key(id))
                    .ok()
            })
            .flatten()
            .flatten()
    }

    /// Lets go of a released task's thread, once it became a task again.
    fn forget_released(&self, id: TaskId) {
        let _ = self.released.raw_set(released_key(id), mlua::Nil);
    }

    /// Lets go of a released task for good, once its outcome is read, unclaimed or
    /// cancelled: its thread, and the slot reserved for it, whose mark the thread sheds.
    fn end_release(&self, id: TaskId) {
        let thread = self
            .released
            .raw_get::<Option<Thread>>(released_key(id))
            .ok()
            .flatten();
        self.forget_released(id);
        if self.core(|core| core.unreserve(id)) {
            if let Some(thread) = thread.filter(|t| vm::slot_mark(t) == Some(id.slot())) {
                // SAFETY: the handle keeps the thread alive.
                unsafe { vm::clear_slot_mark(ThreadPtr::of(&thread)) };
            }
        }
    }

    /// The task ended: free it, keep its outcome if the host asked, report an error.
    ///
    /// An error is reported even when the task was freed already: Lua that ran while the error
    /// was being made (a `__tostring`) may have cancelled the task, which was dead by then, and
    /// every uncaught error is reported once (rule 8). An outcome such a cancel kept for the
    /// host says what happened first: the task failed.
    fn complete(&self, lua: &Lua, id: TaskId, result: mlua::Result<MultiValue>) {
        // Rule 23: a task that ran out of memory gives it back before any other task runs.
        let _reclaim = memory::Reclaim::after(self, lua, id, &result);
        // Read before the slot is freed: the report names who started the task. Only for an
        // error, so that a task that finishes costs nothing more.
        let lineage = match result {
            Err(_) => self.core(|core| core.lineage(id)),
            Ok(_) => None,
        };
        // A task freed already (cancelled by Lua that ran while its error was formatted) still
        // has its error reported (rule 8), and a host waiting on it sees the failure.
        let freed = self.free_task(id);
        if freed.is_none() && result.is_ok() {
            return;
        }
        let event = match result {
            Ok(_) => TraceEvent::Finish,
            Err(_) => TraceEvent::Fail,
        };
        self.record(Some(id), event);
        let failure = self.settle(lua, id, freed, result, lineage);
        if freed.is_some() {
            let end = match &failure {
                Some(error) => TaskEnd::Failed(error),
                None => TaskEnd::Finished,
            };
            self.task_ended(id, end);
        }
    }

    /// Keeps an ended task's outcome if a host handle claims it (`freed`: the claims, or
    /// `None` for a task freed already), and reports its error. Returns the failure, if any.
    fn settle(
        &self,
        lua: &Lua,
        id: TaskId,
        freed: Option<u32>,
        result: mlua::Result<MultiValue>,
        lineage: Option<Lineage>,
    ) -> Option<TaskError> {
        let keep = match freed {
            Some(claims) => claims > 0,
            None => self.core(|core| core.has_outcome(id)),
        };
        let (stored, failure) = match result {
            Ok(_) if !keep => return None,
            Ok(values) => match self.values.store(lua, values) {
                Ok(key) => (StoredOutcome::Finished(key), None),
                Err(error) => {
                    let mut report = TaskError::from_lua(Some(id), &error);
                    report.message =
                        format!("could not keep the task's results: {}", report.message);
                    self.report(report.clone());
                    (StoredOutcome::Failed(report.clone()), Some(report))
                }
            },
            Err(error) => {
                let report = TaskError::from_lua(Some(id), &error).started_by(lineage);
                self.report(report.clone());
                if !keep {
                    return Some(report);
                }
                (StoredOutcome::Failed(report.clone()), Some(report))
            }
        };
        self.core(|core| match freed {
            Some(claims) => core.keep_outcome(id, stored, claims),
            None => {
                if let Some(outcome @ StoredOutcome::Cancelled) = core.outcome_mut(id) {
                    *outcome = stored;
                }
            }
        });
        failure
    }

    /// Whether `id` is one of this scheduler's ids (of a live task or not).
    pub(crate) fn owns(&self, id: TaskId) -> bool {
        self.core(|core| core.owns(id))
    }

    pub(crate) fn status(&self, id: TaskId) -> TaskStatus {
        self.core(|core| {
            if core.task(id).is_some() {
                TaskStatus::Scheduled
            } else {
                match core.outcome_mut(id) {
                    Some(StoredOutcome::Released(_)) => TaskStatus::Released,
                    Some(_) => TaskStatus::Done,
                    None => TaskStatus::Unknown,
                }
            }
        })
    }

    /// Takes the outcome out, for whichever handle reads it first.
    pub(crate) fn take_outcome(&self, id: TaskId) -> Option<(StoredOutcome, u32)> {
        self.core(|core| core.take_outcome(id))
    }

    /// Puts back an outcome that the host could not read (its values did not convert).
    pub(crate) fn restore_outcome(&self, id: TaskId, outcome: (StoredOutcome, u32)) {
        self.core(|core| core.keep_outcome(id, outcome.0, outcome.1));
    }

    /// The values of a finished task's outcome, left in place.
    pub(crate) fn outcome_values(&self, key: Option<ValuesKey>) -> mlua::Result<MultiValue> {
        self.values.get(key)
    }

    /// Frees the values of an outcome that was read or is no longer wanted.
    pub(crate) fn discard_outcome(&self, outcome: StoredOutcome) {
        if let StoredOutcome::Finished(key) | StoredOutcome::Released(key) = outcome {
            self.values.discard(key);
        }
    }

    /// A `Task` handle was cloned: one claim more on the task or the outcome it left.
    pub(crate) fn claim(&self, id: TaskId) {
        self.core(|core| core.claim(id));
    }

    /// Frees an outcome once the host read it (`released`: it was `Released`, whose thread
    /// and reserved slot go too).
    pub(crate) fn outcome_read(&self, id: TaskId, key: Option<ValuesKey>, released: bool) {
        self.values.discard(key);
        if released {
            self.end_release(id);
        }
    }

    /// A `Task` handle was dropped: one claim fewer on the outcome. With none left, a stored
    /// outcome is freed and none is kept later.
    pub(crate) fn forget_outcome(&self, id: TaskId) {
        let unclaimed = self.core(|core| core.unclaim(id));
        if let Some(outcome) = unclaimed {
            if let StoredOutcome::Released(_) = outcome {
                self.end_release(id);
            }
            self.discard_outcome(outcome);
        }
    }

    /// The host's spawn: the outcome is kept if `keep` (a `Task` handle claims it), and since
    /// the host is outside any resumption, returning to it is a resumption point. A thread
    /// made for the call (`fresh`) whose outcome is not kept may take the start lane.
    pub(crate) fn host_spawn(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
        keep: bool,
        fresh: bool,
    ) -> Result<TaskId> {
        let id = match keep {
            true => self.adopt_for_host(thread)?,
            false => self.adopt_resumable(thread)?,
        };
        match !keep && fresh {
            true => self.start_detached(lua, id, thread, args),
            false => self.resume_known(lua, id, Some(thread), Wakeup::Args(args)),
        }
        if !self.core(|core| core.is_resuming()) {
            self.drain_deferred(lua);
        }
        Ok(id)
    }

    /// Makes a thread the host asked for a task whose outcome is kept. Only a thread that can
    /// be resumed qualifies.
    pub(crate) fn adopt_for_host(&self, thread: &Thread) -> Result<TaskId> {
        let id = self.adopt_resumable(thread)?;
        self.core(|core| core.claim(id));
        Ok(id)
    }

    /// Makes a thread the host asked for a task, keeping no outcome. Only a thread that can
    /// be resumed qualifies.
    fn adopt_resumable(&self, thread: &Thread) -> Result<TaskId> {
        let status = thread.status();
        if status != ThreadStatus::Resumable {
            return Err(Error::NotResumable(status));
        }
        Ok(self.adopt_from(thread, Origin::Host)?)
    }

    /// The host's cancel, by id. Returns whether the task was still scheduled.
    pub(crate) fn cancel_task(&self, lua: &Lua, id: TaskId) -> Result<bool> {
        let Some(running) = self.core(|core| core.task(id).map(|slot| slot.is_running())) else {
            return self.cancel_released(lua, id);
        };
        let thread = self.threads.get(id.slot())?;
        if running
            || matches!(
                thread.status(),
                ThreadStatus::Running | ThreadStatus::Normal
            )
        {
            return Err(Error::TaskRunning(id));
        }
        self.cancel(lua, &thread)?;
        Ok(true)
    }

    /// The host's cancel of a task it claims that left the scheduler with a plain
    /// `coroutine.yield`: its thread is closed, as `task.cancel` would, unless something is
    /// running it; its outcome becomes `Cancelled`. False for any other task, or a thread that
    /// is dead already.
    fn cancel_released(&self, lua: &Lua, id: TaskId) -> Result<bool> {
        let Some(thread) = self.released_thread(id) else {
            return Ok(false);
        };
        match thread.status() {
            ThreadStatus::Running | ThreadStatus::Normal => return Err(Error::TaskRunning(id)),
            ThreadStatus::Finished | ThreadStatus::Error => return Ok(false),
            ThreadStatus::Resumable => {}
        }
        // A thread that became a task again (spawned anew) is that task's to cancel.
        if self.find(&thread).is_some() {
            return Ok(false);
        }
        self.close_thread(lua, &thread)?;
        self.end_release(id);
        let yielded = self.core(|core| {
            let outcome = core.outcome_mut(id)?;
            Some(std::mem::replace(outcome, StoredOutcome::Cancelled))
        });
        if let Some(yielded) = yielded {
            self.discard_outcome(yielded);
        }
        Ok(true)
    }

    // --- The task library's operations ------------------------------------------------------

    /// `task.spawn`: resumes the thread at once as a task.
    pub(crate) fn spawn_thread(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
    ) -> mlua::Result<()> {
        self.spawn_thread_from(lua, thread, Origin::Running, args)
    }

    /// `spawn_thread` of a task started from `origin` (a signal handler's call, on behalf of
    /// its connection).
    pub(crate) fn spawn_thread_from(
        &self,
        lua: &Lua,
        thread: &Thread,
        origin: Origin,
        args: MultiValue,
    ) -> mlua::Result<()> {
        let id = self.adopt_from(thread, origin)?;
        if let Origin::Given(_) = origin {
            self.timeline.hint(id, Cause::Signal);
        }
        self.resume_known(lua, id, Some(thread), Wakeup::Args(args));
        Ok(())
    }

    /// Queues a resumption for the next resumption point. Returns false when the defer depth
    /// limit refused it (the thread is then not scheduled).
    pub(crate) fn defer(
        &self,
        lua: &Lua,
        id: TaskId,
        args: MultiValue,
        fresh: bool,
    ) -> mlua::Result<bool> {
        let level = self.core(|core| core.next_defer_level());
        if level > self.max_defer_depth {
            self.release_if_idle(id);
            return Ok(false);
        }
        let args = self.values.store(lua, args)?;
        let entry = Deferred {
            task: id,
            level,
            resumption: Resumption { args, fresh },
        };
        if !self.core(|core| core.push_deferred(entry)) {
            self.values.discard(args);
        }
        self.wakes.nudge();
        Ok(true)
    }

    /// `task.defer` from Lua: a refused deferral is reported (contract rule 3).
    pub(crate) fn lua_defer(
        &self,
        lua: &Lua,
        id: TaskId,
        args: MultiValue,
        fresh: bool,
    ) -> mlua::Result<()> {
        if !self.defer(lua, id, args, fresh)? {
            let message = format!(
                "Maximum re-entrancy depth ({}) exceeded calling task.defer",
                self.max_defer_depth
            );
            // The running thread's traceback, written as every report's is.
            let traceback = vm::traceback(lua, &lua.current_thread()).unwrap_or_default();
            self.report(TaskError::new(None, message, traceback));
        }
        Ok(())
    }

    pub(crate) fn max_defer_depth(&self) -> u32 {
        self.max_defer_depth
    }

    /// Schedules a resumption after `delay`; `None` never fires.
    pub(crate) fn delay(
        &self,
        lua: &Lua,
        id: TaskId,
        delay: Option<Duration>,
        args: MultiValue,
        fresh: bool,
    ) -> mlua::Result<()> {
        let now = self.clock.now();
        let Some(deadline) = delay.and_then(|d| Clock::deadline(now, d)) else {
            // Never fires: nothing to keep, and the thread is not ours unless something else is.
            self.release_if_idle(id);
            return Ok(());
        };
        let args = self.values.store(lua, args)?;
        let entry = TimerEntry {
            task: id,
            kind: TimerKind::Resume(Resumption { args, fresh }),
        };
        if !self.core(|core| core.push_timer(deadline, entry)) {
            self.values.discard(args);
        }
        self.wakes.nudge();
        Ok(())
    }

    /// `task.wait`'s first half: the running thread becomes a task suspended until `seconds`
    /// have passed. `task.luau` yields right after.
    pub(crate) fn begin_wait(&self, lua: &Lua, seconds: f64) -> mlua::Result<()> {
        let thread = lua.current_thread();
        if !vm::can_yield(&thread) {
            return Err(mlua::Error::runtime(CANNOT_YIELD));
        }
        let id = self.adopt_waiting(&thread)?;
        self.suspend_waiting(id, seconds);
        Ok(())
    }

    /// `begin_wait` for a thread that is a task already, called from a C function with no
    /// mlua handle: false when the thread needs the full path (it is not a task yet, cannot
    /// yield, or the scheduler is closed or busy), which then adopts it or raises the error.
    pub(crate) fn begin_wait_raw(&self, thread: ThreadPtr, seconds: f64) -> bool {
        // SAFETY: the thread is the one calling, so it is alive.
        if self.closed.get() || self.general_only.get() || !unsafe { vm::can_yield_raw(thread) } {
            return false;
        }
        // SAFETY: as above.
        let Some(slot) = (unsafe { vm::slot_mark_raw(thread) }) else {
            return false;
        };
        let now = self.clock.now();
        let deadline = seconds_to_delay(seconds).and_then(|d| Clock::deadline(now, d));
        // One loan of the core finds the task and files its wait (callgrind: two cost
        // wait_cycles 0.9% more instructions).
        let filed = self.try_core(move |core| {
            let id = core.find(slot, thread)?;
            core.file_wait(id, now, deadline)
        });
        self.wakes.nudge();
        filed.flatten().is_some()
    }

    /// Files the task as waiting `seconds` (never ended by a timer for `math.huge`), under a
    /// fresh token, which it returns; `None` for a freed task.
    fn suspend_waiting(&self, id: TaskId, seconds: f64) -> Option<u32> {
        let now = self.clock.now();
        let deadline = seconds_to_delay(seconds).and_then(|d| Clock::deadline(now, d));
        let token = self.core(|core| core.file_wait(id, now, deadline));
        self.wakes.nudge();
        token
    }

    /// `task.wait` was resumed by something other than its timer: drop the timer.
    pub(crate) fn abandon_wait(&self, lua: &Lua) {
        let thread = lua.current_thread();
        let Some(id) = self.find(&thread) else {
            return;
        };
        self.end_suspension_if(id, |s| matches!(s, Suspension::Wait { .. }));
    }

    /// A task stopped at the end of its time slice is resumed by hand: the scheduler's own
    /// continuation is dropped (rule 12).
    pub(crate) fn take_sliced(&self, thread: &Thread) {
        let Some(id) = self.find(thread) else {
            return;
        };
        self.end_suspension_if(id, |s| matches!(s, Suspension::Sliced { .. }));
    }

    /// Ends the task's suspension if `is` says it is of the kind in question, then frees the
    /// task if nothing else will resume it.
    fn end_suspension_if(&self, id: TaskId, is: fn(&Suspension) -> bool) {
        self.core(|core| core.end_suspension_if(id, is));
        self.release_if_idle(id);
    }

    /// A thread resumed by hand blocked in an mlua future: it becomes a task blocked on that
    /// future. The future holds the resumer's waker, so it is polled again on the next cycle
    /// with the thread's own.
    pub(crate) fn adopt_pending(&self, thread: &Thread) -> mlua::Result<()> {
        let id = self.adopt_waiting(thread)?;
        let Some(token) = self.next_token(id) else {
            return Ok(());
        };
        self.block_in_mlua_future(id, thread, token, true, None)
    }

    /// A fresh token for the task's next suspension; `None` for a stale id.
    fn next_token(&self, id: TaskId) -> Option<u32> {
        self.core(|core| core.next_token(id))
    }

    /// Files the task as blocked in the mlua future inside its thread, under the token of the
    /// waker the future was last polled with; `woken` queues a poll at once.
    fn block_in_mlua_future(
        &self,
        id: TaskId,
        thread: &Thread,
        token: u32,
        woken: bool,
        stream: Option<LuaStream>,
    ) -> mlua::Result<()> {
        let listed = self.core(|core| {
            core.block_on_future(id, token, false)
                .then(|| core.set_in_blocked_set(id, true))
                .flatten()
        });
        let Some(listed) = listed else {
            return Ok(());
        };
        // A thread that blocks again is in the set already: adding it cost 640 of the 7,500
        // instructions of a pend-once call of an mlua async function (callgrind).
        if !listed {
            // Cloned out first: the call below may run finalizers that come back here.
            let threads = self.blocked_threads.borrow().clone();
            if let Err(error) = threads.raw_set(thread, true) {
                self.core(|core| core.set_in_blocked_set(id, false));
                return Err(error);
            }
        }
        if woken {
            self.woken_threads.borrow_mut().keep(id, thread, stream);
            self.wake_self(WakeTarget {
                slot: id.slot(),
                generation: id.generation(),
                token,
            });
        }
        Ok(())
    }

    /// The thread of a task that blocked in an mlua future, and the stream that polled it, from
    /// those kept at hand or else from the store.
    fn blocked_thread(&self, id: TaskId) -> mlua::Result<(Thread, Option<LuaStream>)> {
        let kept = self.woken_threads.borrow_mut().take(id);
        match kept {
            Some(kept) => Ok(kept),
            None => Ok((self.threads.get(id.slot())?, None)),
        }
    }

    /// A thread that blocked in an mlua future was resumed by hand and came back: if it is no
    /// longer blocked (it finished its future and went on), its future suspension ends.
    pub(crate) fn released_by_hand(&self, thread: &Thread) {
        let Some(id) = self.find(thread) else {
            return;
        };
        // `task.luau` took the thread out of the set before calling here.
        self.core(|core| core.set_in_blocked_set(id, false));
        self.still_blocked_in_mlua_future(id, thread);
    }

    /// Whether the task is still blocked in its mlua future; if not, its suspension ends.
    fn still_blocked_in_mlua_future(&self, id: TaskId, thread: &Thread) -> bool {
        if vm::has_started(thread) && vm::is_blocked_in_mlua_future(thread) {
            return true;
        }
        self.end_suspension_if(id, |s| matches!(s, Suspension::LuaFuture { .. }));
        false
    }

    /// The task of the thread calling a Spindle async function (made a task if it is not one),
    /// and the wake target of the call's suspension, under a fresh token.
    pub(crate) fn caller_task(&self, lua: &Lua) -> mlua::Result<(TaskId, WakeTarget)> {
        let target = |id: TaskId, token| {
            let target = WakeTarget {
                slot: id.slot(),
                generation: id.generation(),
                token,
            };
            (id, target)
        };
        // `Lua::current_thread` was 330 of the 4,480 instructions of a ready call (callgrind).
        let running = vm::running_thread(lua);
        // SAFETY: the running thread is alive.
        if let Some(id) = unsafe { self.find_raw(running) } {
            if let Some(token) = self.next_token(id) {
                return Ok(target(id, token));
            }
        }
        let id = self.adopt_waiting(&lua.current_thread())?;
        match self.next_token(id) {
            Some(token) => Ok(target(id, token)),
            None => Err(mlua::Error::runtime(
                "the calling task ended while starting a future",
            )),
        }
    }

    /// Polls a call's future for the first time with the waker of `target`; also returns
    /// whether the future woke the waker during the poll.
    pub(crate) fn first_poll<T>(
        &self,
        target: WakeTarget,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> (Poll<T>, bool) {
        let waker = BorrowedWaker::new(target, &self.wakes);
        let polled = waker.with_waker(|w| poll(&mut Context::from_waker(w)));
        (polled, waker.was_woken())
    }

    /// Files the outcome of a call's first poll: a ready call's task is released if nothing
    /// else holds it, a pending call's task becomes blocked on the future.
    pub(crate) fn started<Fut, R>(
        &self,
        id: TaskId,
        target: WakeTarget,
        (poll, woken): (Poll<mlua::Result<R>>, bool),
        call: Pin<Box<Call<Fut>>>,
    ) -> mlua::Result<Started<R>>
    where
        Fut: Future<Output = mlua::Result<R>> + 'static,
        R: IntoLuaMulti + 'static,
    {
        match poll {
            Poll::Ready(result) => {
                drop(call);
                self.release_if_idle(id);
                Ok(match result {
                    Ok(values) => Started::Ready(values),
                    Err(error) => Started::failed(&error),
                })
            }
            Poll::Pending => {
                self.block_on_owned_future(id, target, call, woken)?;
                Ok(Started::Pending)
            }
        }
    }

    /// A call's future is pending after its first poll: the task blocks on it, if it can yield.
    fn block_on_owned_future(
        &self,
        id: TaskId,
        target: WakeTarget,
        future: OwnedFuture,
        woken: bool,
    ) -> mlua::Result<()> {
        let thread = self.core(|core| core.task(id).and_then(|slot| slot.thread()));
        // SAFETY: the thread store keeps the thread of an occupied slot alive.
        if !thread.is_some_and(|thread| unsafe { vm::can_yield_raw(thread) }) {
            drop(future);
            self.release_if_idle(id);
            return Err(mlua::Error::runtime(CANNOT_YIELD));
        }
        let token = target.token;
        let orphan = if self.core(|core| core.block_on_future(id, token, true)) {
            self.futures.borrow_mut().insert(id.slot(), future);
            None
        } else {
            Some(future)
        };
        if orphan.is_some() {
            drop(orphan);
            return Err(mlua::Error::runtime(
                "the calling task ended while its async function started",
            ));
        }
        if woken {
            self.wake_self(target);
        }
        Ok(())
    }

    /// Cancels the thread: its task (if any) is dropped with every pending wake-up and owned
    /// future, and the thread is closed so nothing can resume it again.
    pub(crate) fn cancel(&self, lua: &Lua, thread: &Thread) -> mlua::Result<()> {
        let task = self.find(thread);
        if let Some(id) = task {
            self.record(Some(id), TraceEvent::Cancel);
            if let Some(claims) = self.free_task(id) {
                if claims > 0 {
                    self.core(|core| core.keep_outcome(id, StoredOutcome::Cancelled, claims));
                }
                self.task_ended(id, TaskEnd::Cancelled);
            }
        }
        self.compact_timers();
        self.close_thread(lua, thread)
    }

    /// Makes a thread dead: it can never be resumed again, and what its stack held is released.
    /// A thread that is dead already is left as it is (rule 6): one that failed keeps its stack
    /// for the traceback of its error, which may be formatted right now (a `__tostring` that
    /// cancels its own task).
    fn close_thread(&self, lua: &Lua, thread: &Thread) -> mlua::Result<()> {
        if matches!(
            thread.status(),
            ThreadStatus::Finished | ThreadStatus::Error
        ) {
            return Ok(());
        }
        self.close_raw(lua, thread).map(|_| ())
    }

    /// Luau's `coroutine.close` of the thread, with the memory limit lifted: Luau reallocates a
    /// closed thread's stack, and a failed allocation there is raised on the closed thread,
    /// outside any protected call of its own, where Luau traps. Closing runs no Lua code.
    pub(crate) fn close_raw(&self, lua: &Lua, thread: &Thread) -> mlua::Result<MultiValue> {
        vm::with_memory_limit_lifted(lua, || self.pristine.close.call::<MultiValue>(thread))
    }
}

/// Woken threads are kept at hand for the tasks of slots below this (`Inner::woken_threads`).
const WOKEN_AT_HAND: usize = 256;

/// Threads kept at hand by slot, each with its task's generation.
#[derive(Default)]
struct WokenThreads {
    by_slot: Vec<Option<(u32, Thread, Option<LuaStream>)>>,
}

impl WokenThreads {
    fn keep(&mut self, id: TaskId, thread: &Thread, stream: Option<LuaStream>) {
        let index = id.slot() as usize;
        if index >= WOKEN_AT_HAND {
            return;
        }
        if index >= self.by_slot.len() {
            self.by_slot.resize_with(index + 1, || None);
        }
        self.by_slot[index] = Some((id.generation(), thread.clone(), stream));
    }

    fn take(&mut self, id: TaskId) -> Option<(Thread, Option<LuaStream>)> {
        let (generation, thread, stream) = self.by_slot.get_mut(id.slot() as usize)?.take()?;
        (generation == id.generation()).then_some((thread, stream))
    }

    /// Drops every handle and gives back the table's memory.
    fn clear(&mut self) {
        *self = WokenThreads::default();
    }
}

/// How a pending Spindle future's result reaches its task: the resume mark and the values, or
/// the failure mark and the error's message, which `task.luau` raises as a plain string error.
fn settled_values(lua: &Lua, result: mlua::Result<MultiValue>) -> mlua::Result<MultiValue> {
    match result {
        Ok(mut values) => {
            values.push_front(Value::LightUserData(resume_mark()));
            Ok(values)
        }
        Err(error) => failure_values(lua, &TaskError::from_lua(None, &error).message),
    }
}
