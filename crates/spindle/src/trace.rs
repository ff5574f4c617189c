//! Recording what the scheduler did, to compare two runs event for event (contract rule 14).
//!
//! Recording is off until the host starts it; while it is off, a scheduler event costs one flag
//! read. Each [`TraceEntry`] names the cycle (a frame counts as one), the task, what happened and
//! the scheduler's clock. Under a virtual clock, the same script driven with the same frames
//! gives an equal trace on every run, so [`Trace`] is `Eq` and has a
//! [`fingerprint`](Trace::fingerprint) that does not depend on the Rust version, the machine or
//! the process (FNV-1a over a fixed encoding), for comparing runs that cannot share memory.
//!
//! Invariant: entries are kept in the order the events happened; taking the trace empties the
//! recorder, and a fingerprint taken in pieces ([`Trace::fingerprint_from`]) equals the
//! fingerprint of the whole.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::core::TaskId;

/// What happened, in a [`TraceEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TraceEvent {
    /// The scheduler resumed the task (spawned, deferred, delayed, timer, wake-up, signal).
    /// An immediate signal handler's call that never became a task (see
    /// [`Signal`](crate::Signal)) is none, and records nothing; one that became a task records
    /// this when it did.
    Resume,
    /// The task returned.
    Finish,
    /// The task ended with an uncaught error.
    Fail,
    /// The task was cancelled.
    Cancel,
    /// A frame phase began: its index in the phases given to
    /// [`SchedulerBuilder::phases`](crate::SchedulerBuilder::phases). Has no task.
    Phase(usize),
}

impl TraceEvent {
    fn code(self) -> u64 {
        match self {
            TraceEvent::Resume => 1,
            TraceEvent::Finish => 2,
            TraceEvent::Fail => 3,
            TraceEvent::Cancel => 4,
            TraceEvent::Phase(index) => 5 | ((index as u64) << 8),
        }
    }
}

/// One event of a [`Trace`].
///
/// Entries compare (and hash) a task by its number within its scheduler
/// ([`TaskId::as_u64`]), not by the scheduler it belongs to: a trace is there to compare runs,
/// and two runs are made by two schedulers.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct TraceEntry {
    /// The cycle or frame it happened in, counting from 1 (as [`Scheduler::cycle_count`](crate::Scheduler::cycle_count)
    /// reads during it); 0 for events outside any cycle, such as the host's `spawn`.
    pub cycle: u64,
    /// The task, if the event concerns one.
    pub task: Option<TaskId>,
    /// What happened.
    pub event: TraceEvent,
    /// The scheduler's clock when it happened.
    pub time: Duration,
}

impl TraceEntry {
    fn key(&self) -> (u64, Option<u64>, TraceEvent, Duration) {
        (
            self.cycle,
            self.task.map(TaskId::as_u64),
            self.event,
            self.time,
        )
    }
}

impl PartialEq for TraceEntry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for TraceEntry {}

impl std::hash::Hash for TraceEntry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// The events the scheduler recorded, in order, as taken by
/// [`Scheduler::take_trace`](crate::Scheduler::take_trace).
///
/// ```
/// use spindle::Trace;
///
/// let empty = Trace::default();
/// assert!(empty.is_empty());
/// assert_eq!(empty.fingerprint(), Trace::default().fingerprint());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Trace {
    entries: Vec<TraceEntry>,
}

/// The starting point of [`Trace::fingerprint_from`]: FNV-1a's 64-bit offset basis.
pub const FINGERPRINT_SEED: u64 = 0xcbf2_9ce4_8422_2325;

impl Trace {
    /// The entries, in the order the events happened.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A 64-bit hash of the entries that is the same on every machine and Rust version.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint_from(FINGERPRINT_SEED)
    }

    /// Continues a fingerprint: for traces `a` then `b` taken one after the other,
    /// `b.fingerprint_from(a.fingerprint())` is the fingerprint of the two as one trace, so a
    /// host can take the trace every frame and still fingerprint the whole run.
    pub fn fingerprint_from(&self, seed: u64) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = seed;
        for entry in &self.entries {
            let task = entry.task.map_or(u64::MAX, TaskId::as_u64);
            let time = entry.time.as_nanos() as u64;
            for word in [entry.cycle, task, entry.event.code(), time] {
                for byte in word.to_le_bytes() {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(PRIME);
                }
            }
        }
        hash
    }
}

impl IntoIterator for Trace {
    type Item = TraceEntry;
    type IntoIter = std::vec::IntoIter<TraceEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// The scheduler's side: off by default, and cheap while off.
#[derive(Default)]
pub(crate) struct Recorder {
    on: Cell<bool>,
    entries: RefCell<Vec<TraceEntry>>,
}

impl Recorder {
    pub(crate) fn is_on(&self) -> bool {
        self.on.get()
    }

    pub(crate) fn set_on(&self, on: bool) {
        self.on.set(on);
    }

    pub(crate) fn push(&self, entry: TraceEntry) {
        if let Ok(mut entries) = self.entries.try_borrow_mut() {
            entries.push(entry);
        }
    }

    pub(crate) fn take(&self) -> Trace {
        Trace {
            entries: std::mem::take(&mut *self.entries.borrow_mut()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cycle: u64, event: TraceEvent) -> TraceEntry {
        TraceEntry {
            cycle,
            task: Some(TaskId::new(crate::core::SchedulerId::fresh(), 3, 1)),
            event,
            time: Duration::from_millis(cycle * 16),
        }
    }

    #[test]
    fn a_fingerprint_taken_in_pieces_equals_the_whole() {
        let all = Trace {
            entries: vec![entry(1, TraceEvent::Resume), entry(2, TraceEvent::Finish)],
        };
        let first = Trace {
            entries: vec![entry(1, TraceEvent::Resume)],
        };
        let second = Trace {
            entries: vec![entry(2, TraceEvent::Finish)],
        };
        assert_eq!(
            second.fingerprint_from(first.fingerprint()),
            all.fingerprint()
        );
    }

    #[test]
    fn the_fingerprint_tells_events_and_order_apart() {
        let a = Trace {
            entries: vec![entry(1, TraceEvent::Resume), entry(1, TraceEvent::Finish)],
        };
        let b = Trace {
            entries: vec![entry(1, TraceEvent::Finish), entry(1, TraceEvent::Resume)],
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), Trace::default().fingerprint());
    }

    #[test]
    fn the_fingerprint_is_stable_across_builds() {
        // Pinned: a change to the encoding would make traces saved by older builds unequal.
        let trace = Trace {
            entries: vec![entry(1, TraceEvent::Phase(2))],
        };
        assert_eq!(trace.fingerprint(), 16_199_682_605_610_045_025);
        assert_eq!(Trace::default().fingerprint(), FINGERPRINT_SEED);
    }
}
