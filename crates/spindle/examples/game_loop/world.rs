//! The game loop's world: a scheduler that steps as a Roblox server does, under virtual time,
//! and the entities spawned on it. The example (`examples/game_loop.rs`), its trace test
//! (`tests/it/traces/game_loop.rs`) and spindle-bench's frame_10k
//! (`crates/spindle-bench/src/frame_loop.rs`) each include this file as a module (`#[path]`),
//! so the three build the same world; each drives the frames its own way (timing them,
//! checking them, or fingerprinting them).
//!
//! It lives beside the example, not in the library: the phases and globals are this game's,
//! not Spindle's, and the library depends on neither its tests nor the benchmark.

use std::time::Duration;

use spindle::mlua::{Function, Lua};
use spindle::{Clock, Result, Scheduler, VirtualClock};

/// One frame at 60 Hz: 1/60 s, rounded to the nanosecond.
pub const DT: Duration = Duration::from_nanos(16_666_667);

/// A scheduler for `lua` under virtual time, with Roblox's phases (`PreSimulation`,
/// `PostSimulation`, `Heartbeat`; timers resumed before `Heartbeat`) and the task library, and
/// the globals the entities share: `RunService` (the phases' signals), `Entities`, and the
/// counters `Respawns`, `Blocked` and `Heartbeats`. With `trace`, the trace is recorded from
/// here on, so that it has the entities' spawns.
pub fn build(lua: &Lua, trace: bool) -> Result<Scheduler> {
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .phases(["PreSimulation", "PostSimulation", "Heartbeat"])
        .resume_waits_before("Heartbeat")
        .build(lua)?;
    scheduler.install_task_library()?;
    let globals = lua.globals();
    globals.set("RunService", scheduler.phases_table()?)?;
    globals.set("Entities", lua.create_table()?)?;
    for counter in ["Respawns", "Blocked", "Heartbeats"] {
        globals.set(counter, 0)?;
    }
    if trace {
        scheduler.start_trace();
    }
    Ok(scheduler)
}

/// Spawns `entities` tasks of the entity script `entity`, each given its id (from 1) and the
/// count.
pub fn spawn(scheduler: &Scheduler, entity: &Function, entities: u64) -> Result<()> {
    for id in 1..=entities {
        // The handle is dropped: the entity runs on, detached.
        scheduler.spawn(entity, (id, entities))?;
    }
    Ok(())
}
