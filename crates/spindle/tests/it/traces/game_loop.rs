//! The game loop example's entities (`examples/game_loop.luau`), run small: two runs with the
//! same frames under virtual time give the same trace fingerprint and the same game state.

use spindle::mlua::Lua;
use spindle::FINGERPRINT_SEED;

#[path = "../../../examples/game_loop/world.rs"]
mod world;
use world::DT;

const ENTITY: &str = include_str!("../../../examples/game_loop.luau");

struct Outcome {
    fingerprint: u64,
    events: usize,
    respawns: u64,
    blocked: u64,
    errors: u64,
}

fn run(entities: u64, frames: usize) -> Outcome {
    let lua = Lua::new();
    let scheduler = world::build(&lua, true).unwrap();
    let entity = lua.load(ENTITY).into_function().unwrap();
    world::spawn(&scheduler, &entity, entities).unwrap();
    let globals = lua.globals();
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
