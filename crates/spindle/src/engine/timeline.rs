//! A timeline of resumptions: when each one started, how long it ran and why it happened, for
//! a trace viewer (`spindle run --timeline` writes it in Chrome's trace format).
//!
//! Unlike a [`Trace`](crate::Trace), which compares runs event for event on the scheduler's
//! clock (virtual or not), a timeline measures real time with [`Instant`], and so differs from
//! run to run. Recording is off until the host starts it; while it is off, a resumption costs
//! one flag read more.
//!
//! Invariant: spans are kept in the order their resumptions started (a resumption nested in
//! another, through `task.spawn`, comes after it and ends inside it); taking the timeline takes
//! the spans that have ended, up to the first that has not.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::CreationSite;
use crate::core::TaskId;

/// Why the scheduler resumed a task, in a [`Span`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// `task.spawn`, or the host's [`spawn`](crate::Scheduler::spawn): the task starts at once.
    Spawn,
    /// A deferred resumption (`task.defer`, a deferred signal handler), as the queue drained.
    Defer,
    /// A `task.delay` came due.
    Delay,
    /// A `task.wait` ended with its timer.
    Timer,
    /// A signal fired, waking a `Signal:Wait` or calling a handler at once.
    Signal,
    /// A Rust future it was blocked in woke or completed.
    Future,
    /// It goes on after the watchdog stopped it at the end of its time slice.
    Slice,
    /// The host resumed it by hand ([`Scheduler::resume`](crate::Scheduler::resume)).
    Resume,
}

impl Cause {
    /// The cause as one lowercase word, as `spindle run --timeline` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Spawn => "spawn",
            Cause::Defer => "defer",
            Cause::Delay => "delay",
            Cause::Timer => "timer",
            Cause::Signal => "signal",
            Cause::Future => "future",
            Cause::Slice => "slice",
            Cause::Resume => "resume",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resumption of a task, as [`Scheduler::take_timeline`](crate::Scheduler::take_timeline)
/// gives it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Span {
    /// The task resumed.
    pub task: TaskId,
    /// Why.
    pub cause: Cause,
    /// When it started, in real time since the timeline started.
    pub start: Duration,
    /// How long it ran, resumptions nested in it included.
    pub duration: Duration,
    /// The scheduler's clock when it started (virtual time under a virtual clock).
    pub clock: Duration,
    /// The cycle it ran in ([`Scheduler::cycle_count`](crate::Scheduler::cycle_count)); 0
    /// outside any cycle, as for the host's `spawn`.
    pub cycle: u64,
    /// Where the task was created, when the scheduler records creation sites.
    pub site: Option<CreationSite>,
}

/// The scheduler's side: off by default, and cheap while off.
#[derive(Default)]
pub(crate) struct Recorder {
    on: Cell<bool>,
    origin: Cell<Option<Instant>>,
    /// Spans in the order they started; a span still running has no duration yet.
    spans: RefCell<VecDeque<(Span, bool)>>,
    /// The number of spans ever taken: a running span's place is its number less this.
    taken: Cell<u64>,
    /// The cause of the next resumption of this task that passes arguments, set by the one
    /// asking for it (a drain, a delay, a signal); any other resumption is a spawn.
    hint: Cell<Option<(TaskId, Cause)>>,
}

/// A span begun by [`Recorder::begin`], to end with [`Recorder::end`].
pub(crate) struct Begun {
    number: u64,
    started: Instant,
}

impl Recorder {
    #[inline(always)]
    pub(crate) fn is_on(&self) -> bool {
        self.on.get()
    }

    pub(crate) fn set_on(&self, on: bool) {
        if on && self.origin.get().is_none() {
            self.origin.set(Some(Instant::now()));
        }
        self.on.set(on);
    }

    /// Says why the next resumption of `task` with arguments happens, when recording.
    #[inline(always)]
    pub(crate) fn hint(&self, task: TaskId, cause: Cause) {
        if self.is_on() {
            self.hint.set(Some((task, cause)));
        }
    }

    /// The cause of a resumption with arguments of `task`: the hint left for it, or a spawn.
    pub(crate) fn cause_with_args(&self, task: TaskId) -> Cause {
        match self.hint.take() {
            Some((hinted, cause)) if hinted == task => cause,
            _ => Cause::Spawn,
        }
    }

    /// Begins the span of a resumption.
    pub(crate) fn begin(
        &self,
        task: TaskId,
        cause: Cause,
        clock: Duration,
        cycle: u64,
        site: Option<CreationSite>,
    ) -> Option<Begun> {
        let started = Instant::now();
        let origin = self.origin.get().unwrap_or(started);
        let span = Span {
            task,
            cause,
            start: started.saturating_duration_since(origin),
            duration: Duration::ZERO,
            clock,
            cycle,
            site,
        };
        let mut spans = self.spans.try_borrow_mut().ok()?;
        let number = self.taken.get() + spans.len() as u64;
        spans.push_back((span, false));
        Some(Begun { number, started })
    }

    /// Ends the span `begun`, unless the host took it meanwhile (lost, then).
    pub(crate) fn end(&self, begun: Begun) {
        let Ok(mut spans) = self.spans.try_borrow_mut() else {
            return;
        };
        let Some(place) = begun.number.checked_sub(self.taken.get()) else {
            return;
        };
        if let Some((span, ended)) = spans.get_mut(place as usize) {
            span.duration = begun.started.elapsed();
            *ended = true;
        }
    }

    /// Takes the spans that have ended, up to the first still running; every span when
    /// `all` (no resumption is in progress: a span left running was unwound by a panic).
    pub(crate) fn take(&self, all: bool) -> Vec<Span> {
        let mut spans = self.spans.borrow_mut();
        let ended = match all {
            true => spans.len(),
            false => spans.iter().take_while(|(_, ended)| *ended).count(),
        };
        self.taken.set(self.taken.get() + ended as u64);
        spans.drain(..ended).map(|(span, _)| span).collect()
    }
}
