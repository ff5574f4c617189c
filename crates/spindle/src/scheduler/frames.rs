//! Game-engine hosting: one call runs a whole frame, through the phases the host declared.
//! The guide is on [`Scheduler::frame`], where `cargo doc` shows it; the engine's side is
//! `engine/frame.rs`.

use std::time::Duration;

use super::Scheduler;
use crate::engine::FrameReport;
use crate::error::Result;
use crate::signal::Signal;
use mlua::Table;

impl Scheduler {
    /// Runs one frame of `dt`.
    ///
    /// The host declares its phases on the builder ([`SchedulerBuilder::phases`]) and which of them
    /// the timers resume before ([`SchedulerBuilder::resume_waits_before`]; as in Roblox, where
    /// `task.wait` and `task.delay` resume between PostSimulation and Heartbeat). Each phase has a
    /// [`Signal`] that the host hands to scripts ([`Scheduler::phase`]) and that the frame fires
    /// with `dt` in seconds. Each phase is a resumption point: its handlers, and the tasks they
    /// defer, run before the next phase begins.
    ///
    /// A frame budget ([`SchedulerBuilder::frame_budget`]) caps the wall time a frame spends
    /// resuming ready tasks (due timers and woken futures): once it is spent, the ready tasks left
    /// over are carried to the next frame, where they run first, in order, and
    /// [`FrameReport::carried`] counts them. Phase handlers and the deferred queue are not capped:
    /// each phase still drains the deferred queue (contract rules 2-3), since a deferred task
    /// must run at the resumption point it was deferred to.
    ///
    /// [`SchedulerBuilder::phases`]: crate::SchedulerBuilder::phases
    /// [`SchedulerBuilder::resume_waits_before`]: crate::SchedulerBuilder::resume_waits_before
    /// [`SchedulerBuilder::frame_budget`]: crate::SchedulerBuilder::frame_budget
    ///
    /// Under a virtual clock the clock first moves forward by `dt`; under the real clock time
    /// moves by itself and `dt` is only what the phase signals receive. Then, for each phase
    /// in order: if it is the phase timers resume before, the ready tasks resume (carried ones
    /// first, then due timers, then woken futures, within the budget) and the deferred queue
    /// drains; the phase's signal fires with `dt` in seconds; the deferred queue drains. With no
    /// phases declared, a frame is a cycle that first moves the clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spindle::{Clock, Scheduler, VirtualClock};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::builder()
    ///     .clock(Clock::from(VirtualClock::new()))
    ///     .phases(["Stepped", "Heartbeat"])
    ///     .resume_waits_before("Heartbeat")
    ///     .build(&lua)?;
    /// scheduler.install_task_library()?;
    /// lua.globals().set("RunService", scheduler.phases_table()?)?;
    /// scheduler.spawn(lua.load(r#"
    ///     log = {}
    ///     RunService.Stepped:Connect(function() table.insert(log, "stepped") end)
    ///     RunService.Heartbeat:Connect(function() table.insert(log, "heartbeat") end)
    ///     task.delay(0, function() table.insert(log, "delay") end)
    /// "#).into_function()?, ())?;
    /// scheduler.frame(Duration::from_secs_f64(1.0 / 60.0))?;
    /// let log: Vec<String> = lua.globals().get("log")?;
    /// assert_eq!(log, ["stepped", "delay", "heartbeat"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frame(&self, dt: Duration) -> Result<FrameReport> {
        self.shared.inner.frame(&self.shared.lua, dt)
    }

    /// The signal of the phase called `name`, to hand to scripts; `None` if there is no such
    /// phase.
    pub fn phase(&self, name: &str) -> Option<Signal> {
        let index = self.phase_names().iter().position(|n| n == name)?;
        self.shared.phases.get(index).cloned()
    }

    /// The phases, in the order a frame runs them.
    pub fn phase_names(&self) -> &[String] {
        self.shared.inner.frames().names()
    }

    /// A new Lua table of the phases' signals by name, to hand to scripts as a service
    /// (Roblox's `RunService`): `RunService.Heartbeat:Connect(f)`.
    ///
    /// ```
    /// use spindle::Scheduler;
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::builder().phases(["Stepped", "Heartbeat"]).build(&lua)?;
    /// lua.globals().set("RunService", scheduler.phases_table()?)?;
    /// let connected: bool = lua
    ///     .load("return RunService.Heartbeat:Connect(function() end).Connected")
    ///     .eval()?;
    /// assert!(connected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn phases_table(&self) -> Result<Table> {
        let table = self.shared.lua.create_table()?;
        for (name, signal) in self.phase_names().iter().zip(&self.shared.phases) {
            table.set(name.as_str(), signal.clone())?;
        }
        Ok(table)
    }
}
