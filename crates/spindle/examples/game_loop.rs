//! A 60 Hz game loop under virtual time: 10,000 entity scripts (`game_loop.luau`) that wait,
//! connect to Heartbeat and fire signals at each other, driven one `Scheduler::frame` at a
//! time through three phases, as a Roblox server steps.
//!
//! Prints the wall time per frame (p50, p90, p99, max). Tracing is off unless `--trace` is
//! given; with it, the trace is taken every frame and the run's fingerprint printed, the same
//! on every run: virtual time makes the run deterministic.
//!
//! ```sh
//! cargo run --release -p spindle --example game_loop -- [--trace] [ENTITIES] [FRAMES]
//! ```

use std::time::{Duration, Instant};

use spindle::mlua::Lua;
use spindle::{FrameReport, FINGERPRINT_SEED};

#[path = "game_loop/world.rs"]
mod world;
use world::DT;

const ENTITY: &str = include_str!("game_loop.luau");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (flags, counts): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let trace = match flags.as_slice() {
        [] => false,
        [flag] if flag == "--trace" => true,
        _ => return Err(format!("unknown flags {flags:?}: the one flag is --trace").into()),
    };
    let mut counts = counts.into_iter();
    let entities: u32 = counts.next().map_or(Ok(10_000), |a| a.parse())?;
    let frames: usize = counts.next().map_or(Ok(300), |a| a.parse())?;

    let lua = Lua::new();
    let scheduler = world::build(&lua, trace)?;
    let entity = lua
        .load(ENTITY)
        .set_name("@game_loop.luau")
        .into_function()?;
    let started = Instant::now();
    world::spawn(&scheduler, &entity, entities.into())?;
    let spawn_time = started.elapsed();
    let mut fingerprint = scheduler.take_trace().fingerprint_from(FINGERPRINT_SEED);

    let mut times = Vec::with_capacity(frames);
    let mut total = FrameReport::default();
    let mut events = 0;
    for _ in 0..frames {
        let start = Instant::now();
        let report = scheduler.frame(DT)?;
        times.push(start.elapsed());
        let trace = scheduler.take_trace();
        events += trace.len();
        fingerprint = trace.fingerprint_from(fingerprint);
        total.timers += report.timers;
        total.deferred += report.deferred;
        total.errors += report.errors;
    }

    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{entities} entities, {frames} frames of {:.3} ms virtual ({:.1} s), spawned in {:.1} ms, \
         tracing {}",
        ms(DT),
        DT.as_secs_f64() * frames as f64,
        ms(spawn_time),
        if trace { "on" } else { "off" }
    );
    println!(
        "wall time per frame: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    println!(
        "per frame: {:.0} timers, {:.0} deferred resumptions, {:.0} trace events; \
         {} errors, {} respawns, {} damage seen by Hit:Wait",
        total.timers as f64 / frames as f64,
        total.deferred as f64 / frames as f64,
        events as f64 / frames as f64,
        total.errors,
        lua.globals().get::<u64>("Respawns")?,
        lua.globals().get::<u64>("Blocked")?
    );
    if trace {
        println!("trace fingerprint: {fingerprint:016x}");
    }
    Ok(())
}
