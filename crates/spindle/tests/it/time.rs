//! Time: `task.wait`, `task.delay` and the timers behind them (contract rules 4, 5, 7, 12, 15).

mod never_firing_timers;
mod stale_wakeups;
mod timed_wakes;
mod wait;
mod wait_lane;

use std::time::Duration;

use crate::support::{harness, lines};

// ---------------------------------------------------------------------------------------------
// Waits and delays: durations, zero waits, the order of equal deadlines (rules 4, 5, 7, 15)
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_returns_at_least_the_requested_time_for_sub_nanosecond_fractions() {
    let h = harness();
    h.run(
        r##"
        local req = 1.0000000004
        local got = task.wait(req)
        print(got >= req, now() >= req)
        local tiny = 1e-10
        got = task.wait(tiny)
        print(got >= tiny)
        "##,
    );
    assert_eq!(h.log(), lines(&["true true", "true"]));
}

#[test]
fn delay_never_fires_before_the_requested_time_for_sub_nanosecond_fractions() {
    let h = harness();
    h.run(
        r##"
        task.delay(2.0000000004, function() print(now() >= 2.0000000004) end)
        "##,
    );
    assert_eq!(h.log(), lines(&["true"]));
}

#[test]
fn wait_returns_exact_elapsed_time_and_zero_wait_always_yields() {
    let h = harness();
    h.spawn(
        r##"
        local order = {}
        task.spawn(function() table.insert(order, "waiter before"); task.wait(0); table.insert(order, "waiter after") end)
        table.insert(order, "spawner")
        result = order
        "##,
    );
    let order: Vec<String> = h.global("result");
    assert_eq!(order, lines(&["waiter before", "spawner"]));
    h.step(0.25);
    let order: Vec<String> = h.global("result");
    assert_eq!(order, lines(&["waiter before", "spawner", "waiter after"]));
}

#[test]
fn wait_zero_during_a_timer_batch_goes_to_the_next_cycle() {
    let h = harness();
    h.spawn(
        r##"
        count = 0
        task.spawn(function() while true do task.wait(0); count += 1 end end)
        "##,
    );
    for i in 1..=5 {
        let report = h.sched.cycle().unwrap();
        assert_eq!(report.timers, 1, "cycle {i}");
        assert_eq!(h.global::<u32>("count"), i);
    }
}

#[test]
fn delay_zero_and_nil_fire_on_the_next_cycle_not_immediately() {
    let h = harness();
    h.spawn(
        r##"
        task.delay(0, print, "zero")
        task.delay(nil, print, "nil")
        task.delay(-5, print, "negative")
        task.delay(0/0, print, "nan")
        task.delay("0", print, "string zero")
        print("spawned")
        "##,
    );
    assert_eq!(h.take_log(), lines(&["spawned"]));
    let report = h.sched.cycle().unwrap();
    assert_eq!(report.timers, 5);
    assert_eq!(
        h.log(),
        lines(&["zero", "nil", "negative", "nan", "string zero"])
    );
}

#[test]
fn equal_deadlines_from_waits_and_delays_run_in_schedule_order() {
    let h = harness();
    h.run(
        r##"
        task.delay(1, print, "d1")
        task.spawn(function() task.wait(1); print("w2") end)
        task.delay(1, print, "d3")
        task.spawn(function() task.wait(1); print("w4") end)
        task.delay(0.5, print, "early")
        task.delay(2, print, "late")
        "##,
    );
    assert_eq!(h.log(), lines(&["early", "d1", "w2", "d3", "w4", "late"]));
}

#[test]
fn earlier_deadline_scheduled_later_runs_first_within_one_cycle() {
    let h = harness();
    h.spawn(
        r##"
        task.delay(3, print, "three")
        task.delay(2, print, "two")
        task.delay(1, print, "one")
        "##,
    );
    h.step(10.0);
    assert_eq!(h.log(), lines(&["one", "two", "three"]));
}

#[test]
fn math_huge_wait_never_fires_but_ends_by_manual_resume() {
    let h = harness();
    h.run(
        r##"
        t = task.spawn(function() print("got", task.wait(math.huge)) end)
        "##,
    );
    assert!(h.log().is_empty());
    assert!(!h.sched.has_work());
    assert_eq!(h.clock.now(), Duration::ZERO);
    h.run("coroutine.resume(t, 'manual')");
    assert_eq!(h.log(), lines(&["got manual"]));
}

#[test]
fn argument_errors_name_function_and_argument() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.spawn, "x"))
        print(pcall(task.defer, 42))
        print(pcall(task.delay, 1, {}))
        print(pcall(task.delay, "soon", print))
        print(pcall(task.wait, "abc"))
        print(pcall(task.wait, true))
        print(pcall(task.cancel, function() end))
        "##,
    );
    let log = h.log();
    let expected = [
        "invalid argument #1 to 'spawn' (function or thread expected, got string)",
        "invalid argument #1 to 'defer' (function or thread expected, got number)",
        "invalid argument #2 to 'delay' (function or thread expected, got table)",
        "invalid argument #1 to 'delay' (number expected, got string)",
        "invalid argument #1 to 'wait' (number expected, got string)",
        "invalid argument #1 to 'wait' (number expected, got boolean)",
        "invalid argument #1 to 'cancel' (thread expected, got function)",
    ];
    assert_eq!(log.len(), expected.len(), "{log:?}");
    for (line, want) in log.iter().zip(expected) {
        assert!(line.starts_with("false "), "{line}");
        assert!(line.contains(want), "{line} should contain {want}");
    }
}
