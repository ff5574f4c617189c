//! The fast lane of `task.wait`: a wait that ends with its timer resumes the task through the
//! VM's own `lua_resume` instead of mlua's async thread (host-claimed tasks and a watchdog
//! budget keep the mlua path). These tests pin that the lane is not observable: errors are
//! reported as the mlua path reports them, panics reach the host, a task that blocks in an mlua
//! future after its wait is polled again with its own waker, and the hand-resume and cancel
//! rules hold inside one batch of wake-ups. Everything runs under a virtual clock.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::support::{test_host, Host};
use spindle::mlua::{self, Function};

/// A future that stays pending until opened, keeping only the latest waker it was polled with,
/// as channels and timers do.
#[derive(Clone, Default)]
struct Gate(Rc<RefCell<(bool, Option<Waker>)>>);

impl Gate {
    fn open(&self) {
        let waker = {
            let mut gate = self.0.borrow_mut();
            gate.0 = true;
            gate.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Future for Gate {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut gate = self.0.borrow_mut();
        if gate.0 {
            return Poll::Ready(());
        }
        gate.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Error reports as (message, traceback).
type Reports = Vec<(String, String)>;

/// The error report of `body` (a Lua function body that waits, then fails), as the mlua path
/// gives it for a host task and as the lane gives it for a task started by `task.spawn`, each
/// with the task id left out.
fn reports_of(body: &str) -> (Reports, Reports) {
    let h = test_host();
    let rust_fail = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { Err(mlua::Error::runtime("from rust")) })
        .unwrap();
    h.lua.globals().set("rust_fail", rust_fail).unwrap();
    h.exec(&format!("a_table = {{}} function fail() {body} end"));
    let fail: Function = h.lua.globals().get("fail").unwrap();
    let reports = |h: &Host| {
        h.errors
            .borrow_mut()
            .drain(..)
            .map(|e| (e.message, e.traceback))
            .collect::<Reports>()
    };
    let _host_task = h.scheduler.spawn(fail, ()).unwrap();
    h.step(1.0);
    let by_mlua = reports(&h);
    h.exec("task.spawn(fail)");
    h.step(1.0);
    let by_lane = reports(&h);
    assert_eq!(h.scheduler.task_count(), 0, "both tasks ended");
    (by_mlua, by_lane)
}

#[test]
fn errors_after_a_wait_are_reported_as_the_mlua_path_reports_them() {
    for (body, expected) in [
        ("task.wait(1) error('plain')", "test:1: plain"),
        ("task.wait(1) error('no position', 0)", "no position"),
        ("task.wait(1) error(a_table)", "table: "),
        (
            "task.wait(1) error(setmetatable({}, {__tostring = function() return 'shown' end}))",
            "shown",
        ),
        ("task.wait(1) rust_fail()", "from rust"),
        (
            "task.wait(1) local t = nil; t.x = 1",
            "attempt to index nil",
        ),
    ] {
        let (by_mlua, by_lane) = reports_of(body);
        assert_eq!(by_lane.len(), 1, "{body}: one report");
        assert!(
            by_lane[0].0.contains(expected),
            "{body}: message {:?}",
            by_lane[0].0
        );
        assert_eq!(by_lane, by_mlua, "{body}");
    }
}

#[test]
fn the_traceback_of_an_error_after_a_wait_names_the_failing_function() {
    let (_, by_lane) = reports_of("task.wait(1) local function inner() error('deep') end inner()");
    assert!(by_lane[0].1.contains("inner"), "{:?}", by_lane[0].1);
}

#[test]
fn a_panic_after_a_wait_reaches_the_host_and_leaves_the_scheduler_usable() {
    let h = test_host();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.exec("task.spawn(function() task.wait(1) boom() end)");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.step(1.0)));
    let payload = caught.expect_err("the panic reaches the host");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    h.exec("task.spawn(function() task.wait(1) print('after the panic') end)");
    h.step(1.0);
    assert_eq!(h.log(), ["after the panic"]);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_task_blocked_in_an_mlua_future_after_its_wait_is_polled_again_with_its_own_waker() {
    let h = test_host();
    let gate = Gate::default();
    let g = gate.clone();
    let wait_gate = h
        .lua
        .create_async_function(move |_, ()| {
            let g = g.clone();
            async move {
                g.await;
                Ok("opened")
            }
        })
        .unwrap();
    h.lua.globals().set("wait_gate", wait_gate).unwrap();
    h.exec("task.spawn(function() task.wait(1) print(wait_gate()) end)");
    h.step(1.0);
    assert!(
        h.scheduler.has_work(),
        "blocked in the future, the task is still the scheduler's"
    );
    // The lane polled the future with no waker of the scheduler's: this cycle polls it again
    // with the task's own, which the gate keeps.
    h.step(0.0);
    assert!(h.log().is_empty());
    gate.open();
    h.step(0.0);
    assert_eq!(h.log(), ["opened"]);
    assert!(!h.scheduler.has_work());
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn within_one_batch_a_cancelled_or_hand_resumed_task_is_not_woken_by_its_timer() {
    let h = test_host();
    h.exec(
        r#"
        local victim, poked
        task.spawn(function()
            task.wait(1)
            task.cancel(victim)
            print("poke returns", coroutine.resume(poked, "by hand"))
        end)
        victim = task.spawn(function() task.wait(1) print("victim woke") end)
        poked = task.spawn(function()
            print("poked got", task.wait(1))
            coroutine.yield()
            print("poked resumed again")
        end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), ["poked got by hand", "poke returns true"]);
    h.step(1.0);
    assert_eq!(h.log().len(), 2, "no timer is left: {:?}", h.log());
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_host_task_keeps_its_results_after_a_wait_and_a_lane_task_is_freed() {
    let h = test_host();
    let f: Function = h
        .lua
        .load("return function() task.wait(1) return 'kept', 2 end")
        .eval()
        .unwrap();
    let host = h.scheduler.spawn(f.clone(), ()).unwrap();
    h.exec("task.spawn(function() task.wait(1) task.wait(1) end)");
    h.step(1.0);
    assert_eq!(h.scheduler.task_count(), 1, "the spawned task waits again");
    h.step(1.0);
    assert_eq!(h.scheduler.task_count(), 0);
    match h.scheduler.take_result::<(String, i64)>(&host).unwrap() {
        Some(spindle::Outcome::Finished(values)) => assert_eq!(values, ("kept".into(), 2)),
        _ => panic!("the host task's results are kept"),
    }
}

#[test]
fn a_hand_resume_of_a_wait_returns_exactly_its_values_and_drops_the_wake_up() {
    let h = test_host();
    h.exec(
        r##"
        local function show(...)
            local parts = {tostring(select("#", ...))}
            for i = 1, select("#", ...) do
                table.insert(parts, tostring((select(i, ...))))
            end
            print(table.concat(parts, " "))
        end
        t = task.spawn(function()
            show(task.wait(1))
            show(task.wait(1))
            show(task.wait(1))
            show(task.wait(1))
        end)
        coroutine.resume(t, 1, nil, 3)
        coroutine.resume(t)
        coroutine.resume(t, "a", "b")
        "##,
    );
    assert_eq!(h.log(), ["3 1 nil 3", "0", "2 a b"]);
    h.step(0.5);
    assert_eq!(h.log().len(), 3, "the dropped wake-ups stay dropped");
    h.step(0.5);
    assert_eq!(h.log().last().unwrap(), "1 1");
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_coroutine_that_is_not_a_task_yet_waits_through_the_full_path() {
    let h = test_host();
    h.exec(
        r#"
        local co = coroutine.create(function()
            print("waited", task.wait(2))
        end)
        print("first resume", coroutine.resume(co))
        "#,
    );
    assert_eq!(h.log(), ["first resume true"]);
    h.step(2.0);
    assert_eq!(h.log(), ["first resume true", "waited 2"]);
    assert_eq!(h.scheduler.task_count(), 0);
}

// --- Stale wake-ups and panics --------------------------------------------------------------

/// A signal keeps each waiter's stamp: its token and its task's slot and generation. Tokens count
/// per slot, so a thread that left a `Signal:Wait` by a hand resume (its task freed) and waits
/// again in another task can be handed the same token: with the token alone, the stale fire
/// woke a `task.wait(math.huge)` (or a wait on another signal), and `task.wait`, seeing one
/// value, returned the scheduler's private mark to the script.
#[test]
fn a_stale_signal_fire_does_not_wake_a_task_wait_forever() {
    let h = test_host();
    h.exec(
        r#"
        local sig = Signal.new()
        local co = coroutine.create(function()
            sig:Wait()
            -- Takes the slot the hand resume just freed, so the next wait lands in a new slot.
            task.spawn(function() task.wait(100) end)
            local got = table.pack(task.wait(math.huge))
            print("task.wait(math.huge) returned", got.n, type(got[1]))
        end)
        coroutine.resume(co)
        coroutine.resume(co) -- by hand: the signal wait is abandoned (rule 12)
        sig:Fire()
        "#,
    );
    h.step(1.0);
    assert_eq!(
        h.log(),
        Vec::<String>::new(),
        "a fire for an abandoned Signal:Wait must not end a later task.wait(math.huge)"
    );
}

#[test]
fn a_stale_signal_fire_does_not_wake_a_wait_on_another_signal() {
    let h = test_host();
    h.exec(
        r#"
        local first, second = Signal.new(), Signal.new()
        local co = coroutine.create(function()
            first:Wait()
            task.spawn(function() task.wait(100) end)
            print("second:Wait returned", second:Wait())
        end)
        coroutine.resume(co)
        coroutine.resume(co)
        first:Fire("meant for the first signal")
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), Vec::<String>::new());
}

/// Had the mark leaked, `coroutine.resume(t, mark, x)` would pass for the timer's wake-up, the
/// wait would not be abandoned, and the timer would later resume the task a second time for one
/// suspension, at an unrelated `coroutine.yield` (rule 12).
#[test]
fn a_script_never_holds_the_wake_mark_and_cannot_forge_a_timer_wake_up() {
    let h = test_host();
    h.exec(
        r#"
        local sig = Signal.new()
        local co = coroutine.create(function()
            sig:Wait()
            task.spawn(function() task.wait(100) end)
            leaked = (task.wait(math.huge))
        end)
        coroutine.resume(co)
        coroutine.resume(co)
        sig:Fire()
        "#,
    );
    h.step(0.0);
    h.exec(
        r#"
        victim = task.spawn(function()
            print("wait returned", task.wait(10))
            print("yield returned", coroutine.yield())
        end)
        coroutine.resume(victim, leaked, 99)
        "#,
    );
    h.step(10.0);
    assert_eq!(
        h.log(),
        ["wait returned nil 99"],
        "the hand resume's values come back exactly, and the dropped timer never resumes the \
         task at its next yield"
    );
}

/// A panic from a Rust callback after a wait reaches the host, and the task, whose thread is
/// dead, is freed (rule 16): neither the lane nor the mlua path may leave it in the store.
#[test]
fn a_task_whose_rust_callback_panicked_after_a_wait_is_freed() {
    let h = test_host();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.exec("task.spawn(function() task.wait(1) boom() end)");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.step(1.0)));
    assert!(caught.is_err(), "the panic reaches the host");
    assert!(!h.scheduler.has_work());
    assert_eq!(
        h.scheduler.task_count(),
        0,
        "the task has ended: nothing holds it"
    );
}
