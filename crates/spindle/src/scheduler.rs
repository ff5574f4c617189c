//! The scheduler: who runs next, and when.
//!
//! A cycle resumes the timers that came due and the tasks whose futures woke, then drains the
//! deferred queue (SEMANTICS: a resumption point). Invariants kept here:
//! - a suspension has one token; a wake-up or timer that carries another token, or names a freed
//!   slot's old generation, is stale and is dropped, so no task is resumed twice for one
//!   suspension;
//! - `live_timers` counts the timer entries that will still fire, so a run whose remaining timers
//!   were all cancelled ends at once;
//! - no `RefCell` borrow of the state is held across a call into Lua, which may call back in.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::prelude::LuaThreadStatus as ThreadStatus;
use mlua::{Function, LightUserData, Lua, MultiValue, RegistryKey, Table, Thread, Value};

use crate::args::{pack, ArgStore, ArgsKey};
use crate::async_fn::OwnedFuture;
use crate::clock::Clock;
use crate::error::{Error, Result, TaskError};
use crate::host::{CycleReport, TaskStatus};
use crate::task_lib::Library;
use crate::tasks::{Suspension, TaskId, TaskTable};
use crate::timers::Timers;
use crate::vm;
use crate::waker::{BorrowedWaker, WakeQueue, WakeTarget};

pub(crate) type ErrorHandler = Rc<dyn Fn(&TaskError)>;

/// The value a task is resumed with first when the scheduler ends a suspension it made itself.
/// Plain data: the address of a static, compared by identity.
pub(crate) fn resume_mark() -> LightUserData {
    static MARK: u8 = 0;
    LightUserData(&MARK as *const u8 as *mut std::ffi::c_void)
}

pub(crate) struct Inner {
    state: RefCell<State>,
    args: ArgStore,
    wakes: Arc<WakeQueue>,
    clock: Clock,
    max_defer_depth: u32,
    on_error: ErrorHandler,
    errors: Cell<u64>,
    cycles: Cell<u64>,
    /// Set when the host's `Scheduler` is dropped; the `task` functions then refuse to work.
    closed: Cell<bool>,
    /// Filled by `install_task_library`: the `task` table and the async-function factory.
    lib: RefCell<Option<Library>>,
    lua_fns: LuaFns,
}

/// Standard-library functions taken when the scheduler is built, so that a script that
/// replaces the globals cannot change what the scheduler calls.
struct LuaFns {
    close: Function,
    traceback: Function,
}

impl LuaFns {
    fn capture(lua: &Lua) -> mlua::Result<Self> {
        let globals = lua.globals();
        let coroutine: Table = globals.get("coroutine")?;
        let debug: Table = globals.get("debug")?;
        Ok(LuaFns {
            close: coroutine.get("close")?,
            traceback: debug.get("traceback")?,
        })
    }
}

struct State {
    tasks: TaskTable,
    timers: Timers<TimerEntry>,
    live_timers: usize,
    /// Deferred entries that will still run (the queue may also hold stale ones).
    live_deferred: usize,
    /// Tasks blocked in a Rust future (either kind).
    awaiting: usize,
    deferred: VecDeque<Deferred>,
    futures: HashMap<u32, OwnedFuture>,
    outcomes: HashMap<TaskId, StoredOutcome>,
    /// Scheduler-driven resumptions in progress (they nest through `task.spawn`).
    depth: u32,
    /// The defer level of the deferred task being resumed, 0 outside the drain.
    defer_level: u32,
    draining: bool,
    in_cycle: bool,
}

impl State {
    fn counts(&mut self) -> Counts<'_> {
        Counts {
            live_timers: &mut self.live_timers,
            live_deferred: &mut self.live_deferred,
            awaiting: &mut self.awaiting,
        }
    }
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
}

/// A resumption the host or a script asked for explicitly (`defer`, `delay`).
#[derive(Clone, Copy, Debug)]
struct Resumption {
    /// The stored arguments, if there were any.
    args: Option<ArgsKey>,
    /// The thread was made for this resumption; if something else starts it first, the
    /// resumption is dropped (SEMANTICS rule 12).
    fresh: bool,
}

#[derive(Clone, Copy, Debug)]
struct Deferred {
    task: TaskId,
    level: u32,
    resumption: Resumption,
}

pub(crate) enum StoredOutcome {
    Finished(RegistryKey),
    Failed(TaskError),
    Cancelled,
}

/// What a resumption passes to the thread.
enum Wakeup {
    /// Explicit arguments (from `spawn`, or stored for `defer`/`delay`).
    Args(MultiValue),
    /// A `task.wait` timer: the thread gets the mark and the elapsed seconds.
    Timer(f64),
    /// The mlua future inside the thread woke: resume it to poll again.
    Poll,
    /// The Spindle future the thread waited on finished.
    Settled(mlua::Result<MultiValue>),
}

/// Either something to do now, or a reason to wait.
pub(crate) enum Next {
    Done,
    Busy,
    /// Sleep until woken, or until this instant.
    Sleep(Option<Instant>),
}

/// Converts seconds from Lua into a delay: negative and NaN count as 0, `None` never fires.
/// Rounds up to the next nanosecond, so that no wait ends before the time asked for.
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
    pub(crate) fn new(
        lua: &Lua,
        clock: Clock,
        max_defer_depth: u32,
        on_error: ErrorHandler,
    ) -> mlua::Result<Self> {
        Ok(Inner {
            state: RefCell::new(State {
                tasks: TaskTable::new(lua.create_table()?),
                timers: Timers::default(),
                live_timers: 0,
                live_deferred: 0,
                awaiting: 0,
                deferred: VecDeque::new(),
                futures: HashMap::new(),
                outcomes: HashMap::new(),
                depth: 0,
                defer_level: 0,
                draining: false,
                in_cycle: false,
            }),
            args: ArgStore::new(lua)?,
            wakes: Arc::new(WakeQueue::default()),
            clock,
            max_defer_depth,
            on_error,
            errors: Cell::new(0),
            cycles: Cell::new(0),
            closed: Cell::new(false),
            lib: RefCell::new(None),
            lua_fns: LuaFns::capture(lua)?,
        })
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn wakes(&self) -> &WakeQueue {
        &self.wakes
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

    /// Marks the scheduler as dropped by its host.
    pub(crate) fn close(&self) {
        self.closed.set(true);
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

    pub(crate) fn take_outcome(&self, id: TaskId) -> Option<StoredOutcome> {
        self.state.borrow_mut().outcomes.remove(&id)
    }

    /// The host's spawn: the task's outcome is kept, and since the host is outside any
    /// resumption, returning to it is a resumption point.
    pub(crate) fn host_spawn(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
    ) -> mlua::Result<TaskId> {
        let id = self.adopt_for_host(thread)?;
        self.resume(lua, id, Wakeup::Args(args))?;
        if self.state.borrow().depth == 0 {
            self.drain_deferred(lua)?;
        }
        Ok(id)
    }

    /// The host's cancel, by id. Returns whether the task was still scheduled.
    pub(crate) fn cancel_task(&self, id: TaskId) -> Result<bool> {
        let thread = {
            let state = self.state.borrow();
            match state.tasks.get(id) {
                Some(slot) if slot.running => {
                    return Err(Error::Lua(mlua::Error::runtime(format!(
                        "cannot cancel task {id}: it is running"
                    ))))
                }
                Some(_) => state.tasks.thread(id)?,
                None => return Ok(false),
            }
        };
        match thread.status() {
            ThreadStatus::Running | ThreadStatus::Normal => Err(Error::Lua(mlua::Error::runtime(
                format!("cannot cancel task {id}: it is running or resuming another thread"),
            ))),
            _ => {
                self.cancel(&thread)?;
                Ok(true)
            }
        }
    }
    pub(crate) fn library(self: &Rc<Self>, lua: &Lua) -> mlua::Result<Library> {
        if let Some(lib) = &*self.lib.borrow() {
            return Ok(lib.clone());
        }
        let lib = crate::task_lib::build(lua, self)?;
        *self.lib.borrow_mut() = Some(lib.clone());
        Ok(lib)
    }

    /// Makes a thread dead: it can never be resumed again, and what its stack held is released.
    fn close_thread(&self, thread: &Thread) -> mlua::Result<()> {
        if matches!(thread.status(), ThreadStatus::Finished) {
            return Ok(());
        }
        self.lua_fns.close.call::<MultiValue>(thread).map(|_| ())
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

    fn report(&self, error: TaskError) {
        self.errors.set(self.errors.get() + 1);
        (self.on_error)(&error);
    }

    pub(crate) fn adopt_for_host(&self, thread: &Thread) -> mlua::Result<TaskId> {
        let mut state = self.state.borrow_mut();
        let id = state.tasks.adopt(thread)?;
        if let Some(slot) = state.tasks.get_mut(id) {
            slot.keep_outcome = true;
        }
        Ok(id)
    }

    pub(crate) fn adopt(&self, thread: &Thread) -> mlua::Result<TaskId> {
        self.state.borrow_mut().tasks.adopt(thread)
    }

    /// `task.spawn`: resumes the thread at once as a task.
    pub(crate) fn spawn_thread(
        &self,
        lua: &Lua,
        thread: &Thread,
        args: MultiValue,
    ) -> mlua::Result<TaskId> {
        let id = self.adopt(thread)?;
        self.resume(lua, id, Wakeup::Args(args))?;
        Ok(id)
    }

    pub(crate) fn defer(
        &self,
        lua: &Lua,
        id: TaskId,
        args: MultiValue,
        fresh: bool,
    ) -> mlua::Result<()> {
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
            let traceback = self
                .lua_fns
                .traceback
                .call::<String>(())
                .unwrap_or_default();
            self.report(TaskError::new(
                None,
                format!(
                    "Maximum re-entrancy depth ({}) exceeded calling task.defer",
                    self.max_defer_depth
                ),
                traceback,
            ));
            return Ok(());
        }
        let args = self.args.store(lua, args)?;
        let mut state = self.state.borrow_mut();
        match state.tasks.get_mut(id) {
            Some(slot) => slot.queued += 1,
            None => {
                drop(state);
                self.args.discard(args);
                return Ok(());
            }
        }
        state.live_deferred += 1;
        state.deferred.push_back(Deferred {
            task: id,
            level,
            resumption: Resumption { args, fresh },
        });
        Ok(())
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
        let deadline = delay.and_then(|d| self.clock.now().checked_add(d));
        let Some(deadline) = deadline else {
            // Never fires: nothing to keep, and the thread is not ours unless something else is.
            self.release_if_idle(id);
            return Ok(());
        };
        let args = self.args.store(lua, args)?;
        let mut state = self.state.borrow_mut();
        match state.tasks.get_mut(id) {
            Some(slot) => slot.timers += 1,
            None => {
                drop(state);
                self.args.discard(args);
                return Ok(());
            }
        }
        state.live_timers += 1;
        state.timers.push(
            deadline,
            TimerEntry {
                task: id,
                kind: TimerKind::Resume(Resumption { args, fresh }),
            },
        );
        Ok(())
    }

    /// `task.wait`'s first half: the running thread becomes a task suspended until `delay`.
    pub(crate) fn begin_wait(&self, lua: &Lua, seconds: f64) -> mlua::Result<()> {
        let thread = lua.current_thread();
        if !vm::can_yield(&thread) {
            return Err(mlua::Error::runtime(
                "task.wait can only be called from a task or coroutine (this thread cannot yield)",
            ));
        }
        let now = self.clock.now();
        let deadline = seconds_to_delay(seconds).and_then(|d| now.checked_add(d));
        let mut state = self.state.borrow_mut();
        let id = state.tasks.adopt(&thread)?;
        let state = &mut *state;
        let slot = state.tasks.get_mut(id).expect("adopted just now");
        let token = slot.next_token();
        end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
        slot.suspension = Suspension::Wait {
            token,
            since: now,
            timed: deadline.is_some(),
        };
        if let Some(deadline) = deadline {
            slot.timers += 1;
            state.live_timers += 1;
            state.timers.push(
                deadline,
                TimerEntry {
                    task: id,
                    kind: TimerKind::Wait { token },
                },
            );
        }
        Ok(())
    }

    /// `task.wait` was resumed by something other than its timer: drop the timer.
    pub(crate) fn abandon_wait(&self, lua: &Lua) -> mlua::Result<()> {
        let thread = lua.current_thread();
        let id = match self.state.borrow().tasks.find(&thread) {
            Some(id) => id,
            None => return Ok(()),
        };
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            if let Some(slot) = state.tasks.get_mut(id) {
                if matches!(slot.suspension, Suspension::Wait { .. }) {
                    end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
                    slot.suspension = Suspension::None;
                }
            }
        }
        self.release_if_idle(id);
        Ok(())
    }

    /// A thread resumed by hand blocked in an mlua future: it becomes a task blocked on that
    /// future. Its future holds the resumer's waker, so it is polled again on the next cycle
    /// with the thread's own.
    pub(crate) fn adopt_pending(&self, thread: &Thread) -> mlua::Result<()> {
        let target = {
            let mut state = self.state.borrow_mut();
            let id = state.tasks.adopt(thread)?;
            let state = &mut *state;
            let slot = state.tasks.get_mut(id).expect("adopted just now");
            let token = slot.next_token();
            end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
            slot.suspension = Suspension::LuaFuture { token };
            state.awaiting += 1;
            WakeTarget {
                slot: id.slot(),
                generation: id.generation(),
                token,
            }
        };
        self.wakes.push(target);
        Ok(())
    }

    /// Frees the task's slot if nothing will resume it and the scheduler is not resuming it:
    /// the thread then belongs to whoever holds it.
    fn release_if_idle(&self, id: TaskId) {
        let mut state = self.state.borrow_mut();
        let idle = match state.tasks.get(id) {
            Some(slot) => !slot.running && !slot.has_pending(),
            None => false,
        };
        if idle {
            state.tasks.remove(id);
        }
    }

    /// Polls a Spindle future for the first time from the task that called the async function.
    pub(crate) fn start_owned_future(
        &self,
        lua: &Lua,
        mut future: OwnedFuture,
    ) -> mlua::Result<MultiValue> {
        let thread = lua.current_thread();
        let (id, token) = {
            let mut state = self.state.borrow_mut();
            let id = state.tasks.adopt(&thread)?;
            let token = state
                .tasks
                .get_mut(id)
                .expect("adopted just now")
                .next_token();
            (id, token)
        };
        let target = WakeTarget {
            slot: id.slot(),
            generation: id.generation(),
            token,
        };
        let waker = BorrowedWaker::new(target, Arc::clone(&self.wakes));
        let poll = waker.with_waker(|w| future.as_mut().poll(&mut Context::from_waker(w)));
        match poll {
            Poll::Ready(result) => {
                self.release_if_idle(id);
                settled_values(lua, result)
            }
            Poll::Pending if !vm::can_yield(&thread) => {
                drop(future);
                self.release_if_idle(id);
                Err(mlua::Error::runtime(
                    "an async function was called where the thread cannot yield; call it from a task",
                ))
            }
            Poll::Pending => {
                {
                    let mut state = self.state.borrow_mut();
                    let state = &mut *state;
                    let slot = state
                        .tasks
                        .get_mut(id)
                        .expect("the calling task is running");
                    end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
                    slot.suspension = Suspension::OwnedFuture { token };
                    state.awaiting += 1;
                    state.futures.insert(id.slot(), future);
                }
                if waker.was_woken() {
                    self.wakes.push(target);
                }
                Ok(MultiValue::from_iter([Value::LightUserData(resume_mark())]))
            }
        }
    }

    /// Cancels the thread: its task (if any) is dropped with every pending wake-up and owned
    /// future, and the thread is closed so nothing can resume it again.
    pub(crate) fn cancel(&self, thread: &Thread) -> mlua::Result<()> {
        let future = {
            let mut state = self.state.borrow_mut();
            match state.tasks.find(thread) {
                Some(id) => {
                    let state = &mut *state;
                    let future = state.futures.remove(&id.slot());
                    if let Some(slot) = state.tasks.remove(id) {
                        forget_slot_counts(state.counts(), &slot);
                        if slot.keep_outcome {
                            state.outcomes.insert(id, StoredOutcome::Cancelled);
                        }
                    }
                    future
                }
                None => None,
            }
        };
        // Dropped outside the borrow: a future's destructor may call back into the scheduler.
        drop(future);
        self.compact_timers();
        self.close_thread(thread)
    }

    /// After cancellations, forgets stale timers once they outnumber live ones.
    fn compact_timers(&self) {
        let mut stale_args = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            if state.live_timers == 0 {
                state.timers.drain(|timer| {
                    if let TimerKind::Resume(r) = timer.payload.kind {
                        stale_args.push(r.args);
                    }
                });
            } else if state.timers.len() > 2 * state.live_timers + 64 {
                let tasks = &state.tasks;
                state.timers.retain(|timer| {
                    let live = timer_is_live(tasks, &timer.payload);
                    if let (false, TimerKind::Resume(r)) = (live, timer.payload.kind) {
                        stale_args.push(r.args);
                    }
                    live
                });
            }
        }
        for key in stale_args {
            self.args.discard(key);
        }
    }

    /// The central resumption: resumes the task's thread with `wakeup`, then files the task by
    /// how the thread came back (finished, failed, blocked on a future, suspended by a scheduler
    /// function, or yielded to whoever resumes it).
    fn resume(&self, lua: &Lua, id: TaskId, wakeup: Wakeup) -> mlua::Result<()> {
        let (thread, token) = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let Some(slot) = state.tasks.get_mut(id) else {
                return Ok(());
            };
            // A hand-delivered resumption only re-polls a pending Spindle future; every other
            // resumption ends the current suspension.
            let keeps_owned = matches!(slot.suspension, Suspension::OwnedFuture { .. })
                && !matches!(wakeup, Wakeup::Settled(_));
            if !keeps_owned {
                end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
                slot.suspension = Suspension::None;
            }
            slot.running = true;
            let token = slot.next_token();
            state.depth += 1;
            (state.tasks.thread(id), token)
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(error) => {
                self.finish_resume(id);
                return Err(error);
            }
        };
        let args = match wakeup {
            Wakeup::Args(args) => args,
            Wakeup::Timer(elapsed) => {
                MultiValue::from_iter([Value::LightUserData(resume_mark()), Value::Number(elapsed)])
            }
            Wakeup::Poll => MultiValue::new(),
            Wakeup::Settled(result) => {
                let mut values = settled_values(lua, result)?;
                values.push_front(Value::LightUserData(resume_mark()));
                values
            }
        };
        let target = WakeTarget {
            slot: id.slot(),
            generation: id.generation(),
            token,
        };
        let waker = BorrowedWaker::new(target, Arc::clone(&self.wakes));
        let poll = match thread.clone().into_async::<MultiValue>(args) {
            Ok(mut stream) => waker.with_waker(|w| {
                let mut cx = Context::from_waker(w);
                futures_core::Stream::poll_next(Pin::new(&mut stream), &mut cx)
            }),
            Err(_) => Poll::Ready(None),
        };
        self.finish_resume(id);

        match poll {
            Poll::Pending => {
                {
                    let mut state = self.state.borrow_mut();
                    let state = &mut *state;
                    if let Some(slot) = state.tasks.get_mut(id) {
                        end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
                        slot.suspension = Suspension::LuaFuture { token };
                        state.awaiting += 1;
                    }
                }
                if waker.was_woken() {
                    self.wakes.push(target);
                }
            }
            Poll::Ready(Some(Ok(values))) => {
                if thread.status() == ThreadStatus::Resumable {
                    // Yielded: a scheduler function set a suspension, or it is a plain yield.
                    self.release_if_idle(id);
                } else {
                    self.complete(lua, id, Ok(values))?;
                }
            }
            Poll::Ready(Some(Err(error))) => self.complete(lua, id, Err(error))?,
            Poll::Ready(None) => self.release_if_idle(id),
        }
        Ok(())
    }

    fn finish_resume(&self, id: TaskId) {
        let mut state = self.state.borrow_mut();
        state.depth -= 1;
        if let Some(slot) = state.tasks.get_mut(id) {
            slot.running = false;
        }
    }

    /// The task ended: free it, keep its outcome if the host asked, report an error.
    fn complete(
        &self,
        lua: &Lua,
        id: TaskId,
        result: mlua::Result<MultiValue>,
    ) -> mlua::Result<()> {
        let keep = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            match state.tasks.remove(id) {
                Some(slot) => {
                    forget_slot_counts(state.counts(), &slot);
                    slot.keep_outcome
                }
                None => false,
            }
        };
        let stored = match result {
            Ok(values) if keep => Some(StoredOutcome::Finished(
                lua.create_registry_value(pack(lua, values)?)?,
            )),
            Ok(_) => None,
            Err(error) => {
                let report = TaskError::from_lua(Some(id), &error);
                self.report(report.clone());
                keep.then_some(StoredOutcome::Failed(report))
            }
        };
        if let Some(stored) = stored {
            self.state.borrow_mut().outcomes.insert(id, stored);
        }
        Ok(())
    }

    pub(crate) fn cycle(&self, lua: &Lua) -> Result<CycleReport> {
        {
            let mut state = self.state.borrow_mut();
            if state.in_cycle || state.depth > 0 {
                return Err(Error::Reentrant("Scheduler::cycle"));
            }
            state.in_cycle = true;
        }
        let result = self.cycle_inner(lua);
        self.state.borrow_mut().in_cycle = false;
        result
    }

    fn cycle_inner(&self, lua: &Lua) -> Result<CycleReport> {
        self.cycles.set(self.cycles.get() + 1);
        let errors_before = self.errors.get();
        let mut report = CycleReport::default();
        let now = self.clock.now();

        // Timers due now, taken as one batch: a task that waits 0 while the batch runs goes to
        // the next cycle, not this one.
        let mut due = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            while let Some(timer) = state.timers.pop_due(now) {
                let entry = timer.payload;
                if !timer_is_live(&state.tasks, &entry) {
                    if let TimerKind::Resume(r) = entry.kind {
                        due.push((entry, Some(r.args), timer.deadline));
                    }
                    continue;
                }
                if let TimerKind::Resume(_) = entry.kind {
                    if let Some(slot) = state.tasks.get_mut(entry.task) {
                        slot.timers -= 1;
                        state.live_timers -= 1;
                    }
                }
                due.push((entry, None, timer.deadline));
            }
        }
        for (entry, stale_args, _) in due {
            if let Some(args) = stale_args {
                self.args.discard(args);
                continue;
            }
            match entry.kind {
                TimerKind::Wait { token } => {
                    let since = match self
                        .state
                        .borrow()
                        .tasks
                        .get(entry.task)
                        .map(|s| s.suspension)
                    {
                        Some(Suspension::Wait {
                            token: t, since, ..
                        }) if t == token => since,
                        _ => continue,
                    };
                    let elapsed = now.saturating_sub(since).as_secs_f64();
                    self.resume(lua, entry.task, Wakeup::Timer(elapsed))?;
                }
                TimerKind::Resume(resumption) => {
                    self.resume_requested(lua, entry.task, resumption)?;
                }
            }
            report.timers += 1;
        }

        let mut woken = Vec::new();
        self.wakes.drain_into(&mut woken);
        for target in woken {
            let id = TaskId::new(target.slot, target.generation);
            let suspension = self.state.borrow().tasks.get(id).map(|s| s.suspension);
            match suspension {
                Some(Suspension::LuaFuture { token }) if token == target.token => {
                    if !self.still_blocked_in_mlua_future(id)? {
                        continue;
                    }
                    self.resume(lua, id, Wakeup::Poll)?;
                }
                Some(Suspension::OwnedFuture { token }) if token == target.token => {
                    self.poll_owned_future(lua, id, target)?;
                }
                _ => continue,
            }
            report.wakeups += 1;
        }

        report.deferred = self.drain_deferred(lua)?;
        report.errors = (self.errors.get() - errors_before) as usize;
        self.compact_timers();
        self.trim(lua)?;
        Ok(report)
    }

    /// A task blocked in an mlua future may have been resumed by hand (through a `coroutine.resume`
    /// that the scheduler does not see), finished its future and suspended elsewhere: then its
    /// wake-up is stale, and the task is no longer blocked.
    fn still_blocked_in_mlua_future(&self, id: TaskId) -> mlua::Result<bool> {
        let thread = self.state.borrow().tasks.thread(id)?;
        if vm::has_started(&thread) && vm::is_blocked_in_mlua_future(&thread) {
            return Ok(true);
        }
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            if let Some(slot) = state.tasks.get_mut(id) {
                end_suspension_counts(&mut state.live_timers, &mut state.awaiting, slot);
                slot.suspension = Suspension::None;
            }
        }
        self.release_if_idle(id);
        Ok(false)
    }

    /// Resumes a thread for `defer` or `delay`, unless its resumption went stale.
    fn resume_requested(&self, lua: &Lua, id: TaskId, resumption: Resumption) -> mlua::Result<()> {
        let args = self.args.take(resumption.args)?;
        if resumption.fresh {
            let thread = match self.state.borrow().tasks.get(id) {
                Some(_) => self.state.borrow().tasks.thread(id)?,
                None => return Ok(()),
            };
            if vm::has_started(&thread) {
                // Started by someone else first: this resumption is dropped.
                self.release_if_idle(id);
                return Ok(());
            }
        }
        self.resume(lua, id, Wakeup::Args(args))
    }

    fn poll_owned_future(&self, lua: &Lua, id: TaskId, target: WakeTarget) -> mlua::Result<()> {
        let Some(mut future) = self.state.borrow_mut().futures.remove(&id.slot()) else {
            return Ok(());
        };
        let waker = BorrowedWaker::new(target, Arc::clone(&self.wakes));
        match waker.with_waker(|w| future.as_mut().poll(&mut Context::from_waker(w))) {
            Poll::Pending => {
                let still_waiting = {
                    let state = self.state.borrow();
                    matches!(state.tasks.get(id).map(|s| s.suspension),
                        Some(Suspension::OwnedFuture { token }) if token == target.token)
                };
                if still_waiting {
                    self.state.borrow_mut().futures.insert(id.slot(), future);
                    if waker.was_woken() {
                        self.wakes.push(target);
                    }
                }
                Ok(())
            }
            Poll::Ready(result) => {
                drop(future);
                self.resume(lua, id, Wakeup::Settled(result))
            }
        }
    }

    /// Runs the deferred queue until it is empty, including what is deferred meanwhile.
    /// Returns how many resumptions ran. Does nothing when called inside a resumption.
    fn drain_deferred(&self, lua: &Lua) -> mlua::Result<usize> {
        {
            let mut state = self.state.borrow_mut();
            if state.draining || state.depth > 0 {
                return Ok(0);
            }
            state.draining = true;
        }
        let mut count = 0;
        let result = loop {
            let next = {
                let mut state = self.state.borrow_mut();
                let state = &mut *state;
                match state.deferred.pop_front() {
                    None => break Ok(count),
                    Some(entry) => {
                        let live = match state.tasks.get_mut(entry.task) {
                            Some(slot) => {
                                slot.queued -= 1;
                                state.live_deferred -= 1;
                                true
                            }
                            None => false,
                        };
                        state.defer_level = entry.level;
                        (entry, live)
                    }
                }
            };
            match next {
                (entry, true) => {
                    count += 1;
                    if let Err(error) = self.resume_requested(lua, entry.task, entry.resumption) {
                        break Err(error);
                    }
                }
                (entry, false) => self.args.discard(entry.resumption.args),
            }
        };
        let mut state = self.state.borrow_mut();
        state.draining = false;
        state.defer_level = 0;
        result
    }

    pub(crate) fn has_work(&self) -> bool {
        let state = self.state.borrow();
        state.live_deferred > 0
            || state.live_timers > 0
            || state.awaiting > 0
            || !self.wakes.is_empty()
    }

    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let mut stale_args = Vec::new();
        let deadline = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            loop {
                let live = match state.timers.peek() {
                    None => break None,
                    Some(timer) if timer_is_live(&state.tasks, &timer.payload) => {
                        break Some(timer.deadline)
                    }
                    Some(_) => false,
                };
                debug_assert!(!live);
                if let Some(timer) = state.timers.pop() {
                    if let TimerKind::Resume(r) = timer.payload.kind {
                        stale_args.push(r.args);
                    }
                }
            }
        };
        for key in stale_args {
            self.args.discard(key);
        }
        deadline
    }

    /// Gives back what a burst of tasks left behind, once no task is left: queues, the timer
    /// heap and the task table keep their peak capacity otherwise.
    fn trim(&self, lua: &Lua) -> mlua::Result<()> {
        const KEEP: usize = 1024;
        self.args.trim(lua)?;
        let large = {
            let state = self.state.borrow();
            state.tasks.len() == 0 && state.tasks.capacity() > KEEP
        };
        if !large {
            return Ok(());
        }
        let threads = lua.create_table()?;
        let mut state = self.state.borrow_mut();
        state.tasks.reset(threads);
        if state.timers.len() == 0 {
            state.timers = Timers::default();
        }
        if state.deferred.is_empty() {
            state.deferred = VecDeque::new();
        }
        state.futures.shrink_to_fit();
        Ok(())
    }

    pub(crate) fn next_step(&self) -> Next {
        if !self.has_work() {
            // Only stale timers can be left: forget them.
            self.compact_timers();
            return Next::Done;
        }
        if !self.wakes.is_empty() || self.state.borrow().live_deferred > 0 {
            return Next::Busy;
        }
        match self.next_deadline() {
            Some(deadline) if deadline <= self.clock.now() => Next::Busy,
            Some(deadline) => match self.clock.instant_at(deadline) {
                Some(instant) => Next::Sleep(Some(instant)),
                None => {
                    self.clock.jump_to(deadline);
                    Next::Busy
                }
            },
            None => Next::Sleep(None),
        }
    }

    pub(crate) fn shutdown(&self) -> Result<()> {
        let (threads, futures, args) = {
            let mut state = self.state.borrow_mut();
            if state.depth > 0 || state.in_cycle {
                return Err(Error::Reentrant("Scheduler::shutdown"));
            }
            let state = &mut *state;
            let mut threads = Vec::new();
            for id in state.tasks.ids() {
                if let Ok(thread) = state.tasks.thread(id) {
                    threads.push(thread);
                }
                state.tasks.remove(id);
            }
            let mut args = Vec::new();
            state.timers.drain(|timer| {
                if let TimerKind::Resume(r) = timer.payload.kind {
                    args.push(r.args);
                }
            });
            args.extend(state.deferred.drain(..).map(|d| d.resumption.args));
            state.live_timers = 0;
            state.live_deferred = 0;
            state.awaiting = 0;
            let futures: Vec<_> = state.futures.drain().map(|(_, f)| f).collect();
            (threads, futures, args)
        };
        drop(futures);
        for key in args {
            self.args.discard(key);
        }
        let mut woken = Vec::new();
        self.wakes.drain_into(&mut woken);
        for thread in threads {
            self.close_thread(&thread)?;
        }
        Ok(())
    }
}

/// Whether a timer entry will still act when it surfaces.
fn timer_is_live(tasks: &TaskTable, entry: &TimerEntry) -> bool {
    match (tasks.get(entry.task), entry.kind) {
        (Some(slot), TimerKind::Wait { token }) => {
            matches!(slot.suspension, Suspension::Wait { token: t, .. } if t == token)
        }
        (Some(_), TimerKind::Resume(_)) => true,
        (None, _) => false,
    }
}

/// Updates the global counts for a suspension that is about to end or be replaced.
fn end_suspension_counts(
    live_timers: &mut usize,
    awaiting: &mut usize,
    slot: &mut crate::tasks::Slot,
) {
    match slot.suspension {
        Suspension::Wait { timed: true, .. } => {
            slot.timers -= 1;
            *live_timers -= 1;
        }
        Suspension::LuaFuture { .. } | Suspension::OwnedFuture { .. } => *awaiting -= 1,
        _ => {}
    }
}

/// How a Spindle future's result reaches Lua: `true` and the values, or `false` and the error's
/// message, which `task.luau` raises as a plain string error.
fn settled_values(lua: &Lua, result: mlua::Result<MultiValue>) -> mlua::Result<MultiValue> {
    Ok(match result {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            values
        }
        Err(error) => {
            let message = TaskError::from_lua(None, &error).message;
            MultiValue::from_iter([
                Value::Boolean(false),
                Value::String(lua.create_string(message)?),
            ])
        }
    })
}

/// The counters of `State` that a freed slot settles.
struct Counts<'a> {
    live_timers: &'a mut usize,
    live_deferred: &'a mut usize,
    awaiting: &'a mut usize,
}

/// Updates the global counts for a slot that was freed with everything it had pending.
fn forget_slot_counts(state_counts: Counts<'_>, slot: &crate::tasks::Slot) {
    let Counts {
        live_timers,
        live_deferred,
        awaiting,
    } = state_counts;
    *live_timers -= slot.timers as usize;
    *live_deferred -= slot.queued as usize;
    if slot.suspension.is_awaiting() {
        *awaiting -= 1;
    }
}
