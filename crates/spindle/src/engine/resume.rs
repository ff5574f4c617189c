//! Resuming one task: with what it is owed (arguments, the time it waited, its future's
//! result), and filing it by how its thread comes back. A resumption never fails: whatever goes
//! wrong ends that task and is reported, as an uncaught error in the task would be.
//!
//! A `task.wait` that ends with its timer takes a fast lane (`resume_waiting`), and so do a
//! task whose Spindle future completed (`resume_settled`) and the start of a task the host
//! spawned without keeping its outcome (`start_detached`): the same bookkeeping, with the
//! thread resumed through `lua_resume` rather than mlua's `AsyncThread`.

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::thread::ThreadStatus;
use mlua::{Lua, MultiValue, Thread, Value};

use super::timeline::Begun;
use super::Cause;
use super::{
    memory, resume_mark, settled_values, Driven, Inner, LuaStream, Resumed, Resumption, Suspension,
    TimedWake, Wakeup,
};
use crate::clock::Clock;
use crate::core::{Origin, TaskId};
use crate::error::{Error, Result, TaskError};
use crate::trace::TraceEvent;
use crate::vm::{self, RawResumed, ThreadPtr};
use crate::waker::{BorrowedWaker, WakeTarget};
use crate::watchdog::{self, Overrun, Watch, TIMEOUT_MESSAGE};

/// The end of a scheduler-driven resumption, even one a panic from a Rust callback unwinds
/// through (a host may catch it and go on using the scheduler): undoes what
/// `Core::start_resumption` marked, and when unwinding frees the task, whose thread mlua made
/// dead by raising the panic in it; the host must not be left with a task that nothing will
/// ever end (rule 16).
struct Resuming<'a>(&'a Inner, TaskId);

impl Drop for Resuming<'_> {
    fn drop(&mut self) {
        let Resuming(inner, id) = *self;
        inner.try_core(|core| core.end_resumption(id));
        if std::thread::panicking() {
            inner.free_unwinding(id);
        }
    }
}

impl Resuming<'_> {
    /// Ends the resumption as dropping the guard does, when no panic unwinds, and tells
    /// whether the task is now idle: nothing will resume it, so it may be freed. One borrow of
    /// the state for both saved 30 instructions a wait (callgrind).
    fn finish(self) -> bool {
        let Resuming(inner, id) = *std::mem::ManuallyDrop::new(self);
        inner.core(|core| core.end_resumption(id))
    }
}

/// Frees the task if a panic unwinds through where it stands: a panic that a failed fast-lane
/// resumption carries resumes when its error is taken.
struct FreeIfUnwinding<'a>(&'a Inner, TaskId);

impl Drop for FreeIfUnwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.free_unwinding(self.1);
        }
    }
}

/// Whether the thread yielded the slice mark alone: `task.luau` carried out a slice that ended
/// in a coroutine the task resumed by hand.
fn is_carried_slice(poll: &Poll<Option<mlua::Result<MultiValue>>>, thread: &Thread) -> bool {
    match poll {
        Poll::Ready(Some(Ok(values))) => {
            values.len() == 1
                && thread.status() == ThreadStatus::Resumable
                && matches!(values.front(), Some(Value::LightUserData(mark)) if *mark == vm::slice_mark())
        }
        _ => false,
    }
}

/// How a resumption reaches the thread: through `lua_resume` directly (a raw lane: no mlua
/// handle made, no value converted unless the task blocks in an mlua future or fails), or
/// through mlua's `AsyncThread` (the general path, which any resumption may take).
enum Lane<'a> {
    /// A `task.wait` ended by its timer after `elapsed` seconds, resumed from the running
    /// thread `from`.
    Wait {
        from: ThreadPtr,
        thread: ThreadPtr,
        elapsed: f64,
    },
    /// A Spindle future completed with `values`; `kept` when the host claims the task's
    /// results, which its thread then keeps on its stack if it returns.
    Settled {
        thread: ThreadPtr,
        values: MultiValue,
        kept: bool,
    },
    /// A thread made for a host's spawn that keeps no outcome, started with `args`.
    Start { thread: ThreadPtr, args: MultiValue },
    /// mlua's path, with the thread when the caller has it at hand: fetching it from the store
    /// is 9% of the instructions of 200k spawned tasks each waiting once (callgrind).
    General {
        known: Option<&'a Thread>,
        wakeup: Wakeup,
    },
}

/// How a thread came back from a resumption, whichever lane it took.
enum Returned {
    /// Yielded: a scheduler function set a suspension, or it is a plain yield, with the
    /// values it yielded when the lane has them; or the thread could not be resumed (dead, or
    /// started by someone else and now running).
    Yielded(Option<MultiValue>),
    /// Blocked in an mlua future under this resumption's waker; the thread, and the stream
    /// that polled it, when the lane has them.
    Blocked {
        thread: Option<Thread>,
        woken: bool,
        stream: Option<LuaStream>,
    },
    /// Blocked in an mlua future that the settled lane polled with no waker of ours: poll it
    /// again at once with the task's own, as mlua's path would have polled it. Queued for the
    /// next cycle instead (as the wait lane does, which runs before this cycle's wake-ups), it
    /// would be resumed ahead of futures made before it that woke meanwhile (found by
    /// `tests/it/reference_model.rs`).
    Repoll,
    Ended(mlua::Result<MultiValue>),
    /// Yielded by the watchdog, over its time budget, after running `ran` since it last
    /// yielded of its own accord.
    Overran {
        thread: Thread,
        overrun: Overrun,
        ran: Duration,
    },
}

impl From<mlua::Result<Resumed>> for Returned {
    fn from(resumed: mlua::Result<Resumed>) -> Self {
        match resumed {
            Ok(Resumed::Blocked {
                thread,
                woken,
                stream,
            }) => Returned::Blocked {
                thread: Some(thread),
                woken,
                stream: Some(stream),
            },
            Ok(Resumed::Yielded(values)) => Returned::Yielded(Some(values)),
            Ok(Resumed::NotResumable) => Returned::Yielded(None),
            Ok(Resumed::Finished(values)) => Returned::Ended(Ok(values)),
            Ok(Resumed::Overran {
                thread,
                overrun,
                ran,
            }) => Returned::Overran {
                thread,
                overrun,
                ran,
            },
            Err(error) => Returned::Ended(Err(error)),
        }
    }
}

/// What a lane's resumption gave, before it is put in the general path's terms.
enum Came {
    /// From `lua_resume`, of this thread, on this lane.
    Raw(ThreadPtr, RawResumed, RawLane),
    Back(Returned),
}

/// Which raw lane resumed a thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawLane {
    Wait,
    Start,
    /// `kept` when the thread keeps its results on its stack if it returns.
    Settled {
        kept: bool,
    },
}

impl Inner {
    /// Resumes the task's thread with `wakeup`, then files the task by how the thread came
    /// back. Never fails: a failure ends the task and is reported.
    pub(super) fn resume(&self, lua: &Lua, id: TaskId, wakeup: Wakeup) {
        self.resume_known(lua, id, None, wakeup)
    }

    /// `resume`, given the task's thread when the caller has it at hand.
    pub(super) fn resume_known(
        &self,
        lua: &Lua,
        id: TaskId,
        known: Option<&Thread>,
        mut wakeup: Wakeup,
    ) {
        let settles = matches!(wakeup, Wakeup::Settled(_));
        let started = self.core(|core| {
            let suspension = core.task(id)?.suspension();
            // A hand-delivered resumption only re-polls a pending Spindle future; every other
            // resumption ends the current suspension.
            let keeps_owned = matches!(suspension, Suspension::OwnedFuture { .. }) && !settles;
            let token = core.start_resumption(id, !keeps_owned)?;
            Some((token, suspension))
        });
        let Some((token, suspension)) = started else {
            return;
        };
        // Code stopped by the watchdog goes on where it was: Luau passes it no values, and
        // its timeout goes on counting.
        if let Suspension::Sliced { ran, .. } = suspension {
            wakeup = Wakeup::Continue { ran };
        }
        self.resume_started(lua, id, token, Lane::General { known, wakeup }, None);
    }

    /// Ends a `task.wait` with its timer, which surfaced at `now` for the wait under `token`;
    /// returns whether it ran (false when the wait ended otherwise). It takes the wait lane
    /// unless the watchdog has a budget (it watches each resumption), the host claims the
    /// task's results (they must be converted), or the thread is not suspended in a yield
    /// (the general path reports why). `from` is the running thread.
    pub(super) fn resume_waiting(
        &self,
        lua: &Lua,
        from: ThreadPtr,
        id: TaskId,
        token: u32,
        now: Duration,
    ) -> bool {
        let raw_lane = self.raw_lanes();
        let wake = self.core(|core| {
            core.start_timed_wake(id, token, |thread| {
                // SAFETY: the thread store keeps the thread of an occupied slot alive.
                raw_lane && unsafe { vm::is_suspended_in_yield(thread) }
            })
        });
        let elapsed = |since: Duration| now.saturating_sub(since).as_secs_f64();
        match wake {
            TimedWake::Stale => return false,
            TimedWake::Full { since } => self.resume(lua, id, Wakeup::Timer(elapsed(since))),
            TimedWake::Raw {
                thread,
                since,
                token,
            } => {
                let elapsed = elapsed(since);
                let lane = Lane::Wait {
                    from,
                    thread,
                    elapsed,
                };
                self.resume_started(lua, id, token, lane, None);
            }
        }
        true
    }

    /// Starts the thread of a task the host spawned without keeping its outcome, made for
    /// the spawn. It takes the start lane, where the arguments go onto the new thread's stack
    /// and `lua_resume` starts it (mlua's `AsyncThread` and its stream cost about a third of
    /// such a task's instructions), unless the watchdog has a budget, the host asked for the
    /// general path, a resumption is under way (the general path reports Luau's refusal to
    /// nest resumptions too deep as the script's error), or there are more arguments than the
    /// new thread has room for.
    pub(crate) fn start_detached(&self, lua: &Lua, id: TaskId, thread: &Thread, args: MultiValue) {
        let ptr = ThreadPtr::of(thread);
        // SAFETY: the handle keeps the thread alive; it was made for this spawn and not
        // resumed since (`host_spawn`'s `fresh`), and the check only reads its state.
        let lane = self.raw_lanes() && unsafe { vm::can_start_with(ptr, args.len()) };
        let token = lane
            .then(|| {
                self.core(|core| match core.is_resuming() {
                    true => None,
                    false => core.start_resumption(id, true),
                })
            })
            .flatten();
        match token {
            Some(token) => {
                let lane = Lane::Start { thread: ptr, args };
                self.resume_started(lua, id, token, lane, None);
            }
            None => self.resume_known(lua, id, Some(thread), Wakeup::Args(args)),
        }
    }

    /// Ends a task's wait on a Spindle future that completed with `values`. It takes the
    /// settled lane, where the values go onto the thread's stack behind the mark, unless the
    /// watchdog has a budget or the thread cannot take the resumption (the general path
    /// reports why). A failure takes the general path: it is rare, and carries a message to
    /// make.
    fn resume_settled(&self, lua: &Lua, id: TaskId, values: MultiValue) {
        let raw_lane = self.raw_lanes();
        let candidate =
            match self.core(|core| core.task(id).map(|slot| (slot.thread(), slot.claims()))) {
                None => return,
                Some(_) if !raw_lane => None,
                Some((thread, claims)) => thread.map(|thread| (thread, claims > 0)),
            };
        // Checked outside the core: growing a stack can raise an out-of-memory error.
        // SAFETY: the thread store keeps the thread of an occupied slot alive.
        let candidate =
            candidate.filter(|&(thread, _)| unsafe { vm::can_resume_with_wakeup(thread) });
        let lane = candidate.and_then(|(thread, kept)| {
            let token = self.core(|core| core.start_resumption(id, true))?;
            Some((thread, kept, token))
        });
        match lane {
            Some((thread, kept, token)) => {
                let lane = Lane::Settled {
                    thread,
                    values,
                    kept,
                };
                self.resume_started(lua, id, token, lane, None)
            }
            None => self.resume(lua, id, Wakeup::Settled(Ok(values))),
        }
    }

    /// The one resumption, whatever the lane: the core started it under `token` (the task is
    /// marked running, one level deeper). Records it, resumes the thread, ends the resumption
    /// (even if a panic from a Rust callback unwinds through it: `Resuming`), and files the
    /// task by how its thread came back, or, for a resumption the host drives (`driven`),
    /// puts there what it gave. Inlined into each start: as a call of its own, filing cost
    /// wait_cycles 40 instructions a wait (callgrind); the scheduler's own starts pass no
    /// `driven`, so the branch goes with the inlining.
    #[inline(always)]
    fn resume_started(
        &self,
        lua: &Lua,
        id: TaskId,
        token: u32,
        lane: Lane<'_>,
        driven: Option<&Cell<Option<Driven>>>,
    ) {
        self.record(Some(id), crate::trace::TraceEvent::Resume);
        let span = match self.timeline.is_on() {
            true => self.begin_span(id, &lane),
            false => None,
        };
        let resuming = Resuming(self, id);
        let resumed = match lane {
            Lane::Wait {
                from,
                thread,
                elapsed,
            } => {
                // SAFETY: the slot is occupied and marked running, so nothing frees its
                // thread meanwhile; it is suspended in `wait` (its suspension says so), which
                // leaves room for the wake-up, and no Lua ran since `start_timed_wake` checked
                // its status.
                let resumed = unsafe { vm::resume_from_wait(from, thread, elapsed) };
                Came::Raw(thread, resumed, RawLane::Wait)
            }
            Lane::Settled {
                thread,
                values,
                kept,
            } => {
                // SAFETY: the slot is occupied and marked running, so nothing frees its
                // thread meanwhile; `can_resume_with_wakeup` was checked, with no Lua run
                // since.
                let resumed =
                    unsafe { vm::resume_with_values(lua, thread, resume_mark(), &values, kept) };
                drop(values);
                match resumed {
                    Ok(resumed) => Came::Raw(thread, resumed, RawLane::Settled { kept }),
                    Err(error) => Came::Back(Returned::Ended(Err(error))),
                }
            }
            Lane::Start { thread, args } => {
                // SAFETY: the slot is occupied and marked running, so nothing frees its
                // thread meanwhile; `can_start_with` was checked, with no Lua run since.
                let resumed = unsafe { vm::start_with_values(lua, thread, &args) };
                drop(args);
                match resumed {
                    Ok(resumed) => Came::Raw(thread, resumed, RawLane::Start),
                    Err(error) => Came::Back(Returned::Ended(Err(error))),
                }
            }
            Lane::General { known, wakeup } => {
                Came::Back(self.resume_thread(lua, id, known, token, wakeup).into())
            }
        };
        let idle = resuming.finish();
        if let Some(span) = span {
            self.timeline.end(span);
        }
        let returned = match resumed {
            Came::Raw(thread, resumed, lane) => {
                self.raw_returned(lua, id, thread, resumed, lane, idle)
            }
            Came::Back(returned) => returned,
        };
        match driven {
            None => self.file(lua, id, token, returned, idle),
            Some(out) => out.set(Some(self.file_driven(lua, id, token, returned, idle))),
        }
        self.after_resumption(lua, id);
    }

    /// What follows every resumption once its task is filed.
    #[inline(always)]
    fn after_resumption(&self, lua: &Lua, id: TaskId) {
        // A task of a script the host ended while it ran is cancelled once it has yielded.
        if self.any_doomed.get() {
            self.settle_doomed(lua, Some(id));
        }
        if self.closed.get() {
            // The host's last handle was dropped during the resumption (from a Rust function
            // the task called, an error handler or the end hook), where its shutdown was
            // refused: the run ends once the outermost resumption is over, or the other tasks'
            // futures, which may hold the `Lua`, would live for ever.
            let _ = self.shutdown(lua);
        }
    }

    /// Begins the timeline's span of a resumption on `lane`, with the cause it tells.
    #[cold]
    fn begin_span(&self, id: TaskId, lane: &Lane<'_>) -> Option<Begun> {
        let cause = match lane {
            Lane::Wait { .. } => Cause::Timer,
            Lane::Settled { .. } => Cause::Future,
            Lane::Start { .. } => self.timeline.cause_with_args(id),
            Lane::General { wakeup, .. } => match wakeup {
                Wakeup::Args(_) => self.timeline.cause_with_args(id),
                Wakeup::Timer(_) => Cause::Timer,
                Wakeup::Poll(_) | Wakeup::Settled(_) => Cause::Future,
                Wakeup::Continue { .. } => Cause::Slice,
            },
        };
        let site = self.creation_site(id);
        let (clock, cycle) = (self.clock.now(), self.cycles.get());
        self.timeline.begin(id, cause, clock, cycle, site)
    }

    /// Ends the resumption under `token` of a task whose thread came back from `lua_resume`
    /// as `resumed` (a signal handler's call that became a task while it ran,
    /// `signal_call.rs`), and files it as the wait lane files its tasks.
    pub(super) fn finish_raw_resumption(
        &self,
        lua: &Lua,
        id: TaskId,
        token: u32,
        thread: ThreadPtr,
        resumed: RawResumed,
    ) {
        let idle = self.core(|core| core.end_resumption(id));
        let returned = self.raw_returned(lua, id, thread, resumed, RawLane::Wait, idle);
        self.file(lua, id, token, returned, idle);
        self.after_resumption(lua, id);
    }

    /// How a thread came back from a raw lane, in the general path's terms; `idle` when
    /// nothing will resume the task.
    #[inline(always)]
    fn raw_returned(
        &self,
        lua: &Lua,
        id: TaskId,
        thread: ThreadPtr,
        resumed: RawResumed,
        lane: RawLane,
        idle: bool,
    ) -> Returned {
        match resumed {
            RawResumed::Yielded { pending: false } if lane == (RawLane::Settled { kept: true }) => {
                // SAFETY: the thread just yielded the values, alone on its stack; its slot,
                // still occupied, keeps it alive, and taking or dropping them runs no Lua.
                unsafe {
                    if idle {
                        // A plain yield of a task the host claims: the host reads the values.
                        Returned::Yielded(vm::take_results(lua, thread).ok())
                    } else {
                        vm::drop_results(thread);
                        Returned::Yielded(None)
                    }
                }
            }
            RawResumed::Yielded { pending: false } => Returned::Yielded(None),
            // The wait lane runs before this cycle's wake-ups: the poll is queued for them.
            RawResumed::Yielded { pending: true } if lane == RawLane::Wait => Returned::Blocked {
                thread: None,
                woken: true,
                stream: None,
            },
            RawResumed::Yielded { pending: true } => Returned::Repoll,
            RawResumed::Finished if lane == (RawLane::Settled { kept: true }) => {
                // SAFETY: the thread just returned with its results kept; its slot, still
                // occupied, keeps it alive until `complete` frees the slot, and taking the
                // results runs no Lua (it may allocate, and Luau's collector runs none).
                Returned::Ended(unsafe { vm::take_results(lua, thread) })
            }
            RawResumed::Finished => Returned::Ended(Ok(MultiValue::new())),
            RawResumed::Failed(status) => {
                // A Rust panic carried by the error resumes from here.
                let _dead = FreeIfUnwinding(self, id);
                // SAFETY: the thread just failed with `status` and no Lua ran since; its slot,
                // still occupied, keeps it alive. `take_resume_error` holds a handle on it
                // before it runs Lua (a `__tostring`), which may cancel the task and free it.
                Returned::Ended(Err(unsafe { vm::take_resume_error(lua, thread, status) }))
            }
        }
    }

    /// Files the task by how its thread came back from the resumption under `token`, after
    /// [`Resuming::finish`] said whether it is `idle`.
    #[inline(always)]
    fn file(&self, lua: &Lua, id: TaskId, token: u32, returned: Returned, idle: bool) {
        match returned {
            Returned::Yielded(values) => {
                if idle {
                    self.release(id, values.map(|values| (lua, values)));
                }
            }
            Returned::Blocked {
                thread,
                woken,
                stream,
            } => {
                let thread = match thread {
                    Some(thread) => Ok(thread),
                    None => self.threads.get(id.slot()),
                };
                let blocked = thread.and_then(|thread| {
                    self.block_in_mlua_future(id, &thread, token, woken, stream)
                });
                if let Err(error) = blocked {
                    self.complete(lua, id, Err(error));
                }
            }
            Returned::Repoll => match self.threads.get(id.slot()) {
                Ok(handle) => self.resume_known(lua, id, Some(&handle), Wakeup::Poll(None)),
                Err(error) => self.complete(lua, id, Err(error)),
            },
            Returned::Ended(result) => self.complete(lua, id, result),
            Returned::Overran {
                thread,
                overrun,
                ran,
            } => self.overran(lua, id, thread, overrun, ran),
        }
    }

    /// The watchdog stopped the task, which has run for `ran` since it last yielded of its own
    /// accord: queue it behind the others, or end it.
    fn overran(&self, lua: &Lua, id: TaskId, thread: Thread, overrun: Overrun, ran: Duration) {
        match overrun {
            Overrun::Sliced => {
                // Under a virtual clock a spinning task waits for the next timer: time only
                // moves when nothing is ready, and the task it spins for may be that timer's.
                let now = self.clock.now();
                let at = match self.clock {
                    Clock::Virtual(_) => self.next_deadline().map_or(now, |next| next.max(now)),
                    _ => now,
                };
                let queued = self.core(|core| core.file_sliced(id, ran, at));
                let marked = queued && self.sliced.raw_set(&thread, true).is_ok();
                if marked {
                    vm::set_sliced_hint(&thread);
                }
                if queued && !marked {
                    // Without the mark a hand resume would pass values into the stopped code.
                    self.end_task(
                        lua,
                        id,
                        &thread,
                        "could not queue a task at the end of its time slice".into(),
                    );
                }
            }
            Overrun::TimedOut => {
                self.end_task(lua, id, &thread, TIMEOUT_MESSAGE.to_owned());
            }
        }
    }

    /// Ends a task suspended in the middle of its code with `message` and the thread's
    /// traceback, as if it had raised the error, and closes its thread.
    fn end_task(&self, lua: &Lua, id: TaskId, thread: &Thread, message: String) {
        let error = self.stop_thread(lua, id, thread, &message);
        self.complete(lua, id, Err(error));
    }

    /// Closes a thread suspended in the middle of its code, and returns the error it ends
    /// with: `message` with the thread's traceback.
    fn stop_thread(&self, lua: &Lua, id: TaskId, thread: &Thread, message: &str) -> mlua::Error {
        // As every other error's traceback is written (`luaL_traceback`).
        let traceback = vm::traceback(lua, thread).unwrap_or_default();
        // Closed before the error is reported, so that the handler sees a dead task, and Lua it
        // runs cannot resume the stopped code.
        if let Err(error) = self.close_thread(lua, thread) {
            self.report(TaskError::from_lua(Some(id), &error));
        }
        mlua::Error::RuntimeError(vm::with_traceback(message, &traceback))
    }

    /// Runs a thread that is no task once, for the host ([`Scheduler::resume`]): it is a task
    /// for the length of the resumption (`current_task`, the watchdog, the memory limit), then
    /// gives back what it did. A thread that waits on the scheduler stays its task.
    ///
    /// [`Scheduler::resume`]: crate::Scheduler::resume
    pub(crate) fn drive(&self, lua: &Lua, thread: &Thread, args: MultiValue) -> Result<Driven> {
        self.ensure_open()?;
        if !vm::is_coroutine_of(lua, thread) {
            return Err(Error::NotACoroutine);
        }
        let status = thread.status();
        if status != ThreadStatus::Resumable {
            return Err(Error::NotResumable(status));
        }
        if let Some(id) = self.find(thread) {
            return Err(Error::AlreadyScheduled(id));
        }
        // A new task even for a released task's thread: the host drives it now, and the
        // handle on the released task keeps its outcome.
        let id = self.adopt_new(thread, Origin::Host)?;
        let Some(token) = self.core(|core| core.start_resumption(id, true)) else {
            return Err(Error::Lua(mlua::Error::runtime(
                "the thread's task ended before it could be resumed",
            )));
        };
        self.timeline.hint(id, Cause::Resume);
        let out = Cell::new(None);
        let lane = Lane::General {
            known: Some(thread),
            wakeup: Wakeup::Args(args),
        };
        self.resume_started(lua, id, token, lane, Some(&out));
        // Returning to the host is a resumption point, as after its `spawn`.
        if !self.core(|core| core.is_resuming()) {
            self.drain_deferred(lua);
        }
        out.take()
            .ok_or_else(|| Error::Lua(mlua::Error::runtime("the resumption gave nothing back")))
    }

    /// What a resumption the host drives gave: a plain yield or an end goes back to the host
    /// (the task is freed, and its error goes to the host alone, not to the error handler nor
    /// the end hook); a thread that waits on the scheduler is filed as any task, and stays one.
    fn file_driven(
        &self,
        lua: &Lua,
        id: TaskId,
        token: u32,
        returned: Returned,
        idle: bool,
    ) -> Driven {
        let ended = |result: mlua::Result<MultiValue>| {
            // Rule 23: a thread that ran out of memory gives it back before anything else runs.
            let _reclaim = memory::Reclaim::after(self, lua, id, &result);
            let event = match result {
                Ok(_) => TraceEvent::Finish,
                Err(_) => TraceEvent::Fail,
            };
            self.record(Some(id), event);
            self.free_task(id);
            match result {
                Ok(values) => Driven::Finished(values),
                Err(error) => Driven::Failed(TaskError::from_lua(Some(id), &error)),
            }
        };
        match returned {
            Returned::Yielded(values) if idle => {
                self.free_task(id);
                Driven::Yielded(values.unwrap_or_default())
            }
            Returned::Ended(result) => ended(result),
            Returned::Overran {
                thread,
                overrun: Overrun::TimedOut,
                ..
            } => {
                let error = self.stop_thread(lua, id, &thread, TIMEOUT_MESSAGE);
                ended(Err(error))
            }
            Returned::Yielded(values) if self.core(|core| core.task(id).is_none()) => {
                // Its task was cancelled while it ran (`task.cancel` of a thread it resumed by
                // hand, which then went on to yield to it): the yield is still the host's.
                Driven::Yielded(values.unwrap_or_default())
            }
            returned => {
                // It waits on the scheduler (a `task.wait`, a future, its own deferral, the end
                // of its time slice): it is a task from now on. If filing it fails (no
                // memory), its error goes to the error handler, as any task's.
                self.file(lua, id, token, returned, idle);
                Driven::Pending(id)
            }
        }
    }

    /// The Lua half of `resume`: no state borrow is held here.
    pub(super) fn resume_thread(
        &self,
        lua: &Lua,
        id: TaskId,
        known: Option<&Thread>,
        token: u32,
        wakeup: Wakeup,
    ) -> mlua::Result<Resumed> {
        let fetched;
        let thread = match known {
            Some(thread) => thread,
            None => {
                fetched = self.threads.get(id.slot())?;
                &fetched
            }
        };
        let ran_before = match wakeup {
            Wakeup::Continue { ran } => {
                self.sliced.raw_remove(thread)?;
                ran
            }
            // A coroutine whose slice another thread carries (`task.luau`) is taken over by
            // `task.spawn`, `defer` or `delay`, as by a hand resume: the carrier must not resume
            // it again, nor a later hand resume take it for one stopped by a slice. Only a
            // thread that has run can be one (a new one costs no table access), and a failure
            // (at the memory limit) leaves the mark: the task's start must not fail for it.
            // Only under time slices: nothing else makes such marks (about 880 instructions a
            // start of an existing thread, `Signal:Wait` wake-ups among them, callgrind).
            Wakeup::Args(_) if self.watchdog.slice.is_some() && vm::has_started(thread) => {
                let _ = self.sliced.raw_remove(thread);
                Duration::ZERO
            }
            _ => Duration::ZERO,
        };
        let args = match wakeup {
            // Polled again through the stream that polled it last: no new one to make.
            Wakeup::Poll(Some(stream)) => Ok(stream),
            Wakeup::Args(args) => Err(args),
            Wakeup::Timer(elapsed) => Err(MultiValue::from_iter([
                Value::LightUserData(resume_mark()),
                Value::Number(elapsed),
            ])),
            Wakeup::Poll(None) | Wakeup::Continue { .. } => Err(MultiValue::new()),
            Wakeup::Settled(result) => Err(settled_values(lua, result)?),
        };
        let mut stream = match args {
            Ok(stream) => stream,
            Err(args) => match thread.clone().into_async::<MultiValue>(args) {
                Ok(stream) => stream,
                Err(mlua::Error::CoroutineUnresumable) => return Ok(Resumed::NotResumable),
                Err(error) => return Err(error),
            },
        };
        let target = WakeTarget {
            slot: id.slot(),
            generation: id.generation(),
            token,
        };
        let waker = BorrowedWaker::new(target, &self.wakes);
        let mut poll_once = || {
            waker.with_waker(|w| {
                futures_core::Stream::poll_next(Pin::new(&mut stream), &mut Context::from_waker(w))
            })
        };
        let mut budget = self.watchdog();
        let poll = if budget.is_unlimited() {
            poll_once()
        } else {
            watchdog::keep_installed(lua);
            let started = Instant::now();
            loop {
                match Watch::run(thread, budget, started, ran_before, &mut poll_once) {
                    (_, Some(Overrun::Sliced), _) if self.about_to_yield(id, thread) => {
                        // Stopped between asking for its wake-up and yielding for it: slicing
                        // it there would lose the wake-up, so let it reach its yield.
                        budget.slice = None;
                    }
                    (_, Some(overrun), ran) => {
                        return Ok(Resumed::Overran {
                            thread: thread.clone(),
                            overrun,
                            ran,
                        })
                    }
                    (poll, None, ran) if is_carried_slice(&poll, thread) => {
                        // A slice that ended in a coroutine it resumed by hand, carried out.
                        return Ok(Resumed::Overran {
                            thread: thread.clone(),
                            overrun: Overrun::Sliced,
                            ran,
                        });
                    }
                    (poll, None, _) => break poll,
                }
            }
        };
        match poll {
            Poll::Pending => Ok(Resumed::Blocked {
                woken: waker.was_woken(),
                thread: thread.clone(),
                stream,
            }),
            Poll::Ready(Some(Ok(values))) if thread.status() == ThreadStatus::Resumable => {
                Ok(Resumed::Yielded(values))
            }
            Poll::Ready(Some(Ok(values))) => Ok(Resumed::Finished(values)),
            Poll::Ready(Some(Err(error))) if refused_before_running(thread, &error) => {
                Err(refused_start(lua, &error))
            }
            Poll::Ready(Some(Err(error))) => Err(vm::with_thread_traceback(lua, thread, error)),
            Poll::Ready(None) => Ok(Resumed::NotResumable),
        }
    }

    /// Whether the task, stopped by the watchdog, has already arranged how it will be resumed
    /// (a `task.wait`, a future, its own `delay`) and is only on its way to yield for it, or is
    /// inside mlua's polling loop, whose future holds this resumption's waker.
    fn about_to_yield(&self, id: TaskId, thread: &Thread) -> bool {
        let pending = self.core(|core| core.task(id).is_some_and(|slot| slot.has_pending()));
        pending || vm::is_in_mlua_poll_loop(thread)
    }

    /// Resumes a thread for `defer` or `delay`, unless its resumption went stale.
    pub(super) fn resume_requested(&self, lua: &Lua, id: TaskId, resumption: Resumption) {
        let args = match self.values.take(resumption.args) {
            Ok(args) => args,
            Err(error) => return self.complete(lua, id, Err(error)),
        };
        if resumption.fresh {
            // The slot's thread, rather than a handle from the store: fetching one cost
            // defer_flat 750 instructions a deferral (callgrind).
            let Some(thread) = self.core(|core| core.task(id).map(|slot| slot.thread())) else {
                return;
            };
            // SAFETY: the thread store keeps the thread of an occupied slot alive; reading its
            // status runs nothing.
            if thread.is_some_and(|thread| unsafe { vm::has_started_raw(thread) }) {
                // Started by someone else first: this resumption is dropped.
                return self.release_if_idle(id);
            }
        }
        self.resume(lua, id, Wakeup::Args(args));
    }

    pub(super) fn poll_owned_future(&self, lua: &Lua, id: TaskId, target: WakeTarget) {
        let Some(mut future) = self.futures.borrow_mut().remove(id.slot()) else {
            return;
        };
        let waker = BorrowedWaker::new(target, &self.wakes);
        match waker.with_waker(|w| future.as_mut().poll(&mut Context::from_waker(w))) {
            Poll::Pending => {
                let waiting = self.core(|core| {
                    matches!(core.task(id).map(|slot| slot.suspension()),
                        Some(Suspension::OwnedFuture { token }) if token == target.token)
                });
                let still_waiting = if waiting {
                    self.futures.borrow_mut().insert(id.slot(), future);
                    None
                } else {
                    Some(future)
                };
                // A future whose task went away meanwhile is dropped here, outside the borrow.
                drop(still_waiting);
                if waker.was_woken() {
                    self.wake_self(target);
                }
            }
            Poll::Ready(result) => {
                drop(future);
                match result {
                    Ok(values) => self.resume_settled(lua, id, values),
                    Err(error) => self.resume(lua, id, Wakeup::Settled(Err(error))),
                }
            }
        }
    }
}

/// Whether the resumption that failed with `error` was refused before the thread ran. A new
/// thread and a failed one that Lua code reset while its error was formatted look the same;
/// only Luau's refusal, raised with no position, tells them apart.
fn refused_before_running(thread: &Thread, error: &mlua::Error) -> bool {
    vm::failed_before_running(thread)
        && (vm::has_started(thread)
            || TaskError::from_lua(None, error).message == REFUSED_FOR_C_STACK)
}

/// Luau's refusal to resume a thread from a resumer nested too deep.
const REFUSED_FOR_C_STACK: &str = "C stack overflow";

/// The error of a resumption that Luau refused before the thread ran: "C stack overflow" when
/// the resumer is nested about 200 resumptions deep (`task.spawn` inside `task.spawn`, an
/// immediate handler firing its own signal). The thread's own traceback is empty, so the error
/// names the script line that asked for the resumption, with the resumer's traceback: read
/// from the stack without calling Lua, as no call can be made there.
fn refused_start(lua: &Lua, error: &mlua::Error) -> mlua::Error {
    let message = TaskError::from_lua(None, error).message;
    let frames = vm::running_frames(lua);
    let message = match frames.iter().find(|frame| frame.is_script()) {
        Some(at) => format!("{}:{}: {message}", at.source, at.line),
        None => message,
    };
    let mut text = format!("{message}\nstack traceback:");
    for frame in &frames {
        text.push_str(&format!("\n\t{frame}"));
    }
    mlua::Error::RuntimeError(text)
}
