//! `task.spawn` and `task.defer` (contract rules 1 to 3): spawn runs a function or a thread at
//! once, in every state a thread can be in; defer runs it at the next resumption point, in FIFO
//! order, up to the deferral depth limit; the host's `spawn` and `defer` do the same.

use std::rc::Rc;

use spindle::mlua::{self, Function};
use spindle::Error;

use crate::support::{harness, harness_with, lines};

#[test]
fn host_spawn_is_a_resumption_point_that_drains_deferrals() {
    let h = harness();
    h.spawn("task.defer(print, 'A'); print('B')");
    assert_eq!(h.log(), lines(&["B", "A"]));
}

#[test]
fn deferrals_made_during_drain_run_after_earlier_queued_ones() {
    let h = harness();
    h.run(
        r##"
        task.defer(function() print("a1"); task.defer(print, "c2") end)
        task.defer(function() print("b1"); task.defer(print, "d2") end)
        "##,
    );
    assert_eq!(h.log(), lines(&["a1", "b1", "c2", "d2"]));
}

#[test]
fn defer_depth_limit_is_configurable_and_counts_spawns_and_coroutines_inside_deferred_tasks() {
    let h = harness_with(|b| b.max_defer_depth(3));
    h.run(
        r##"
        local runs = 0
        local function again()
            runs += 1
            -- defer from a nested coroutine inside a spawned task: still one level deeper
            task.spawn(function()
                local co = coroutine.create(function() task.defer(again) end)
                coroutine.resume(co)
            end)
        end
        task.defer(again)
        task.wait()
        print("runs", runs)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "error: Maximum re-entrancy depth (3) exceeded calling task.defer",
            "runs 3"
        ])
    );
    assert_eq!(h.sched.error_count(), 1);
}

#[test]
fn defer_depth_is_per_chain_so_many_level1_deferrals_all_run() {
    let h = harness_with(|b| b.max_defer_depth(2));
    h.run(
        r##"
        local count = 0
        for i = 1, 500 do task.defer(function() count += 1 end) end
        task.wait()
        print("count", count)
        "##,
    );
    assert_eq!(h.log(), lines(&["count 500"]));
}

#[test]
fn deferral_from_timer_callback_is_level1_even_after_a_deep_chain() {
    let h = harness_with(|b| b.max_defer_depth(2));
    h.run(
        r##"
        local function chain(n) print("chain", n); task.defer(chain, n + 1) end
        task.defer(chain, 1)
        task.delay(0, function()
            task.defer(function()
                task.defer(function() print("level 2 from timer") end)
            end)
        end)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "chain 1",
            "chain 2",
            "error: Maximum re-entrancy depth (2) exceeded calling task.defer",
            "level 2 from timer"
        ])
    );
}

#[test]
fn refused_deferral_does_not_run_the_thread_and_does_not_keep_the_run_alive() {
    let h = harness_with(|b| b.max_defer_depth(1));
    h.run(
        r##"
        task.defer(function()
            refused = task.defer(function() print("never") end)
        end)
        "##,
    );
    assert!(!h.sched.has_work());
    assert_eq!(
        h.lua
            .load("return coroutine.status(refused)")
            .eval::<String>()
            .unwrap(),
        "suspended"
    );
    assert_eq!(h.sched.error_count(), 1);
}

#[test]
fn deferred_fresh_thread_started_by_task_spawn_first_runs_once() {
    let h = harness();
    h.run(
        r##"
        local t = task.defer(function(...)
            print("body", ...)
            coroutine.yield()
            print("never: resumed by the stale deferral")
        end, "deferred-arg")
        task.spawn(t, "spawn-arg")
        "##,
    );
    assert_eq!(h.log(), lines(&["body spawn-arg"]));
}

#[test]
fn task_defer_of_running_thread_then_plain_yield_resumes_it_with_args() {
    let h = harness();
    h.run(
        r##"
        task.defer(coroutine.running(), 1, nil, 3)
        local a, b, c = coroutine.yield()
        print("resumed", a, b, c, select("#", a, b, c))
        "##,
    );
    assert_eq!(h.log(), lines(&["resumed 1 nil 3 3"]));
}

#[test]
fn deferred_args_with_trailing_nils_keep_their_count() {
    let h = harness();
    h.run(
        r##"
        task.defer(function(...) print("defer", select("#", ...)) end, nil, nil)
        task.delay(0, function(...) print("delay", select("#", ...)) end, 1, nil)
        "##,
    );
    assert_eq!(h.log(), lines(&["defer 2", "delay 2"]));
}

#[test]
fn task_spawn_of_running_normal_dead_and_errored_threads_is_an_argument_error() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.spawn, coroutine.running()))
        local outer = coroutine.running()
        local co = coroutine.create(function() print(pcall(task.spawn, outer)) end)
        coroutine.resume(co)
        print(pcall(task.spawn, co))
        local bad = coroutine.create(function() error("x") end)
        coroutine.resume(bad)
        print(pcall(task.spawn, bad))
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].contains("invalid argument #1 to 'spawn'") && log[0].contains("running"));
    assert!(log[1].contains("invalid argument #1 to 'spawn'") && log[1].contains("normal"));
    assert!(log[2].contains("invalid argument #1 to 'spawn'") && log[2].contains("dead"));
    assert!(log[3].contains("invalid argument #1 to 'spawn'") && log[3].contains("dead"));
    assert_eq!(h.sched.error_count(), 0);
}

#[test]
fn task_spawn_of_a_plainly_yielded_coroutine_resumes_it_at_once_with_args() {
    let h = harness();
    h.run(
        r##"
        local co = coroutine.create(function() print("got", coroutine.yield()) end)
        coroutine.resume(co)
        local r = task.spawn(co, "a", "b")
        print(r == co, coroutine.status(co))
        "##,
    );
    assert_eq!(h.log(), lines(&["got a b", "true dead"]));
}

#[test]
fn host_spawn_from_inside_a_task_runs_nested_and_defers_to_the_outer_resumption_point() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let f = h
        .lua
        .create_function(move |lua, f: Function| {
            let sched = weak.upgrade().unwrap();
            let id = sched.spawn(f, ()).map_err(mlua::Error::external)?;
            let _ = lua;
            Ok(id.id().as_u64())
        })
        .unwrap();
    h.lua.globals().set("host_spawn", f).unwrap();
    h.run(
        r##"
        host_spawn(function() print("nested"); task.defer(print, "deferred by nested") end)
        print("outer continues")
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&["nested", "outer continues", "deferred by nested"])
    );
}

#[test]
fn host_spawn_of_a_dead_thread_leaves_no_scheduled_task() {
    let h = harness();
    let thread = h.lua.create_thread(h.func("return 1")).unwrap();
    thread.resume::<()>(()).unwrap();
    let refused = h.sched.spawn(thread, ());
    assert!(
        matches!(refused, Err(Error::NotResumable(_))),
        "{refused:?}"
    );
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
}

#[test]
fn a_host_deferral_past_the_depth_limit_is_an_error() {
    let h = harness_with(|b| b.max_defer_depth(0));
    let refused = h.sched.defer(h.func("return 1"), ());
    assert!(
        matches!(refused, Err(Error::DeferDepthExceeded(0))),
        "{refused:?}"
    );
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
}
