//! Tasks woken by their timers, a batch at a time: the end of a fast-lane resumption
//! (`Resuming::finish`) and the freeing of idle tasks, the wake-up handed to `wait` through its
//! thread-local, and the timer queue's choice between its run and its heap. Virtual time unless
//! a test says otherwise. (`Scheduler::run`'s cooperative budget is in `async_fns`; due timers
//! carried over by frames in `frames::carried_timers`.)

use std::rc::Rc;
use std::time::Duration;

use crate::support::{lines, test_host, Host};
use spindle::mlua;
use spindle::Outcome;

// ---------------------------------------------------------------------------------------------
// 1. The end of a fast-lane resumption, and freeing idle tasks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_task_that_defers_itself_then_yields_by_hand_after_a_timed_wake_is_not_freed() {
    let h = test_host();
    h.spawn(
        r#"
        task.wait(1)
        task.defer(coroutine.running(), "deferred")
        print("resumed with", coroutine.yield())
        task.wait(1)
        print("done")
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with deferred"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with deferred", "done"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_task_that_delays_itself_then_yields_by_hand_after_a_timed_wake_is_not_freed() {
    let h = test_host();
    h.spawn(
        r#"
        task.wait(1)
        task.delay(1, coroutine.running(), "delayed")
        print("resumed with", coroutine.yield())
        "#,
    );
    h.step(1.0);
    assert_eq!(h.scheduler.task_count(), 1);
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with delayed"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_task_that_yields_by_hand_after_a_timed_wake_is_freed_and_its_holder_owns_it() {
    let h = test_host();
    h.spawn(
        r#"
        co = coroutine.running()
        task.wait(1)
        print("yielding")
        print("got", coroutine.yield())
        "#,
    );
    h.step(1.0);
    assert_eq!(
        h.scheduler.task_count(),
        0,
        "rule 11: the thread is its holder's"
    );
    assert!(!h.scheduler.has_work());
    h.exec("coroutine.resume(co, 'by hand')");
    assert_eq!(h.log(), lines(&["yielding", "got by hand"]));
}

#[test]
fn a_wake_that_cancels_the_next_task_of_its_batch_leaves_counts_right() {
    let h = test_host();
    h.spawn(
        r#"
        local b
        task.spawn(function() task.wait(1) print("a") task.cancel(b) end)
        b = task.spawn(function() task.wait(1) print("b must not run") end)
        task.spawn(function() task.wait(1) print("c") end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "c"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_wake_that_hand_resumes_the_next_waiter_of_its_batch_resumes_it_once() {
    let h = test_host();
    h.spawn(
        r#"
        local b
        task.spawn(function() task.wait(1) print("a") coroutine.resume(b, "hand") end)
        b = task.spawn(function() print("b got", task.wait(1)) print("b again", task.wait(5)) end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "b got hand"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "b got hand"]));
    h.step(5.0);
    assert_eq!(h.log(), lines(&["a", "b got hand", "b again 6"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_host_handle_gets_the_results_and_error_of_tasks_ended_by_a_timed_wake() {
    let h = test_host();
    let ok = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) return 1, 2")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let bad = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) error('late')")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let plain = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) coroutine.yield()")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    h.step(1.0);
    match h.scheduler.take_result::<(i64, i64)>(&ok).unwrap() {
        Some(Outcome::Finished(values)) => assert_eq!(values, (1, 2)),
        _ => panic!("no result"),
    }
    assert!(matches!(
        h.scheduler.take_result::<()>(&bad).unwrap(),
        Some(Outcome::Failed(e)) if e.message.contains("late")
    ));
    // Yielded by hand: released to whoever resumes it, and it holds no scheduler work.
    assert!(!h.scheduler.has_work());
    assert!(matches!(
        h.scheduler.take_result::<()>(&plain).unwrap(),
        Some(Outcome::Released(()))
    ));
}

#[test]
fn a_panic_in_a_rust_callback_after_a_timed_wake_leaves_the_rest_of_the_batch_queued() {
    let h = test_host();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.spawn(
        r#"
        task.spawn(function() task.wait(1) print("a") end)
        task.spawn(function() task.wait(1) boom() end)
        task.spawn(function() task.wait(1) print("c") end)
        task.spawn(function() task.wait(1) print("d") end)
        "#,
    );
    h.advance(Duration::from_secs(1));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.scheduler.cycle().unwrap()
    }));
    assert!(caught.is_err());
    assert_eq!(h.log(), lines(&["a"]));
    assert_eq!(h.scheduler.task_count(), 2, "the panicking task is freed");
    assert!(h.scheduler.has_work());
    let report = h.scheduler.cycle().unwrap();
    assert_eq!(report.timers, 2);
    assert_eq!(h.log(), lines(&["a", "c", "d"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn running_out_of_memory_right_after_a_timed_wake_fails_only_that_task() {
    let h = Host::builder().chunk_name("test").errors_in_log().build();
    h.spawn(
        r#"
        task.spawn(function()
            task.wait(1)
            local t = {}
            for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end
        end)
        task.spawn(function() task.wait(1) print("other") end)
        task.spawn(function() task.wait(2) print("later") end)
        "#,
    );
    h.lua
        .set_memory_limit(h.lua.used_memory() + 4 * 1024 * 1024)
        .unwrap();
    h.step(1.0);
    h.lua.set_memory_limit(0).unwrap();
    h.step(1.0);
    let log = h.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("error:"), "{log:?}");
    assert_eq!(log[1..], lines(&["other", "later"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 2. The wake-up through WAKING
// ---------------------------------------------------------------------------------------------

/// The host drives a cycle from deep in plain Lua code (many C calls deep), where the wake-up
/// may not enter the waiting thread (on this build at 196 levels Luau reports a C stack
/// overflow; the same at 65c1959). Either way the thread must not later take a hand resume's
/// single value for the scheduler's wake-up (WAKING must not be left naming it), and the task
/// must end or go on cleanly.
#[test]
fn a_wake_up_that_fails_before_the_continuation_leaves_no_stale_waking_thread() {
    for depth in [185, 190, 194, 195, 196, 197] {
        wake_up_driven_at_depth(depth);
    }
}

fn wake_up_driven_at_depth(depth: u32) {
    let h = Rc::new(Host::builder().chunk_name("test").errors_in_log().build());
    let host = Rc::downgrade(&h);
    let drive = h
        .lua
        .create_function(move |_, ()| {
            let host = host.upgrade().expect("the host is alive");
            host.scheduler.cycle().map_err(mlua::Error::external)?;
            Ok(())
        })
        .unwrap();
    h.lua.globals().set("drive", drive).unwrap();
    h.spawn(
        r#"
        waiter = coroutine.running()
        print("woke with", task.wait(1))
        print("then got", coroutine.yield())
        "#,
    );
    h.advance(Duration::from_secs(1));
    h.lua.globals().set("DEPTH", depth).unwrap();
    h.exec(
        r#"
        local function deep(n)
            if n == 0 then return drive() end
            local ok, err = pcall(deep, n - 1)
            if not ok then error(err, 0) end
        end
        print("drive", pcall(deep, DEPTH))
        "#,
    );
    assert!(!h.scheduler.has_work());
    assert_eq!(h.scheduler.task_count(), 0);
    h.exec("print('resume', coroutine.resume(waiter, 'hand'))");
    let log = h.log();
    if log[0] == "woke with 1" {
        assert_eq!(
            log[1..],
            lines(&["drive true", "then got hand", "resume true"])
        );
    } else {
        // The wake-up failed: the task ended with the error reported, its thread closed.
        assert!(log[0].starts_with("error: "), "depth {depth}: {log:?}");
        assert_eq!(log[1], "drive true", "depth {depth}: {log:?}");
        assert!(log[2].starts_with("resume false"), "depth {depth}: {log:?}");
    }
    assert!(!h.scheduler.has_work(), "depth {depth}: {log:?}");
}

#[test]
fn a_woken_task_that_hand_resumes_another_waiter_with_one_value_gives_it_that_value() {
    let h = test_host();
    h.spawn(
        r#"
        local b = task.spawn(function()
            print("b got", task.wait(10))
            print("b later", task.wait(1))
        end)
        task.spawn(function()
            task.wait(1)
            coroutine.resume(b, 99)
        end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["b got 99"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["b got 99", "b later 1"]));
    for _ in 0..12 {
        h.step(1.0);
    }
    assert_eq!(h.log(), lines(&["b got 99", "b later 1"]));
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_nested_scheduler_driven_from_inside_a_woken_task_keeps_both_wake_ups_apart() {
    let outer = test_host();
    let inner = Rc::new(test_host());
    inner.spawn("for i = 1, 3 do print('inner', task.wait(1)) end");
    let driven = Rc::clone(&inner);
    let drive = outer
        .lua
        .create_function(move |_, ()| {
            driven.step(1.0);
            Ok(())
        })
        .unwrap();
    outer.lua.globals().set("drive", drive).unwrap();
    outer.spawn(
        r#"
        for i = 1, 3 do
            local e = task.wait(1)
            drive()
            print("outer", e)
        end
        "#,
    );
    for _ in 0..3 {
        outer.step(1.0);
    }
    assert_eq!(outer.log(), lines(&["outer 1", "outer 1", "outer 1"]));
    assert_eq!(inner.log(), lines(&["inner 1", "inner 1", "inner 1"]));
    assert!(!outer.scheduler.has_work() && !inner.scheduler.has_work());
}

// ---------------------------------------------------------------------------------------------
// 3. The timer queue's run and heap, against a model
// ---------------------------------------------------------------------------------------------

#[test]
fn timers_in_and_out_of_order_fire_by_deadline_then_scheduling_order_as_a_model_says() {
    // A small linear congruential generator: the same cases on every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for case in 0..40 {
        let count = 5 + next(40) as usize;
        // Durations in eighths of a second: many equal, some in order, some not.
        let mut eighths: Vec<u64> = Vec::new();
        for i in 0..count {
            let d = match next(3) {
                0 => i as u64 / 3,
                1 => next(6),
                _ => eighths.last().copied().unwrap_or(0),
            };
            eighths.push(d);
        }
        let h = test_host();
        let list = eighths
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        h.spawn(&format!(
            r#"
            for i, d in {{{list}}} do
                if i % 2 == 0 then
                    task.delay(d / 8, print, i)
                else
                    task.spawn(function() task.wait(d / 8) print(i) end)
                end
            end
            "#
        ));
        let mut fired: Vec<(u64, usize)> = Vec::new();
        for step in 0..=20u64 {
            if step > 0 {
                h.step(0.125);
            } else {
                h.scheduler.cycle().unwrap();
            }
            let log = h.log();
            for line in &log[fired.len()..] {
                fired.push((step, line.parse().unwrap()));
            }
        }
        let mut expected: Vec<(u64, usize)> = eighths
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, i + 1))
            .collect();
        // Deadline first, then scheduling order (stable sort). A zero delay runs in the first cycle.
        expected.sort_by_key(|&(d, _)| d);
        assert_eq!(fired, expected, "case {case}: durations {eighths:?}");
    }
}
