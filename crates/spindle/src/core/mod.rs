//! The scheduler's core: which tasks exist, what each waits for, and what runs next. No Lua.
//!
//! The core keeps the task table, the timer heap, the deferred queue, each suspension's wake
//! token, the outcomes kept for the host, and the counts that say whether work is left. It
//! knows a task's thread only as an opaque `T` (the engine's raw thread pointer), and an
//! outcome only as an `O`: it never calls Lua, so it is tested here without a VM.
//!
//! The engine (`engine.rs`) lends the core out through `Inner::core`, whose closure must be
//! `Send`. Neither the Lua state nor the engine is `Send`, so a closure that could run Lua
//! while it holds the core does not compile: the rule that no borrow of the state is held
//! while Lua runs (finalizers, error handlers and futures may all call back in) is the type
//! checker's, not a convention.
//!
//! Invariants:
//! - Every suspension has one token. A timer or wake-up that carries another token, or names
//!   a freed slot's old generation, is stale: [`Core::timer_is_live`] says so, and the engine
//!   drops it. No task is resumed twice for one suspension.
//! - The counts are exact, and only the core's methods change them: `live_timers` is the sum
//!   of the slots' `timers` (timer entries that will still fire; a timed `task.wait` counts
//!   one), `live_deferred` the sum of their `queued`, and `awaiting` the number of slots
//!   blocked in a future. So a run whose remaining work was cancelled ends at once, and a run
//!   with work left never ends early. Debug builds recount them after every cycle
//!   ([`Core::check_counts`]).

mod handler_calls;
mod tasks;
mod timers;

use std::collections::VecDeque;
use std::time::Duration;

pub(crate) use handler_calls::HandlerFrame;
pub use tasks::TaskId;
pub(crate) use tasks::{Lineage, SchedulerId, Slot, Suspension, TaskMap, TaskTable};
pub(crate) use timers::Timers;

/// The key of one list of values the engine keeps Lua-side (arguments of a pending
/// resumption, results for the host); the core only carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValuesKey(pub(crate) u32);

/// Where a new task comes from ([`Core::insert_from`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    /// Started by the task being resumed (a root outside any resumption): `task.spawn`,
    /// `defer`, `delay`, and a coroutine that becomes a task by calling a scheduler function.
    Running,
    /// The host's own `spawn`, `defer` or `delay`: a root, its own script.
    Host,
    /// On behalf of a given task and script: a signal handler's call, for its connection.
    Given(Lineage),
}

/// Why [`Core::insert_from`] made no task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotMade {
    /// 2^32 slots exist.
    TooMany,
    /// The task would belong to this script, which the host is ending.
    ScriptEnding(TaskId),
    /// The innermost resumption is a signal handler's call that is no task yet: the engine
    /// makes it one ([`Core::make_handler_task`]), then asks again.
    HandlerCall,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerEntry {
    pub(crate) task: TaskId,
    pub(crate) kind: TimerKind,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum TimerKind {
    /// Ends a `task.wait` suspension with this token.
    Wait { token: u32 },
    /// A `task.delay`: resumes the thread with stored arguments.
    Resume(Resumption),
    /// Goes on with a task stopped at the end of its time slice (suspension `Sliced`).
    Continue { token: u32 },
}

impl TimerKind {
    /// The stored arguments the timer holds, which must be discarded if it never runs.
    pub(crate) fn args(&self) -> Option<ValuesKey> {
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
pub(crate) struct Resumption {
    pub(crate) args: Option<ValuesKey>,
    pub(crate) fresh: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Deferred {
    pub(crate) task: TaskId,
    pub(crate) level: u32,
    pub(crate) resumption: Resumption,
}

/// What freeing a slot leaves for the engine to finish outside the core: the thread leaves
/// its Lua-side store, then the slot is recycled.
pub(crate) struct Freed<T> {
    pub(crate) slot: u32,
    pub(crate) claims: u32,
    pub(crate) thread: Option<T>,
    /// The suspension it had: only one on a Spindle future leaves a future to drop.
    pub(crate) suspension: Suspension,
}

/// One task as the core sees it, for the host's task list ([`Core::census`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskView {
    pub(crate) id: TaskId,
    pub(crate) lineage: Lineage,
    /// Where the scheduler holds it; `None` for a task that left with a plain yield while a
    /// host handle claims it (its slot is reserved for its thread).
    pub(crate) held: Option<Held>,
}

/// Where the scheduler holds a task, in a [`TaskView`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    pub(crate) suspension: Suspension,
    pub(crate) running: bool,
    /// A deferred resumption is queued for it.
    pub(crate) deferred: bool,
    /// A `task.delay` timer will resume it.
    pub(crate) delayed: bool,
    /// The earliest deadline of its live timers on the heap (a timer taken off the heap for
    /// a frame's carried work has none any more).
    pub(crate) deadline: Option<Duration>,
}

/// How the timer of a `task.wait` starts its task's resumption ([`Core::start_timed_wake`]).
pub(crate) enum TimedWake<T> {
    /// The wait ended otherwise, or the task was freed: the timer does nothing.
    Stale,
    /// Through the engine's general path, which starts the resumption itself.
    Full { since: Duration },
    /// Through the VM directly: the resumption has started under `token`.
    Raw {
        thread: T,
        since: Duration,
        token: u32,
    },
}

/// The core. `T` is a task's thread as the engine names it; `O` an outcome kept for the host.
pub(crate) struct Core<T, O> {
    tasks: TaskTable<T>,
    timers: Timers<TimerEntry>,
    live_timers: usize,
    live_deferred: usize,
    awaiting: usize,
    deferred: VecDeque<Deferred>,
    /// Outcomes waiting for the host, with the number of `Task` handles that claim each.
    outcomes: TaskMap<(O, u32)>,
    /// Scheduler-driven resumptions in progress (they nest through `task.spawn`): the numbers
    /// of their tasks and of those tasks' scripts, innermost last. A task made now is the last
    /// one's; the script is kept here so that making a task reads no other slot.
    resuming: Vec<[u64; 2]>,
    /// Signal handler calls in progress on runner threads (`handler_calls.rs`), innermost
    /// last; each has an entry in `resuming` too.
    handlers: Vec<HandlerFrame<T>>,
    /// Scripts the host is ending: no task is made in them (see [`Core::insert_from`]).
    ending: Vec<TaskId>,
    /// The defer level of the deferred task being resumed, 0 outside the drain.
    defer_level: u32,
    draining: bool,
    in_cycle: bool,
}

impl<T: Copy + PartialEq, O> Core<T, O> {
    /// An empty core for the scheduler `scheduler`, whose ids it hands out and accepts.
    pub(crate) fn new(scheduler: SchedulerId) -> Self {
        Core {
            tasks: TaskTable::new(scheduler),
            timers: Timers::default(),
            live_timers: 0,
            live_deferred: 0,
            awaiting: 0,
            deferred: VecDeque::new(),
            outcomes: TaskMap::default(),
            resuming: Vec::new(),
            handlers: Vec::new(),
            ending: Vec::new(),
            defer_level: 0,
            draining: false,
            in_cycle: false,
        }
    }
}

impl<T: Copy + PartialEq, O> Core<T, O> {
    // --- Tasks ------------------------------------------------------------------------------

    /// The id of this core's task in `slot` at `generation` (from a wake-up or a signal's
    /// stamp, which keep the two numbers only).
    pub(crate) fn id(&self, slot: u32, generation: u32) -> TaskId {
        self.tasks.id(slot, generation)
    }

    /// Whether `id` names a task of this core's scheduler (alive or not).
    pub(crate) fn owns(&self, id: TaskId) -> bool {
        self.tasks.owns(id)
    }

    pub(crate) fn task(&self, id: TaskId) -> Option<&Slot<T>> {
        self.tasks.get(id)
    }

    /// The task in `slot` if that slot holds `thread` (the engine read `slot` from the
    /// thread's mark).
    pub(crate) fn find(&self, slot: u32, thread: T) -> Option<TaskId> {
        self.tasks.find(slot, thread)
    }

    /// A new task for `thread`, started by the task being resumed (a root outside any
    /// resumption); `None` when 2^32 slots exist or its script is ending.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, thread: T) -> Option<TaskId> {
        self.insert_from(thread, Origin::Running).ok()
    }

    /// A new task for `thread`, started from `origin`.
    #[inline]
    pub(crate) fn insert_from(&mut self, thread: T, origin: Origin) -> Result<TaskId, NotMade> {
        let lineage = match origin {
            Origin::Host => Lineage::default(),
            Origin::Given(lineage) => lineage,
            Origin::Running if self.handler_on_top() => return Err(NotMade::HandlerCall),
            Origin::Running => match self.resuming.last() {
                None => Lineage::default(),
                Some(&[creator, script]) => Lineage {
                    creator: Some(self.tasks.id_of_number(creator)),
                    script: Some(self.tasks.id_of_number(script)),
                },
            },
        };
        if let Some(script) = lineage.script {
            if !self.ending.is_empty() && self.ending.contains(&script) {
                return Err(NotMade::ScriptEnding(script));
            }
        }
        self.tasks.insert(thread, lineage).ok_or(NotMade::TooMany)
    }

    /// Who started the live task `id`, and its script (itself for a root).
    pub(crate) fn lineage(&self, id: TaskId) -> Option<Lineage> {
        self.tasks.lineage(id)
    }

    /// The task being resumed, innermost: the creator of a task made now.
    pub(crate) fn resuming_task(&self) -> Option<TaskId> {
        self.resuming
            .last()
            .map(|&[task, _]| self.tasks.id_of_number(task))
    }

    /// The live tasks of `script`.
    pub(crate) fn tasks_of_script(&self, script: TaskId) -> Vec<TaskId> {
        if !self.owns(script) {
            return Vec::new();
        }
        let number = script.as_u64();
        self.tasks
            .occupied()
            .filter(|(_, slot)| slot.script_number() == number)
            .map(|(id, _)| id)
            .collect()
    }

    /// The host begins ending `script`: no task is made in it until [`stop_ending`]. Returns
    /// false if it was being ended already.
    ///
    /// [`stop_ending`]: Self::stop_ending
    pub(crate) fn start_ending(&mut self, script: TaskId) -> bool {
        if self.ending.contains(&script) {
            return false;
        }
        self.ending.push(script);
        true
    }

    pub(crate) fn stop_ending(&mut self, script: TaskId) {
        self.ending.retain(|&s| s != script);
    }

    pub(crate) fn is_ending(&self, script: TaskId) -> bool {
        self.ending.contains(&script)
    }

    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Every task, for shutdown.
    pub(crate) fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.occupied().map(|(id, _)| id).collect()
    }

    /// Every task, held or reserved, in slot order: O(tasks + timers), for the host's task list.
    pub(crate) fn census(&self) -> Vec<TaskView> {
        let mut deadlines: TaskMap<Duration> = TaskMap::default();
        for timer in self.timers.iter() {
            if self.timer_is_live(&timer.payload) {
                let earliest = deadlines
                    .entry(timer.payload.task)
                    .or_insert(timer.deadline);
                *earliest = (*earliest).min(timer.deadline);
            }
        }
        let mut views: Vec<TaskView> = self
            .tasks
            .occupied()
            .map(|(id, slot)| TaskView {
                id,
                lineage: self.tasks.lineage(id).unwrap_or_default(),
                held: Some(Held {
                    suspension: slot.suspension,
                    running: slot.running,
                    deferred: slot.queued > 0,
                    delayed: slot.timers > u32::from(slot.suspension.holds_timer()),
                    deadline: deadlines.get(&id).copied(),
                }),
            })
            .chain(self.tasks.reserved().map(|(id, lineage)| TaskView {
                id,
                lineage,
                held: None,
            }))
            .collect();
        views.sort_by_key(|view| view.id.slot());
        views
    }

    /// Frees the task's slot with everything it had pending. The engine then takes the thread
    /// out of its store and calls [`recycle`](Self::recycle).
    pub(crate) fn free(&mut self, id: TaskId) -> Option<Freed<T>> {
        let slot = self.tasks.free(id)?;
        self.live_timers -= slot.timers as usize;
        self.live_deferred -= slot.queued as usize;
        if slot.suspension.is_awaiting() {
            self.awaiting -= 1;
        }
        Some(Freed {
            slot: id.slot(),
            claims: slot.claims,
            thread: slot.thread(),
            suspension: slot.suspension,
        })
    }

    pub(crate) fn recycle(&mut self, slot: u32) {
        self.tasks.recycle(slot);
    }

    /// Frees an idle task's slot as [`free`](Self::free) does, but keeps it reserved for the
    /// task's thread, to be reclaimed under the same id ([`reclaim`](Self::reclaim)) or
    /// [`unreserve`](Self::unreserve)d. The engine takes the thread out of its store, and does
    /// not recycle the slot.
    pub(crate) fn reserve(&mut self, id: TaskId) -> Option<Freed<T>> {
        if !self.is_idle(id) {
            return None;
        }
        let slot = self.tasks.reserve(id)?;
        Some(Freed {
            slot: id.slot(),
            claims: slot.claims,
            thread: slot.thread(),
            suspension: slot.suspension,
        })
    }

    /// The reserved task in `slot`, if the slot is reserved for `thread`: occupied again under
    /// its old id, with the claims of its kept outcome, which is taken out and returned.
    pub(crate) fn reclaim(&mut self, slot: u32, thread: T) -> Option<(TaskId, Option<O>)> {
        let id = self.tasks.reclaim(slot, thread)?;
        let outcome = self.outcomes.remove(&id).map(|(outcome, claims)| {
            if let Some(slot) = self.tasks.get_mut(id) {
                slot.claims = claims;
            }
            outcome
        });
        Some((id, outcome))
    }

    /// Ends the reservation of the task `id`'s slot, if it has one.
    pub(crate) fn unreserve(&mut self, id: TaskId) -> bool {
        self.tasks.unreserve(id)
    }

    /// Whether the task exists and nothing will resume it, nor is it being resumed: its thread
    /// then belongs to whoever holds it.
    pub(crate) fn is_idle(&self, id: TaskId) -> bool {
        matches!(self.tasks.get(id), Some(slot) if !slot.running && !slot.has_pending())
    }

    /// One more host handle claims the task's outcome, or the outcome it left. Returns
    /// whether there was either to claim.
    pub(crate) fn claim(&mut self, id: TaskId) -> bool {
        if let Some(slot) = self.tasks.get_mut(id) {
            slot.claims += 1;
            return true;
        }
        match self.outcomes.get_mut(&id) {
            Some((_, claims)) => {
                *claims += 1;
                true
            }
            None => false,
        }
    }

    /// A fresh token for the task's next suspension; `None` for a stale id.
    pub(crate) fn next_token(&mut self, id: TaskId) -> Option<u32> {
        self.tasks.get_mut(id).map(|slot| slot.next_token())
    }

    /// Marks whether the task's thread is in the engine's set of threads blocked in an mlua
    /// future; returns what it was (`None` for a stale id).
    pub(crate) fn set_in_blocked_set(&mut self, id: TaskId, listed: bool) -> Option<bool> {
        let slot = self.tasks.get_mut(id)?;
        Some(std::mem::replace(&mut slot.in_blocked_set, listed))
    }

    // --- Suspensions ------------------------------------------------------------------------

    /// Replaces the task's suspension, keeping the counts. Returns false for a stale id.
    pub(crate) fn set_suspension(&mut self, id: TaskId, new: Suspension) -> bool {
        let Some(slot) = self.tasks.get_mut(id) else {
            return false;
        };
        let old = std::mem::replace(&mut slot.suspension, new);
        if old.holds_timer() {
            slot.timers -= 1;
            self.live_timers -= 1;
        } else if old.is_awaiting() {
            self.awaiting -= 1;
        }
        if new.holds_timer() {
            slot.timers += 1;
            self.live_timers += 1;
        } else if new.is_awaiting() {
            self.awaiting += 1;
        }
        true
    }

    /// Ends the task's suspension if `is` says it is of the kind in question.
    pub(crate) fn end_suspension_if(&mut self, id: TaskId, is: fn(&Suspension) -> bool) {
        if self.tasks.get(id).is_some_and(|slot| is(&slot.suspension)) {
            self.set_suspension(id, Suspension::None);
        }
    }

    /// Files the task as blocked in a future under `token` (`owned`: the engine holds the
    /// future; otherwise it lives in the thread). False for a stale id.
    pub(crate) fn block_on_future(&mut self, id: TaskId, token: u32, owned: bool) -> bool {
        let suspension = match owned {
            true => Suspension::OwnedFuture { token },
            false => Suspension::LuaFuture { token },
        };
        self.set_suspension(id, suspension)
    }

    /// A scheduler-driven resumption of the task starts: it is running, one level deeper, and
    /// (with `end_suspension`) its suspension ends. Returns the resumption's token; `None` for
    /// a freed task. [`end_resumption`](Self::end_resumption) undoes it.
    #[inline]
    pub(crate) fn start_resumption(&mut self, id: TaskId, end_suspension: bool) -> Option<u32> {
        if end_suspension {
            self.set_suspension(id, Suspension::None);
        }
        let slot = self.tasks.get_mut(id)?;
        slot.running = true;
        let token = slot.next_token();
        let script = slot.script_number();
        self.resuming.push([id.as_u64(), script]);
        Some(token)
    }

    /// The resumption started by `start_resumption` ended. Returns whether the task is now
    /// idle: nothing will resume it, so the engine may free it.
    #[inline]
    pub(crate) fn end_resumption(&mut self, id: TaskId) -> bool {
        let ended = self.resuming.pop();
        debug_assert_eq!(
            ended.map(|[task, _]| task),
            Some(id.as_u64()),
            "innermost first"
        );
        match self.tasks.get_mut(id) {
            Some(slot) => {
                slot.running = false;
                !slot.has_pending()
            }
            None => false,
        }
    }

    /// Files the task as waiting since `since` until `deadline` (never, for `None`) under a
    /// fresh token, which it returns; `None` for a freed task.
    pub(crate) fn file_wait(
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

    /// Files the task as stopped at the end of its time slice, after running `ran`, to go on
    /// at `at`. False for a freed task.
    pub(crate) fn file_sliced(&mut self, id: TaskId, ran: Duration, at: Duration) -> bool {
        let Some(token) = self.next_token(id) else {
            return false;
        };
        self.set_suspension(id, Suspension::Sliced { token, ran });
        let kind = TimerKind::Continue { token };
        self.push_timer(at, TimerEntry { task: id, kind })
    }

    /// The timer of the task's wait under `token` surfaced: how its resumption starts.
    /// `raw_lane` says whether the engine may resume it through the VM directly, given the
    /// thread (checked with the core lent: it must run no Lua); when the task takes that lane,
    /// its resumption is started here, as by `start_resumption`.
    pub(crate) fn start_timed_wake(
        &mut self,
        id: TaskId,
        token: u32,
        raw_lane: impl FnOnce(T) -> bool,
    ) -> TimedWake<T> {
        let Some(slot) = self.tasks.get(id) else {
            return TimedWake::Stale;
        };
        let since = match slot.suspension {
            Suspension::Wait {
                token: t, since, ..
            } if t == token => since,
            _ => return TimedWake::Stale,
        };
        let thread = slot
            .thread()
            .filter(|&thread| slot.claims == 0 && raw_lane(thread));
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

    // --- Timers and the deferred queue ------------------------------------------------------

    /// Queues a timer; a `Resume` timer counts as live until it fires or its task is freed.
    /// A `Wait` or `Continue` timer is counted by its suspension instead. False for a freed
    /// task (the caller discards the entry's arguments).
    pub(crate) fn push_timer(&mut self, deadline: Duration, entry: TimerEntry) -> bool {
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
    pub(crate) fn fire_resume_timer(&mut self, id: TaskId) -> bool {
        let Some(slot) = self.tasks.get_mut(id) else {
            return false;
        };
        slot.timers -= 1;
        self.live_timers -= 1;
        true
    }

    /// Whether a timer entry will still act when it surfaces.
    pub(crate) fn timer_is_live(&self, entry: &TimerEntry) -> bool {
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

    /// Whether a wake-up for the task under `token` is still owed: it is blocked in a future
    /// under that token.
    pub(crate) fn wake_is_live(&self, id: TaskId, token: u32) -> bool {
        matches!(
            self.tasks.get(id).map(|slot| slot.suspension),
            Some(Suspension::LuaFuture { token: t } | Suspension::OwnedFuture { token: t })
                if t == token
        )
    }

    pub(crate) fn has_timers(&self) -> bool {
        self.timers.len() > 0
    }

    /// Takes every timer due at `now` off the heap, in firing order, each with whether it is
    /// still live.
    pub(crate) fn take_due(&mut self, now: Duration, mut each: impl FnMut(TimerEntry, bool)) {
        while let Some(timer) = self.timers.pop_due(now) {
            let live = self.timer_is_live(&timer.payload);
            each(timer.payload, live);
        }
    }

    /// The earliest deadline of a live timer; stale timers on top are dropped on the way, their
    /// arguments handed to `stale`.
    pub(crate) fn next_deadline(
        &mut self,
        mut stale: impl FnMut(Option<ValuesKey>),
    ) -> Option<Duration> {
        loop {
            match self.timers.peek() {
                None => return None,
                Some(timer) if self.timer_is_live(&timer.payload) => return Some(timer.deadline),
                Some(_) => {}
            }
            if let Some(timer) = self.timers.pop() {
                stale(timer.payload.kind.args());
            }
        }
    }

    /// Forgets stale timers once they outnumber live ones, so that the heap stays proportional
    /// to the live timers; their arguments go to `stale`.
    pub(crate) fn compact_timers(&mut self, mut stale: impl FnMut(Option<ValuesKey>)) {
        if self.timers.len() == 0 {
            // Nothing to compact: draining an empty heap cost 56 instructions a cycle (callgrind).
        } else if self.live_timers == 0 {
            self.timers.drain(|timer| stale(timer.payload.kind.args()));
        } else if self.timers.len() > 2 * self.live_timers + 64 {
            let mut timers = std::mem::take(&mut self.timers);
            timers.retain(|timer| {
                let live = self.timer_is_live(&timer.payload);
                if !live {
                    stale(timer.payload.kind.args());
                }
                live
            });
            self.timers = timers;
        }
    }

    /// The defer level a deferral made now gets: one deeper than the deferred task being
    /// resumed during the drain, else 1.
    pub(crate) fn next_defer_level(&self) -> u32 {
        if self.draining {
            self.defer_level + 1
        } else {
            1
        }
    }

    /// False for a freed task (the caller discards the entry's arguments).
    pub(crate) fn push_deferred(&mut self, entry: Deferred) -> bool {
        let Some(slot) = self.tasks.get_mut(entry.task) else {
            return false;
        };
        slot.queued += 1;
        self.live_deferred += 1;
        self.deferred.push_back(entry);
        true
    }

    /// The next deferred entry, and whether it is still live (its task was not freed); the
    /// drain is at its level from now on.
    pub(crate) fn pop_deferred(&mut self) -> Option<(Deferred, bool)> {
        let entry = self.deferred.pop_front()?;
        let live = match self.tasks.get_mut(entry.task) {
            Some(slot) => {
                slot.queued -= 1;
                self.live_deferred -= 1;
                true
            }
            None => false,
        };
        self.defer_level = entry.level;
        Some((entry, live))
    }

    /// Empties the timer heap and the deferred queue, handing their arguments to `args`. Only
    /// for shutdown, once every task is freed.
    pub(crate) fn clear_queues(&mut self, mut args: impl FnMut(Option<ValuesKey>)) {
        self.timers.drain(|timer| args(timer.payload.kind.args()));
        self.deferred
            .drain(..)
            .for_each(|d| args(d.resumption.args));
        self.check_counts();
    }

    /// Whether the task table is empty and large: worth [`trim`](Self::trim)ming.
    pub(crate) fn is_idle_and_larger_than(&self, keep: usize) -> bool {
        self.tasks.is_idle() && self.tasks.capacity() > keep
    }

    /// Gives back what a burst of tasks left behind; only when no task is left.
    pub(crate) fn trim(&mut self) {
        self.tasks.reset();
        if self.timers.len() == 0 {
            self.timers = Timers::default();
        }
        if self.deferred.is_empty() {
            self.deferred = VecDeque::new();
        }
    }

    // --- Whether work is left, and where the scheduler is -----------------------------------

    /// Whether any timer, deferral or future will still resume a task.
    pub(crate) fn has_work(&self) -> bool {
        self.live_deferred > 0 || self.live_timers > 0 || self.awaiting > 0
    }

    pub(crate) fn has_deferred(&self) -> bool {
        self.live_deferred > 0
    }

    /// Whether a scheduler-driven resumption is in progress.
    pub(crate) fn is_resuming(&self) -> bool {
        !self.resuming.is_empty()
    }

    pub(crate) fn in_cycle(&self) -> bool {
        self.in_cycle
    }

    /// A cycle or frame starts; false (and nothing changes) inside another one or inside a
    /// resumption.
    pub(crate) fn enter_cycle(&mut self) -> bool {
        if self.in_cycle || !self.resuming.is_empty() {
            return false;
        }
        self.in_cycle = true;
        true
    }

    pub(crate) fn leave_cycle(&mut self) {
        self.in_cycle = false;
    }

    /// The deferred queue starts draining; false inside a drain or a resumption, whose own
    /// drain runs what is queued.
    pub(crate) fn start_drain(&mut self) -> bool {
        if self.draining || !self.resuming.is_empty() {
            return false;
        }
        self.draining = true;
        true
    }

    pub(crate) fn end_drain(&mut self) {
        self.draining = false;
        self.defer_level = 0;
    }

    // --- Outcomes ---------------------------------------------------------------------------

    /// Keeps the outcome of an ended task for its `claims` handles.
    pub(crate) fn keep_outcome(&mut self, id: TaskId, outcome: O, claims: u32) {
        self.outcomes.insert(id, (outcome, claims));
    }

    pub(crate) fn has_outcome(&self, id: TaskId) -> bool {
        self.outcomes.contains_key(&id)
    }

    pub(crate) fn outcome_mut(&mut self, id: TaskId) -> Option<&mut O> {
        self.outcomes.get_mut(&id).map(|(outcome, _)| outcome)
    }

    /// Takes the outcome out, with its claims, for whichever handle reads it first.
    pub(crate) fn take_outcome(&mut self, id: TaskId) -> Option<(O, u32)> {
        self.outcomes.remove(&id)
    }

    /// A handle was dropped: one claim fewer on the task or its outcome. Returns the outcome
    /// when no claim is left on it, for the engine to free.
    pub(crate) fn unclaim(&mut self, id: TaskId) -> Option<O> {
        if let Some(slot) = self.tasks.get_mut(id) {
            slot.claims = slot.claims.saturating_sub(1);
            return None;
        }
        match self.outcomes.get_mut(&id) {
            Some((_, claims)) if *claims > 1 => {
                *claims -= 1;
                None
            }
            Some(_) => self.outcomes.remove(&id).map(|(outcome, _)| outcome),
            None => None,
        }
    }

    /// Recounts what the counters should say, in debug builds.
    pub(crate) fn check_counts(&self) {
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

#[cfg(test)]
mod tests;
