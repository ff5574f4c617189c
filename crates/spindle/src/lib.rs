//! Spindle: a Roblox-compatible task scheduler for Luau, built on mlua.
//!
//! Scripts get the `task` library (`spawn`, `defer`, `delay`, `wait`, `cancel`) with Roblox's
//! semantics; the host gets a [`Scheduler`] that it can run to completion on any async runtime,
//! run on a plain thread, or step one [`frame`](Scheduler::frame) at a time. Rust async functions
//! are called from Lua as if they were blocking: the calling task is suspended until the future
//! completes, and the future's waker puts it back on the scheduler's queue.
//!
//! What Lua code may rely on, rule by rule, is in the repository's `docs/contract.md`. How to
//! embed the scheduler in a Rust host (building it, starting tasks and reading their results,
//! driving it on a thread, an async runtime or a game loop, signals, async functions, limits,
//! traces and errors) is in the repository's `docs/host-guide.md`, whose examples run as
//! doctests.
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
//! # Hosting in a game engine
//!
//! An engine declares the phases of its frame, hands their [`Signal`]s to scripts, and calls
//! [`Scheduler::frame`] once per frame with the frame's `dt`. Under a [`VirtualClock`] the
//! frame moves the clock by `dt`, so a run is the same, event for event, every time; a
//! [`Trace`] records it for comparison. Each phase is a resumption point: its handlers run,
//! then the deferred queue drains. `task.wait` and `task.delay` resume just before the phase
//! named by [`resume_waits_before`](SchedulerBuilder::resume_waits_before), as Roblox resumes
//! them between PostSimulation and Heartbeat. An optional
//! [`frame_budget`](SchedulerBuilder::frame_budget) caps the wall time a frame spends resuming
//! ready tasks; what is left over runs first in the next frame ([`FrameReport::carried`]).
//!
//! Scripts make their own signals with `Signal.new(behavior?)` (`"Immediate"` or
//! `"Deferred"`), with Roblox's methods: `Connect`, `Once`, `Wait`, `Fire`, `DisconnectAll`,
//! and connections with `Connected` and `Disconnect`.
//!
//! ```
//! use std::time::Duration;
//! use spindle::{Clock, Scheduler, VirtualClock};
//!
//! let lua = mlua::Lua::new();
//! let scheduler = Scheduler::builder()
//!     .clock(Clock::from(VirtualClock::new()))
//!     .phases(["PreSimulation", "PostSimulation", "Heartbeat"])
//!     .resume_waits_before("Heartbeat")
//!     .frame_budget(Duration::from_millis(4))
//!     .build(&lua)?;
//! scheduler.install_task_library()?;
//! lua.globals().set("RunService", scheduler.phases_table()?)?;
//! // The engine's own events are signals too, fired with Rust values.
//! let touched = scheduler.create_signal()?;
//! lua.globals().set("Touched", &touched)?;
//!
//! scheduler.spawn(lua.load(r#"
//!     elapsed, touches = 0, 0
//!     RunService.Heartbeat:Connect(function(dt) elapsed += dt end)
//!     Touched:Connect(function(part) touches += 1 end)
//!     local part = Touched:Wait()          -- suspends this task until the engine fires
//!     assert(part == "Lava")
//!     task.wait(1)
//!     done = true
//! "#).into_function()?, ())?;
//!
//! scheduler.start_trace();
//! for frame in 1..=120 {
//!     if frame == 10 {
//!         touched.fire("Lava")?;
//!     }
//!     let report = scheduler.frame(Duration::from_secs_f64(1.0 / 60.0))?;
//!     assert_eq!(report.errors, 0);
//! }
//! assert_eq!(lua.globals().get::<bool>("done")?, true);
//! assert_eq!(lua.globals().get::<u32>("touches")?, 1);
//! assert!((lua.globals().get::<f64>("elapsed")? - 2.0).abs() < 1e-6);
//! let trace = scheduler.take_trace();
//! println!("{} events, fingerprint {:x}", trace.len(), trace.fingerprint());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A host without phases can still step one [`cycle`](Scheduler::cycle) per frame, advancing
//! its virtual clock itself:
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
//!
//! # Serving, and awaiting tasks
//!
//! A server or an async framework drives the scheduler with
//! [`run_until`](Scheduler::run_until) (or [`run_forever`](Scheduler::run_forever)), which
//! sleeps without using the CPU while no work is left and wakes when the host spawns, defers,
//! fires a signal or a Rust future completes. The host awaits one task with
//! [`join`](Scheduler::join), hears of every task's end through
//! [`on_task_end`](SchedulerBuilder::on_task_end), and reaches the scheduler from a Rust
//! function that Lua calls with [`Scheduler::from_lua`].
//!
//! # Limits
//!
//! Untrusted scripts get bounds: [`timeout`](SchedulerBuilder::timeout) stops a task that runs
//! too long without yielding, [`time_slice`](SchedulerBuilder::time_slice) suspends a busy
//! task so the others run, [`max_defer_depth`](SchedulerBuilder::max_defer_depth) bounds
//! deferrals from deferred tasks, and mlua's `Lua::set_memory_limit` bounds the heap: a task
//! that runs out of memory fails with `not enough memory` and its traceback, and the memory
//! goes back before any other task runs (contract rule 23). No script can crash the host.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod async_fn;
mod clock;
mod core;
mod engine;
mod error;
mod run;
mod scheduler;
mod signal;
mod task_lib;
mod trace;
mod values;
mod vm;
mod waker;
mod watchdog;

pub use crate::core::TaskId;
pub use clock::{Clock, VirtualClock};
pub use engine::{
    Cause, CreationSite, CycleReport, FrameReport, FrameWork, Span, TaskEnd, TaskInfo, TaskState,
    TaskStatus,
};
pub use error::{Error, Result, TaskError};
pub use run::Sleeper;
pub use scheduler::{
    Ended, IntoThread, Join, Outcome, Resumed, Scheduler, SchedulerBuilder, ScriptEnd, Task,
    WeakScheduler, DEFAULT_MAX_DEFER_DEPTH,
};
pub use signal::{Signal, SignalBehavior};
pub use trace::{Trace, TraceEntry, TraceEvent, FINGERPRINT_SEED};
pub use vm::native_code_supported;
pub use watchdog::TIMEOUT_MESSAGE;

pub use mlua;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

/// The host guide's Rust examples (`docs/host-guide.md`), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/host-guide.md")]
struct HostGuideExamples;
