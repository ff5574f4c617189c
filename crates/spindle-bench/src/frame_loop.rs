//! frame_10k's Spindle side: the game loop example's entities (`game_loop.luau`, one script per
//! entity) driven one `Scheduler::frame` at a time under virtual time, through three phases
//! with the timers' turn before Heartbeat, as `examples/game_loop.rs` does; with tracing on,
//! the trace is taken and fingerprinted every frame, as the example does.
//!
//! Prints `done ENTITIES FRAMES HEARTBEATS` once every frame ran: HEARTBEATS counts the calls of
//! the entities' Heartbeat handlers, ENTITIES x FRAMES when every one ran every frame.

use std::path::Path;

use spindle::mlua::Lua;
use spindle::FINGERPRINT_SEED;

use crate::error::{Error, Result};

// The world the example builds, from its own file, so that the benchmark runs what it shows.
#[path = "../../spindle/examples/game_loop/world.rs"]
mod world;
use world::DT;

/// The frames of one run.
pub const FRAMES: u64 = 300;

/// Runs `entities` copies of the entity script at `file` for [`FRAMES`] frames.
pub fn run_file(file: &Path, entities: u64, trace: bool) -> Result<()> {
    let lua_error = |e: spindle::mlua::Error| Error::new(format!("{}: {e}", file.display()));
    let spindle_error = |e: spindle::Error| Error::new(format!("{}: {e}", file.display()));
    let source = std::fs::read(file)
        .map_err(|e| Error::new(format!("cannot read '{}': {e}", file.display())))?;
    let lua = Lua::new();
    let scheduler = world::build(&lua, trace).map_err(spindle_error)?;
    let entity = lua
        .load(&source[..])
        .set_name(format!("@{}", file.display()))
        .into_function()
        .map_err(lua_error)?;
    world::spawn(&scheduler, &entity, entities).map_err(spindle_error)?;
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
    let heartbeats: u64 = lua.globals().get("Heartbeats").map_err(lua_error)?;
    println!("done {entities} {FRAMES} {heartbeats}");
    Ok(())
}
