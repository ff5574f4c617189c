//! The scheduler: who runs next, and when.
//!
//! A cycle resumes the timers that came due and the tasks whose futures woke, then drains the
//! deferred queue (the task contract: a resumption point). Invariants kept here:
//! - Every suspension has one token. A wake-up or timer that carries another token, or names a
//!   freed slot's old generation, is stale and is dropped: no task is resumed twice for one
//!   suspension.
//! - The counts behind `has_work` are exact, and only `State`'s methods change them:
//!   `live_timers` is the sum of the slots' `timers` (timer entries that will still fire; a timed
//!   `task.wait` counts one), `live_deferred` the sum of their `queued`, and `awaiting` the number
//!   of slots blocked in a future. So a run whose remaining work was cancelled ends at once, and
//!   a run with work left never ends early. Debug builds recount them after every cycle.
//! - No borrow of the state is held while Lua runs or allocates: the collector's finalizers,
//!   error handlers and futures may all call back in. Lua-side storage (threads, arguments) lives
//!   outside the state for that reason.
//! - A task's failure, even an internal one such as running out of memory while resuming it, is
//!   reported and ends that task only: a cycle never stops half-way.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::thread::ThreadStatus;
use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Thread, Value};

use crate::async_fn::{failure_values, Call, OwnedFuture, OwnedFutures, Started};
use crate::clock::Clock;
use crate::error::{Error, Result, TaskError};
use crate::signal::SignalBehavior;
use crate::task_lib::{Library, Pristine};
use crate::tasks::{SchedulerId, Suspension, TaskId, TaskTable, ThreadStore};
use crate::timers::Timers;
use crate::trace::{Recorder, TraceEntry, TraceEvent};
use crate::values::{ValueStore, ValuesKey};
use crate::vm::{self, ThreadPtr};
use crate::waker::{BorrowedWaker, WakeQueue, WakeTarget};
use crate::watchdog::{Budget, Overrun};

mod cycle;
mod frame;
mod memory;
mod resume;
mod signal_wait;

pub(crate) use frame::{BudgetCheck, Frames};
pub(crate) use signal_wait::WaitStamp;

pub(crate) type ErrorHandler = Rc<dyn Fn(&TaskError)>;

pub(crate) use crate::vm::resume_mark;

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
    /// Tasks that ended with an uncaught error during the cycle.
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
    /// Not known: never a task of this scheduler, its outcome already taken or its handle
    /// dropped, or it yielded with a plain `coroutine.yield` and now belongs to whoever resumes it.
    Unknown,
}

pub(crate) struct Inner {
    state: RefCell<State>,
    threads: ThreadStore,
    /// Arguments of pending resumptions, and outcomes waiting for the host.
    values: ValueStore,
    /// Holds, as `threads`, the threads that blocked in an mlua future, weakly keyed: the
    /// replaced `coroutine.resume` tells the scheduler when one of them is resumed by hand and
    /// comes back unblocked. The set is replaced by a fresh one once no task is left, since a
    /// Luau table keeps the capacity of its peak (4 MB after 100,000 blocked threads).
    blocked: Table,
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
    /// Wake-ups from the scheduler's own thread, taken before those in `wakes` (see
    /// `wake_self`).
    own_wakes: RefCell<Vec<WakeTarget>>,
    clock: Clock,
    max_defer_depth: u32,
    watchdog: Budget,
    /// The host's handler, until the host's `Scheduler` is dropped: a handler often holds a
    /// `Lua` clone, which through the library's closures holds this, a cycle that only
    /// dropping the handler breaks.
    on_error: RefCell<Option<ErrorHandler>>,
    errors: Cell<u64>,
    cycles: Cell<u64>,
    /// Set when the host's `Scheduler` is dropped; the `task` functions then refuse to work.
    closed: Cell<bool>,
    /// Filled on first use: the `task` table and the functions that go with it.
    lib: RefCell<Option<Library>>,
    pristine: Pristine,
    /// Frame phases, the frame budget and the ready tasks it carried over (`frame.rs`).
    frames: Frames,
    /// What `Signal.new()` makes when given no behaviour.
    signal_behavior: SignalBehavior,
    /// The trace, when the host records one.
    trace: Recorder,
}

struct State {
    tasks: TaskTable,
    timers: Timers<TimerEntry>,
    live_timers: usize,
    live_deferred: usize,
    awaiting: usize,
    deferred: VecDeque<Deferred>,
    futures: OwnedFutures,
    /// Outcomes waiting for the host, with the number of `Task` handles that claim each.
    outcomes: HashMap<TaskId, (StoredOutcome, u32)>,
    /// Scheduler-driven resumptions in progress (they nest through `task.spawn`).
    depth: u32,
    /// The defer level of the deferred task being resumed, 0 outside the drain.
    defer_level: u32,
    draining: bool,
    in_cycle: bool,
}

#[derive(Clone, Copy, Debug)]
struct TimerEntry {
    task: TaskId,
    kind: TimerKind,
}

#[derive(Clone, Copy, Debug)]
enum TimerKind {
    /// Ends a `task.wait` suspension with this token.
    Wait { token: u32 },
    /// A `task.delay`: resumes the thread with stored arguments.
    Resume(Resumption),
    /// Goes on with a task stopped at the end of its time slice (suspension `Sliced`).
    Continue { token: u32 },
}

impl TimerKind {
    /// The stored arguments the timer holds, which must be discarded if it never runs.
    fn args(&self) -> Option<ValuesKey> {
        match self {
            TimerKind::Wait { .. } | TimerKind::Continue { .. } => None,
            TimerKind::Resume(resumption) => resumption.args,
        }
    }
}

/// A resumption the host or a script asked for explicitly (`defer`, `delay`).
///
/// A thread made for the resumption (`fresh`) that something else starts first is a task
/// suspended by `task.delay`/`task.defer` that was resumed early: the resumption is dropped
/// (contract rule 12). An existing thread handed to `defer` or `delay` is resumed when due,
/// whatever resumed it meanwhile, as Roblox does: each such call is a request of its own.
#[derive(Clone, Copy, Debug)]
struct Resumption {
    args: Option<ValuesKey>,
    fresh: bool,
}

#[derive(Clone, Copy, Debug)]
struct Deferred {
    task: TaskId,
    level: u32,
    resumption: Resumption,
}

pub(crate) enum StoredOutcome {
    Finished(Option<ValuesKey>),
    Failed(TaskError),
    Cancelled,
}

/// A resumption of a thread through mlua, which polls the mlua future it is blocked in.
type LuaStream = mlua::thread::AsyncThread<MultiValue>;

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
    /// Yielded: a scheduler function set a suspension, or it is a plain yield.
    Yielded,
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

/// What freeing a slot leaves for the caller to finish outside the state borrow.
struct Freed {
    slot: u32,
    claims: u32,
    future: Option<OwnedFuture>,
}

/// Runs `undo` on the state when dropped, so that flags set for the length of a call are
/// cleared even if a panic from a Rust callback unwinds through it (a host may catch it and
/// go on using the scheduler).
struct Restore<'a, F: FnMut(&mut State)>(&'a Inner, F);

impl<F: FnMut(&mut State)> Drop for Restore<'_, F> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut() {
            (self.1)(&mut state);
        }
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

/// Whether a task so suspended has a live timer entry, counted in `Slot::timers`.
fn holds_timer(suspension: &Suspension) -> bool {
    matches!(
        suspension,
        Suspension::Wait { timed: true, .. } | Suspension::Sliced { .. }
    )
}

/// How the timer of a `task.wait` starts its task's resumption ([`State::start_timed_wake`]).
enum TimedWake {
    /// The wait ended otherwise, or the task was freed: the timer does nothing.
    Stale,
    /// Through [`Inner::resume`], which starts the resumption itself.
    Full { since: Duration },
    /// Through the VM directly: the resumption has started under `token`.
    Raw {
        thread: ThreadPtr,
        since: Duration,
        token: u32,
    },
}

impl State {
    /// Replaces the task's suspension, keeping the counts. Returns false for a stale id.
    fn set_suspension(&mut self, id: TaskId, new: Suspension) -> bool {
        let Some(slot) = self.tasks.get_mut(id) else {
            return false;
        };
        let old = std::mem::replace(&mut slot.suspension, new);
        if holds_timer(&old) {
            slot.timers -= 1;
            self.live_timers -= 1;
        } else if old.is_awaiting() {
            self.awaiting -= 1;
        }
        if holds_timer(&new) {
            slot.timers += 1;
            self.live_timers += 1;
        } else if new.is_awaiting() {
            self.awaiting += 1;
        }
        true
    }

    /// A scheduler-driven resumption of the task starts: it is running, one level deeper, and
    /// (with `end_suspension`) its suspension ends. Returns the resumption's token; `None` for
    /// a freed task. `resume.rs`'s `Resuming` guard undoes it.
    fn start_resumption(&mut self, id: TaskId, end_suspension: bool) -> Option<u32> {
        if end_suspension {
            self.set_suspension(id, Suspension::None);
        }
        let slot = self.tasks.get_mut(id)?;
        slot.running = true;
        self.depth += 1;
        Some(slot.next_token())
    }

    /// Files the task as waiting since `since` until `deadline` (never, for `None`) under a
    /// fresh token, which it returns; `None` for a freed task.
    fn file_wait(
        &mut self,
        id: TaskId,
        since: Duration,
        deadline: Option<Duration>,
    ) -> Option<u32> {
        let token = self.tasks.get_mut(id)?.next_token();
        let wait = Suspension::Wait {
            token,
            since,
            timed: deadline.is_some(),
        };
        self.set_suspension(id, wait);
        if let Some(deadline) = deadline {
            // Counted by the suspension, as every `Wait` timer is: no `push_timer`.
            let kind = TimerKind::Wait { token };
            self.timers.push(deadline, TimerEntry { task: id, kind });
        }
        Some(token)
    }

    /// The timer of the task's wait under `token` surfaced: how its resumption starts.
    /// `raw_lane` says whether the scheduler may resume it through the VM directly; when the
    /// task may take that lane, its resumption is started here, as by `start_resumption`.
    fn start_timed_wake(&mut self, id: TaskId, token: u32, raw_lane: bool) -> TimedWake {
        let Some(slot) = self.tasks.get(id) else {
            return TimedWake::Stale;
        };
        let since = match slot.suspension {
            Suspension::Wait {
                token: t, since, ..
            } if t == token => since,
            _ => return TimedWake::Stale,
        };
        let thread = slot.thread().filter(|&thread| {
            // SAFETY: the thread store keeps the thread of an occupied slot alive.
            raw_lane && slot.claims == 0 && unsafe { vm::is_suspended_in_yield(thread) }
        });
        let Some(thread) = thread else {
            return TimedWake::Full { since };
        };
        let token = self.start_resumption(id, true).expect("checked above");
        TimedWake::Raw {
            thread,
            since,
            token,
        }
    }

    /// Queues a timer; a `Resume` timer counts as live until it fires or its task is freed.
    /// A `Wait` or `Continue` timer is counted by its suspension instead.
    fn push_timer(&mut self, deadline: Duration, entry: TimerEntry) -> bool {
        let Some(slot) = self.tasks.get_mut(entry.task) else {
            return false;
        };
        if let TimerKind::Resume(_) = entry.kind {
            slot.timers += 1;
            self.live_timers += 1;
        }
        self.timers.push(deadline, entry);
        true
    }

    /// A `Resume` timer surfaced and runs now; false if its task was freed meanwhile.
    fn fire_resume_timer(&mut self, id: TaskId) -> bool {
        let Some(slot) = self.tasks.get_mut(id) else {
            return false;
        };
        slot.timers -= 1;
        self.live_timers -= 1;
        true
    }

    fn push_deferred(&mut self, entry: Deferred) -> bool {
        let Some(slot) = self.tasks.get_mut(entry.task) else {
            return false;
        };
        slot.queued += 1;
        self.live_deferred += 1;
        self.deferred.push_back(entry);
        true
    }

    /// The next deferred entry, and whether it is still live (its task was not freed).
    fn pop_deferred(&mut self) -> Option<(Deferred, bool)> {
        let entry = self.deferred.pop_front()?;
        let live = match self.tasks.get_mut(entry.task) {
            Some(slot) => {
                slot.queued -= 1;
                self.live_deferred -= 1;
                true
            }
            None => false,
        };
        Some((entry, live))
    }

    /// Frees the task's slot with everything it had pending.
    fn free(&mut self, id: TaskId) -> Option<Freed> {
        let slot = self.tasks.free(id)?;
        self.live_timers -= slot.timers as usize;
        self.live_deferred -= slot.queued as usize;
        if slot.suspension.is_awaiting() {
            self.awaiting -= 1;
        }
        Some(Freed {
            slot: id.slot(),
            claims: slot.claims,
            future: self.futures.remove(id.slot()),
        })
    }

    /// Whether a timer entry will still act when it surfaces.
    fn timer_is_live(&self, entry: &TimerEntry) -> bool {
        match (self.tasks.get(entry.task), entry.kind) {
            (Some(slot), TimerKind::Wait { token }) => {
                matches!(slot.suspension, Suspension::Wait { token: t, .. } if t == token)
            }
            (Some(slot), TimerKind::Continue { token }) => {
                matches!(slot.suspension, Suspension::Sliced { token: t, .. } if t == token)
            }
            (Some(_), TimerKind::Resume(_)) => true,
            (None, _) => false,
        }
    }

    /// Recounts what the counters should say, in debug builds.
    fn check_counts(&self) {
        if cfg!(debug_assertions) {
            let (mut timers, mut queued, mut awaiting) = (0, 0, 0);
            for (_, slot) in self.tasks.occupied() {
                timers += slot.timers as usize;
                queued += slot.queued as usize;
                awaiting += usize::from(slot.suspension.is_awaiting());
            }
            debug_assert_eq!(timers, self.live_timers, "live timers");
            debug_assert_eq!(queued, self.live_deferred, "live deferrals");
            debug_assert_eq!(awaiting, self.awaiting, "awaiting tasks");
        }
    }
}

impl Inner {
    pub(crate) fn new(
        lua: &Lua,
        clock: Clock,
        max_defer_depth: u32,
        watchdog: Budget,
        on_error: ErrorHandler,
        frames: Frames,
        signal_behavior: SignalBehavior,
    ) -> mlua::Result<Self> {
        let blocked = lua.create_table()?;
        let blocked_threads = weak_set(lua)?;
        blocked.raw_set("threads", &blocked_threads)?;
        let sliced = weak_set(lua)?;
        Ok(Inner {
            state: RefCell::new(State {
                tasks: TaskTable::new(SchedulerId::fresh()),
                timers: Timers::default(),
                live_timers: 0,
                live_deferred: 0,
                awaiting: 0,
                deferred: VecDeque::new(),
                futures: OwnedFutures::default(),
                outcomes: HashMap::new(),
                depth: 0,
                defer_level: 0,
                draining: false,
                in_cycle: false,
            }),
            threads: ThreadStore::new(lua)?,
            values: ValueStore::new(lua)?,
            blocked,
            blocked_threads: RefCell::new(blocked_threads),
            woken_threads: RefCell::default(),
            sliced,
            wakes: Arc::new(WakeQueue::default()),
            own_wakes: RefCell::default(),
            clock,
            max_defer_depth,
            watchdog,
            on_error: RefCell::new(Some(on_error)),
            errors: Cell::new(0),
            cycles: Cell::new(0),
            closed: Cell::new(false),
            lib: RefCell::new(None),
            pristine: Pristine::of(lua)?,
            frames,
            signal_behavior,
            trace: Recorder::default(),
        })
    }

    pub(crate) fn signal_behavior(&self) -> SignalBehavior {
        self.signal_behavior
    }

    pub(crate) fn frames(&self) -> &Frames {
        &self.frames
    }

    pub(crate) fn trace(&self) -> &Recorder {
        &self.trace
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
        self.state.borrow().tasks.len()
    }

    /// The `task` library, built on first use.
    pub(crate) fn library(self: &Rc<Self>, lua: &Lua) -> mlua::Result<Library> {
        if let Some(lib) = &*self.lib.borrow() {
            return Ok(lib.clone());
        }
        let lib = crate::task_lib::build(lua, self)?;
        *self.lib.borrow_mut() = Some(lib.clone());
        Ok(lib)
    }

    pub(crate) fn installed_library(&self) -> Option<Library> {
        self.lib.borrow().clone()
    }

    /// Marks the scheduler as dropped by its host.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        let handler = self.on_error.borrow_mut().take();
        drop(handler);
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
    fn report(&self, error: TaskError) {
        self.errors.set(self.errors.get() + 1);
        // Cloned out, so that a handler may report again (or drop the scheduler) from inside.
        let Some(on_error) = self.on_error.borrow().clone() else {
            return;
        };
        let handler = std::panic::AssertUnwindSafe(|| on_error(&error));
        let _ = std::panic::catch_unwind(handler);
    }

    // --- Tasks in and out -------------------------------------------------------------------

    /// The thread's task, making it one first if it is not.
    pub(crate) fn adopt(&self, thread: &Thread) -> mlua::Result<TaskId> {
        let (id, new) = self.state.borrow_mut().tasks.reserve(thread)?;
        if new {
            if let Err(error) = self.threads.set(id.slot(), thread) {
                // The thread never reached the store, so the slot can be reused at once.
                let freed = self.state.borrow_mut().free(id);
                self.state.borrow_mut().tasks.recycle(id.slot());
                drop(freed);
                return Err(error);
            }
        }
        Ok(id)
    }

    /// Frees the task and returns how many host handles claim its outcome; `None` if it was
    /// not a task any more. Its owned future, if any, is dropped here, outside the borrow.
    fn free_task(&self, id: TaskId) -> Option<u32> {
        let freed = self.state.borrow_mut().free(id)?;
        let woken = self.woken_threads.borrow_mut().take(id);
        drop(woken);
        self.threads.clear(freed.slot);
        self.state.borrow_mut().tasks.recycle(freed.slot);
        drop(freed.future);
        Some(freed.claims)
    }

    /// Frees the task if nothing will resume it and the scheduler is not resuming it: the
    /// thread then belongs to whoever holds it.
    fn release_if_idle(&self, id: TaskId) {
        let idle = matches!(self.state.borrow().tasks.get(id), Some(slot) if !slot.running && !slot.has_pending());
        if idle {
            self.free_task(id);
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
        let keep = match freed {
            Some(claims) => claims > 0,
            None => self.state.borrow().outcomes.contains_key(&id),
        };
        let stored = match result {
            Ok(_) if !keep => return,
            Ok(values) => match self.values.store(lua, values) {
                Ok(key) => StoredOutcome::Finished(key),
                Err(error) => {
                    let mut report = TaskError::from_lua(Some(id), &error);
                    report.message =
                        format!("could not keep the task's results: {}", report.message);
                    self.report(report.clone());
                    StoredOutcome::Failed(report)
                }
            },
            Err(error) => {
                let report = TaskError::from_lua(Some(id), &error);
                self.report(report.clone());
                if !keep {
                    return;
                }
                StoredOutcome::Failed(report)
            }
        };
        let mut state = self.state.borrow_mut();
        match freed {
            Some(claims) => {
                state.outcomes.insert(id, (stored, claims));
            }
            None => {
                if let Some((outcome @ StoredOutcome::Cancelled, _)) = state.outcomes.get_mut(&id) {
                    *outcome = stored;
                }
            }
        }
    }

    /// Whether `id` is one of this scheduler's ids (of a live task or not).
    pub(crate) fn owns(&self, id: TaskId) -> bool {
        self.state.borrow().tasks.owns(id)
    }

    pub(crate) fn status(&self, id: TaskId) -> TaskStatus {
        let state = self.state.borrow();
        if state.tasks.get(id).is_some() {
            TaskStatus::Scheduled
        } else if state.outcomes.contains_key(&id) {
            TaskStatus::Done
        } else {
            TaskStatus::Unknown
        }
    }

    /// Takes the outcome out, for whichever handle reads it first.
    pub(crate) fn take_outcome(&self, id: TaskId) -> Option<(StoredOutcome, u32)> {
        self.state.borrow_mut().outcomes.remove(&id)
    }

    /// Puts back an outcome that the host could not read (its values did not convert).
    pub(crate) fn restore_outcome(&self, id: TaskId, outcome: (StoredOutcome, u32)) {
        self.state.borrow_mut().outcomes.insert(id, outcome);
    }

    /// The values of a finished task's outcome, left in place.
    pub(crate) fn outcome_values(&self, key: Option<ValuesKey>) -> mlua::Result<MultiValue> {
        self.values.get(key)
    }

    /// Frees the values of an outcome that was read or is no longer wanted.
    pub(crate) fn discard_outcome(&self, outcome: StoredOutcome) {
        if let StoredOutcome::Finished(key) = outcome {
            self.values.discard(key);
        }
    }

    /// A `Task` handle was dropped: one claim fewer on the outcome. With none left, a stored
    /// outcome is freed and none is kept later.
    pub(crate) fn forget_outcome(&self, id: TaskId) {
        let unclaimed = {
            let mut state = self.state.borrow_mut();
            if let Some(slot) = state.tasks.get_mut(id) {
                slot.claims = slot.claims.saturating_sub(1);
                None
            } else {
                match state.outcomes.get_mut(&id) {
                    Some((_, claims)) if *claims > 1 => {
                        *claims -= 1;
                        None
                    }
                    Some(_) => state.outcomes.remove(&id).map(|(outcome, _)| outcome),
                    None => None,
                }
            }
        };
        if let Some(outcome) = unclaimed {
            self.discard_outcome(outcome);
        }
    }

    /// The host's spawn: the outcome is kept, and since the host is outside any resumption,
    /// returning to it is a resumption point.
    pub(crate) fn host_spawn(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
    ) -> Result<TaskId> {
        let id = self.adopt_for_host(thread)?;
        self.resume_known(lua, id, Some(thread), Wakeup::Args(args));
        if self.state.borrow().depth == 0 {
            self.drain_deferred(lua);
        }
        Ok(id)
    }

    /// Makes a thread the host asked for a task whose outcome is kept. Only a thread that can
    /// be resumed qualifies.
    pub(crate) fn adopt_for_host(&self, thread: &Thread) -> Result<TaskId> {
        let status = thread.status();
        if status != ThreadStatus::Resumable {
            return Err(Error::NotResumable(status));
        }
        let id = self.adopt(thread)?;
        if let Some(slot) = self.state.borrow_mut().tasks.get_mut(id) {
            slot.claims += 1;
        }
        Ok(id)
    }

    /// The host's cancel, by id. Returns whether the task was still scheduled.
    pub(crate) fn cancel_task(&self, lua: &Lua, id: TaskId) -> Result<bool> {
        let running = match self.state.borrow().tasks.get(id) {
            Some(slot) => slot.running,
            None => return Ok(false),
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

    // --- The task library's operations ------------------------------------------------------

    /// `task.spawn`: resumes the thread at once as a task.
    pub(crate) fn spawn_thread(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
    ) -> mlua::Result<()> {
        let id = self.adopt(thread)?;
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
        let level = {
            let state = self.state.borrow();
            if state.draining {
                state.defer_level + 1
            } else {
                1
            }
        };
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
        if !self.state.borrow_mut().push_deferred(entry) {
            self.values.discard(args);
        }
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
        if !self.state.borrow_mut().push_timer(deadline, entry) {
            self.values.discard(args);
        }
        Ok(())
    }

    /// `task.wait`'s first half: the running thread becomes a task suspended until `seconds`
    /// have passed. `task.luau` yields right after.
    pub(crate) fn begin_wait(&self, lua: &Lua, seconds: f64) -> mlua::Result<()> {
        let thread = lua.current_thread();
        if !vm::can_yield(&thread) {
            return Err(mlua::Error::runtime(crate::task_lib::CANNOT_YIELD));
        }
        let id = self.adopt(&thread)?;
        self.suspend_waiting(&mut self.state.borrow_mut(), id, seconds);
        Ok(())
    }

    /// `begin_wait` for a thread that is a task already, called from a C function with no
    /// mlua handle: false when the thread needs the full path (it is not a task yet, cannot
    /// yield, or the scheduler is closed or busy), which then adopts it or raises the error.
    pub(crate) fn begin_wait_raw(&self, thread: ThreadPtr, seconds: f64) -> bool {
        // SAFETY: the thread is the one calling, so it is alive.
        if self.closed.get() || !unsafe { vm::can_yield_raw(thread) } {
            return false;
        }
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return false;
        };
        // SAFETY: the thread is the one calling, so it is alive, as `find_raw` asks.
        let Some(id) = (unsafe { state.tasks.find_raw(thread) }) else {
            return false;
        };
        self.suspend_waiting(&mut state, id, seconds);
        true
    }

    /// Files the task as waiting `seconds` (never ended by a timer for `math.huge`), under a
    /// fresh token, which it returns; `None` for a freed task.
    fn suspend_waiting(&self, state: &mut State, id: TaskId, seconds: f64) -> Option<u32> {
        let now = self.clock.now();
        let deadline = seconds_to_delay(seconds).and_then(|d| Clock::deadline(now, d));
        state.file_wait(id, now, deadline)
    }

    /// `task.wait` was resumed by something other than its timer: drop the timer.
    pub(crate) fn abandon_wait(&self, lua: &Lua) {
        let thread = lua.current_thread();
        let Some(id) = self.state.borrow().tasks.find(&thread) else {
            return;
        };
        self.end_suspension_if(id, |s| matches!(s, Suspension::Wait { .. }));
    }

    /// A task stopped at the end of its time slice is resumed by hand: the scheduler's own
    /// continuation is dropped (rule 12).
    pub(crate) fn take_sliced(&self, thread: &Thread) {
        let Some(id) = self.state.borrow().tasks.find(thread) else {
            return;
        };
        self.end_suspension_if(id, |s| matches!(s, Suspension::Sliced { .. }));
    }

    /// Ends the task's suspension if `is` says it is of the kind in question, then frees the
    /// task if nothing else will resume it.
    fn end_suspension_if(&self, id: TaskId, is: fn(&Suspension) -> bool) {
        {
            let mut state = self.state.borrow_mut();
            if state.tasks.get(id).is_some_and(|slot| is(&slot.suspension)) {
                state.set_suspension(id, Suspension::None);
            }
        }
        self.release_if_idle(id);
    }

    /// A thread resumed by hand blocked in an mlua future: it becomes a task blocked on that
    /// future. The future holds the resumer's waker, so it is polled again on the next cycle
    /// with the thread's own.
    pub(crate) fn adopt_pending(&self, thread: &Thread) -> mlua::Result<()> {
        let id = self.adopt(thread)?;
        let Some(token) = self.next_token(id) else {
            return Ok(());
        };
        self.block_in_mlua_future(id, thread, token, true, None)
    }

    /// A fresh token for the task's next suspension; `None` for a stale id.
    fn next_token(&self, id: TaskId) -> Option<u32> {
        let mut state = self.state.borrow_mut();
        state.tasks.get_mut(id).map(|slot| slot.next_token())
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
        let listed = {
            let mut state = self.state.borrow_mut();
            if !state.set_suspension(id, Suspension::LuaFuture { token }) {
                return Ok(());
            }
            let slot = state.tasks.get_mut(id).expect("checked above");
            std::mem::replace(&mut slot.in_blocked_set, true)
        };
        // A thread that blocks again is in the set already: adding it cost 640 of the 7,500
        // instructions of a pend-once call of an mlua async function (callgrind).
        if !listed {
            // Cloned out first: the call below may run finalizers that come back here.
            let threads = self.blocked_threads.borrow().clone();
            if let Err(error) = threads.raw_set(thread, true) {
                if let Some(slot) = self.state.borrow_mut().tasks.get_mut(id) {
                    slot.in_blocked_set = false;
                }
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
        let id = {
            let mut state = self.state.borrow_mut();
            let Some(id) = state.tasks.find(thread) else {
                return;
            };
            // `task.luau` took the thread out of the set before calling here.
            state.tasks.get_mut(id).expect("just found").in_blocked_set = false;
            id
        };
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
        {
            let mut state = self.state.borrow_mut();
            // SAFETY: the running thread is alive.
            if let Some(id) = unsafe { state.tasks.find_raw(running) } {
                let token = state.tasks.get_mut(id).expect("just found").next_token();
                return Ok(target(id, token));
            }
        }
        let id = self.adopt(&lua.current_thread())?;
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
        let thread = self
            .state
            .borrow()
            .tasks
            .get(id)
            .and_then(|slot| slot.thread());
        // SAFETY: the thread store keeps the thread of an occupied slot alive.
        if !thread.is_some_and(|thread| unsafe { vm::can_yield_raw(thread) }) {
            drop(future);
            self.release_if_idle(id);
            return Err(mlua::Error::runtime(crate::task_lib::CANNOT_YIELD));
        }
        let orphan = {
            let mut state = self.state.borrow_mut();
            let token = target.token;
            if state.set_suspension(id, Suspension::OwnedFuture { token }) {
                state.futures.insert(id.slot(), future);
                None
            } else {
                Some(future)
            }
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
        let task = self.state.borrow().tasks.find(thread);
        if let Some(id) = task {
            self.record(Some(id), TraceEvent::Cancel);
            match self.free_task(id) {
                Some(claims) if claims > 0 => {
                    let outcome = (StoredOutcome::Cancelled, claims);
                    self.state.borrow_mut().outcomes.insert(id, outcome);
                }
                _ => {}
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
