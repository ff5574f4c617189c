//! Frames: the host's phases in order, with the timers' turn among them, under an optional
//! budget that carries ready tasks over to the next frame.
//!
//! A frame advances a virtual clock by `dt`, then, for each phase in order: if it is the
//! phase the timers resume before, resumes the ready tasks (due timers, then woken futures) and
//! drains the deferred queue; records the phase in the trace; fires the phase's signal with
//! `dt`; drains the deferred queue. Each drain is a resumption point (contract rules 2-3), and
//! no budget stops one: the budget only decides how many ready tasks a frame resumes.
//!
//! Invariants:
//! - Carried tasks run before anything that came due after them, in the order they would have
//!   run; a frame resumes at least one ready task, so a budget too small for any still makes
//!   progress.
//! - Carried entries stay counted as live work (their suspensions and `Resume` timers keep
//!   their counts), so a run with carried work never ends early; stale ones are pruned at the
//!   end of each frame, so the carried count in the report is what will really run.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::Lua;

use super::{Inner, Restore, TimerEntry};
use crate::clock::Clock;
use crate::core::ValuesKey;
use crate::error::{Error, Result, TaskError};
use crate::trace::TraceEvent;
use crate::vm::{self, ThreadPtr};
use crate::waker::WakeTarget;

/// Decides, before each ready task after the first, whether the frame may resume another.
pub(crate) type BudgetCheck = Box<dyn FnMut(&FrameWork) -> bool>;

/// Fires a phase's signal with the frame's `dt` in seconds (the signal is the host's, made
/// on the task library above the engine).
pub(crate) type PhaseFire = Rc<dyn Fn(f64) -> Result<()>>;

/// A task ready to resume, taken from the timer heap or the wake queue.
#[derive(Clone, Copy, Debug)]
enum Ready {
    Timer(TimerEntry),
    Wake(WakeTarget),
}

/// The frame setup the host declared, and the ready tasks a budget carried over.
pub(crate) struct Frames {
    names: Vec<String>,
    /// The index of the phase before whose signal the ready tasks resume.
    timer_phase: usize,
    /// How each phase's signal fires, set once the scheduler exists.
    phases: RefCell<Vec<PhaseFire>>,
    budget: Option<RefCell<BudgetCheck>>,
    carried: RefCell<VecDeque<Ready>>,
}

impl Frames {
    pub(crate) fn new(names: Vec<String>, timer_phase: usize, budget: Option<BudgetCheck>) -> Self {
        Frames {
            names,
            timer_phase,
            phases: RefCell::default(),
            budget: budget.map(RefCell::new),
            carried: RefCell::default(),
        }
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn set_phases(&self, phases: Vec<PhaseFire>) {
        *self.phases.borrow_mut() = phases;
    }

    /// Gives back the queue's peak capacity once it is empty (a cycle's whole batch of due
    /// timers passes through it).
    pub(super) fn shrink_carried(&self) {
        let mut carried = self.carried.borrow_mut();
        if carried.is_empty() {
            *carried = VecDeque::new();
        }
    }

    pub(crate) fn has_carried(&self) -> bool {
        !self.carried.borrow().is_empty()
    }

    /// Empties the carried queue, returning the stored arguments its entries held.
    pub(super) fn forget_carried(&self) -> Vec<Option<ValuesKey>> {
        self.carried
            .borrow_mut()
            .drain(..)
            .filter_map(|ready| match ready {
                Ready::Timer(entry) => Some(entry.kind.args()),
                Ready::Wake(_) => None,
            })
            .collect()
    }

    /// Whether the budget lets the frame resume another ready task. Without a budget, or
    /// while the check is running (it called back in), it does.
    fn may_go_on(&self, resumed: usize, started: Instant) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let Ok(mut check) = budget.try_borrow_mut() else {
            return true;
        };
        check(&FrameWork {
            resumed,
            elapsed: started.elapsed(),
        })
    }

    fn pop(&self) -> Option<Ready> {
        self.carried.borrow_mut().pop_front()
    }
}

impl Inner {
    pub(crate) fn frame(&self, lua: &Lua, dt: Duration) -> Result<FrameReport> {
        if !self.core(|core| core.enter_cycle()) {
            return Err(Error::Reentrant("Scheduler::frame"));
        }
        // Leaves the cycle even if a panic from a Rust callback unwinds through the frame.
        let _frame = Restore(self, |core| core.leave_cycle());
        let started = Instant::now();
        if let Clock::Virtual(clock) = &self.clock {
            clock.advance(dt);
        }
        self.cycles.set(self.cycles.get() + 1);
        let errors_before = self.errors.get();
        let mut report = FrameReport {
            cycle: self.cycles.get(),
            ..FrameReport::default()
        };
        let phases = self.frames.phases.borrow().clone();
        if phases.is_empty() {
            self.frame_ready(lua, started, &mut report);
        }
        let seconds = dt.as_secs_f64();
        for (index, fire) in phases.iter().enumerate() {
            if index == self.frames.timer_phase {
                self.frame_ready(lua, started, &mut report);
            }
            self.record(None, TraceEvent::Phase(index));
            if let Err(error) = fire(seconds) {
                let message = format!(
                    "firing the {} phase failed: {error}",
                    self.frames.names[index]
                );
                self.report(TaskError::new(None, message, String::new()));
            }
            report.deferred += self.drain_deferred(lua);
        }
        report.carried = self.prune_carried();
        report.errors = (self.errors.get() - errors_before) as usize;
        self.compact_timers();
        self.trim(lua);
        self.core(|core| core.check_counts());
        Ok(report)
    }

    /// The timers' turn in a frame: the ready tasks under the budget, then a resumption point.
    fn frame_ready(&self, lua: &Lua, started: Instant, report: &mut FrameReport) {
        let now = self.clock.now();
        self.queue_due_timers(now);
        // The thread running the frame, from which the ready threads are resumed.
        let from = vm::running_thread(lua);
        let mut now = Some(now);
        let mut resumed = 0;
        let mut wakes_taken = false;
        loop {
            if resumed > 0 && !self.frames.may_go_on(resumed, started) {
                break;
            }
            let ready = match self.frames.pop() {
                Some(ready) => ready,
                // Futures woken by the timers' tasks run in this frame too, as in a cycle.
                None if !wakes_taken => {
                    wakes_taken = true;
                    let mut carried = self.frames.carried.borrow_mut();
                    self.take_wakes(|target| carried.push_back(Ready::Wake(target)));
                    continue;
                }
                None => break,
            };
            if self.fire_ready(lua, from, ready, &mut now, report) {
                resumed += 1;
            }
        }
        report.deferred += self.drain_deferred(lua);
    }

    fn fire_ready(
        &self,
        lua: &Lua,
        from: ThreadPtr,
        ready: Ready,
        now: &mut Option<Duration>,
        report: &mut FrameReport,
    ) -> bool {
        match ready {
            Ready::Timer(entry) => {
                let now = *now.get_or_insert_with(|| self.clock.now());
                let ran = self.fire_timer(lua, from, entry, now);
                report.timers += usize::from(ran);
                ran
            }
            Ready::Wake(target) => {
                let ran = self.fire_wakeup(lua, target);
                report.wakeups += usize::from(ran);
                ran
            }
        }
    }

    /// Moves the live timers due at `now` from the heap to the back of the carried queue, in
    /// firing order; stale ones are dropped. Queued rather than run from a list of their own, so
    /// that a panic from a Rust callback that unwinds through the batch leaves the entries not
    /// yet run queued for the next cycle, rather than lost while still counted; and moved there
    /// directly: through a `Vec` first, wait_cycles took 60 instructions more a wait (callgrind).
    pub(super) fn queue_due_timers(&self, now: Duration) {
        let mut stale_args = Vec::new();
        {
            let mut carried = self.frames.carried.borrow_mut();
            let carried = &mut *carried;
            self.core(|core| {
                core.take_due(now, |entry, live| {
                    if live {
                        // A `Resume` entry stays counted until it runs: an earlier entry of
                        // the batch may resume its thread, which must not then look idle and
                        // be freed.
                        carried.push_back(Ready::Timer(entry));
                    } else {
                        stale_args.push(entry.kind.args());
                    }
                })
            });
        }
        stale_args
            .into_iter()
            .for_each(|key| self.values.discard(key));
    }

    /// A cycle's batch of woken futures, queued and run as [`Self::run_due_timers`]'s.
    pub(super) fn run_wake_batch(&self, lua: &Lua) -> usize {
        {
            let mut carried = self.frames.carried.borrow_mut();
            self.take_wakes(|target| carried.push_back(Ready::Wake(target)));
        }
        self.run_carried(lua).1
    }

    /// Runs what a budget carried over, with no budget: for hosts that go back to `cycle`.
    pub(super) fn run_carried(&self, lua: &Lua) -> (usize, usize) {
        let mut report = FrameReport::default();
        if !self.frames.has_carried() {
            return (0, 0);
        }
        // Read when a timer needs it: woken futures do not (90 instructions a cycle, callgrind).
        let mut now = None;
        // The thread running the cycle, from which the ready threads are resumed.
        let from = vm::running_thread(lua);
        while let Some(ready) = self.frames.pop() {
            self.fire_ready(lua, from, ready, &mut now, &mut report);
        }
        (report.timers, report.wakeups)
    }

    /// Drops carried entries that went stale (task cancelled, suspension ended) and returns
    /// how many are left.
    fn prune_carried(&self) -> usize {
        let mut stale_args = Vec::new();
        let left = {
            let mut carried = self.frames.carried.borrow_mut();
            let carried = &mut *carried;
            self.core(|core| {
                carried.retain(|ready| match ready {
                    Ready::Timer(entry) => {
                        let live = core.timer_is_live(entry);
                        if !live {
                            stale_args.push(entry.kind.args());
                        }
                        live
                    }
                    Ready::Wake(target) => {
                        let id = core.id(target.slot, target.generation);
                        core.wake_is_live(id, target.token)
                    }
                });
            });
            carried.len()
        };
        stale_args
            .into_iter()
            .for_each(|key| self.values.discard(key));
        left
    }
}

/// What one [`Scheduler::frame`](crate::Scheduler::frame) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameReport {
    /// The frame's number among cycles and frames, counting from 1
    /// (as [`Scheduler::cycle_count`](crate::Scheduler::cycle_count) reads after it).
    pub cycle: u64,
    /// Tasks resumed because their timer came due (this frame's or carried over).
    pub timers: usize,
    /// Tasks resumed (or futures polled) because a future woke them.
    pub wakeups: usize,
    /// Deferred resumptions run, over every phase, including deferred signal handlers.
    pub deferred: usize,
    /// Errors reported to the error handler during the frame.
    pub errors: usize,
    /// Ready tasks the budget left for the next frame.
    pub carried: usize,
}

/// How much a frame has done so far, as a budget check sees it
/// ([`SchedulerBuilder::frame_budget_fn`](crate::SchedulerBuilder::frame_budget_fn)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameWork {
    /// Ready tasks resumed so far in this frame.
    pub resumed: usize,
    /// Wall time since the frame began.
    pub elapsed: Duration,
}
