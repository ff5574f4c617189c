//! Frames: phases in order, each a resumption point, timers resumed before the designated
//! phase, virtual time, and the frame budget that carries ready tasks over in order.
//! Everything runs under a virtual clock; budgets are given in tasks (`frame_budget_fn`) or as
//! a zero wall-time budget, so no test depends on how fast the machine is.

mod carried_timers;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::support::Host;
use spindle::mlua::Lua;
use spindle::{Clock, Error, Scheduler, SchedulerBuilder, VirtualClock};

const DT: Duration = Duration::from_nanos(16_666_667);

/// The shared host, its errors in the log, with the scheduler's phases as `RunService`.
fn phase_host(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static) -> Host {
    let host = Host::builder().errors_in_log().scheduler(configure).build();
    let run_service = host.lua.create_table().unwrap();
    for name in host.scheduler.phase_names() {
        run_service
            .set(name.as_str(), host.scheduler.phase(name).unwrap())
            .unwrap();
    }
    host.lua.globals().set("RunService", run_service).unwrap();
    host
}

fn roblox_phases(builder: SchedulerBuilder) -> SchedulerBuilder {
    builder
        .phases(["PreSimulation", "PostSimulation", "Heartbeat"])
        .resume_waits_before("Heartbeat")
}

#[test]
fn phases_run_in_order_and_waits_resume_before_the_designated_phase() {
    let host = phase_host(roblox_phases);
    host.spawn(
        r#"
        for _, name in { "PreSimulation", "PostSimulation", "Heartbeat" } do
            RunService[name]:Connect(function() print(name) end)
        end
        task.spawn(function()
            while true do
                task.wait()
                print("wait resumed")
            end
        end)
        task.delay(0, print, "delay")
        "#,
    );
    host.scheduler.frame(DT).unwrap();
    host.scheduler.frame(DT).unwrap();
    assert_eq!(
        host.take_log(),
        [
            "PreSimulation",
            "PostSimulation",
            "wait resumed",
            "delay",
            "Heartbeat",
            "PreSimulation",
            "PostSimulation",
            "wait resumed",
            "Heartbeat",
        ]
    );
}

#[test]
fn each_phase_is_a_resumption_point() {
    let host = phase_host(|b| roblox_phases(b).signal_behavior(spindle::SignalBehavior::Immediate));
    host.spawn(
        r#"
        RunService.PreSimulation:Connect(function()
            task.defer(print, "deferred by PreSimulation")
        end)
        RunService.PostSimulation:Connect(function() print("PostSimulation") end)
        task.delay(0, function() task.defer(print, "deferred by a timer") end)
        RunService.Heartbeat:Connect(function() print("Heartbeat") end)
        "#,
    );
    host.scheduler.frame(DT).unwrap();
    assert_eq!(
        host.take_log(),
        [
            "deferred by PreSimulation",
            "PostSimulation",
            "deferred by a timer",
            "Heartbeat"
        ]
    );
}

#[test]
fn phase_signals_receive_dt_and_the_virtual_clock_moves_by_it() {
    let host = phase_host(roblox_phases);
    host.spawn(
        r#"
        RunService.Heartbeat:Connect(function(dt) print("dt", dt) end)
        print("elapsed", task.wait(0.03))
        "#,
    );
    for _ in 0..2 {
        host.scheduler.frame(DT).unwrap();
    }
    assert_eq!(host.virtual_clock().now(), DT * 2);
    let dt = DT.as_secs_f64();
    assert_eq!(
        host.take_log(),
        [
            format!("dt {dt}"),
            format!("elapsed {}", (DT * 2).as_secs_f64()),
            format!("dt {dt}"),
        ]
    );
}

#[test]
fn without_phases_a_frame_is_a_cycle_that_first_moves_the_clock() {
    let host = phase_host(|b| b);
    host.spawn("print('waited', task.wait(1))");
    let report = host.scheduler.frame(Duration::from_secs(1)).unwrap();
    assert_eq!(host.take_log(), ["waited 1"]);
    assert_eq!((report.cycle, report.timers, report.carried), (1, 1, 0));
    assert!(host.scheduler.phase_names().is_empty());
    assert!(host.scheduler.phase("Heartbeat").is_none());
}

#[test]
fn phases_that_make_no_sense_are_refused_with_a_message() {
    let lua = Lua::new();
    let unknown = Scheduler::builder()
        .phases(["Stepped"])
        .resume_waits_before("Heartbeat")
        .build(&lua);
    match unknown {
        Err(Error::InvalidPhases(message)) => {
            assert!(message.contains("resume_waits_before"), "{message}");
            assert!(message.contains("\"Heartbeat\""), "{message}");
        }
        other => panic!("expected InvalidPhases, got {:?}", other.map(|_| ())),
    }
    let twice = Scheduler::builder().phases(["A", "B", "A"]).build(&lua);
    assert!(
        matches!(&twice, Err(Error::InvalidPhases(m)) if m.contains("\"A\" is declared twice")),
        "{:?}",
        twice.map(|_| ())
    );
}

#[test]
fn a_frame_called_from_inside_a_task_is_refused() {
    let lua = Lua::new();
    let scheduler = Rc::new(
        roblox_phases(Scheduler::builder().clock(Clock::from(VirtualClock::new())))
            .build(&lua)
            .unwrap(),
    );
    scheduler.install_task_library().unwrap();
    let refusal: Rc<RefCell<Option<String>>> = Rc::default();
    let seen = Rc::clone(&refusal);
    // A weak handle: the scheduler must not be kept alive by its own Lua.
    let weak = Rc::downgrade(&scheduler);
    let nested = lua
        .create_function(move |_, ()| {
            let scheduler = weak.upgrade().unwrap();
            *seen.borrow_mut() = scheduler.frame(DT).err().map(|e| e.to_string());
            Ok(())
        })
        .unwrap();
    lua.globals().set("nested_frame", nested).unwrap();
    let main = lua
        .load("task.wait(); nested_frame()")
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    scheduler.frame(DT).unwrap();
    let message = refusal
        .borrow()
        .clone()
        .expect("the nested frame was refused");
    assert!(message.contains("Scheduler::frame"), "{message}");
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn six_waits_of_600_virtual_seconds_take_six_jumps_and_return_exactly_600() {
    let host = phase_host(|b| b);
    let task = host.spawn_task(
        r#"
        local waits = {}
        for i = 1, 6 do
            waits[i] = task.wait(600)
        end
        return waits
        "#,
    );
    host.scheduler.run_blocking().unwrap();
    let waits: Vec<f64> = host
        .scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(waits, [600.0; 6]);
    assert_eq!(host.virtual_clock().now(), Duration::from_secs(3600));
    // One cycle per wait, plus the last: the clock jumped, it was not stepped.
    assert!(
        host.scheduler.cycle_count() <= 7,
        "{}",
        host.scheduler.cycle_count()
    );
}

/// Five tasks due in the first frame in the order a..e, and one due in the second.
const STAGGERED: &str = r#"
    for i, name in { "a", "b", "c", "d", "e" } do
        task.delay(i / 1000, function()
            print(name)
            task.defer(print, name .. " deferred")
        end)
    end
    task.delay(0.02, print, "f")
"#;

#[test]
fn the_frame_budget_carries_ready_tasks_over_in_order() {
    let host = phase_host(|b| roblox_phases(b).frame_budget_fn(|work| work.resumed < 2));
    host.spawn(STAGGERED);
    let mut carried = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..3 {
        carried.push(host.scheduler.frame(DT).unwrap().carried);
        frames.push(host.take_log());
    }
    assert_eq!(carried, [3, 2, 0]);
    // Deferred tasks still run at the frame's resumption point, budget or not.
    assert_eq!(
        frames,
        [
            vec!["a", "b", "a deferred", "b deferred"],
            vec!["c", "d", "c deferred", "d deferred"],
            vec!["e", "f", "e deferred"],
        ]
    );
    assert!(!host.scheduler.has_work());
}

#[test]
fn a_spent_wall_time_budget_still_resumes_one_task_per_frame() {
    let host = phase_host(|b| roblox_phases(b).frame_budget(Duration::ZERO));
    host.spawn(STAGGERED);
    let mut timers = Vec::new();
    while host.scheduler.has_work() {
        timers.push(host.scheduler.frame(DT).unwrap().timers);
    }
    assert_eq!(timers, [1, 1, 1, 1, 1, 1]);
    let log = host.take_log();
    let names: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.len() == 1)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn carried_tasks_keep_the_run_alive_and_a_cycle_runs_them() {
    let host = phase_host(|b| roblox_phases(b).frame_budget_fn(|work| work.resumed < 1));
    host.spawn(STAGGERED);
    assert_eq!(host.scheduler.frame(DT).unwrap().carried, 4);
    host.take_log();
    assert!(host.scheduler.has_work());
    // A driver that goes back to cycles runs what the budget carried, first and in order.
    host.scheduler.run_blocking().unwrap();
    let log = host.take_log();
    let names: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.len() == 1)
        .collect();
    assert_eq!(names, ["b", "c", "d", "e", "f"]);
}

#[test]
fn a_cancelled_task_leaves_the_carry_and_shutdown_empties_it() {
    let host = phase_host(|b| roblox_phases(b).frame_budget_fn(|work| work.resumed < 1));
    host.spawn(
        r#"
        threads = {}
        for i, name in { "a", "b", "c" } do
            threads[name] = task.delay(i / 1000, print, name)
        end
        "#,
    );
    assert_eq!(host.scheduler.frame(DT).unwrap().carried, 2);
    host.spawn("task.cancel(threads.b)");
    let report = host.scheduler.frame(DT).unwrap();
    assert_eq!((report.timers, report.carried), (1, 0));
    assert_eq!(host.take_log(), ["a", "c"]);

    host.spawn("for i = 1, 3 do task.delay(0, print, i) end");
    assert_eq!(host.scheduler.frame(DT).unwrap().carried, 2);
    host.scheduler.shutdown().unwrap();
    assert!(!host.scheduler.has_work());
    assert_eq!(host.scheduler.frame(DT).unwrap().timers, 0);
    assert_eq!(host.take_log(), ["1"]);
}
