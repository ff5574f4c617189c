//! The game loop example's entities (`examples/game_loop.luau`), run small: two runs with the
//! same frames under virtual time give the same trace fingerprint and the same game state.

use std::time::Duration;

use spindle::mlua::Lua;
use spindle::{Clock, Scheduler, VirtualClock, FINGERPRINT_SEED};

const ENTITY: &str = include_str!("../../../examples/game_loop.luau");
const DT: Duration = Duration::from_nanos(16_666_667);

struct Outcome {
    fingerprint: u64,
    events: usize,
    respawns: u64,
    blocked: u64,
    errors: u64,
}

fn run(entities: u32, frames: usize) -> Outcome {
    let lua = Lua::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .phases(["PreSimulation", "PostSimulation", "Heartbeat"])
        .resume_waits_before("Heartbeat")
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let run_service = lua.create_table().unwrap();
    for name in scheduler.phase_names() {
        run_service
            .set(name.as_str(), scheduler.phase(name))
            .unwrap();
    }
    let globals = lua.globals();
    globals.set("RunService", run_service).unwrap();
    globals
        .set("Entities", lua.create_table().unwrap())
        .unwrap();
    globals.set("Respawns", 0).unwrap();
    globals.set("Blocked", 0).unwrap();
    globals.set("Heartbeats", 0).unwrap();
    scheduler.start_trace();
    let entity = lua.load(ENTITY).into_function().unwrap();
    for id in 1..=entities {
        scheduler.spawn(&entity, (id, entities)).unwrap();
    }
    let mut fingerprint = FINGERPRINT_SEED;
    let mut events = 0;
    for _ in 0..frames {
        scheduler.frame(DT).unwrap();
        // Taken every frame, as the example does: the pieces fingerprint as the whole.
        let trace = scheduler.take_trace();
        events += trace.len();
        fingerprint = trace.fingerprint_from(fingerprint);
    }
    Outcome {
        fingerprint,
        events,
        respawns: globals.get("Respawns").unwrap(),
        blocked: globals.get("Blocked").unwrap(),
        errors: scheduler.error_count(),
    }
}

#[test]
fn two_runs_of_the_game_loop_give_the_same_trace_fingerprint() {
    let first = run(300, 120);
    let second = run(300, 120);
    assert_eq!(first.errors, 0);
    assert!(first.events > 10_000, "{} events", first.events);
    assert!(
        first.respawns > 0 && first.blocked > 0,
        "the entities hit each other"
    );
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(
        (first.events, first.respawns, first.blocked),
        (second.events, second.respawns, second.blocked)
    );
    // A different run fingerprints differently, so the comparison above can fail.
    assert_ne!(run(301, 120).fingerprint, first.fingerprint);
}
