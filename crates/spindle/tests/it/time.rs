//! Time: `task.wait`, `task.delay` and the timers behind them (contract rules 4, 5, 7, 12, 15).

mod never_firing_timers;
mod stale_wakeups;
mod timed_wakes;
mod wait;
mod wait_lane;
