//! Deterministic virtual time (contract rule 14): the same script with the same frames gives
//! the same trace, event for event, on every run; and the trace says what happened.

mod game_loop;

use std::time::Duration;

use spindle::mlua::Lua;
use spindle::{Clock, Scheduler, Trace, TraceEvent, VirtualClock};

const DT: Duration = Duration::from_nanos(16_666_667);

/// Spawns, waits, delays, deferrals, signals of both behaviours, errors and cancellation.
const BUSY: &str = r#"
    local hit = Signal.new("Immediate")
    local later = Signal.new("Deferred")
    for i = 1, 20 do
        task.spawn(function()
            local n = 0
            RunService.Heartbeat:Connect(function(dt)
                n += 1
                if n % (i % 4 + 1) == 0 then
                    hit:Fire(i)
                end
            end)
            while true do
                task.wait(i / 100)
                later:Fire(i)
                if i == 7 and n > 30 then
                    error("entity 7 gives up")
                end
            end
        end)
    end
    hit:Connect(function(i) task.defer(function() end) end)
    later:Connect(function(i) if i % 5 == 0 then task.wait(0.05) end end)
    local doomed = task.delay(0.5, print, "never")
    task.delay(0.25, function() task.cancel(doomed) end)
"#;

fn traced_run(source: &str, frames: usize, dt: Duration) -> Trace {
    let lua = Lua::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .phases(["Stepped", "Heartbeat"])
        .resume_waits_before("Heartbeat")
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let run_service = lua.create_table().unwrap();
    run_service
        .set("Heartbeat", scheduler.phase("Heartbeat").unwrap())
        .unwrap();
    lua.globals().set("RunService", run_service).unwrap();
    scheduler.start_trace();
    scheduler
        .spawn(lua.load(source).into_function().unwrap(), ())
        .unwrap();
    for _ in 0..frames {
        scheduler.frame(dt).unwrap();
    }
    scheduler.take_trace()
}

#[test]
fn two_runs_of_the_same_script_with_the_same_frames_give_identical_traces() {
    let first = traced_run(BUSY, 90, DT);
    let second = traced_run(BUSY, 90, DT);
    assert!(
        first.len() > 1000,
        "the script does little: {}",
        first.len()
    );
    let events = |event| first.entries().iter().filter(|e| e.event == event).count();
    assert!(events(TraceEvent::Fail) == 1 && events(TraceEvent::Cancel) == 1);
    assert_eq!(first, second);
    assert_eq!(first.fingerprint(), second.fingerprint());

    // The comparison can fail: other frames give another trace.
    let other = traced_run(BUSY, 90, DT * 2);
    assert_ne!(first, other);
    assert_ne!(first.fingerprint(), other.fingerprint());
}

#[test]
fn the_trace_names_the_cycle_the_task_the_event_and_the_virtual_time() {
    let trace = traced_run(
        r#"
        local t = task.delay(1, print)
        task.wait(DT)
        task.cancel(t)
        error("done")
        "#
        .replace("DT", "0.016")
        .as_str(),
        2,
        DT,
    );
    let entries: Vec<_> = trace
        .entries()
        .iter()
        .map(|e| (e.cycle, e.task.is_some(), e.event, e.time))
        .collect();
    assert_eq!(
        entries,
        [
            (0, true, TraceEvent::Resume, Duration::ZERO),
            (1, false, TraceEvent::Phase(0), DT),
            (1, true, TraceEvent::Resume, DT),
            (1, true, TraceEvent::Cancel, DT),
            (1, true, TraceEvent::Fail, DT),
            (1, false, TraceEvent::Phase(1), DT),
            (2, false, TraceEvent::Phase(0), DT * 2),
            (2, false, TraceEvent::Phase(1), DT * 2),
        ]
    );
    let main = trace.entries()[0].task;
    assert_eq!(trace.entries()[2].task, main);
    assert_eq!(trace.entries()[4].task, main);
    assert_ne!(trace.entries()[3].task, main);
}

#[test]
fn recording_is_off_until_started_and_taking_empties_it() {
    let lua = Lua::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let wait = lua.load("task.wait(0)").into_function().unwrap();
    scheduler.spawn(&wait, ()).unwrap();
    scheduler.frame(DT).unwrap();
    assert!(scheduler.take_trace().is_empty());

    scheduler.start_trace();
    scheduler.spawn(&wait, ()).unwrap();
    assert_eq!(scheduler.take_trace().len(), 1);
    scheduler.stop_trace();
    scheduler.frame(DT).unwrap();
    assert!(scheduler.take_trace().is_empty());
}
