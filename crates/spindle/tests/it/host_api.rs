//! The host's side: spawning with ids, reading outcomes once, stepping cycles, clocks, limits,
//! re-entrancy and ending a run (contract rules 3, 6, 8, 14, 16, 18).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::rc::Weak;
use std::time::Duration;

use spindle::mlua::{Function, Lua};
use spindle::{Clock, Error, Outcome, Scheduler, TaskError, TaskStatus, VirtualClock};

use crate::support::{harness, harness_with, lines};

// Serving drivers and awaited tasks; reaching the scheduler from Lua; the end hook.
mod attacks;
mod detached;
mod driving;
mod reaching;
mod scripts;
mod serving;
mod task_end;

/// A bound on the runs of the driver tests: a driver that missed a wake-up sleeps for ever,
/// which must fail the test rather than hang it.
const LIMIT: Duration = Duration::from_secs(10);

fn bounded<T>(run: impl std::future::Future<Output = T>) -> T {
    use futures_lite::future;
    async_io::block_on(future::or(async { Some(run.await) }, async {
        async_io::Timer::after(LIMIT).await;
        None
    }))
    .expect("the driver missed a wake-up (or spun) past the test's limit")
}

/// A scheduler with the default settings and the task library installed.
fn scheduler(lua: &Lua) -> Scheduler {
    let scheduler = Scheduler::new(lua).unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
}

fn virtual_scheduler(lua: &Lua) -> (Scheduler, VirtualClock) {
    let clock = VirtualClock::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(|_, _| {})
        .build(lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    (scheduler, clock)
}

fn function(lua: &Lua, source: &str) -> Function {
    lua.load(source).into_function().unwrap()
}

#[test]
fn outcome_is_read_once_and_then_forgotten() {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let id = scheduler
        .spawn(
            function(&lua, "local a, b = ... task.wait(1) return a + b, 'sum'"),
            (2, 3),
        )
        .unwrap();
    assert_eq!(scheduler.status(&id), TaskStatus::Scheduled);
    assert!(scheduler
        .take_result::<(i64, String)>(&id)
        .unwrap()
        .is_none());
    scheduler.run_blocking().unwrap();
    assert_eq!(scheduler.status(&id), TaskStatus::Done);
    match scheduler.take_result::<(i64, String)>(&id).unwrap() {
        Some(Outcome::Finished((sum, label))) => assert_eq!((sum, label.as_str()), (5, "sum")),
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
    assert_eq!(scheduler.status(&id), TaskStatus::Unknown);
    assert!(scheduler.take_result::<()>(&id).unwrap().is_none());
}

#[test]
fn failed_task_reports_to_the_handler_and_keeps_the_error_as_its_outcome() {
    let lua = Lua::new();
    let reports: Rc<RefCell<Vec<TaskError>>> = Rc::default();
    let seen = Rc::clone(&reports);
    let scheduler = Scheduler::builder()
        .on_error(move |_, e| seen.borrow_mut().push(e.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let main = lua
        .load("local function inner() error('bad state') end\ninner()")
        .set_name("@host.luau")
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    assert_eq!(scheduler.error_count(), 1);
    let reports = reports.borrow();
    assert_eq!(reports[0].message, "host.luau:1: bad state");
    assert!(
        reports[0].traceback.contains("host.luau:1"),
        "{}",
        reports[0].traceback
    );
    assert_eq!(reports[0].task, Some(id.id()));
    match scheduler.take_result::<()>(&id).unwrap() {
        Some(Outcome::Failed(error)) => assert_eq!(error.message, "host.luau:1: bad state"),
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
}

#[test]
fn lua_spawned_tasks_keep_nothing_after_they_end() {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let main = function(
        &lua,
        "for i = 1, 100 do task.spawn(function() task.wait(i) end) end",
    );
    let id = scheduler.spawn(main, ()).unwrap();
    assert_eq!(scheduler.task_count(), 100);
    scheduler.run_blocking().unwrap();
    assert_eq!(scheduler.task_count(), 0);
    assert!(matches!(
        scheduler.take_result::<()>(&id).unwrap(),
        Some(Outcome::Finished(()))
    ));
    assert!(!scheduler.has_work());
}

#[test]
fn cycles_step_frame_by_frame_under_a_virtual_clock() {
    let lua = Lua::new();
    let (scheduler, clock) = virtual_scheduler(&lua);
    let main = function(
        &lua,
        r#"
        frames = {}
        task.delay(0.06, function() table.insert(frames, "delay") end)
        for i = 1, 3 do
            task.wait(1/60)
            table.insert(frames, "tick " .. i)
            task.defer(function() table.insert(frames, "deferred " .. i) end)
        end
        "#,
    );
    scheduler.spawn(main, ()).unwrap();
    let frame = Duration::from_secs_f64(1.0 / 60.0);
    let mut reports = Vec::new();
    for _ in 0..4 {
        clock.advance(frame);
        reports.push(scheduler.cycle().unwrap());
    }
    let frames: Vec<String> = lua.globals().get("frames").unwrap();
    assert_eq!(
        frames,
        [
            "tick 1",
            "deferred 1",
            "tick 2",
            "deferred 2",
            "tick 3",
            "deferred 3",
            "delay"
        ]
    );
    let counts: Vec<_> = reports
        .iter()
        .map(|r| (r.timers, r.wakeups, r.deferred, r.errors))
        .collect();
    assert_eq!(
        counts,
        [(1, 0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0), (1, 0, 0, 0)]
    );
    assert!(scheduler.cycle().unwrap().is_idle());
    assert!(!scheduler.has_work());
    assert_eq!(scheduler.cycle_count(), 5);
}

#[test]
fn defer_depth_limit_is_configurable() {
    let lua = Lua::new();
    let reports: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = Rc::clone(&reports);
    let scheduler = Scheduler::builder()
        .max_defer_depth(5)
        .on_error(move |_, e| seen.borrow_mut().push(e.message.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let main = function(
        &lua,
        "runs = 0 local function again() runs += 1 task.defer(again) end task.defer(again)",
    );
    scheduler.spawn(main, ()).unwrap();
    assert_eq!(lua.globals().get::<u32>("runs").unwrap(), 5);
    assert_eq!(
        *reports.borrow(),
        ["Maximum re-entrancy depth (5) exceeded calling task.defer"]
    );
    assert_eq!(scheduler.error_count(), 1);
}

#[test]
fn host_defer_and_delay_schedule_like_the_task_library() {
    let lua = Lua::new();
    let (scheduler, clock) = virtual_scheduler(&lua);
    lua.load("log = {}").exec().unwrap();
    let record = function(&lua, "table.insert(log, (...))");
    scheduler
        .delay(Duration::from_secs(2), record.clone(), "delayed")
        .unwrap();
    let deferred = scheduler.defer(record.clone(), "deferred").unwrap();
    assert_eq!(scheduler.status(&deferred), TaskStatus::Scheduled);
    scheduler.spawn(record, "spawned").unwrap();
    scheduler.run_blocking().unwrap();
    let log: Vec<String> = lua.globals().get("log").unwrap();
    assert_eq!(log, ["spawned", "deferred", "delayed"]);
    assert_eq!(clock.now(), Duration::from_secs(2));
    assert!(matches!(
        scheduler.take_result::<()>(&deferred).unwrap(),
        Some(Outcome::Finished(()))
    ));
}

#[test]
fn cancelling_every_remaining_timer_ends_the_run_at_once() {
    let lua = Lua::new();
    let (scheduler, clock) = virtual_scheduler(&lua);
    let long = scheduler
        .spawn(function(&lua, "task.wait(3600)"), ())
        .unwrap();
    let delayed = scheduler
        .delay(
            Duration::from_secs(7200),
            function(&lua, "error('never')"),
            (),
        )
        .unwrap();
    assert_eq!(scheduler.next_deadline(), Some(Duration::from_secs(3600)));
    assert!(scheduler.cancel(&long).unwrap());
    assert!(scheduler.cancel(&delayed).unwrap());
    assert!(!scheduler.cancel(&delayed).unwrap(), "already cancelled");
    assert!(!scheduler.has_work());
    assert_eq!(scheduler.next_deadline(), None);
    scheduler.run_blocking().unwrap();
    assert_eq!(
        clock.now(),
        Duration::ZERO,
        "the run ended without waiting for cancelled timers"
    );
    assert!(matches!(
        scheduler.take_result::<()>(&long).unwrap(),
        Some(Outcome::Cancelled)
    ));
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn many_cancelled_timers_do_not_linger_in_memory() {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let main = function(
        &lua,
        r#"
        local keep = task.delay(10, function() end)
        for i = 1, 10000 do
            task.cancel(task.delay(5, print, "never", i))
        end
        "#,
    );
    scheduler.spawn(main, ()).unwrap();
    assert_eq!(scheduler.task_count(), 1);
    // Arguments of the cancelled delays were dropped with them.
    lua.gc_collect().unwrap();
    let used = lua.used_memory();
    assert!(used < 4 << 20, "{used} bytes still in use");
}

#[test]
fn cycle_called_from_inside_a_task_is_refused_without_panicking() {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let scheduler = Rc::new(scheduler);
    let refused = Rc::new(Cell::new(false));
    let weak = Rc::downgrade(&scheduler);
    let flag = Rc::clone(&refused);
    let step = lua
        .create_function(move |_, ()| {
            let scheduler = weak.upgrade().unwrap();
            flag.set(matches!(scheduler.cycle(), Err(Error::Reentrant(_))));
            Ok(())
        })
        .unwrap();
    lua.globals().set("step", step).unwrap();
    scheduler
        .spawn(function(&lua, "step() task.wait(1) step()"), ())
        .unwrap();
    assert!(refused.get());
    refused.set(false);
    scheduler.run_blocking().unwrap();
    assert!(refused.get());
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn a_lua_state_has_at_most_one_scheduler() {
    let lua = Lua::new();
    let first = Scheduler::new(&lua).unwrap();
    assert!(matches!(
        Scheduler::new(&lua),
        Err(spindle::Error::AlreadyAttached)
    ));
    drop(first);
    assert!(
        Scheduler::new(&lua).is_ok(),
        "dropping the scheduler frees the Lua for another"
    );
}

#[test]
fn shutdown_drops_futures_and_timers_without_reporting_errors() {
    struct Guard(Rc<Cell<u32>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let dropped = Rc::new(Cell::new(0));
    let counter = Rc::clone(&dropped);
    let forever = scheduler
        .create_async_function(move |_, ()| {
            let guard = Guard(Rc::clone(&counter));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("forever", forever).unwrap();
    let main = function(
        &lua,
        r#"
        for i = 1, 10 do task.spawn(forever) end
        for i = 1, 10 do task.delay(i, print, "never") end
        task.wait(100)
        "#,
    );
    let id = scheduler.spawn(main, ()).unwrap();
    scheduler
        .defer(function(&lua, "error('never')"), ())
        .unwrap();
    assert!(scheduler.has_work());
    scheduler.shutdown().unwrap();
    assert_eq!(dropped.get(), 10, "every pending future is dropped");
    assert!(!scheduler.has_work());
    assert_eq!(scheduler.task_count(), 0);
    assert_eq!(scheduler.next_deadline(), None);
    assert_eq!(scheduler.error_count(), 0);
    assert_eq!(scheduler.status(&id), TaskStatus::Unknown);
    // The scheduler stays usable.
    let again = scheduler
        .spawn(function(&lua, "task.wait(1) return 'again'"), ())
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert!(
        matches!(scheduler.take_result::<String>(&again).unwrap(), Some(Outcome::Finished(s)) if s == "again")
    );
}

#[test]
fn dropping_the_scheduler_drops_pending_futures_and_frees_the_lua() {
    let lua = Lua::new();
    let dropped = Rc::new(Cell::new(false));
    {
        let scheduler = Scheduler::new(&lua).unwrap();
        scheduler.install_task_library().unwrap();
        let flag = Rc::clone(&dropped);
        let forever = scheduler
            .create_async_function(move |lua: Lua, ()| {
                let flag = Rc::clone(&flag);
                async move {
                    let _keeps_lua_alive = lua;
                    struct SetOnDrop(Rc<Cell<bool>>);
                    impl Drop for SetOnDrop {
                        fn drop(&mut self) {
                            self.0.set(true);
                        }
                    }
                    let _guard = SetOnDrop(flag);
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .unwrap();
        scheduler.spawn(forever, ()).unwrap();
    }
    assert!(dropped.get());
}

/// Runs a script that mixes every kind of scheduling under a virtual clock and returns its log.
fn traced_run() -> Vec<String> {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let main = function(
        &lua,
        r#"
        log = {}
        local function note(...) table.insert(log, table.concat({...}, " ")) end
        for i = 1, 20 do
            task.spawn(function()
                local waited = task.wait((i * 7) % 5 / 10)
                note("task", i, "waited", waited)
                task.defer(note, "deferred", i)
                task.delay(((i * 3) % 4) / 10, note, "delayed", i)
            end)
        end
        "#,
    );
    scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    lua.globals().get("log").unwrap()
}

#[test]
fn virtual_time_runs_are_identical_event_for_event() {
    let first = traced_run();
    assert_eq!(first.len(), 60);
    assert_eq!(first, traced_run());
}

#[test]
fn a_host_task_that_yields_plainly_is_released_to_whoever_resumes_it() {
    let lua = Lua::new();
    let (scheduler, _) = virtual_scheduler(&lua);
    let id = scheduler
        .spawn(
            function(
                &lua,
                "parked = coroutine.running() coroutine.yield() return 'resumed'",
            ),
            (),
        )
        .unwrap();
    assert_eq!(scheduler.status(&id), TaskStatus::Released);
    assert_eq!(
        scheduler.task_count(),
        0,
        "the scheduler does not keep a parked thread alive"
    );
    assert!(!scheduler.has_work());
    let parked: spindle::mlua::Thread = lua.globals().get("parked").unwrap();
    // The handle reaches the thread, which is the host's to resume now.
    assert_eq!(scheduler.thread_of(&id), Some(parked.clone()));
    assert_eq!(parked.resume::<String>(()).unwrap(), "resumed");
    assert!(matches!(
        scheduler.take_result::<()>(&id).unwrap(),
        Some(Outcome::Released(()))
    ));
    assert_eq!(scheduler.status(&id), TaskStatus::Unknown);
    assert_eq!(scheduler.thread_of(&id), None);
}

#[test]
fn task_functions_kept_after_the_scheduler_is_dropped_raise_an_error() {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    drop(scheduler);
    let error = lua
        .load("task.defer(print, 'x')")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("scheduler of this Lua state was dropped"),
        "{error}"
    );
}

/// Sets its flag when the VM that holds it is freed.
struct FreedWithTheVm(Rc<Cell<bool>>);

impl Drop for FreedWithTheVm {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

impl spindle::mlua::UserData for FreedWithTheVm {}

#[test]
fn an_error_handler_holding_the_lua_does_not_keep_the_vm_alive_once_both_are_dropped() {
    // The handler's clone of the `Lua` holds the VM, whose task library holds the scheduler,
    // which held the handler: a cycle, until dropping the `Scheduler` drops the handler.
    let lua = Lua::new();
    let freed = Rc::new(Cell::new(false));
    lua.globals()
        .set("sentinel", FreedWithTheVm(Rc::clone(&freed)))
        .unwrap();
    let kept = lua.clone();
    let reports = Rc::new(Cell::new(0));
    let counted = Rc::clone(&reports);
    let scheduler = Scheduler::builder()
        .on_error(move |_, _| {
            let _ = kept.used_memory();
            counted.set(counted.get() + 1);
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let failing = function(&lua, "error('reported')");
    drop(scheduler.spawn(failing, ()).unwrap());
    scheduler.run_blocking().unwrap();
    assert_eq!(reports.get(), 1);
    drop(scheduler);
    drop(lua);
    assert!(freed.get(), "the VM was kept alive by the error handler");
}

#[test]
fn a_coroutine_library_replaced_before_the_scheduler_is_attached_is_refused() {
    // The scheduler calls Luau's own `coroutine.close` where no Lua code may run (with the
    // memory limit lifted): one that a script replaced first is not taken for it.
    let lua = Lua::new();
    lua.load("coroutine.close = function(co) while true do end end")
        .exec()
        .unwrap();
    match Scheduler::new(&lua) {
        Err(Error::Lua(error)) => assert_eq!(
            error.to_string(),
            "runtime error: Spindle needs Luau's own coroutine.close, which was replaced before the scheduler was attached"
        ),
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a replaced coroutine.close was taken"),
    }
}

// --- Ids belong to the scheduler that made them -------------------------------------------------

/// Two schedulers, each with one host task waiting on a timer: the first task of each, so the
/// two have the same slot and generation.
fn two_schedulers_with_a_task_each() -> [(Lua, Scheduler, spindle::Task); 2] {
    [(); 2].map(|()| {
        let lua = Lua::new();
        let (scheduler, _) = virtual_scheduler(&lua);
        let task = scheduler
            .spawn(function(&lua, "task.wait(1) return 'mine'"), ())
            .unwrap();
        (lua, scheduler, task)
    })
}

#[test]
fn cancel_refuses_a_task_or_id_of_another_scheduler_and_leaves_its_own_task_alone() {
    let [(_lua_a, a, task_a), (_lua_b, b, task_b)] = two_schedulers_with_a_task_each();
    assert_eq!(task_a.id().to_string(), task_b.id().to_string());
    assert_ne!(task_a.id(), task_b.id());
    for refused in [b.cancel(&task_a), b.cancel(task_a.id())] {
        match refused {
            Err(error @ Error::ForeignTask(id)) => {
                assert_eq!(id, task_a.id());
                assert_eq!(error.to_string(), "task #0.0 belongs to another scheduler");
            }
            other => panic!("a foreign task was not refused: {other:?}"),
        }
    }
    assert_eq!(b.status(&task_b), TaskStatus::Scheduled);
    assert_eq!(a.status(&task_a), TaskStatus::Scheduled);
    for scheduler in [&a, &b] {
        scheduler.run_blocking().unwrap();
    }
    for (scheduler, task) in [(&a, &task_a), (&b, &task_b)] {
        match scheduler.take_result::<String>(task).unwrap() {
            Some(Outcome::Finished(value)) => assert_eq!(value, "mine"),
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn status_of_another_schedulers_task_is_unknown_while_its_own_namesake_is_scheduled() {
    let [(_lua_a, a, task_a), (_lua_b, b, task_b)] = two_schedulers_with_a_task_each();
    assert_eq!(b.status(&task_b), TaskStatus::Scheduled);
    assert_eq!(b.status(&task_a), TaskStatus::Unknown);
    assert_eq!(b.status(task_a.id()), TaskStatus::Unknown);
    b.run_blocking().unwrap();
    assert_eq!(b.status(&task_b), TaskStatus::Done);
    assert_eq!(b.status(&task_a), TaskStatus::Unknown);
    assert_eq!(a.status(&task_a), TaskStatus::Scheduled);
}

#[test]
fn ids_of_a_dropped_scheduler_are_foreign_to_the_next_one_on_the_same_lua() {
    let lua = Lua::new();
    let (first, _) = virtual_scheduler(&lua);
    let old = first
        .spawn(function(&lua, "task.wait(1)"), ())
        .unwrap()
        .id();
    drop(first);
    let (second, _) = virtual_scheduler(&lua);
    let task = second.spawn(function(&lua, "task.wait(1)"), ()).unwrap();
    assert_eq!(old.to_string(), task.id().to_string());
    assert_eq!(second.status(old), TaskStatus::Unknown);
    assert!(matches!(second.cancel(old), Err(Error::ForeignTask(id)) if id == old));
    assert_eq!(second.status(&task), TaskStatus::Scheduled);
}

#[test]
fn an_error_reports_an_id_that_this_scheduler_accepts() {
    let lua = Lua::new();
    let ids: Rc<RefCell<Vec<spindle::TaskId>>> = Rc::default();
    let seen = Rc::clone(&ids);
    let scheduler = Scheduler::builder()
        .on_error(move |_, e| seen.borrow_mut().extend(e.task))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let task = scheduler
        .spawn(function(&lua, "task.wait() error('late')"), ())
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(*ids.borrow(), [task.id()]);
    assert_eq!(scheduler.status(ids.borrow()[0]), TaskStatus::Done);
    assert!(matches!(scheduler.cancel(ids.borrow()[0]), Ok(false)));
}

// ---------------------------------------------------------------------------------------------
// Corners of the contract, on the shared corner-case host (`support::H`)
// ---------------------------------------------------------------------------------------------

#[test]
fn cycle_run_and_shutdown_called_from_inside_a_task_are_errors_not_panics() {
    let h = harness();
    let weak: Weak<Scheduler> = Rc::downgrade(&h.sched);
    let f = h
        .lua
        .create_function(move |_, what: String| {
            let sched = weak.upgrade().unwrap();
            let result = match what.as_str() {
                "cycle" => sched.cycle().map(|_| ()),
                "run_blocking" => sched.run_blocking(),
                "shutdown" => sched.shutdown(),
                "run" => async_io::block_on(sched.run(async_io::Timer::at)),
                _ => unreachable!(),
            };
            Ok(match result {
                Err(Error::Reentrant(_)) => "reentrant".to_string(),
                Err(e) => format!("other error: {e}"),
                Ok(()) => "ok".to_string(),
            })
        })
        .unwrap();
    h.lua.globals().set("reenter", f).unwrap();
    h.run(
        r##"
        print(reenter("cycle"), reenter("run_blocking"), reenter("shutdown"), reenter("run"))
        task.defer(function() print("deferred", reenter("cycle")) end)
        task.delay(1, function() print("timer", reenter("cycle")) end)
        print("main", task.wait(2))
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "reentrant reentrant reentrant reentrant",
            "deferred reentrant",
            "timer reentrant",
            "main 2"
        ])
    );
}

#[test]
fn cycle_from_the_error_handler_is_an_error_not_a_panic() {
    let slot: Rc<RefCell<Option<Weak<Scheduler>>>> = Rc::default();
    let results: Rc<RefCell<Vec<String>>> = Rc::default();
    let (s, r) = (Rc::clone(&slot), Rc::clone(&results));
    let h = harness_with(move |b| {
        b.on_error(move |_, _| {
            let sched = s.borrow().as_ref().unwrap().upgrade().unwrap();
            r.borrow_mut().push(match sched.cycle() {
                Err(Error::Reentrant(_)) => "reentrant".into(),
                Err(e) => format!("error {e}"),
                Ok(_) => "ok".into(),
            });
        })
    });
    *slot.borrow_mut() = Some(Rc::downgrade(&h.sched));
    h.run(
        r##"
        task.delay(1, error, "in timer")
        task.defer(error, "in drain")
        "##,
    );
    // The deferred error comes first, from the drain at the end of the host's `spawn`: no cycle
    // runs there, so one may start. The timer's comes from inside a cycle, where none may.
    assert_eq!(*results.borrow(), ["ok", "reentrant"]);
}

#[test]
fn an_outcome_that_does_not_convert_stays_for_another_read() {
    let h = harness();
    let task = h.run("return 'not a number'");
    let refused = h.sched.take_result::<i64>(&task);
    assert!(
        matches!(
            refused,
            Err(Error::Lua(
                spindle::mlua::Error::FromLuaConversionError { .. }
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(h.sched.status(&task), TaskStatus::Done);
    assert_eq!(h.result::<String>(&task), "not a number");
}

#[test]
fn two_handles_to_one_task_share_its_outcome() {
    let h = harness();
    let thread: mlua::Thread = h
        .lua
        .create_thread(h.func("task.wait(1) return 42"))
        .unwrap();
    let first = h.sched.spawn(&thread, ()).unwrap();
    let second = h.sched.defer(&thread, ()).unwrap();
    assert_eq!(first.id(), second.id());
    drop(first);
    h.step(2.0);
    h.step(2.0);
    assert_eq!(h.sched.status(&second), TaskStatus::Done);
    assert_eq!(h.result::<i64>(&second), 42);
}

#[test]
fn a_task_handle_from_another_scheduler_is_refused() {
    let (a, b) = (harness(), harness());
    let from_a = a.run("return 1");
    assert!(matches!(
        b.sched.take_result::<i64>(&from_a),
        Err(Error::ForeignTask(_))
    ));
    assert_eq!(a.result::<i64>(&from_a), 1);
}
