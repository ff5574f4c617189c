//! Errors (contract rules 8 to 10): an error ends only its own task, is reported once with its
//! traceback, whatever its value, and keeps the host's handle informed; errors of async
//! functions reach `pcall` with the Rust message; a panic reaches the host and leaves the
//! scheduler usable.

use spindle::mlua;
use spindle::{Outcome, TaskStatus};

use crate::support::{harness, install_gates, lines};

#[test]
fn spawn_of_function_erroring_before_first_yield_returns_thread_and_reports_with_traceback() {
    let h = harness();
    h.run(
        r##"
        local function inner() error("boom") end
        local t = task.spawn(function() inner() end)
        print(type(t), coroutine.status(t))
        "##,
    );
    assert_eq!(h.log()[1], "thread dead");
    let errors = h.errors.borrow();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("boom"), "{}", errors[0].message);
    assert!(
        errors[0].traceback.contains("inner"),
        "traceback should name the failing function: {:?}",
        errors[0].traceback
    );
}

#[test]
fn errors_with_table_and_nil_values_are_reported_and_do_not_stop_others() {
    let h = harness();
    h.run(
        r##"
        task.spawn(function() error({code = 1}) end)
        task.spawn(function() error(nil) end)
        task.spawn(function() error(setmetatable({}, {__tostring = function() return "custom" end})) end)
        task.defer(function() error({}) end)
        task.delay(0, function() error() end)
        task.wait(1)
        print("main survived")
        "##,
    );
    assert_eq!(h.sched.error_count(), 5);
    assert_eq!(h.log().last().unwrap(), "main survived");
    let errors = h.errors.borrow();
    assert!(
        errors[2].message.contains("custom"),
        "a __tostring error value should give the message: {:?}",
        errors[2].message
    );
}

#[test]
fn error_in_nested_spawned_task_does_not_unwind_spawner_or_stop_the_drain() {
    let h = harness();
    h.run(
        r##"
        task.defer(function()
            task.spawn(function() error("inner") end)
            print("spawner goes on")
        end)
        task.defer(function() error("deferred fails") end)
        task.defer(print, "third deferred runs")
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].starts_with("error:") && log[0].contains("inner"));
    assert_eq!(log[1], "spawner goes on");
    assert!(log[2].contains("deferred fails"));
    assert_eq!(log[3], "third deferred runs");
}

#[test]
fn host_task_failure_is_kept_as_outcome_and_reported_once() {
    let h = harness();
    let id = h.run("task.wait(1); error('late')");
    assert_eq!(h.sched.error_count(), 1);
    assert_eq!(h.sched.status(&id), TaskStatus::Done);
    match h.sched.take_result::<()>(&id).unwrap() {
        Some(Outcome::Failed(e)) => assert!(e.message.contains("late")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(h.sched.take_result::<()>(&id).unwrap().is_none());
    assert_eq!(h.sched.status(&id), TaskStatus::Unknown);
}

#[test]
fn owned_async_error_after_pending_is_caught_by_pcall_with_the_rust_message() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function()
            local ok, err = pcall(owned_fail_later, "g", "disk on fire")
            print(ok, type(err), err)
        end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["false string disk on fire"]));
    assert_eq!(h.sched.error_count(), 0);
}

#[test]
fn owned_async_immediate_error_has_the_same_message_as_a_later_one() {
    let h = harness();
    install_gates(&h);
    h.run(
        r##"
        local ok, err = pcall(owned_fail_now, "disk on fire")
        print(ok, type(err), tostring(err))
        "##,
    );
    assert_eq!(h.log(), lines(&["false string disk on fire"]));
}

#[test]
fn mlua_async_error_is_caught_by_pcall_and_contains_the_rust_message() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function()
            local ok, err = pcall(mlua_fail_later, "g", "disk on fire")
            print(ok, string.find(tostring(err), "disk on fire", 1, true) ~= nil)
        end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["false true"]));
}

#[test]
fn uncaught_owned_async_error_fails_only_its_task() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function() owned_fail_later("g", "fatal") end)
        task.spawn(function() owned_wait("g"); print("sibling done") end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["error: fatal", "sibling done"]));
}

#[test]
fn nested_task_spawn_beyond_luaus_c_stack_limit_fails_one_task_cleanly() {
    // Luau allows 200 nested resumptions; deeper nesting must be an ordinary task error, not a
    // crash. (Debug builds need more than the 2 MiB default test-thread stack for 200 levels.)
    std::thread::Builder::new()
        .stack_size(16 * 1024 * 1024)
        .spawn(|| {
            let h = harness();
            h.run(
                r##"
                local depth = 0
                local function go(k) depth = k; if k < 1000 then task.spawn(go, k + 1) end end
                print(pcall(go, 1))
                print("depth", depth)
                print("still schedules", task.wait(1))
                "##,
            );
            let log = h.log();
            assert_eq!(log.len(), 4, "{log:?}");
            assert!(
                log[0].starts_with("error: ") && log[0].contains("stack overflow"),
                "{log:?}"
            );
            assert_eq!(
                &log[1..],
                &lines(&["true", "depth 200", "still schedules 1"])[..]
            );
            assert_eq!(h.sched.task_count(), 0);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_panic_caught_by_the_host_leaves_the_scheduler_usable() {
    let h = harness();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    let _task = h.spawn("task.wait(1) boom()");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.step(1.0)));
    assert!(caught.is_err());
    let _task = h.spawn("task.wait(1) print('after the panic')");
    h.step(1.0);
    assert_eq!(h.log(), lines(&["after the panic"]));
}
