//! Cancellation (contract rule 6): `task.cancel` and the host's `cancel` end a task for good,
//! whatever it waits on (a deferral, a timer, a future, several at once), drop its future before
//! they return, and leave nothing that could resume it; cancelling the running task or one that
//! is resuming another is an error in the caller. Virtual time, driven by `cycle()` or
//! `run_blocking()`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use spindle::{Error, Outcome, TaskId, TaskStatus};

use crate::support::{harness, install_gates, lines};

#[test]
fn cancel_inside_deferred_drain_drops_later_deferrals() {
    let h = harness();
    h.run(
        r##"
        local b
        task.defer(function() print("a"); task.cancel(b) end)
        b = task.defer(function() print("never b") end)
        task.defer(function() print("c") end)
        "##,
    );
    assert_eq!(h.log(), lines(&["a", "c"]));
}

#[test]
fn cancel_of_a_level2_deferral_from_its_sibling_drops_it() {
    let h = harness();
    h.run(
        r##"
        local victim
        task.defer(function()
            victim = task.defer(function() print("never victim") end)
        end)
        task.defer(function()
            task.defer(function() task.cancel(victim); print("cancelled") end)
        end)
        "##,
    );
    // Order of level 2: victim was queued first, so it runs before the canceller.
    assert_eq!(h.log(), lines(&["never victim", "cancelled"]));
}

#[test]
fn host_cancel_of_only_deferred_task_leaves_no_work() {
    let h = harness();
    let f = h.func("print('never')");
    let id = h.sched.defer(f, ()).unwrap();
    assert!(h.sched.has_work());
    assert!(h.sched.cancel(&id).unwrap());
    assert!(
        !h.sched.has_work(),
        "rule 6: the deferral is dropped at once, so nothing is left to do"
    );
    h.sched.run_blocking().unwrap();
    assert!(h.log().is_empty());
    assert!(matches!(
        h.sched.take_result::<()>(&id).unwrap(),
        Some(Outcome::Cancelled)
    ));
}

#[test]
fn lua_cancel_of_only_deferred_task_leaves_no_work() {
    let h = harness();
    // Run from a Rust function so that we can look at has_work between the cancel and the drain.
    let h_sched = Rc::downgrade(&h.sched);
    let probe = h
        .lua
        .create_function(move |_, ()| Ok(h_sched.upgrade().unwrap().has_work()))
        .unwrap();
    h.lua.globals().set("has_work", probe).unwrap();
    h.run(
        r##"
        local t = task.defer(print, "never")
        task.cancel(t)
        print("has work", has_work())
        "##,
    );
    assert_eq!(h.log(), lines(&["has work false"]));
}

#[test]
fn cancel_of_delayed_task_ends_run_without_advancing_the_clock() {
    let h = harness();
    h.run(
        r##"
        local t = task.delay(100, print, "never")
        local w = task.spawn(function() task.wait(50); print("never w") end)
        task.cancel(t)
        task.cancel(w)
        "##,
    );
    assert!(h.log().is_empty());
    assert_eq!(h.clock.now(), Duration::ZERO);
    assert!(!h.sched.has_work());
    assert_eq!(h.sched.next_deadline(), None);
}

#[test]
fn cancel_drops_both_pending_deferral_and_delay_of_one_thread() {
    let h = harness();
    h.run(
        r##"
        local co = coroutine.create(function(...) print("never", ...) end)
        task.defer(co, "d")
        task.delay(1, co, "t")
        task.cancel(co)
        print(coroutine.status(co))
        "##,
    );
    assert_eq!(h.log(), lines(&["dead"]));
    assert_eq!(h.clock.now(), Duration::ZERO);
}

#[test]
fn cancelled_waiter_slot_reused_in_same_timer_batch_is_not_woken_by_stale_entry() {
    let h = harness();
    h.run(
        r##"
        local b
        -- a's delay is scheduled first, so it runs first among the timers due at 1.
        task.delay(1, function()
            task.cancel(b)
            -- Likely reuses b's freed slot.
            task.spawn(function()
                local e = task.wait(5)
                print("c waited", e)
            end)
            task.spawn(function()
                print("d got", coroutine.yield())
            end)
        end)
        b = task.spawn(function()
            task.wait(1)
            print("never b")
        end)
        "##,
    );
    assert_eq!(h.log(), lines(&["c waited 5"]));
}

#[test]
fn cancelled_deferral_slot_reused_before_drain_is_not_resumed_by_stale_entry() {
    let h = harness();
    h.run(
        r##"
        local b = task.defer(function() print("never b") end)
        task.cancel(b)
        -- New tasks likely reuse b's slot; b's queued deferral must not resume them.
        local c = task.spawn(function()
            print("c got", coroutine.yield())
        end)
        task.spawn(function()
            print("d waited", task.wait(1))
        end)
        "##,
    );
    assert_eq!(h.log(), lines(&["d waited 1"]));
}

#[test]
fn task_cancel_of_running_and_normal_threads_errors_in_caller() {
    let h = harness();
    h.run(
        r##"
        local me = coroutine.running()
        print(pcall(task.cancel, me))
        -- A task spawned by me cancels me indirectly: I am "normal" while it runs.
        task.spawn(function()
            print(pcall(task.cancel, me))
        end)
        -- A deferred task may cancel me later: I am suspended then.
        task.defer(function() task.cancel(me) end)
        task.wait(1)
        print("never after self-cancel by deferral")
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("false ") && log[0].contains("running"),
        "{log:?}"
    );
    assert!(
        log[1].starts_with("false ") && log[1].contains("normal"),
        "{log:?}"
    );
    assert_eq!(h.errors.borrow().len(), 0);
}

#[test]
fn host_cancel_from_inside_the_running_task_is_an_error_not_a_panic() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let slot: Rc<Cell<Option<TaskId>>> = Rc::default();
    let s = Rc::clone(&slot);
    let f = h
        .lua
        .create_function(move |_, ()| {
            let sched = weak.upgrade().unwrap();
            match sched.cancel(s.get().unwrap()) {
                Ok(v) => Ok(format!("ok {v}")),
                Err(e) => Ok(format!("err {e}")),
            }
        })
        .unwrap();
    h.lua.globals().set("cancel_me", f).unwrap();
    // Defer the body so the id is known before it runs.
    let id = h
        .sched
        .defer(
            h.func("print(cancel_me()); task.wait(1); print('still alive')"),
            (),
        )
        .unwrap();
    slot.set(Some(id.id()));
    h.sched.run_blocking().unwrap();
    let log = h.log();
    assert_eq!(
        log[0],
        format!(
            "err task {} is running and cannot be cancelled from inside itself",
            id.id()
        )
    );
    assert_eq!(log[1], "still alive");
}

#[test]
fn host_cancel_of_a_task_in_normal_state_is_an_error() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let slot: Rc<Cell<Option<TaskId>>> = Rc::default();
    let s = Rc::clone(&slot);
    let f = h
        .lua
        .create_function(move |_, ()| {
            let sched = weak.upgrade().unwrap();
            Ok(matches!(
                sched.cancel(s.get().unwrap()),
                Err(Error::TaskRunning(_))
            ))
        })
        .unwrap();
    h.lua.globals().set("cancel_outer", f).unwrap();
    let id = h
        .sched
        .defer(
            h.func(
                r##"
                local co = coroutine.create(function() print("refused", cancel_outer()) end)
                coroutine.resume(co)
                print("outer alive")
                "##,
            ),
            (),
        )
        .unwrap();
    slot.set(Some(id.id()));
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["refused true", "outer alive"]));
}

#[test]
fn cancel_owned_async_drops_future_before_cancel_returns() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        local t = task.spawn(function() owned_wait("g"); print("never") end)
        print("before", dropped())
        task.cancel(t)
        print("after", dropped())
        print(coroutine.status(t))
        "##,
    );
    assert_eq!(h.log(), lines(&["before 0", "after 1", "dead"]));
    assert!(!h.sched.has_work());
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log().len(), 3);
}

#[test]
fn cancel_mlua_async_resets_thread_and_collector_drops_future() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        t = task.spawn(function() mlua_wait("g"); print("never") end)
        task.cancel(t)
        print(coroutine.status(t), coroutine.resume(t))
        t = nil
        "##,
    );
    assert_eq!(h.log(), lines(&["dead false cannot resume dead coroutine"]));
    assert!(
        !h.sched.has_work(),
        "the cancelled task no longer counts as awaiting"
    );
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    assert_eq!(gates.dropped(), 1);
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log().len(), 1);
}

#[test]
fn cancel_of_task_whose_future_already_woke_in_the_same_cycle_drops_the_wakeup() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        victim = task.spawn(function() owned_wait("g"); print("never owned") end)
        victim2 = task.spawn(function() mlua_wait("g"); print("never mlua") end)
        task.delay(1, function() task.cancel(victim); task.cancel(victim2); print("cancelled") end)
        "##,
    );
    gates.open("g"); // both wake-ups are queued now
    h.step(1.0); // timers run before wake-ups: the canceller goes first
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["cancelled"]));
}

#[test]
fn cancelled_host_task_reports_cancelled_outcome() {
    let h = harness();
    let id = h.spawn("task.wait(5); return 1");
    assert_eq!(h.sched.status(&id), TaskStatus::Scheduled);
    assert!(h.sched.cancel(&id).unwrap());
    assert!(
        !h.sched.cancel(&id).unwrap(),
        "second cancel: not scheduled any more"
    );
    assert!(matches!(
        h.sched.take_result::<i32>(&id).unwrap(),
        Some(Outcome::Cancelled)
    ));
    assert!(!h.sched.has_work());
}
