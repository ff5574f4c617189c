//! A driver that serves (`run_until`, `run_forever`) and tasks the host awaits (`join`,
//! `Task::is_finished`): work the host gives a parked driver is done without another `run`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;
use spindle::{Clock, Error, Outcome, Scheduler, TaskStatus};

use super::{bounded, scheduler, LIMIT};

#[test]
fn run_until_serves_work_the_host_gives_after_the_driver_went_idle() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let log = Rc::new(RefCell::new(Vec::new()));
    let record = {
        let log = log.clone();
        lua.create_function(move |_, line: String| {
            log.borrow_mut().push(line);
            Ok(())
        })
        .unwrap()
    };
    lua.globals().set("record", record).unwrap();
    let body = lua
        .load(
            r#"
            local name = ...
            record(name .. " started")
            task.defer(function() record(name .. " deferred") end)
            task.wait(0.005)
            record(name .. " waited")
            return name
            "#,
        )
        .into_function()
        .unwrap();
    let host = async {
        // The driver has had nothing to do for a while: it is parked with no deadline.
        Timer::after(Duration::from_millis(20)).await;
        let first = scheduler.spawn(&body, "first").unwrap();
        let first = scheduler.join::<String>(&first).await.unwrap();
        Timer::after(Duration::from_millis(20)).await;
        // A deferral from the host, not a spawn: nothing runs until the driver does.
        let second = scheduler.defer(&body, "second").unwrap();
        let second = scheduler.join::<String>(&second).await.unwrap();
        (first.into_result().unwrap(), second.into_result().unwrap())
    };
    let names = bounded(scheduler.run_until(Timer::at, host)).unwrap();
    assert_eq!(names, ("first".to_string(), "second".to_string()));
    assert_eq!(
        *log.borrow(),
        [
            "first started",
            "first deferred",
            "first waited",
            "second started",
            "second deferred",
            "second waited"
        ]
    );
}

#[test]
fn run_until_serves_lua_that_no_task_runs() {
    // The host runs Lua itself (not a task), which calls task.delay: the parked driver must wake
    // for the timer.
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let done = Rc::new(Cell::new(false));
    let finish = {
        let done = done.clone();
        lua.create_function(move |_, ()| {
            done.set(true);
            Ok(())
        })
        .unwrap()
    };
    lua.globals().set("finish", finish).unwrap();
    let host = async {
        Timer::after(Duration::from_millis(20)).await;
        lua.load("task.delay(0.005, finish)").exec().unwrap();
        future::poll_fn(|cx| {
            if done.get() {
                std::task::Poll::Ready(())
            } else {
                // Polled again on the driver's every turn: it returns when the driver has run.
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
    };
    bounded(scheduler.run_until(Timer::at, host)).unwrap();
    assert!(done.get());
}

#[test]
fn run_until_returns_when_its_end_comes_and_leaves_the_tasks_scheduled() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = scheduler
        .spawn(
            lua.load("task.wait(3600) return 1")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let stop = Timer::after(Duration::from_millis(10));
    bounded(scheduler.run_until(Timer::at, stop)).unwrap();
    assert_eq!(scheduler.status(&task), TaskStatus::Scheduled);
    assert!(!task.is_finished());
    // `run` would wait the hour: a shutdown ends it, and the join learns there is no outcome...
    scheduler.cancel(&task).unwrap();
    assert!(task.is_finished());
    // ...except the cancellation, which the handle's claim kept.
    let outcome = async_io::block_on(scheduler.join::<i64>(&task)).unwrap();
    assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
}

#[test]
fn run_until_with_an_end_that_is_ready_runs_no_cycle() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    scheduler
        .defer(
            lua.load("error('must not run')").into_function().unwrap(),
            (),
        )
        .unwrap();
    let output = bounded(scheduler.run_until(Timer::at, async { 7 })).unwrap();
    assert_eq!(output, 7);
    assert_eq!(scheduler.cycle_count(), 0);
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn run_forever_goes_on_serving_when_no_work_is_left() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let served = Rc::new(Cell::new(0));
    let count = {
        let served = served.clone();
        lua.create_function(move |_, ()| {
            served.set(served.get() + 1);
            Ok(())
        })
        .unwrap()
    };
    let host = async {
        for _ in 0..3 {
            // Between deferrals the scheduler has no work at all.
            Timer::after(Duration::from_millis(5)).await;
            scheduler.defer(&count, ()).unwrap();
        }
        while served.get() < 3 {
            Timer::after(Duration::from_millis(1)).await;
        }
        "host"
    };
    let driver = async {
        match scheduler.run_forever(Timer::at).await {
            Ok(never) => match never {},
            Err(error) => panic!("run_forever ended: {error}"),
        }
    };
    assert_eq!(bounded(future::or(host, driver)), "host");
    assert_eq!(served.get(), 3);
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn run_until_from_inside_a_task_is_refused() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let reenter = lua
        .create_function(|lua, ()| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            let error = async_io::block_on(scheduler.run_until(Timer::at, async {})).unwrap_err();
            Ok(error.to_string())
        })
        .unwrap();
    let task = scheduler.spawn(reenter, ()).unwrap();
    let message = scheduler.take_result::<String>(&task).unwrap().unwrap();
    assert_eq!(
        message.into_result().unwrap(),
        "the scheduler is already running; Scheduler::run_until cannot be called from inside a task"
    );
}

#[test]
fn join_resolves_to_each_outcome_by_variant() {
    let lua = mlua::Lua::new();
    let reported = Rc::new(Cell::new(0));
    let scheduler = {
        let reported = reported.clone();
        Scheduler::builder()
            .clock(Clock::from(spindle::VirtualClock::new()))
            .on_error(move |_, _| reported.set(reported.get() + 1))
            .build(&lua)
            .unwrap()
    };
    scheduler.install_task_library().unwrap();
    let spawn = |source: &str| {
        scheduler
            .spawn(lua.load(source.to_string()).into_function().unwrap(), ())
            .unwrap()
    };
    let finished = spawn("task.wait(1) return 'a', 2");
    let failed = spawn("task.wait(1) error('broken', 0)");
    let cancelled = spawn("task.wait(5)");
    let run = async {
        scheduler.cancel(&cancelled).unwrap();
        let finished = scheduler.join::<(String, i64)>(&finished).await.unwrap();
        let failed = scheduler.join::<()>(&failed).await.unwrap();
        let cancelled = scheduler.join::<()>(&cancelled).await.unwrap();
        (finished, failed, cancelled)
    };
    let (finished, failed, cancelled) = bounded(scheduler.run_until(Timer::at, run)).unwrap();
    assert!(
        matches!(finished, Outcome::Finished((ref a, 2)) if a == "a"),
        "{finished:?}"
    );
    match failed {
        Outcome::Failed(error) => assert_eq!(error.message, "broken"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(cancelled, Outcome::Cancelled), "{cancelled:?}");
    assert_eq!(reported.get(), 1);
}

#[test]
fn join_of_a_task_that_left_the_scheduler_is_released_and_of_a_read_one_has_no_outcome() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let thread = lua
        .create_thread(
            lua.load("coroutine.yield() return 1")
                .into_function()
                .unwrap(),
        )
        .unwrap();
    let task = scheduler.spawn(&thread, ()).unwrap();
    // A plain coroutine.yield: the thread is whoever resumes it's, not the scheduler's.
    assert!(task.is_finished());
    let joined = async_io::block_on(scheduler.join::<Option<i64>>(&task));
    assert!(matches!(joined, Ok(Outcome::Released(None))), "{joined:?}");
    // Read: a second join has nothing to wait for.
    let again = async_io::block_on(scheduler.join::<i64>(&task));
    assert!(
        matches!(again, Err(Error::NoOutcome(id)) if id == task.id()),
        "{again:?}"
    );
    // The outcome read already: the second join says so too.
    let done = scheduler
        .spawn(lua.load("return 1").into_function().unwrap(), ())
        .unwrap();
    let first = async_io::block_on(scheduler.join::<i64>(&done)).unwrap();
    assert!(matches!(first, Outcome::Finished(1)), "{first:?}");
    let second = async_io::block_on(scheduler.join::<i64>(&done));
    assert!(matches!(second, Err(Error::NoOutcome(_))), "{second:?}");
}

#[test]
fn join_refuses_a_task_of_another_scheduler() {
    let lua = mlua::Lua::new();
    let other_lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let other = self::scheduler(&other_lua);
    let task = other
        .spawn(other_lua.load("task.wait(1)").into_function().unwrap(), ())
        .unwrap();
    let joined = async_io::block_on(scheduler.join::<()>(&task));
    assert!(
        matches!(joined, Err(Error::ForeignTask(id)) if id == task.id()),
        "{joined:?}"
    );
}

#[test]
fn join_beside_run_on_one_executor() {
    // `run` ends when the work does; a join awaited beside it on the same executor sees the end.
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = scheduler
        .spawn(
            lua.load("task.wait(0.01) return 'done'")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let (ran, joined) = bounded(future::zip(
        scheduler.run(Timer::at),
        scheduler.join::<String>(&task),
    ));
    ran.unwrap();
    assert_eq!(joined.unwrap().into_result().unwrap(), "done");
}

#[test]
fn join_in_a_task_of_its_own_is_woken_when_the_task_ends() {
    // On an executor with separate tasks (tokio's LocalSet), the join is polled again only when
    // its own waker fires: the scheduler must wake it when the task ends.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let joined = tokio::task::LocalSet::new().block_on(&runtime, async {
        let lua = mlua::Lua::new();
        let scheduler = Rc::new(scheduler(&lua));
        let task = Rc::new(
            scheduler
                .spawn(
                    lua.load("task.wait(0.01) return 'done'")
                        .into_function()
                        .unwrap(),
                    (),
                )
                .unwrap(),
        );
        let joiner = tokio::task::spawn_local({
            let scheduler = scheduler.clone();
            let task = task.clone();
            async move {
                scheduler
                    .join::<String>(&task)
                    .await
                    .map(Outcome::into_result)
            }
        });
        // Lets the joiner run first, to its first `Pending`.
        tokio::task::yield_now().await;
        scheduler
            .run(|deadline: std::time::Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        tokio::time::timeout(LIMIT, joiner).await
    });
    let joined = joined.expect("the join was never woken").unwrap();
    assert_eq!(joined.unwrap().unwrap(), "done");
}

/// A task that waits `waits` times, a little each time, on the real clock.
fn waiting_task(lua: &mlua::Lua, scheduler: &Scheduler, waits: u32) -> spindle::Task {
    let body = lua
        .load("for _ = 1, ... do task.wait(0.002) end")
        .into_function()
        .unwrap();
    scheduler.spawn(body, waits).unwrap()
}

#[test]
fn an_async_driver_runs_one_cycle_per_wake_up_not_more() {
    // Ten waits in a row need ten cycles that resume the task, and the one that starts the run.
    // A driver woken again by the waits it resumes ran twice as many.
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = waiting_task(&lua, &scheduler, 10);
    bounded(scheduler.run(Timer::at)).unwrap();
    assert!(task.is_finished());
    assert!(
        scheduler.cycle_count() <= 11,
        "{} cycles",
        scheduler.cycle_count()
    );
    let task = waiting_task(&lua, &scheduler, 10);
    let before = scheduler.cycle_count();
    bounded(scheduler.run_until(Timer::at, scheduler.join::<()>(&task)))
        .unwrap()
        .unwrap();
    let cycles = scheduler.cycle_count() - before;
    assert!(cycles <= 11, "{cycles} cycles");
}

#[test]
fn a_blocking_driver_runs_one_cycle_per_wake_up_not_more() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = waiting_task(&lua, &scheduler, 10);
    scheduler.run_blocking().unwrap();
    assert!(task.is_finished());
    assert!(
        scheduler.cycle_count() <= 11,
        "{} cycles",
        scheduler.cycle_count()
    );
}

#[test]
fn run_forever_refuses_re_entry_under_its_own_name() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let reenter = lua
        .create_function(|lua, ()| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            let error = async_io::block_on(scheduler.run_forever(Timer::at)).unwrap_err();
            Ok(error.to_string())
        })
        .unwrap();
    let task = scheduler.spawn(reenter, ()).unwrap();
    let message: String = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(
        message,
        "the scheduler is already running; Scheduler::run_forever cannot be called from inside a task"
    );
}

#[test]
fn a_join_owns_its_claim_and_outlives_the_handle_it_was_made_from() {
    // A server hands the join to a future of its own and lets the handle go: the outcome is
    // kept for the join all the same.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let joined = tokio::task::LocalSet::new().block_on(&runtime, async {
        let lua = mlua::Lua::new();
        let scheduler = scheduler(&lua);
        let task = scheduler
            .spawn(
                lua.load("task.wait(0.01) return 'done'")
                    .into_function()
                    .unwrap(),
                (),
            )
            .unwrap();
        // `'static`: the join borrows neither the scheduler nor the handle.
        let joiner = tokio::task::spawn_local(scheduler.join::<String>(&task));
        drop(task);
        scheduler
            .run(|deadline: std::time::Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        tokio::time::timeout(LIMIT, joiner).await
    });
    let joined = joined.expect("the join was never woken").unwrap();
    assert_eq!(joined.unwrap().into_result().unwrap(), "done");
}

#[test]
fn a_join_does_not_keep_the_scheduler_alive() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = scheduler
        .spawn(lua.load("task.wait(3600)").into_function().unwrap(), ())
        .unwrap();
    let join = scheduler.join::<()>(&task);
    drop(scheduler);
    // The last handle ended the scheduler (the join held it only weakly), and the join says
    // no outcome will come rather than waiting for ever.
    assert!(Scheduler::from_lua(&lua).is_none());
    assert!(task.is_finished());
    let joined = bounded(join);
    assert!(
        matches!(joined, Err(Error::NoOutcome(id)) if id == task.id()),
        "{joined:?}"
    );
}

#[test]
fn a_cloned_handle_keeps_the_outcome_until_every_clone_is_dropped_or_one_reads_it() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let body = lua
        .load("task.wait(0.01) return 7")
        .into_function()
        .unwrap();
    let first = scheduler.spawn(body, ()).unwrap();
    let second = first.clone();
    assert_eq!(second.id(), first.id());
    drop(first);
    bounded(scheduler.run(Timer::at)).unwrap();
    // One handle is left: the outcome waited for it.
    let outcome = scheduler.take_result::<i64>(&second).unwrap();
    assert_eq!(outcome.unwrap().into_result().unwrap(), 7);
    // A clone made after the end claims the kept outcome too; dropping it leaves the other's.
    let body = lua.load("return 8").into_function().unwrap();
    let ended = scheduler.spawn(body, ()).unwrap();
    let late = ended.clone();
    drop(late);
    let outcome = scheduler.take_result::<i64>(&ended).unwrap();
    assert_eq!(outcome.unwrap().into_result().unwrap(), 8);
    let late = ended.clone();
    assert!(
        scheduler.take_result::<i64>(&late).unwrap().is_none(),
        "read once"
    );
}

#[test]
fn a_tasks_error_goes_up_with_question_marks_as_the_schedulers_error() {
    // The awaiting code of a host is one `?` per layer: the driver, the join, the task.
    fn answer(scheduler: &Scheduler, source: &str) -> spindle::Result<i64> {
        let body = scheduler.lua().load(source).into_function()?;
        let task = scheduler.spawn(body, ())?;
        let outcome = bounded(scheduler.run_until(Timer::at, scheduler.join::<i64>(&task)))??;
        Ok(outcome.into_result()?)
    }
    let lua = mlua::Lua::new();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    assert_eq!(answer(&scheduler, "task.wait() return 42").unwrap(), 42);
    let failed = answer(&scheduler, "task.wait() error('no answer', 0)");
    assert!(
        matches!(&failed, Err(Error::Task(error)) if error.message == "no answer"),
        "{failed:?}"
    );
    // Shown as the report is: message, then traceback.
    let shown = failed.unwrap_err().to_string();
    assert!(
        shown.starts_with("no answer\nstack traceback:\n\t[C]: in function 'error'"),
        "{shown}"
    );
}

#[test]
fn under_a_virtual_clock_time_jumps_while_a_rust_future_is_pending() {
    // Virtual time measures the script's waits: a Rust future that takes 20 real milliseconds
    // loses a race against a 5-second `task.delay`, which fires at once.
    let lua = mlua::Lua::new();
    let clock = spindle::VirtualClock::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let slow = scheduler
        .create_async_function(|_, ()| async {
            Timer::after(Duration::from_millis(20)).await;
            Ok(())
        })
        .unwrap();
    lua.globals().set("slow", slow).unwrap();
    let body = lua
        .load(
            "local timedOut = false
             task.delay(5, function() timedOut = true end)
             slow()
             return timedOut",
        )
        .into_function()
        .unwrap();
    let task = scheduler.spawn(body, ()).unwrap();
    let outcome = bounded(scheduler.run_until(Timer::at, scheduler.join::<bool>(&task)));
    assert!(outcome.unwrap().unwrap().into_result().unwrap());
    assert_eq!(clock.now(), Duration::from_secs(5));
}
