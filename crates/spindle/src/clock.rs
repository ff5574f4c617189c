//! The scheduler's sense of time.
//!
//! Time is a [`Duration`] since the clock's epoch. The real clock reads [`Instant::now`]; the
//! virtual clock only moves when its owner moves it, so a run under it is repeatable step for
//! step (contract rule 14). Neither clock ever goes backwards.
//!
//! A timer is due at a deadline on this clock; a delay of [`Clock::MAX_DELAY`] or more, or one
//! whose deadline the clock cannot hold, has none: such a timer never fires (rule 7 of the task
//! contract), whichever clock the scheduler reads and whatever it reads now.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where the scheduler reads the time from.
///
/// ```
/// use std::time::Duration;
/// use spindle::{Clock, VirtualClock};
///
/// let virtual_clock = VirtualClock::new();
/// let clock = Clock::from(virtual_clock.clone());
/// virtual_clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Clock {
    /// The monotonic clock of the machine, counted from when the clock was made.
    Real(Instant),
    /// A clock that only the host moves.
    Virtual(VirtualClock),
}

impl Clock {
    /// The shortest delay that never ends: 2^62 seconds, about 146 billion years. A fixed
    /// limit, rather than whatever `Instant` holds on the platform, so that both clocks agree;
    /// it leaves room for any uptime below `Instant`'s range (2^63 seconds on Unix).
    pub const MAX_DELAY: Duration = Duration::from_secs(1 << 62);

    /// The real monotonic clock, starting now.
    pub fn real() -> Self {
        Clock::Real(Instant::now())
    }

    /// The time since the clock's epoch.
    pub fn now(&self) -> Duration {
        match self {
            Clock::Real(epoch) => epoch.elapsed(),
            Clock::Virtual(clock) => clock.now(),
        }
    }

    /// The deadline of a timer started at `now` for `delay`; `None` when it never fires:
    /// `delay` is [`Clock::MAX_DELAY`] or more, or the deadline is past what a clock can hold.
    pub(crate) fn deadline(now: Duration, delay: Duration) -> Option<Duration> {
        if delay >= Self::MAX_DELAY {
            return None;
        }
        now.checked_add(delay)
    }

    /// The real instant at which the clock will read `at`, for sleeping until a deadline.
    /// `None` for a virtual clock, which no amount of sleeping moves.
    pub fn instant_at(&self, at: Duration) -> Option<Instant> {
        match self {
            Clock::Real(epoch) => epoch.checked_add(at),
            Clock::Virtual(_) => None,
        }
    }

    /// Moves a virtual clock forward to `to`; does nothing to the real clock.
    pub(crate) fn jump_to(&self, to: Duration) {
        if let Clock::Virtual(clock) = self {
            clock.set(to);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

impl From<VirtualClock> for Clock {
    fn from(clock: VirtualClock) -> Self {
        Clock::Virtual(clock)
    }
}

/// A clock that stands still until its owner advances it. Clones share one time.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    now: Rc<Cell<Duration>>,
}

impl VirtualClock {
    /// A virtual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        self.now.get()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.set(self.now.get().saturating_add(by));
    }

    /// Moves the clock to `to`. A time in the past is ignored: the clock never goes backwards.
    pub fn set(&self, to: Duration) {
        if to > self.now.get() {
            self.now.set(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_never_goes_backwards() {
        let clock = VirtualClock::new();
        clock.set(Duration::from_secs(10));
        clock.set(Duration::from_secs(3));
        assert_eq!(clock.now(), Duration::from_secs(10));
    }

    #[test]
    fn clones_of_a_virtual_clock_share_one_time() {
        let a = VirtualClock::new();
        let b = a.clone();
        a.advance(Duration::from_millis(250));
        assert_eq!(b.now(), Duration::from_millis(250));
    }

    #[test]
    fn real_clock_moves_and_maps_back_to_instants() {
        let clock = Clock::real();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() > t0);
        assert!(clock.instant_at(Duration::from_secs(1)).is_some());
        assert!(Clock::from(VirtualClock::new())
            .instant_at(Duration::ZERO)
            .is_none());
    }
}
