//! A wake-up meant for a suspension that has already ended (rule 12 of the task contract,
//! `docs/contract.md`): a timer of a `task.wait` that something else ended first, or a waker of a
//! Rust future that settled and kept its waker. It must change nothing a script or a host can see:
//! not the next wait's result, not the deadline the host sleeps to, not the task's next future.
//! Also the names a host's own userdata gets in argument errors (rule 7).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::support::Host;
use crate::support::{harness, lines};
use spindle::mlua::{self, UserData};

#[test]
fn a_stale_wait_timer_does_not_end_the_tasks_next_wait_early() {
    let run = Host::new();
    run.spawn(
        r#"
        local waiter = task.spawn(function()
            print("first wait got", task.wait(1))
            print("second wait got", task.wait(5))
        end)
        coroutine.resume(waiter, "by hand")
        "#,
    );
    assert_eq!(run.log(), ["first wait got by hand"]);
    // The first wait's timer surfaces at 1 s: it is stale and must not end the second wait.
    run.step(1.0);
    run.step(1.0);
    assert_eq!(run.log(), ["first wait got by hand"]);
    run.step(3.0);
    assert_eq!(run.log(), ["first wait got by hand", "second wait got 5"]);
    assert_eq!(run.scheduler.task_count(), 0);
}

#[test]
fn a_stale_wait_timer_is_not_the_deadline_the_host_sleeps_to() {
    let run = Host::new();
    run.spawn(
        r#"
        local waiter = task.spawn(function()
            task.wait(1)
            task.wait(5)
        end)
        -- Resumed through the scheduler, the waiter stays the same task, with a new wait.
        task.spawn(waiter)
        "#,
    );
    // The live timer is the second wait's, due 5 s from now; the first wait's, at 1 s, is stale.
    assert_eq!(run.scheduler.next_deadline(), Some(Duration::from_secs(5)));
}

#[test]
fn a_wait_timer_made_stale_by_an_earlier_timer_of_the_same_batch_does_not_fire() {
    let run = Host::new();
    run.spawn(
        r#"
        local waiter = task.spawn(function()
            print("first wait got", task.wait(1))
            print("second wait got", task.wait(5))
        end)
        task.spawn(function()
            task.wait(0.5)
            -- Due in the same cycle as the waiter's timer, and earlier: it runs first and ends
            -- the waiter's first wait by hand.
            task.spawn(waiter, "by hand")
        end)
        "#,
    );
    run.step(1.0);
    assert_eq!(run.log(), ["first wait got by hand"]);
    run.step(4.0);
    assert_eq!(run.log(), ["first wait got by hand"]);
    run.step(1.0);
    assert_eq!(run.log(), ["first wait got by hand", "second wait got 5"]);
    assert_eq!(run.scheduler.task_count(), 0);
}

#[test]
fn a_task_woken_by_a_stale_wait_timer_while_in_a_plain_yield_stays_with_its_resumer() {
    let run = Host::new();
    run.spawn(
        r#"
        local waiter
        waiter = task.spawn(function()
            task.wait(1)
            print("resumed by hand")
            print("plain yield got", coroutine.yield())
        end)
        coroutine.resume(waiter)
        _G.waiter = waiter
        "#,
    );
    run.step(2.0);
    assert_eq!(run.log(), ["resumed by hand"]);
    run.exec("coroutine.resume(waiter, 'mine')");
    assert_eq!(run.log(), ["resumed by hand", "plain yield got mine"]);
}

/// A future that is pending on its first poll and ready on the next, and that keeps a clone of
/// the waker it was polled with, so the host can fire it again after the future settled.
fn ready_on_second_poll(
    kept: Rc<RefCell<Option<Waker>>>,
) -> impl Future<Output = mlua::Result<&'static str>> {
    let mut polled = false;
    std::future::poll_fn(move |cx| {
        if polled {
            return Poll::Ready(Ok("first"));
        }
        polled = true;
        *kept.borrow_mut() = Some(cx.waker().clone());
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// A future that stays pending until the host opens it, and keeps the latest waker.
#[derive(Clone, Default)]
struct Gate(Rc<RefCell<(bool, Option<Waker>)>>);

impl Gate {
    fn wait(&self) -> impl Future<Output = mlua::Result<&'static str>> {
        let gate = self.clone();
        std::future::poll_fn(move |cx| {
            let mut state = gate.0.borrow_mut();
            if state.0 {
                return Poll::Ready(Ok("second"));
            }
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn open(&self) {
        let waker = {
            let mut state = self.0.borrow_mut();
            state.0 = true;
            state.1.take()
        };
        waker.expect("the gate's future was polled").wake();
    }
}

#[test]
fn a_settled_futures_late_wake_up_does_not_touch_the_tasks_next_future() {
    let run = Host::new();
    let kept: Rc<RefCell<Option<Waker>>> = Rc::default();
    let first = {
        let kept = Rc::clone(&kept);
        run.scheduler
            .create_async_function(move |_, ()| ready_on_second_poll(Rc::clone(&kept)))
            .unwrap()
    };
    let gate = Gate::default();
    let second = {
        let gate = gate.clone();
        run.scheduler
            .create_async_function(move |_, ()| gate.wait())
            .unwrap()
    };
    run.lua.globals().set("first", first).unwrap();
    run.lua.globals().set("second", second).unwrap();
    run.spawn(
        r#"
        print(first())
        print(second())
        "#,
    );
    run.scheduler.cycle().unwrap();
    assert_eq!(run.log(), ["first"]);
    // The first future settled long ago; its waker fires once more while the task waits on the
    // second one.
    kept.borrow_mut().take().unwrap().wake();
    run.scheduler.cycle().unwrap();
    assert_eq!(run.log(), ["first"], "a stale wake-up resumed the task");
    gate.open();
    run.scheduler.cycle().unwrap();
    assert_eq!(run.log(), ["first", "second"]);
    assert_eq!(run.scheduler.task_count(), 0);
}

struct Sprite;

impl UserData for Sprite {}

#[test]
fn argument_errors_name_a_host_userdata_by_its_type_name() {
    let run = Host::new();
    run.lua
        .globals()
        .set("sprite", run.lua.create_userdata(Sprite).unwrap())
        .unwrap();
    run.spawn(
        r#"
        local expected = typeof(sprite)
        assert(expected ~= "userdata", "mlua gives host userdata a type name: " .. expected)
        for _, call in { task.spawn, task.defer, task.cancel } do
            local ok, message = pcall(call, sprite)
            print((string.gsub(message, expected, "<type name>")))
        end
        print((string.gsub(select(2, pcall(task.delay, sprite, print)), expected, "<type name>")))
        print((string.gsub(select(2, pcall(task.wait, sprite)), expected, "<type name>")))
        "#,
    );
    assert_eq!(
        run.log(),
        [
            "invalid argument #1 to 'spawn' (function or thread expected, got <type name>)",
            "invalid argument #1 to 'defer' (function or thread expected, got <type name>)",
            "invalid argument #1 to 'cancel' (thread expected, got <type name>)",
            "invalid argument #1 to 'delay' (number expected, got <type name>)",
            "invalid argument #1 to 'wait' (number expected, got <type name>)",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Corners of the contract, on the shared corner-case host (`support::H`)
// ---------------------------------------------------------------------------------------------

#[test]
fn waiting_thread_resumed_by_hand_then_plain_yield_is_not_resumed_by_the_stale_timer() {
    let h = harness();
    h.run(
        r##"
        t = task.spawn(function()
            print("wait returned", task.wait(1))
            print("yield returned", coroutine.yield())
        end)
        coroutine.resume(t, "early")
        task.wait(5)
        print("status", coroutine.status(t))
        "##,
    );
    assert_eq!(h.log(), lines(&["wait returned early", "status suspended"]));
}

#[test]
fn thread_resumed_by_hand_in_same_timer_batch_before_its_timer_is_resumed_once() {
    let h = harness();
    h.run(
        r##"
        local b
        task.delay(1, function() coroutine.resume(b, "by hand") end)
        b = task.spawn(function()
            print("first", task.wait(1))   -- due at 1 too, but after the delay above
            -- Durations a stale second resumption could not return: it would end them early.
            print("second", task.wait(0.25))
            print("third", task.wait(0.5))
        end)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&["first by hand", "second 0.25", "third 0.5"])
    );
}

#[test]
fn wait_resumed_by_task_spawn_then_longer_wait_is_not_cut_short() {
    let h = harness();
    h.run(
        r##"
        local t = task.spawn(function()
            print("first", task.wait(1))
            local start = now()
            print("second", task.wait(3))
            print("at", now() - start)
        end)
        task.wait(0.5)
        task.spawn(t, "spawned")
        "##,
    );
    assert_eq!(h.log(), lines(&["first spawned", "second 3", "at 3"]));
}

/// Each `task.delay` of an existing thread is a request of its own, even when an earlier entry
/// of the same timer batch resumes that thread first.
#[test]
fn a_delay_of_an_existing_thread_survives_an_earlier_resume_in_the_same_batch() {
    let h = harness();
    let _task = h.spawn(
        r##"
        local B = coroutine.create(function(...)
            print("B", ...)
            while true do print("B got", coroutine.yield()) end
        end)
        coroutine.resume(B, "start")
        task.delay(1, function() task.spawn(B, "spawned") end)
        task.delay(1, B, "delayed")
        "##,
    );
    h.step(1.0);
    h.step(1.0);
    assert_eq!(
        h.log(),
        lines(&["B start", "B got spawned", "B got delayed"])
    );
    assert!(!h.sched.has_work());
}
