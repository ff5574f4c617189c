//! The deadline queue behind `task.wait` and `task.delay`.
//!
//! A binary min-heap ordered by deadline, then by insertion order, so that equal deadlines fire
//! in the order they were scheduled (contract rule 15). Entries are not removed when the task
//! they wake is cancelled or resumed early; the scheduler keeps a count of live entries, skips
//! stale ones when they surface and calls [`Timers::retain`] when stale entries outnumber live
//! ones, so memory stays proportional to live timers and removal costs O(1) amortised.
//!
//! Timers pushed in deadline order, as every `task.wait()` of one cycle is (each is due at the
//! cycle's `now`), go to a FIFO run beside the heap instead, at O(1) a push and a pop: the
//! heap's `pop` was 6% of a profile of 1M spawned tasks each waiting once. Invariant: the run is
//! sorted by (deadline, insertion order), and the earliest timer is the front of the run or the
//! top of the heap.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

/// One scheduled wake-up.
#[derive(Debug)]
pub(crate) struct Timer<T> {
    pub deadline: Duration,
    seq: u64,
    pub payload: T,
}

impl<T> PartialEq for Timer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Timer<T> {}

impl<T> PartialOrd for Timer<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Timer<T> {
    fn key(&self) -> (Duration, u64) {
        (self.deadline, self.seq)
    }
}

impl<T> Ord for Timer<T> {
    /// Reversed, so that the max-heap `BinaryHeap` yields the earliest timer first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// Timers ordered by (deadline, insertion order).
#[derive(Debug)]
pub(crate) struct Timers<T> {
    /// Timers pushed in order: each one no earlier than the one before it.
    run: VecDeque<Timer<T>>,
    heap: BinaryHeap<Timer<T>>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            run: VecDeque::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Timers<T> {
    pub fn push(&mut self, deadline: Duration, payload: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let timer = Timer {
            deadline,
            seq,
            payload,
        };
        match self.run.back() {
            Some(last) if last.deadline > deadline => self.heap.push(timer),
            _ => self.run.push_back(timer),
        }
    }

    /// Whether the earliest timer is the run's front rather than the heap's top.
    fn run_first(&self) -> bool {
        match (self.run.front(), self.heap.peek()) {
            (Some(run), Some(heap)) => run.key() < heap.key(),
            (run, _) => run.is_some(),
        }
    }

    pub fn peek(&self) -> Option<&Timer<T>> {
        if self.run_first() {
            self.run.front()
        } else {
            self.heap.peek()
        }
    }

    pub fn pop(&mut self) -> Option<Timer<T>> {
        if self.run_first() {
            self.run.pop_front()
        } else {
            self.heap.pop()
        }
    }

    /// Every timer, in no particular order: for the host's task list, which is not a hot path.
    pub fn iter(&self) -> impl Iterator<Item = &Timer<T>> {
        self.run.iter().chain(self.heap.iter())
    }

    /// Removes the earliest timer if it is due at `now`. Choosing between the run and the
    /// heap once, rather than in `peek` and again in `pop`, saved 20 instructions a timer.
    pub fn pop_due(&mut self, now: Duration) -> Option<Timer<T>> {
        if self.run_first() {
            (self.run.front()?.deadline <= now).then(|| self.run.pop_front())?
        } else {
            (self.heap.peek()?.deadline <= now).then(|| self.heap.pop())?
        }
    }

    pub fn len(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    /// Keeps only the timers for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Timer<T>) -> bool) {
        self.run.retain(&mut keep);
        self.heap.retain(keep);
    }

    /// Removes every timer, handing each to `each`.
    pub fn drain(&mut self, mut each: impl FnMut(Timer<T>)) {
        self.run.drain(..).for_each(&mut each);
        self.heap.drain().for_each(each);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_deadline_first_then_insertion_order() {
        let mut timers = Timers::default();
        timers.push(Duration::from_millis(20), "late");
        timers.push(Duration::from_millis(10), "first");
        timers.push(Duration::from_millis(10), "second");
        let order: Vec<_> = std::iter::from_fn(|| timers.pop().map(|t| t.payload)).collect();
        assert_eq!(order, ["first", "second", "late"]);
    }

    #[test]
    fn pop_due_leaves_future_timers() {
        let mut timers = Timers::default();
        timers.push(Duration::from_millis(5), 1);
        timers.push(Duration::from_millis(50), 2);
        assert_eq!(
            timers.pop_due(Duration::from_millis(10)).map(|t| t.payload),
            Some(1)
        );
        assert!(timers.pop_due(Duration::from_millis(10)).is_none());
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn pop_due_takes_a_due_timer_from_the_heap_and_leaves_one_not_due() {
        let mut timers = Timers::default();
        // The second push is earlier than the first: it goes to the heap, and is the earliest.
        timers.push(Duration::from_millis(50), "run");
        timers.push(Duration::from_millis(5), "heap");
        assert!(timers.pop_due(Duration::from_millis(4)).is_none());
        assert_eq!(
            timers.pop_due(Duration::from_millis(5)).map(|t| t.payload),
            Some("heap")
        );
        assert!(timers.pop_due(Duration::from_millis(49)).is_none());
        assert_eq!(
            timers.pop_due(Duration::from_millis(50)).map(|t| t.payload),
            Some("run")
        );
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn timers_in_order_and_out_of_order_come_out_merged() {
        let mut timers = Timers::default();
        // In order (the run), then earlier ones (the heap), then equal deadlines of both.
        for (ms, name) in [
            (10, "a"),
            (20, "b"),
            (30, "c"),
            (5, "d"),
            (20, "e"),
            (30, "f"),
        ] {
            timers.push(Duration::from_millis(ms), name);
        }
        timers.push(Duration::from_millis(40), "g");
        let order: Vec<_> = std::iter::from_fn(|| timers.pop().map(|t| t.payload)).collect();
        assert_eq!(order, ["d", "a", "b", "e", "c", "f", "g"]);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn retain_keeps_order_of_survivors() {
        let mut timers = Timers::default();
        for i in 0..10 {
            timers.push(Duration::from_millis(10 - i), i);
        }
        for i in 10..20 {
            timers.push(Duration::from_millis(i), i);
        }
        timers.retain(|t| t.payload % 2 == 0);
        let order: Vec<_> = std::iter::from_fn(|| timers.pop().map(|t| t.payload)).collect();
        assert_eq!(order, [8, 6, 4, 2, 0, 10, 12, 14, 16, 18]);
    }
}
