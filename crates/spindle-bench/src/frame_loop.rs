//! frame_10k's Spindle side: the game loop example's entities (`game_loop.luau`, one script per
//! entity) driven one `Scheduler::frame` at a time under virtual time, through three phases
//! with the timers' turn before Heartbeat, as `examples/game_loop.rs` does; with tracing on,
//! the trace is taken and fingerprinted every frame, as the example does.
//!
//! Prints `done ENTITIES FRAMES HEARTBEATS` once every frame ran: HEARTBEATS counts the calls of
//! the entities' Heartbeat handlers, ENTITIES x FRAMES when every one ran every frame.

use std::path::Path;
use std::time::Duration;

use spindle::mlua::Lua;
use spindle::{Clock, Scheduler, VirtualClock, FINGERPRINT_SEED};

use crate::error::{Error, Result};

/// The frames of one run.
pub const FRAMES: u64 = 300;

/// 1/60 s, rounded to the nanosecond.
const DT: Duration = Duration::from_nanos(16_666_667);

/// Runs `entities` copies of the entity script at `file` for [`FRAMES`] frames.
pub fn run_file(file: &Path, entities: u64, trace: bool) -> Result<()> {
    let lua_error = |e: spindle::mlua::Error| Error::new(format!("{}: {e}", file.display()));
    let spindle_error = |e: spindle::Error| Error::new(format!("{}: {e}", file.display()));
    let source = std::fs::read(file)
        .map_err(|e| Error::new(format!("cannot read '{}': {e}", file.display())))?;
    let lua = Lua::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .phases(["PreSimulation", "PostSimulation", "Heartbeat"])
        .resume_waits_before("Heartbeat")
        .build(&lua)
        .map_err(spindle_error)?;
    scheduler.install_task_library().map_err(spindle_error)?;
    let globals = lua.globals();
    globals
        .set(
            "RunService",
            scheduler.phases_table().map_err(spindle_error)?,
        )
        .map_err(lua_error)?;
    globals
        .set("Entities", lua.create_table().map_err(lua_error)?)
        .map_err(lua_error)?;
    for counter in ["Respawns", "Blocked", "Heartbeats"] {
        globals.set(counter, 0).map_err(lua_error)?;
    }
    if trace {
        scheduler.start_trace();
    }
    let entity = lua
        .load(&source[..])
        .set_name(format!("@{}", file.display()))
        .into_function()
        .map_err(lua_error)?;
    for id in 1..=entities {
        drop(
            scheduler
                .spawn(&entity, (id, entities))
                .map_err(spindle_error)?,
        );
    }
    let mut fingerprint = FINGERPRINT_SEED;
    for _ in 0..FRAMES {
        let report = scheduler.frame(DT).map_err(spindle_error)?;
        if report.errors > 0 {
            return Err(Error::new(format!("{} errors in a frame", report.errors)));
        }
        if trace {
            fingerprint = scheduler.take_trace().fingerprint_from(fingerprint);
        }
    }
    std::hint::black_box(fingerprint);
    let heartbeats: u64 = globals.get("Heartbeats").map_err(lua_error)?;
    println!("done {entities} {FRAMES} {heartbeats}");
    Ok(())
}
