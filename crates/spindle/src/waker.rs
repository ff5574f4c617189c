//! Wakers that turn a future's wake-up into an entry on the scheduler's wake queue.
//!
//! A waker names one suspension: the task's slot, the slot's generation and the suspension's
//! token. The scheduler checks all three before it acts on a wake-up, so a stale or duplicate
//! wake-up is dropped, never resumes a task twice.
//!
//! During a resumption the task is polled with a *borrowed* waker that lives on the stack and
//! costs nothing; only when a future keeps the waker (clones it) is an owned, `Arc`-backed waker
//! allocated. A wake-up through the borrowed waker while the poll is still running only sets a
//! flag, because mlua wakes the context on every plain yield of a thread and most resumptions end
//! in a yield that no future asked for.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{RawWaker, RawWakerVTable, Wake, Waker};

/// One suspension of one task: what a wake-up refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WakeTarget {
    pub slot: u32,
    pub generation: u32,
    pub token: u32,
}

/// The queue of wake-ups, shared with every waker. Wakers may fire from any thread.
#[derive(Default)]
pub(crate) struct WakeQueue {
    inner: Mutex<WakeState>,
    /// How many wake-ups are queued, written under the lock and read without it: the driver
    /// asks twice a cycle whether any is queued, and taking the lock for it cost 2.6% of the
    /// time of pend-once calls of an mlua async function (perf).
    queued: AtomicUsize,
    /// Whether a driver's waker is registered (written under the lock).
    parked: AtomicBool,
}

#[derive(Default)]
struct WakeState {
    woken: Vec<WakeTarget>,
    /// The waker of whoever drives the scheduler while it is idle (a `run` future or a parked
    /// thread), woken by the first wake-up that arrives.
    driver: Option<Waker>,
    /// Work was queued from outside a cycle since the driver last parked ([`WakeQueue::nudge`]).
    nudged: bool,
}

impl WakeQueue {
    fn lock(&self) -> MutexGuard<'_, WakeState> {
        // A panic while the lock is held leaves a plain Vec behind, which is still valid.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, target: WakeTarget) {
        let driver = {
            let mut state = self.lock();
            state.woken.push(target);
            self.queued.store(state.woken.len(), Ordering::Release);
            self.parked.store(false, Ordering::Release);
            state.driver.take()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Hands every queued wake-up to `each`, in order, under the queue's lock (so `each` must
    /// not wake anything). The queue keeps its buffer: swapping a fresh one in made every
    /// cycle's first wake-up allocate (150 of the 7,000 instructions of a pend-once call).
    pub(crate) fn take_each(&self, each: impl FnMut(WakeTarget)) {
        if self.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.woken.drain(..).for_each(each);
        self.queued.store(0, Ordering::Release);
    }

    /// Forgets every queued wake-up.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.woken.clear();
        self.queued.store(0, Ordering::Release);
    }

    /// Whether no wake-up is queued. A wake-up from another thread may arrive right after;
    /// `park_driver` checks again under the lock before the driver sleeps.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// Registers the driver's waker, unless a wake-up is already queued. Returns `false` when
    /// one is queued (the driver should not go to sleep).
    pub(crate) fn park_driver(&self, driver: &Waker) -> bool {
        let mut state = self.lock();
        if !state.woken.is_empty() || std::mem::take(&mut state.nudged) {
            return false;
        }
        match &mut state.driver {
            Some(current) if current.will_wake(driver) => {}
            slot => *slot = Some(driver.clone()),
        }
        self.parked.store(true, Ordering::Release);
        true
    }

    /// The driver woke (on its sleep's end, its end future, a wake-up or a nudge) and runs
    /// cycles again: nothing needs to wake it until it parks next. Left registered, its waker
    /// would be woken by the first `nudge` of the coming cycle (any `task.wait`), for a
    /// needless cycle.
    /// A nudge that came meanwhile is forgotten too: the coming cycle sees the work it told
    /// of. (Called only after the driver slept, so the lock costs nothing that matters.)
    pub(crate) fn driver_awake(&self) {
        let mut state = self.lock();
        self.parked.store(false, Ordering::Release);
        state.driver = None;
        state.nudged = false;
    }

    /// Wakes a parked driver with no wake-up to hand it: work was queued from outside any cycle
    /// (the host spawned a task, or Lua that no task runs called `task.defer`), which a driver
    /// that serves ([`Scheduler::run_until`](crate::Scheduler::run_until)) must see. One atomic
    /// read when no driver is parked, as inside a cycle.
    #[inline]
    pub(crate) fn nudge(&self) {
        if !self.parked.load(Ordering::Acquire) {
            return;
        }
        let driver = {
            let mut state = self.lock();
            state.nudged = true;
            self.parked.store(false, Ordering::Release);
            state.driver.take()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Whether a wake-up from the scheduler's own thread may skip this queue (see
    /// `Inner::wake_self`): none is queued here, which it would overtake, and no driver waits
    /// to be woken by it.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_empty() && !self.parked.load(Ordering::Acquire)
    }
}

/// A waker that a future kept: pushes its target onto the queue when woken.
struct OwnedWaker {
    target: WakeTarget,
    queue: Arc<WakeQueue>,
}

impl Wake for OwnedWaker {
    fn wake(self: Arc<Self>) {
        self.queue.push(self.target);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.push(self.target);
    }
}

/// The waker a task is polled with during one resumption. Lives on the resuming stack frame,
/// and borrows the queue: holding a clone of its `Arc` cost two atomic operations a resumption.
pub(crate) struct BorrowedWaker<'a> {
    target: WakeTarget,
    queue: &'a Arc<WakeQueue>,
    woken: AtomicBool,
}

impl<'a> BorrowedWaker<'a> {
    pub(crate) fn new(target: WakeTarget, queue: &'a Arc<WakeQueue>) -> Self {
        BorrowedWaker {
            target,
            queue,
            woken: AtomicBool::new(false),
        }
    }

    /// Whether the waker was woken during the poll it was lent to.
    pub(crate) fn was_woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed)
    }

    /// Calls `f` with a `Waker` that refers to this value.
    pub(crate) fn with_waker<R>(&self, f: impl FnOnce(&Waker) -> R) -> R {
        let raw = RawWaker::new(self as *const Self as *const (), &BORROWED_VTABLE);
        // SAFETY: the vtable's functions only read through the data pointer, which points to
        // `self`, borrowed for this whole call. The waker is never dropped (`ManuallyDrop`, and
        // its drop function does nothing anyway), so it cannot outlive the borrow; a future that
        // keeps it calls `clone`, which makes an owned waker that does not point to `self`.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        f(&waker)
    }
}

static BORROWED_VTABLE: RawWakerVTable =
    RawWakerVTable::new(borrowed_clone, borrowed_wake, borrowed_wake, borrowed_drop);

unsafe fn borrowed_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the `BorrowedWaker` lent by `with_waker`, alive for the whole call.
    let this = unsafe { &*(data as *const BorrowedWaker<'_>) };
    let owned = Waker::from(Arc::new(OwnedWaker {
        target: this.target,
        queue: Arc::clone(this.queue),
    }));
    let owned = ManuallyDrop::new(owned);
    RawWaker::new(owned.data(), owned.vtable())
}

unsafe fn borrowed_wake(data: *const ()) {
    // SAFETY: `data` is the `BorrowedWaker` lent by `with_waker`: the waker pointing to it is
    // only lent as `&Waker` for that call (its clones are owned wakers), so it is alive here.
    let this = unsafe { &*(data as *const BorrowedWaker<'_>) };
    this.woken.store(true, Ordering::Relaxed);
}

unsafe fn borrowed_drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(slot: u32) -> WakeTarget {
        WakeTarget {
            slot,
            generation: 1,
            token: 7,
        }
    }

    #[test]
    fn borrowed_wake_sets_flag_without_queueing() {
        let queue = Arc::new(WakeQueue::default());
        let borrowed = BorrowedWaker::new(target(3), &queue);
        borrowed.with_waker(|w| w.wake_by_ref());
        assert!(borrowed.was_woken());
        assert!(queue.is_empty());
    }

    #[test]
    fn cloned_waker_outlives_the_borrow_and_queues_its_target() {
        let queue = Arc::new(WakeQueue::default());
        let kept = {
            let borrowed = BorrowedWaker::new(target(5), &queue);
            borrowed.with_waker(|w| w.clone())
        };
        std::thread::spawn(move || kept.wake()).join().unwrap();
        let mut woken = Vec::new();
        queue.take_each(|target| woken.push(target));
        assert_eq!(woken, vec![target(5)]);
    }

    #[test]
    fn parked_driver_is_woken_once_by_the_first_wake() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let driver = Waker::from(Arc::clone(&count));
        let queue = WakeQueue::default();
        assert!(queue.park_driver(&driver));
        queue.push(target(1));
        queue.push(target(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(
            !queue.park_driver(&driver),
            "a queued wake-up keeps the driver awake"
        );
    }
}
