//! Tasks the host starts without keeping their outcome (`Scheduler::spawn_detached`) and the
//! future that tells their end (`Scheduler::ended`): such a task runs, fails and is reported
//! as a spawned one does, on the start lane or on mlua's general path alike.

use async_io::Timer;
use spindle::mlua::{Lua, MultiValue, Value};
use spindle::TaskStatus;

use super::driving::{both_ways, logged};
use super::{bounded, function};

/// The log with task ids (`#slot.generation`) blanked, to compare two tasks' lines.
fn without_ids(log: &[String]) -> Vec<String> {
    log.iter()
        .map(|line| {
            let mut out = String::new();
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '#' {
                    while chars
                        .peek()
                        .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                    {
                        chars.next();
                    }
                }
            }
            out
        })
        .collect()
}

#[test]
fn a_detached_spawn_runs_at_once_and_keeps_nothing_once_it_returned() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let record = function(&lua, "local a, b = ... sum = a + b return 'ignored'");
        let id = scheduler.spawn_detached(record, (2, 3)).unwrap();
        assert_eq!(lua.globals().get::<i64>("sum").unwrap(), 5);
        assert_eq!(scheduler.status(id), TaskStatus::Unknown, "no outcome kept");
        assert_eq!(scheduler.task_count(), 0);
        assert_eq!(*log.borrow(), [format!("end {id}: Finished")]);
    });
}

#[test]
fn a_detached_tasks_failure_is_reported_as_a_spawned_tasks_is() {
    let mut reports = Vec::new();
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let source = "local function inner(x) error('bad ' .. x) end\ninner(...)";
        let kept = scheduler.spawn(function(&lua, source), "spawned").unwrap();
        drop(kept);
        scheduler
            .spawn_detached(function(&lua, source), "spawned")
            .unwrap();
        let log = without_ids(&log.borrow());
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(log[..2], log[2..], "the same report and end for both");
        assert!(log[0].contains("bad spawned"), "{log:?}");
        reports.push(log);
    });
    assert_eq!(
        reports[0], reports[1],
        "the start lane and mlua's path agree"
    );
}

#[test]
fn ended_resolves_once_a_detached_task_finishes_fails_is_cancelled_or_leaves() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let finishes = scheduler
            .spawn_detached(function(&lua, "task.wait(0.01) done = true"), ())
            .unwrap();
        let fails = scheduler
            .spawn_detached(function(&lua, "task.wait(0.01) error('late', 0)"), ())
            .unwrap();
        let leaves = scheduler
            .spawn_detached(function(&lua, "task.wait(0.01) coroutine.yield()"), ())
            .unwrap();
        let cancelled = scheduler
            .spawn_detached(function(&lua, "task.wait(5)"), ())
            .unwrap();
        for id in [finishes, fails, leaves, cancelled] {
            assert_eq!(scheduler.status(id), TaskStatus::Scheduled);
        }
        scheduler.cancel(cancelled).unwrap();
        bounded(scheduler.run_until(Timer::at, async {
            scheduler.ended(cancelled).await;
            scheduler.ended(finishes).await;
            scheduler.ended(fails).await;
            scheduler.ended(leaves).await;
        }))
        .unwrap();
        assert!(lua.globals().get::<bool>("done").unwrap());
        let log = log.borrow();
        assert!(
            log.contains(&format!("end {cancelled}: Cancelled")),
            "{log:?}"
        );
        assert!(
            log.contains(&format!("end {fails}: failed: late")),
            "{log:?}"
        );
        assert!(log.contains(&format!("end {leaves}: Released")), "{log:?}");
        assert!(
            log.contains(&format!("end {finishes}: Finished")),
            "{log:?}"
        );
        // An id whose task is over resolves at once.
        bounded(scheduler.run_until(Timer::at, scheduler.ended(finishes))).unwrap();
    });
}

#[test]
fn a_detached_start_with_many_arguments_or_a_pending_async_call_behaves_as_a_spawn() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        // More arguments than the start lane moves.
        let many: MultiValue = (1..=40).map(Value::Integer).collect();
        let sum = "local total = 0 for _, n in { ... } do total += n end sum = total";
        scheduler.spawn_detached(function(&lua, sum), many).unwrap();
        assert_eq!(lua.globals().get::<i64>("sum").unwrap(), 820);
        // An mlua async function that is pending on its first poll, and a Spindle one.
        let mlua_pending = lua
            .create_async_function(|_, n: i64| async move {
                futures_lite::future::yield_now().await;
                Ok(n + 1)
            })
            .unwrap();
        let spindle_pending = scheduler
            .create_async_function(|_, n: i64| async move {
                futures_lite::future::yield_now().await;
                Ok(n * 2)
            })
            .unwrap();
        lua.globals().set("mlua_pending", mlua_pending).unwrap();
        lua.globals()
            .set("spindle_pending", spindle_pending)
            .unwrap();
        let calls = function(&lua, "local n = ... got = spindle_pending(mlua_pending(n))");
        let id = scheduler.spawn_detached(calls, 20).unwrap();
        assert_eq!(scheduler.status(id), TaskStatus::Scheduled);
        bounded(scheduler.run_until(Timer::at, scheduler.ended(id))).unwrap();
        assert_eq!(lua.globals().get::<i64>("got").unwrap(), 42);
        assert!(
            log.borrow().iter().all(|line| !line.starts_with("error")),
            "{:?}",
            log.borrow()
        );
    });
}

#[test]
fn a_detached_spawn_of_a_suspended_thread_resumes_it() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|builder| builder);
    let thread = lua
        .create_thread(function(&lua, "local x = coroutine.yield() result = x"))
        .unwrap();
    thread.resume::<()>(()).unwrap();
    scheduler.spawn_detached(&thread, 7).unwrap();
    assert_eq!(lua.globals().get::<i64>("result").unwrap(), 7);
    let dead = scheduler.spawn_detached(&thread, 8);
    assert!(dead.is_err(), "a dead thread is refused");
}
