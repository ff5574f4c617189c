//! Spindle: a Roblox-compatible task scheduler for Luau, built on mlua.
//!
//! Scripts get the `task` library (`spawn`, `defer`, `delay`, `wait`, `cancel`) with Roblox's
//! semantics; the host gets a [`Scheduler`] that it can run to completion on any async runtime,
//! run on a plain thread, or step one [`cycle`](Scheduler::cycle) per frame. Rust async functions
//! are called from Lua as if they were blocking: the calling task is suspended until the future
//! completes, and the future's waker puts it back on the scheduler's queue.
//!
//! ```
//! use spindle::Scheduler;
//!
//! let lua = mlua::Lua::new();
//! let scheduler = Scheduler::new(&lua)?;
//! scheduler.install_task_library()?;
//!
//! let main = lua.load(r#"
//!     local log = {}
//!     task.spawn(function() table.insert(log, "spawned") end)
//!     task.defer(function() table.insert(log, "deferred") end)
//!     local elapsed = task.wait(0.01)
//!     table.insert(log, "waited")
//!     assert(elapsed >= 0.01)
//!     return table.concat(log, " ")
//! "#).into_function()?;
//! let task = scheduler.spawn(main, ())?;
//! scheduler.run_blocking()?;
//! let log: String = scheduler.take_result(&task)?.unwrap().into_result()?;
//! assert_eq!(log, "spawned deferred waited");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A game engine steps the scheduler once per frame under a virtual clock:
//!
//! ```
//! use std::time::Duration;
//! use spindle::{Clock, Scheduler, VirtualClock};
//!
//! let lua = mlua::Lua::new();
//! let clock = VirtualClock::new();
//! let scheduler = Scheduler::builder().clock(Clock::from(clock.clone())).build(&lua)?;
//! scheduler.install_task_library()?;
//! scheduler.spawn(lua.load("ticks = 0; while true do task.wait(1/60); ticks += 1 end").into_function()?, ())?;
//! for _frame in 0..60 {
//!     clock.advance(Duration::from_secs_f64(1.0 / 60.0));
//!     scheduler.cycle()?;
//! }
//! assert_eq!(lua.globals().get::<u32>("ticks")?, 60);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod async_fn;
mod clock;
mod error;
mod frame;
mod host;
mod run;
mod scheduler;
mod signal;
mod task_lib;
mod tasks;
mod timers;
mod trace;
mod values;
mod vm;
mod waker;

pub use clock::{Clock, VirtualClock};
pub use error::{Error, Result, TaskError};
pub use frame::{FrameReport, FrameWork};
pub use host::{IntoThread, Outcome, Scheduler, SchedulerBuilder, Task, DEFAULT_MAX_DEFER_DEPTH};
pub use run::Sleeper;
pub use scheduler::{CycleReport, TaskStatus};
pub use signal::{Signal, SignalBehavior};
pub use tasks::TaskId;
pub use trace::{Trace, TraceEntry, TraceEvent, FINGERPRINT_SEED};

pub use mlua;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
