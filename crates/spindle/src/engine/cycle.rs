//! Cycles: the due timers as one batch, then the futures that woke, then the deferred queue
//! until it is empty (a resumption point); and what a driver should do between cycles.
//! Stale entries (of freed tasks, or of suspensions that ended) are dropped as they surface,
//! and compacted away once they outnumber the live ones.

use std::time::{Duration, Instant};

use mlua::Lua;

use super::Cause;
use super::{
    CycleReport, Inner, Next, Restore, Suspension, TaskEnd, TimerEntry, TimerKind, Wakeup,
};
use crate::clock::Clock;
use crate::error::{Error, Result};

use crate::vm::ThreadPtr;
use crate::waker::WakeTarget;

/// The longest a driver sleeps towards a deadline that `Instant` cannot hold.
const LONGEST_SLEEP: Duration = Duration::from_secs(24 * 60 * 60);

impl Inner {
    pub(crate) fn cycle(&self, lua: &Lua) -> Result<CycleReport> {
        if !self.core(|core| core.enter_cycle()) {
            return Err(Error::Reentrant("Scheduler::cycle"));
        }
        // Leaves the cycle even if a panic from a Rust callback unwinds through it.
        let _cycle = Restore(self, |core| core.leave_cycle());
        Ok(self.cycle_inner(lua))
    }

    /// Refuses to start a driver (`name`) from inside a cycle or a resumption, as `cycle` would.
    pub(crate) fn check_not_running(&self, name: &'static str) -> Result<()> {
        if self.core(|core| core.in_cycle() || core.is_resuming()) {
            return Err(Error::Reentrant(name));
        }
        Ok(())
    }

    pub(super) fn cycle_inner(&self, lua: &Lua) -> CycleReport {
        self.cycles.set(self.cycles.get() + 1);
        self.settle_doomed(lua, None);
        let errors_before = self.errors.get();
        // Ready tasks a frame budget carried over run first, in order.
        let (carried_timers, carried_wakeups) = self.run_carried(lua);
        let report = CycleReport {
            timers: carried_timers + self.run_due_timers(lua),
            wakeups: carried_wakeups + self.run_wakeups(lua),
            deferred: self.drain_deferred(lua),
            errors: (self.errors.get() - errors_before) as usize,
        };
        self.compact_timers();
        self.trim(lua);
        self.core(|core| core.check_counts());
        report
    }

    /// Resumes the timers due now, taken as one batch: a task that waits 0 while the batch runs
    /// goes to the next cycle, not this one.
    pub(super) fn run_due_timers(&self, lua: &Lua) -> usize {
        // No timer, nothing due: reading the clock cost 90 instructions a cycle (callgrind).
        if !self.core(|core| core.has_timers()) {
            return 0;
        }
        self.queue_due_timers(self.clock.now());
        self.run_carried(lua).0
    }

    /// Resumes the task of a timer taken off the heap, at time `now`, from the running thread
    /// `from`. Returns whether it ran (an entry whose suspension ended meanwhile does not).
    pub(super) fn fire_timer(
        &self,
        lua: &Lua,
        from: ThreadPtr,
        entry: TimerEntry,
        now: Duration,
    ) -> bool {
        match entry.kind {
            TimerKind::Wait { token } => {
                return self.resume_waiting(lua, from, entry.task, token, now)
            }
            TimerKind::Continue { .. } => {
                // Still live: an earlier entry of the batch may have resumed the task.
                if !self.core(|core| core.timer_is_live(&entry)) {
                    return false;
                }
                // `resume` takes the run time so far from the `Sliced` suspension.
                let ran = Duration::ZERO;
                self.resume(lua, entry.task, Wakeup::Continue { ran });
            }
            TimerKind::Resume(resumption) => {
                if !self.core(|core| core.fire_resume_timer(entry.task)) {
                    self.values.discard(resumption.args);
                    return false;
                }
                self.timeline.hint(entry.task, Cause::Delay);
                self.resume_requested(lua, entry.task, resumption);
            }
        }
        true
    }

    /// Resumes the tasks whose futures woke since the last cycle.
    pub(super) fn run_wakeups(&self, lua: &Lua) -> usize {
        self.run_wake_batch(lua)
    }

    /// Resumes (or polls the future of) the task a wake-up names. Returns whether it ran (a
    /// stale wake-up does not).
    pub(super) fn fire_wakeup(&self, lua: &Lua, target: WakeTarget) -> bool {
        let (id, suspension) = self.core(|core| {
            let id = core.id(target.slot, target.generation);
            (id, core.task(id).map(|slot| slot.suspension()))
        });
        match suspension {
            Some(Suspension::LuaFuture { token }) if token == target.token => {
                let (thread, stream) = match self.blocked_thread(id) {
                    Ok(kept) => kept,
                    Err(error) => {
                        self.complete(lua, id, Err(error));
                        return false;
                    }
                };
                if !self.still_blocked_in_mlua_future(id, &thread) {
                    return false;
                }
                // With the thread at hand: fetching it again cost 740 instructions (callgrind).
                self.resume_known(lua, id, Some(&thread), Wakeup::Poll(stream));
            }
            Some(Suspension::OwnedFuture { token }) if token == target.token => {
                self.poll_owned_future(lua, id, target);
            }
            _ => return false,
        }
        true
    }

    /// Runs the deferred queue until it is empty, including what is deferred meanwhile.
    /// Returns how many resumptions ran. Does nothing when called inside a resumption.
    pub(super) fn drain_deferred(&self, lua: &Lua) -> usize {
        if !self.core(|core| core.start_drain()) {
            return 0;
        }
        let _draining = Restore(self, |core| core.end_drain());
        let mut count = 0;
        loop {
            let next = self.core(|core| core.pop_deferred());
            match next {
                None => break,
                Some((entry, true)) => {
                    count += 1;
                    self.timeline.hint(entry.task, Cause::Defer);
                    self.resume_requested(lua, entry.task, entry.resumption);
                }
                Some((entry, false)) => self.values.discard(entry.resumption.args),
            }
        }
        count
    }

    pub(crate) fn has_work(&self) -> bool {
        self.core(|core| core.has_work()) || self.has_wakes()
    }

    /// The earliest deadline of a live timer; stale timers on top are dropped on the way.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let mut stale_args = Vec::new();
        let deadline = self.core(|core| core.next_deadline(|args| stale_args.push(args)));
        stale_args
            .into_iter()
            .for_each(|key| self.values.discard(key));
        deadline
    }

    /// Forgets stale timers once they outnumber live ones, so that the heap stays proportional
    /// to the live timers.
    pub(super) fn compact_timers(&self) {
        let mut stale_args = Vec::new();
        self.core(|core| core.compact_timers(|args| stale_args.push(args)));
        stale_args
            .into_iter()
            .for_each(|key| self.values.discard(key));
    }

    /// Gives back what a burst of tasks left behind, once no task is left: queues, the timer
    /// heap and the task table keep their peak capacity otherwise.
    pub(super) fn trim(&self, lua: &Lua) {
        const KEEP: usize = 1024;
        let _ = self.values.trim(lua);
        let large = self.core(|core| core.is_idle_and_larger_than(KEEP));
        if !large {
            return;
        }
        let Ok(threads) = lua.create_table() else {
            return;
        };
        self.threads.replace(threads);
        let _ = self.renew_blocked(lua);
        self.core(|core| core.trim());
        self.notes.clear();
        self.futures.borrow_mut().reset();
        self.frames.shrink_carried();
    }

    pub(crate) fn next_step(&self) -> Next {
        if !self.has_work() {
            // Only stale timers can be left: forget them.
            self.compact_timers();
            return Next::Done;
        }
        if self.has_wakes() || self.core(|core| core.has_deferred()) || self.frames.has_carried() {
            return Next::Busy;
        }
        match self.next_deadline() {
            Some(deadline) if deadline <= self.clock.now() => Next::Busy,
            Some(deadline) => match &self.clock {
                Clock::Virtual(_) => {
                    self.clock.jump_to(deadline);
                    Next::Busy
                }
                // A deadline past what `Instant` holds here (`Clock::MAX_DELAY` leaves room for
                // it on the usual platforms): sleep as long as the platform can, then look
                // again. Taken for a virtual clock, this spun at full CPU.
                Clock::Real(_) => Next::Sleep(
                    self.clock
                        .instant_at(deadline)
                        .or_else(|| Instant::now().checked_add(LONGEST_SLEEP)),
                ),
            },
            None => Next::Sleep(None),
        }
    }

    /// Drops every task without error, every pending future and every timer (contract rule 18).
    ///
    /// The host's end hook runs for each task dropped, and may start tasks: those are not
    /// dropped, and keep what they queued. The shutdown counts as a cycle while it runs, so
    /// that the hook cannot drive the scheduler, nor shut it down again, from inside it.
    pub(crate) fn shutdown(&self, lua: &Lua) -> Result<()> {
        let tasks = self.core(|core| core.enter_cycle().then(|| core.task_ids()));
        let Some(tasks) = tasks else {
            return Err(Error::Reentrant("Scheduler::shutdown"));
        };
        let _shutting_down = Restore(self, |core| core.leave_cycle());
        let mut first_error = None;
        for id in tasks {
            // The hook of a task dropped earlier may have ended this one, and started another
            // in its slot: only a task the scheduler still holds is closed.
            if !self.core(|core| core.task(id).is_some()) {
                continue;
            }
            let thread = self.threads.get(id.slot());
            let freed = self.free_task(id).is_some();
            if let Err(error) = thread.and_then(|thread| self.close_thread(lua, &thread)) {
                first_error.get_or_insert(error);
            }
            if freed {
                self.task_ended(id, TaskEnd::Dropped);
            }
        }
        if self.core(|core| core.task_count()) > 0 {
            // The hook started tasks: what they queued stays; the dropped tasks' entries are
            // stale, and go as they surface.
            self.compact_timers();
        } else {
            let mut args = Vec::new();
            self.core(|core| core.clear_queues(|key| args.push(key)));
            args.extend(self.frames.forget_carried());
            args.into_iter().for_each(|key| self.values.discard(key));
            self.wakes.clear();
            self.own_wakes.borrow_mut().clear();
            self.woken_threads.borrow_mut().clear();
        }
        first_error.map_or(Ok(()), |error| Err(error.into()))
    }
}
