//! Attacks on the handle, `join`, the serving drivers and the end hook: a host that drops the
//! last handle where the engine stands, hooks that use the scheduler while it ends tasks, and
//! joins the engine must wake whatever happens to their task.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;
use spindle::{Clock, Error, Outcome, Scheduler, TaskEnd, TaskStatus, VirtualClock};

use super::{bounded, function};

/// Sets its flag when dropped.
struct Guard(Rc<Cell<bool>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// An async function `forever` whose pending future sets `dropped` when it goes.
fn install_forever(lua: &mlua::Lua, scheduler: &Scheduler, dropped: &Rc<Cell<bool>>) {
    let flag = dropped.clone();
    let forever = scheduler
        .create_async_function(move |_, ()| {
            let guard = Guard(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("forever", forever).unwrap();
}

// --- The end hook during shutdown --------------------------------------------------------------

#[test]
fn a_task_the_end_hook_defers_during_shutdown_still_runs() {
    let lua = mlua::Lua::new();
    let once = Rc::new(Cell::new(false));
    let hook_once = once.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, end| {
            if matches!(end, TaskEnd::Dropped) && !hook_once.replace(true) {
                let f = scheduler
                    .lua()
                    .load("deferred_ran = true")
                    .into_function()
                    .unwrap();
                scheduler.defer(f, ()).unwrap();
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    scheduler.shutdown().unwrap();
    assert!(once.get());
    bounded(scheduler.run(Timer::at)).unwrap();
    assert_eq!(lua.globals().get::<bool>("deferred_ran").ok(), Some(true));
    assert!(!scheduler.has_work());
}

#[test]
fn a_task_the_end_hook_starts_waiting_during_shutdown_still_wakes() {
    let lua = mlua::Lua::new();
    let once = Rc::new(Cell::new(false));
    let hook_once = once.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, end| {
            if matches!(end, TaskEnd::Dropped) && !hook_once.replace(true) {
                let f = scheduler
                    .lua()
                    .load("task.wait(0.01) waited = true")
                    .into_function()
                    .unwrap();
                scheduler.spawn(f, ()).unwrap();
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    scheduler.shutdown().unwrap();
    bounded(scheduler.run(Timer::at)).unwrap();
    assert_eq!(lua.globals().get::<bool>("waited").ok(), Some(true));
}

#[test]
fn a_hook_that_cancels_and_reuses_a_slot_during_shutdown_does_not_close_the_new_task() {
    let lua = mlua::Lua::new();
    let clock = VirtualClock::new();
    let second: Rc<Cell<Option<spindle::TaskId>>> = Rc::default();
    let started: Rc<RefCell<Option<spindle::Task>>> = Rc::default();
    let (hook_second, hook_started) = (second.clone(), started.clone());
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, end| {
            if !matches!(end, TaskEnd::Dropped) {
                return;
            }
            if let Some(b) = hook_second.take() {
                // The first task's end: cancel the second, and start a new task, which takes
                // the second's slot.
                scheduler.cancel(b).unwrap();
                let f = scheduler
                    .lua()
                    .load("task.wait(1) return 'new task done'")
                    .into_function()
                    .unwrap();
                *hook_started.borrow_mut() = Some(scheduler.spawn(f, ()).unwrap());
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let _a = scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    let b = scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    second.set(Some(b.id()));
    let shutdown = scheduler.shutdown();
    let new = started
        .borrow_mut()
        .take()
        .expect("the hook started a task");
    assert_eq!(
        scheduler.status(&new),
        TaskStatus::Scheduled,
        "{shutdown:?}"
    );
    bounded(scheduler.run(Timer::at)).unwrap();
    let outcome = scheduler.take_result::<String>(&new).unwrap();
    assert!(
        matches!(&outcome, Some(Outcome::Finished(s)) if s == "new task done"),
        "{outcome:?} (shutdown said {shutdown:?})"
    );
}

#[test]
fn shutdown_from_the_end_hook_during_shutdown_is_harmless() {
    let lua = mlua::Lua::new();
    let results: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = results.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, _| {
            let nested = format!("{:?}", scheduler.shutdown());
            seen.borrow_mut().push(nested);
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    for _ in 0..3 {
        scheduler
            .spawn(function(&lua, "task.wait(60)"), ())
            .unwrap();
    }
    let outer = scheduler.shutdown();
    assert!(outer.is_ok(), "{outer:?} (inner: {:?})", results.borrow());
    assert_eq!(
        *results.borrow(),
        [r#"Err(Reentrant("Scheduler::shutdown"))"#; 3]
    );
    assert_eq!(scheduler.task_count(), 0);
    assert!(!scheduler.has_work());
}

// --- Dropping the last handle where the engine stands ------------------------------------------

/// Where the host keeps its only strong handle, for a Rust function to empty.
type Slot = Rc<RefCell<Option<Scheduler>>>;

/// A `Lua` whose only strong handle on its scheduler sits in a slot that `drop_scheduler()`
/// (a Rust function) empties; `forever` is an async function that never completes.
fn dropped_from_lua() -> (mlua::Lua, Slot, Rc<Cell<bool>>) {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dropped = Rc::new(Cell::new(false));
    install_forever(&lua, &scheduler, &dropped);
    let slot = Rc::new(RefCell::new(Some(scheduler)));
    let held = slot.clone();
    let drop_it = lua
        .create_function(move |_, ()| {
            drop(held.borrow_mut().take());
            Ok(())
        })
        .unwrap();
    lua.globals().set("drop_scheduler", drop_it).unwrap();
    (lua, slot, dropped)
}

#[test]
fn dropping_the_last_handle_from_inside_a_task_ends_the_run_and_frees_pending_futures() {
    let (lua, slot, dropped) = dropped_from_lua();
    let weak = slot.borrow().as_ref().unwrap().downgrade();
    // Lua that no task runs starts the tasks: no handle is on the stack.
    let result = lua
        .load(
            r#"
            task.spawn(forever)
            task.spawn(function()
                drop_scheduler()
                local ok, err = pcall(task.wait, 1)
                after = tostring(ok) .. " " .. tostring(err)
            end)
            "#,
        )
        .exec();
    assert!(slot.borrow().is_none());
    assert!(weak.upgrade().is_none());
    assert!(result.is_ok(), "{result:?}");
    let after: String = lua.globals().get("after").unwrap();
    assert!(after.contains("dropped"), "{after}");
    // The standard coroutine library is back and works.
    let resumed: String = lua
        .load("local co = coroutine.wrap(function() coroutine.yield('y') end) return co()")
        .eval()
        .unwrap();
    assert_eq!(resumed, "y");
    assert!(
        dropped.get(),
        "the pending future of the other task outlived the scheduler (and keeps what it holds)"
    );
}

#[test]
fn dropping_the_last_handle_from_the_error_handler_inside_a_task() {
    let lua = mlua::Lua::new();
    let slot: Rc<RefCell<Option<Scheduler>>> = Rc::default();
    let held = slot.clone();
    let scheduler = Scheduler::builder()
        .on_error(move |_, _| drop(held.borrow_mut().take()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dropped = Rc::new(Cell::new(false));
    install_forever(&lua, &scheduler, &dropped);
    *slot.borrow_mut() = Some(scheduler);
    let result = lua
        .load(
            r#"
            task.spawn(forever)
            task.spawn(error, "boom")
            after = pcall(task.spawn, function() end)
            "#,
        )
        .exec();
    assert!(slot.borrow().is_none());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(lua.globals().get::<bool>("after").ok(), Some(false));
    assert!(dropped.get(), "a pending future outlived the scheduler");
}

#[test]
fn dropping_the_last_handle_from_the_end_hook() {
    let lua = mlua::Lua::new();
    let slot: Rc<RefCell<Option<Scheduler>>> = Rc::default();
    let held = slot.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |_, _, _| drop(held.borrow_mut().take()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dropped = Rc::new(Cell::new(false));
    install_forever(&lua, &scheduler, &dropped);
    let weak = scheduler.downgrade();
    *slot.borrow_mut() = Some(scheduler);
    let result = lua
        .load(
            r#"
            task.spawn(forever)
            task.spawn(function() end)
            local ok = pcall(task.defer, print)
            after = ok
            "#,
        )
        .exec();
    assert!(result.is_ok(), "{result:?}");
    assert!(weak.upgrade().is_none());
    assert_eq!(lua.globals().get::<bool>("after").ok(), Some(false));
    assert!(dropped.get(), "a pending future outlived the scheduler");
}

#[test]
fn dropping_the_last_handle_while_the_host_borrows_app_data_does_not_panic() {
    let lua = mlua::Lua::new();
    lua.set_app_data(7_u32);
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _borrowed = lua.app_data_ref::<u32>().unwrap();
        drop(scheduler);
    }));
    assert!(result.is_ok(), "dropping the scheduler panicked");
    assert!(Scheduler::from_lua(&lua).is_none());
    // The Lua takes another scheduler.
    let again = Scheduler::new(&lua).unwrap();
    assert!(Scheduler::from_lua(&lua).is_some());
    drop(again);
}

#[test]
fn task_handles_and_weak_handles_outlive_a_scheduler_dropped_from_inside() {
    let (lua, slot, _) = dropped_from_lua();
    let scheduler = slot.borrow().clone().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(1) return 1"), ())
        .unwrap();
    let weak = scheduler.downgrade();
    drop(scheduler);
    lua.load("drop_scheduler()").exec().unwrap();
    assert!(weak.upgrade().is_none());
    assert!(task.is_finished());
    drop(task);
    assert!(Scheduler::from_lua(&lua).is_none());
    // A new scheduler on the same Lua.
    let second = Scheduler::new(&lua).unwrap();
    second.install_task_library().unwrap();
    assert!(Scheduler::from_lua(&lua).is_some());
    let t = second.spawn(function(&lua, "return 5"), ()).unwrap();
    assert_eq!(
        second
            .take_result::<i64>(&t)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap(),
        5
    );
}

// --- join ---------------------------------------------------------------------------------------

#[test]
fn join_of_a_task_that_lua_closes_sees_the_cancellation() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(
            function(&lua, "victim = coroutine.running() task.wait(60)"),
            (),
        )
        .unwrap();
    let host = async {
        let closer = function(&lua, "task.wait(0.01) coroutine.close(victim)");
        scheduler.spawn(closer, ()).unwrap();
        scheduler.join::<()>(&task).await
    };
    let outcome = bounded(scheduler.run_until(Timer::at, host)).unwrap();
    assert!(matches!(outcome, Ok(Outcome::Cancelled)), "{outcome:?}");
}

#[test]
fn two_joins_of_one_task_both_complete() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(0.01) return 3"), ())
        .unwrap();
    let host = future::zip(scheduler.join::<i64>(&task), scheduler.join::<i64>(&task));
    let (a, b) = bounded(scheduler.run_until(Timer::at, host)).unwrap();
    let finished = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Finished(3))))
        .count();
    let no_outcome = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(Error::NoOutcome(_))))
        .count();
    assert_eq!((finished, no_outcome), (1, 1), "{a:?} {b:?}");
}

#[test]
fn join_of_a_task_released_by_a_plain_yield_after_a_wait_resolves_to_released() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(
            function(&lua, "task.wait(0.01) coroutine.yield() return 1"),
            (),
        )
        .unwrap();
    let r = bounded(scheduler.run_until(Timer::at, scheduler.join::<Option<i64>>(&task))).unwrap();
    assert!(matches!(r, Ok(Outcome::Released(None))), "{r:?}");
}

#[test]
fn join_pending_while_the_host_shuts_down_fails_with_no_outcome() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    let host = async {
        let join = scheduler.join::<()>(&task);
        let shut = async {
            Timer::after(Duration::from_millis(10)).await;
            scheduler.shutdown().unwrap();
            std::future::pending::<Result<Outcome<()>, Error>>().await
        };
        future::or(join, shut).await
    };
    let r = bounded(scheduler.run_until(Timer::at, host)).unwrap();
    assert!(matches!(r, Err(Error::NoOutcome(_))), "{r:?}");
}

#[test]
fn a_task_freed_by_a_panic_is_reported_to_the_end_hook_and_wakes_its_join() {
    let lua = mlua::Lua::new();
    let ends: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = ends.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |_, _, end| seen.borrow_mut().push(format!("{end:?}")))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let boom = lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("host bug") })
        .unwrap();
    lua.globals().set("boom", boom).unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(0.01) boom()"), ())
        .unwrap();
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler.run_blocking()));
    assert!(panicked.is_err());
    assert!(task.is_finished());
    assert_eq!(scheduler.status(&task), TaskStatus::Done);
    match scheduler.take_result::<()>(&task).unwrap() {
        Some(Outcome::Failed(error)) => {
            assert_eq!(error.message, "a Rust panic unwound through the task")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        ends.borrow().len(),
        1,
        "the hook was not told: {:?}",
        ends.borrow()
    );
    assert!(
        ends.borrow()[0].starts_with("Failed"),
        "{:?}",
        ends.borrow()
    );
}

#[test]
fn abandoned_joins_of_a_long_task_leave_no_waker_behind() {
    // A host that polls a join under a timeout again and again, each time from a new
    // executor task (a fresh waker): the wakers must not pile up for the task's lifetime
    // (they did, and each poll scanned every earlier one: 20,000 such polls took seconds).
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    let wakers: Vec<_> = (0..1000).map(|_| std::sync::Arc::new(Nothing)).collect();
    for waker in &wakers {
        let waker = std::task::Waker::from(waker.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut join = std::pin::pin!(scheduler.join::<()>(&task));
        assert!(join.as_mut().poll(&mut cx).is_pending());
        // Polled again with another waker: it replaces the first.
        let other = std::task::Waker::from(std::sync::Arc::new(Nothing));
        assert!(join
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&other))
            .is_pending());
    }
    let kept = wakers
        .iter()
        .filter(|w| std::sync::Arc::strong_count(w) > 1)
        .count();
    assert_eq!(kept, 0, "wakers of dropped joins are still held");
    // A join still pending is woken.
    let host = scheduler.join::<()>(&task);
    let cancel = async {
        Timer::after(Duration::from_millis(10)).await;
        scheduler.cancel(&task).unwrap();
        std::future::pending().await
    };
    let r = bounded(scheduler.run_until(Timer::at, future::or(host, cancel))).unwrap();
    assert!(matches!(r, Ok(Outcome::Cancelled)), "{r:?}");
}

struct Nothing;

impl std::task::Wake for Nothing {
    fn wake(self: std::sync::Arc<Self>) {}
}

// --- The end hook re-entering the scheduler ----------------------------------------------------

#[test]
fn an_end_hook_that_starts_a_task_on_every_end_is_bounded_by_the_host_alone() {
    // Each task the hook starts ends at once, inside the host's `spawn` that the hook made:
    // 5,000 such ends in a row (a supervisor restarting a task that fails at once) must not
    // overflow the stack. The hook nested once per end, and 300 overflowed a test thread's.
    let lua = mlua::Lua::new();
    let left = Rc::new(Cell::new(5000_u32));
    let hook_left = left.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, _| {
            if hook_left.get() > 0 {
                hook_left.set(hook_left.get() - 1);
                let f = scheduler.lua().load("return 1").into_function().unwrap();
                drop(scheduler.spawn(f, ()).unwrap());
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    // On the test thread's stack (2 MiB unless RUST_MIN_STACK says otherwise).
    drop(scheduler.spawn(function(&lua, "return 0"), ()).unwrap());
    assert_eq!(scheduler.task_count(), 0);
    assert_eq!(left.get(), 0);
}

#[test]
fn an_end_hook_may_drive_the_scheduler_outside_a_cycle_and_is_refused_inside_one() {
    let lua = mlua::Lua::new();
    let results: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = results.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, _| {
            let r = match scheduler.cycle() {
                Ok(_) => "ok".to_string(),
                Err(Error::Reentrant(_)) => "reentrant".to_string(),
                Err(e) => format!("error {e}"),
            };
            seen.borrow_mut().push(r);
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    // Ends inside the host's spawn, where no cycle runs; then inside a cycle.
    scheduler.spawn(function(&lua, "return 1"), ()).unwrap();
    scheduler
        .spawn(function(&lua, "task.wait(0.001) return 2"), ())
        .unwrap();
    bounded(scheduler.run(Timer::at)).unwrap();
    assert_eq!(*results.borrow(), ["ok", "reentrant"]);
}

#[test]
fn dropping_the_last_handle_from_a_deferred_signal_handler_the_host_fired() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dropped = Rc::new(Cell::new(false));
    install_forever(&lua, &scheduler, &dropped);
    let signal = scheduler.create_signal().unwrap();
    let slot = Rc::new(RefCell::new(Some(scheduler)));
    let held = slot.clone();
    let drop_it = lua
        .create_function(move |_, ()| {
            drop(held.borrow_mut().take());
            Ok(())
        })
        .unwrap();
    lua.globals().set("drop_scheduler", drop_it).unwrap();
    lua.load("task.spawn(forever)").exec().unwrap();
    signal
        .connect(function(&lua, "drop_scheduler() first = true"))
        .unwrap();
    signal.connect(function(&lua, "second = true")).unwrap();
    let fired = signal.fire(());
    assert!(slot.borrow().is_none());
    assert!(fired.is_ok(), "{fired:?}");
    assert_eq!(lua.globals().get::<bool>("first").ok(), Some(true));
    assert!(dropped.get(), "a pending future outlived the scheduler");
    // The Lua goes on, with no scheduler.
    assert!(lua.load("return pcall(task.wait)").eval::<bool>().is_ok());
    assert!(signal.fire(()).is_err() || signal.fire(()).is_ok());
}

// --- Drivers ------------------------------------------------------------------------------------

#[test]
fn an_end_future_that_panics_leaves_the_scheduler_usable() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
        .spawn(function(&lua, "task.wait(0.01) first = true"), ())
        .unwrap();
    let end = async {
        Timer::after(Duration::from_millis(5)).await;
        panic!("end future panics");
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bounded(scheduler.run_until(Timer::at, end))
    }));
    assert!(r.is_err());
    bounded(scheduler.run(Timer::at)).unwrap();
    assert_eq!(lua.globals().get::<bool>("first").ok(), Some(true));
}

#[test]
fn an_end_future_that_drives_the_scheduler_itself() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let end = async {
        let task = scheduler
            .spawn(function(&lua, "task.wait(0.01) return 9"), ())
            .unwrap();
        // A cycle and a nested serving driver from inside the end future.
        let cycled = scheduler.cycle().map(|_| ());
        let inner = scheduler
            .run_until(Timer::at, scheduler.join::<i64>(&task))
            .await;
        (cycled, inner)
    };
    let (cycled, inner) = bounded(scheduler.run_until(Timer::at, end)).unwrap();
    assert!(cycled.is_ok(), "{cycled:?}");
    assert!(matches!(inner, Ok(Ok(Outcome::Finished(9)))), "{inner:?}");
}

#[test]
fn a_waker_from_another_thread_wakes_a_parked_serving_driver() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let remote = scheduler
        .create_async_function(|_, ()| async {
            type Slot = std::sync::Arc<std::sync::Mutex<(Option<i64>, Option<std::task::Waker>)>>;
            let slot: Slot = Default::default();
            let theirs = slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let waker = {
                    let mut s = theirs.lock().unwrap();
                    s.0 = Some(11);
                    s.1.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
            let value = std::future::poll_fn(|cx| {
                let mut s = slot.lock().unwrap();
                match s.0 {
                    Some(v) => std::task::Poll::Ready(v),
                    None => {
                        s.1 = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                }
            })
            .await;
            Ok(value)
        })
        .unwrap();
    lua.globals().set("remote", remote).unwrap();
    let task = scheduler
        .spawn(function(&lua, "return remote()"), ())
        .unwrap();
    let r = bounded(scheduler.run_until(Timer::at, scheduler.join::<i64>(&task))).unwrap();
    assert!(matches!(r, Ok(Outcome::Finished(11))), "{r:?}");
}

// --- Reaching ------------------------------------------------------------------------------------

#[test]
fn current_task_inside_a_signal_handler_and_an_async_future() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let here = lua
        .create_function(|lua, ()| {
            let s = Scheduler::from_lua(lua).unwrap();
            Ok(s.current_task().map(|t| t.to_string()))
        })
        .unwrap();
    lua.globals().set("here", here).unwrap();
    let in_future = scheduler
        .create_async_function(|lua, ()| async move {
            let s = Scheduler::from_lua(&lua).unwrap();
            let first = s.current_task().map(|t| t.to_string());
            // Pending once: the next poll comes from a cycle.
            let mut once = false;
            std::future::poll_fn(|cx| {
                if once {
                    return std::task::Poll::Ready(());
                }
                once = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
            let later = s.current_task().map(|t| t.to_string());
            Ok(format!("{first:?} {later:?}"))
        })
        .unwrap();
    lua.globals().set("in_future", in_future).unwrap();
    let task = scheduler
        .spawn(
            function(
                &lua,
                r#"
                local s = Signal.new("Immediate")
                local seen
                s:Connect(function() seen = here() end)
                s:Fire()
                local mine = here()
                local f = in_future()
                local closed = coroutine.create(function() end)
                coroutine.close(closed)
                return tostring(mine), tostring(seen), tostring(f)
                "#,
            ),
            (),
        )
        .unwrap();
    bounded(scheduler.run(Timer::at)).unwrap();
    let (mine, seen, f): (String, String, String) = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(mine, task.id().to_string());
    assert_ne!(seen, "nil", "a signal handler runs in a task");
    // The first poll runs inside the call, in the task's thread; a later one, from a cycle,
    // in none.
    assert_eq!(f, format!("Some({:?}) None", task.id().to_string()));
}

// --- Work the end future gives while the driver is about to sleep --------------------------------

/// An end future that, on its second poll (the driver idle by then), gives the scheduler work
/// with `give` and awaits it.
async fn late_work(
    scheduler: &Scheduler,
    give: impl FnOnce(&Scheduler) -> spindle::Task,
) -> Outcome<i64> {
    future::yield_now().await;
    let task = give(scheduler);
    scheduler.join::<i64>(&task).await.unwrap()
}

#[test]
fn a_deferral_the_end_future_makes_as_the_driver_goes_idle_is_run() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let f = function(&lua, "return 1");
    let end = late_work(&scheduler, move |s| s.defer(f, ()).unwrap());
    let r = bounded(scheduler.run_until(Timer::at, end)).unwrap();
    assert!(matches!(r, Outcome::Finished(1)), "{r:?}");
}

#[test]
fn a_wait_the_end_future_starts_as_the_driver_goes_idle_is_timed() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let f = function(&lua, "task.wait(0.01) return 2");
    let end = late_work(&scheduler, move |s| s.spawn(f, ()).unwrap());
    let r = bounded(scheduler.run_until(Timer::at, end)).unwrap();
    assert!(matches!(r, Outcome::Finished(2)), "{r:?}");
}

#[test]
fn a_future_that_wakes_in_its_first_poll_as_the_driver_goes_idle_is_polled_again() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let again = scheduler
        .create_async_function(|_, ()| async {
            future::yield_now().await;
            Ok(3)
        })
        .unwrap();
    lua.globals().set("again", again).unwrap();
    let f = function(&lua, "return again()");
    let end = late_work(&scheduler, move |s| s.spawn(f, ()).unwrap());
    let r = bounded(scheduler.run_until(Timer::at, end)).unwrap();
    assert!(matches!(r, Outcome::Finished(3)), "{r:?}");
}

#[test]
fn an_error_handler_that_restarts_a_task_failing_at_once_does_not_nest() {
    let lua = mlua::Lua::new();
    let weak: Rc<RefCell<Option<spindle::WeakScheduler>>> = Rc::default();
    let left = Rc::new(Cell::new(5000_u32));
    let (handler_weak, handler_left) = (weak.clone(), left.clone());
    let scheduler = Scheduler::builder()
        .on_error(move |_, _| {
            if handler_left.get() == 0 {
                return;
            }
            handler_left.set(handler_left.get() - 1);
            let scheduler = handler_weak.borrow().as_ref().unwrap().upgrade().unwrap();
            let f = scheduler
                .lua()
                .load("error('again')")
                .into_function()
                .unwrap();
            drop(scheduler.spawn(f, ()).unwrap());
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    *weak.borrow_mut() = Some(scheduler.downgrade());
    drop(
        scheduler
            .spawn(function(&lua, "error('first')"), ())
            .unwrap(),
    );
    assert_eq!(left.get(), 0);
    assert_eq!(scheduler.error_count(), 5001);
}

#[test]
fn a_task_may_join_another_from_inside_an_async_function() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let await_task = scheduler
        .create_async_function(|lua, f: mlua::Function| async move {
            let scheduler = Scheduler::from_lua(&lua).unwrap();
            let task = scheduler.defer(f, ())?;
            match scheduler.join::<i64>(&task).await? {
                Outcome::Finished(value) => Ok(format!("finished {value}")),
                Outcome::Failed(error) => Ok(format!("failed {}", error.message)),
                Outcome::Cancelled => Ok("cancelled".to_string()),
                _ => Ok("other".to_string()),
            }
        })
        .unwrap();
    lua.globals().set("await_task", await_task).unwrap();
    let main = scheduler
        .spawn(
            function(
                &lua,
                r#"
                local a = await_task(function() task.wait(0.01) return 4 end)
                local b = await_task(function() error("no", 0) end)
                local c = await_task(function()
                    task.defer(task.cancel, coroutine.running())
                    task.wait(1)
                end)
                return a .. ", " .. b .. ", " .. c
                "#,
            ),
            (),
        )
        .unwrap();
    bounded(scheduler.run(Timer::at)).unwrap();
    let r = scheduler.take_result::<String>(&main).unwrap();
    assert!(
        matches!(&r, Some(Outcome::Finished(s)) if s == "finished 4, failed no, cancelled"),
        "{r:?}"
    );
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn a_join_of_a_task_started_by_one_that_then_runs_out_of_memory_completes() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let started: Rc<RefCell<Option<spindle::Task>>> = Rc::default();
    let keep = started.clone();
    let start = lua
        .create_function(move |lua, f: mlua::Function| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            *keep.borrow_mut() = Some(scheduler.defer(f, ())?);
            Ok(())
        })
        .unwrap();
    lua.globals().set("start", start).unwrap();
    lua.gc_collect().unwrap();
    lua.set_memory_limit(lua.used_memory() + (4 << 20)).unwrap();
    let hog = scheduler
        .spawn(
            function(
                &lua,
                r#"
                start(function() task.wait(0.01) return 8 end)
                local t = {}
                for i = 1, 1e8 do t[i] = string.rep("x", 64) .. i end
                "#,
            ),
            (),
        )
        .unwrap();
    assert!(matches!(
        scheduler.take_result::<()>(&hog).unwrap(),
        Some(Outcome::Failed(_))
    ));
    let child = started.borrow_mut().take().expect("the child was started");
    let r = bounded(scheduler.run_until(Timer::at, scheduler.join::<i64>(&child))).unwrap();
    assert!(matches!(r, Ok(Outcome::Finished(8))), "{r:?}");
}

#[test]
fn building_while_the_host_borrows_app_data_is_an_error_not_a_panic() {
    let lua = mlua::Lua::new();
    lua.set_app_data(7_u32);
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _borrowed = lua.app_data_ref::<u32>().unwrap();
        Scheduler::new(&lua).map(drop)
    }));
    let built = built.expect("building panicked");
    assert!(
        matches!(&built, Err(Error::Lua(e)) if e.to_string().contains("app data is borrowed")),
        "{built:?}"
    );
    // Once the borrow is over, the Lua takes a scheduler.
    let scheduler = Scheduler::new(&lua).unwrap();
    assert!(Scheduler::from_lua(&lua).is_some());
    drop(scheduler);
}

#[test]
fn an_end_hook_that_panics_while_told_of_a_task_a_panic_freed_does_not_abort() {
    let lua = mlua::Lua::new();
    let told = Rc::new(Cell::new(0));
    let seen = told.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |_, _, _| {
            seen.set(seen.get() + 1);
            panic!("the hook panics too");
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let boom = lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("host bug") })
        .unwrap();
    lua.globals().set("boom", boom).unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(0.01) boom()"), ())
        .unwrap();
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler.run_blocking()));
    assert!(panicked.is_err());
    assert_eq!(told.get(), 1);
    assert!(task.is_finished());
    // The scheduler goes on.
    let again = scheduler.spawn(function(&lua, "return 1"), ()).unwrap();
    assert!(matches!(
        scheduler.take_result::<i64>(&again).unwrap(),
        Some(Outcome::Finished(1))
    ));
}

#[test]
fn run_until_under_a_virtual_clock_needs_no_sleeper() {
    let lua = mlua::Lua::new();
    let clock = VirtualClock::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait(3600) return 6"), ())
        .unwrap();
    let never = |_: std::time::Instant| std::future::pending::<()>();
    let r = bounded(scheduler.run_until(never, scheduler.join::<i64>(&task))).unwrap();
    assert!(matches!(r, Ok(Outcome::Finished(6))), "{r:?}");
    assert_eq!(clock.now(), Duration::from_secs(3600));
}

#[test]
fn a_serving_driver_dropped_while_parked_leaves_the_scheduler_drivable() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    // Given up on while parked with nothing to do.
    let gave_up = async_io::block_on(future::or(
        async { scheduler.run_forever(Timer::at).await.map(|_| ()) },
        async {
            Timer::after(Duration::from_millis(10)).await;
            Ok(())
        },
    ));
    assert!(gave_up.is_ok());
    let task = scheduler
        .spawn(function(&lua, "task.wait(0.01) return 1"), ())
        .unwrap();
    let r = bounded(scheduler.run_until(Timer::at, scheduler.join::<i64>(&task))).unwrap();
    assert!(matches!(r, Ok(Outcome::Finished(1))), "{r:?}");
    let t2 = scheduler
        .spawn(function(&lua, "task.wait(0.01) return 2"), ())
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert!(matches!(
        scheduler.take_result::<i64>(&t2).unwrap(),
        Some(Outcome::Finished(2))
    ));
}

#[test]
fn a_thread_lua_closed_is_no_task_any_more() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(
            function(&lua, "victim = coroutine.running() task.wait(60)"),
            (),
        )
        .unwrap();
    let thread = scheduler
        .thread_of(&task)
        .expect("a waiting task has its thread");
    assert_eq!(scheduler.task_of(&thread), Some(task.id()));
    lua.load("coroutine.close(victim)").exec().unwrap();
    assert_eq!(scheduler.thread_of(&task), None);
    assert_eq!(scheduler.task_of(&thread), None);
    assert!(task.is_finished());
    assert!(matches!(
        scheduler.take_result::<()>(&task).unwrap(),
        Some(Outcome::Cancelled)
    ));
    // Spawning the dead thread again is refused.
    assert!(matches!(
        scheduler.spawn(&thread, ()),
        Err(Error::NotResumable(_))
    ));
}

#[test]
fn a_join_awaited_by_a_pending_future_does_not_keep_the_scheduler_alive() {
    // A `Scheduler` handle held across an await would (it is a strong handle, and the future
    // lives in Lua: documented on `from_lua`); the join holds the scheduler weakly, so a future
    // that lets go of its handle before awaiting keeps nothing alive.
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = dropped.clone();
    let await_task = scheduler
        .create_async_function(move |lua, f: mlua::Function| {
            let guard = Guard(flag.clone());
            async move {
                let _guard = guard;
                let join = {
                    let scheduler = Scheduler::from_lua(&lua).unwrap();
                    let task = scheduler.defer(f, ())?;
                    scheduler.join::<()>(&task)
                };
                join.await?;
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("await_task", await_task).unwrap();
    let weak = scheduler.downgrade();
    scheduler
        .spawn(
            function(&lua, "await_task(function() task.wait(3600) end)"),
            (),
        )
        .unwrap();
    drop(scheduler);
    assert!(
        weak.upgrade().is_none(),
        "the scheduler outlived its host's last handle"
    );
    assert!(dropped.get(), "the pending future was not dropped");
}

#[test]
fn dropping_the_scheduler_of_a_sandboxed_lua_does_not_crash() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    lua.sandbox(true).unwrap();
    scheduler
        .spawn(function(&lua, "task.wait(60)"), ())
        .unwrap();
    drop(scheduler);
    // The Lua goes on; its coroutine library is read-only, and still the scheduler's.
    let r = lua
        .load("return select('#', pcall(task.wait))")
        .eval::<i64>();
    assert!(r.is_ok(), "{r:?}");
    assert!(Scheduler::new(&lua).is_ok());
}

#[test]
fn a_driver_started_from_an_async_functions_future_is_refused() {
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let drive = scheduler
        .create_async_function(|lua, ()| async move {
            let scheduler = Scheduler::from_lua(&lua).unwrap();
            let describe = |r: Result<(), Error>| match r {
                Err(Error::Reentrant(_)) => "reentrant".to_string(),
                other => format!("{other:?}"),
            };
            // In the first poll, inside the call; then in a later poll, from a cycle.
            let first = describe(scheduler.run_until(Timer::at, async {}).await);
            future::yield_now().await;
            let later = describe(scheduler.run_forever(Timer::at).await.map(|_| ()));
            Ok(format!("{first} {later}"))
        })
        .unwrap();
    lua.globals().set("drive", drive).unwrap();
    let task = scheduler
        .spawn(function(&lua, "return drive()"), ())
        .unwrap();
    let r = bounded(scheduler.run_until(Timer::at, scheduler.join::<String>(&task))).unwrap();
    assert!(
        matches!(&r, Ok(Outcome::Finished(s)) if s == "reentrant reentrant"),
        "{r:?}"
    );
}
