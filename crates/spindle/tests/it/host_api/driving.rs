//! Frameworks that drive their own coroutines: `Scheduler::resume` tells a plain yield from a
//! wait on the scheduler, an end and a failure, and refuses what it cannot resume; a coroutine
//! that becomes a task behind the host's back (mlua's `Thread::resume`) is reported to the
//! adoption hook.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::thread::ThreadStatus;
use spindle::mlua::{self, Lua, MultiValue, Thread};
use spindle::{Error, Outcome, Resumed, Scheduler, SchedulerBuilder, TaskEnd, TaskId, TaskStatus};

use super::function;

/// Runs `test` once with the raw lanes and once on mlua's general path only: both must agree.
pub(super) fn both_ways(mut test: impl FnMut(&dyn Fn(SchedulerBuilder) -> SchedulerBuilder)) {
    test(&|builder| builder);
    test(&|builder| builder.general_path_only());
}

/// A scheduler whose errors and task ends are logged, built by `configure`.
pub(super) fn logged(
    lua: &Lua,
    configure: &dyn Fn(SchedulerBuilder) -> SchedulerBuilder,
) -> (Scheduler, Rc<RefCell<Vec<String>>>) {
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let (errors, ends) = (Rc::clone(&log), Rc::clone(&log));
    let builder = Scheduler::builder()
        .on_error(move |_, error| {
            errors
                .borrow_mut()
                .push(format!("error: {}", error.message))
        })
        .on_task_end(move |_, id, end| {
            let end = match end {
                TaskEnd::Failed(error) => format!("failed: {}", error.message),
                other => format!("{other:?}"),
            };
            ends.borrow_mut().push(format!("end {id}: {end}"));
        });
    let scheduler = configure(builder).build(lua).unwrap();
    scheduler.install_task_library().unwrap();
    (scheduler, log)
}

fn coroutine(lua: &Lua, source: &str) -> Thread {
    lua.create_thread(function(lua, source)).unwrap()
}

#[test]
fn resume_gives_a_plain_yields_values_back_and_leaves_the_thread_to_its_caller() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let co = coroutine(
            &lua,
            "local a, b = ... local c = coroutine.yield(a + b, 'sum') return c * 2, 'done'",
        );
        match scheduler.resume::<(i64, String)>(&co, (2, 3)).unwrap() {
            Resumed::Yielded((sum, label)) => assert_eq!((sum, label.as_str()), (5, "sum")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(co.status(), ThreadStatus::Resumable);
        assert_eq!(scheduler.task_of(&co), None, "the thread is the caller's");
        assert_eq!(scheduler.task_count(), 0);
        match scheduler.resume::<(i64, String)>(&co, 21).unwrap() {
            Resumed::Finished((n, label)) => assert_eq!((n, label.as_str()), (42, "done")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(co.status(), ThreadStatus::Finished);
        assert!(log.borrow().is_empty(), "no task ended: {:?}", log.borrow());
    });
}

#[test]
fn resume_returns_untyped_values_by_default() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let co = coroutine(&lua, "coroutine.yield(nil, 2, nil)");
    match scheduler.resume::<MultiValue>(&co, ()).unwrap() {
        Resumed::Yielded(values) => assert_eq!(values.len(), 3),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_resumed_thread_is_the_current_task_while_it_runs() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let current = lua
        .create_function(|lua, ()| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            Ok(scheduler.current_task().map(|id| id.to_string()))
        })
        .unwrap();
    lua.globals().set("current", current).unwrap();
    let co = coroutine(&lua, "coroutine.yield(current()) return current()");
    let Resumed::Yielded(Some(first)) = scheduler.resume::<Option<String>>(&co, ()).unwrap() else {
        panic!("no current task inside the resumption")
    };
    assert!(first.starts_with('#'), "{first}");
    assert!(matches!(
        scheduler.resume::<Option<String>>(&co, ()).unwrap(),
        Resumed::Finished(Some(_))
    ));
}

#[test]
fn resume_gives_a_failure_to_its_caller_alone_with_the_scripts_traceback() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let f = lua
            .load("local function inner() error('bad state') end\ninner()")
            .set_name("@framework.luau")
            .into_function()
            .unwrap();
        let co = lua.create_thread(f).unwrap();
        let Resumed::Failed(error) = scheduler.resume::<()>(&co, ()).unwrap() else {
            panic!("the failure was not returned")
        };
        assert_eq!(error.message, "framework.luau:1: bad state");
        assert!(
            error.traceback.contains("framework.luau:1"),
            "{}",
            error.traceback
        );
        assert!(
            !error.traceback.contains("task.luau"),
            "Spindle's own frames are left out: {}",
            error.traceback
        );
        assert_eq!(
            scheduler.error_count(),
            0,
            "not handed to the error handler"
        );
        assert!(log.borrow().is_empty(), "{:?}", log.borrow());
        assert_eq!(co.status(), ThreadStatus::Error);
    });
}

#[test]
fn a_resumed_thread_that_waits_becomes_the_schedulers_task() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let co = coroutine(
            &lua,
            "local n = ... local e = task.wait(0.01) coroutine.yield(n) return 'after'",
        );
        let Resumed::Pending(id) = scheduler.resume::<()>(&co, 7).unwrap() else {
            panic!("a task.wait is the scheduler's")
        };
        assert_eq!(scheduler.status(id), TaskStatus::Scheduled);
        assert_eq!(scheduler.task_of(&co), Some(id));
        assert!(scheduler.has_work());
        // The scheduler holds it: the host may not resume it meanwhile.
        assert!(matches!(
            scheduler.resume::<()>(&co, ()),
            Err(Error::AlreadyScheduled(refused)) if refused == id
        ));
        scheduler.run_blocking().unwrap();
        // Its plain yield after the wait is a yield to the scheduler, which lets it go.
        assert_eq!(*log.borrow(), [format!("end {id}: Released")]);
        assert_eq!(co.status(), ThreadStatus::Resumable);
        assert!(matches!(
            scheduler.resume::<String>(&co, ()).unwrap(),
            Resumed::Finished(after) if after == "after"
        ));
    });
}

/// A Rust future that is pending at its first poll, and wakes itself at once.
struct PendOnce(bool);

impl std::future::Future for PendOnce {
    type Output = mlua::Result<i64>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if !self.0 {
            self.0 = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(40))
    }
}

#[test]
fn a_resumed_thread_pending_in_a_rust_future_is_resumed_by_the_scheduler() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let spindle_fn = scheduler
            .create_async_function(|_, ()| PendOnce(false))
            .unwrap();
        let mlua_fn = lua.create_async_function(|_, ()| PendOnce(false)).unwrap();
        lua.globals().set("spindle_fn", spindle_fn).unwrap();
        lua.globals().set("mlua_fn", mlua_fn).unwrap();
        for name in ["spindle_fn", "mlua_fn"] {
            let co = coroutine(&lua, &format!("result = {name}() + 2"));
            let Resumed::Pending(id) = scheduler.resume::<()>(&co, ()).unwrap() else {
                panic!("{name}: a pending future is the scheduler's")
            };
            assert_eq!(scheduler.task_of(&co), Some(id), "{name}");
            scheduler.run_blocking().unwrap();
            assert_eq!(lua.globals().get::<i64>("result").unwrap(), 42, "{name}");
            assert_eq!(co.status(), ThreadStatus::Finished, "{name}");
            assert_eq!(
                log.borrow_mut().drain(..).collect::<Vec<_>>(),
                [format!("end {id}: Finished")]
            );
        }
    });
}

#[test]
fn resume_refuses_what_it_cannot_resume_and_runs_nothing() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let dead = coroutine(&lua, "return 1");
    dead.resume::<()>(()).unwrap();
    assert!(matches!(
        scheduler.resume::<()>(&dead, ()),
        Err(Error::NotResumable(ThreadStatus::Finished))
    ));
    let failed = coroutine(&lua, "error('x')");
    assert!(failed.resume::<()>(()).is_err());
    assert!(matches!(
        scheduler.resume::<()>(&failed, ()),
        Err(Error::NotResumable(ThreadStatus::Error))
    ));
    let task = scheduler.spawn(function(&lua, "task.wait(1)"), ()).unwrap();
    let thread = scheduler.thread_of(&task).unwrap();
    assert!(matches!(
        scheduler.resume::<()>(&thread, ()),
        Err(Error::AlreadyScheduled(id)) if id == task.id()
    ));
    let main = lua.current_thread();
    assert!(matches!(
        scheduler.resume::<()>(&main, ()),
        Err(Error::NotACoroutine)
    ));
    let other = Lua::new();
    let foreign = other
        .create_thread(other.load("error('must not run')").into_function().unwrap())
        .unwrap();
    assert!(matches!(
        scheduler.resume::<()>(&foreign, ()),
        Err(Error::NotACoroutine)
    ));
    assert_eq!(foreign.status(), ThreadStatus::Resumable);
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn resume_refuses_the_running_thread_and_its_resumer_from_inside() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, _) = logged(&lua, configure);
        let again = lua
            .create_function(|lua, thread: Thread| {
                let scheduler = Scheduler::from_lua(lua).unwrap();
                Ok(match scheduler.resume::<()>(&thread, ()) {
                    Err(Error::NotResumable(status)) => format!("{status:?}"),
                    other => format!("{other:?}"),
                })
            })
            .unwrap();
        lua.globals().set("again", again).unwrap();
        let co = coroutine(
            &lua,
            r#"
            local me = coroutine.running()
            local inner = coroutine.create(function() return again(me) end)
            local _, from_inner = coroutine.resume(inner)
            return again(me), from_inner
            "#,
        );
        match scheduler.resume::<(String, String)>(&co, ()).unwrap() {
            Resumed::Finished((own, resumer)) => {
                assert_eq!((own.as_str(), resumer.as_str()), ("Running", "Normal"))
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn resume_nests_inside_a_task_and_inside_the_end_hook() {
    let lua = Lua::new();
    let resumed: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = Rc::clone(&resumed);
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, _| {
            let lua = scheduler.lua();
            let co = lua
                .create_thread(
                    lua.load("coroutine.yield('from hook')")
                        .into_function()
                        .unwrap(),
                )
                .unwrap();
            if let Ok(Resumed::Yielded(value)) = scheduler.resume::<String>(&co, ()) {
                seen.borrow_mut().push(value);
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let drive = lua
        .create_function(|lua, thread: Thread| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            match scheduler.resume::<String>(&thread, ())? {
                Resumed::Yielded(value) => Ok(value),
                other => Ok(format!("{other:?}")),
            }
        })
        .unwrap();
    lua.globals().set("drive", drive).unwrap();
    let task = scheduler
        .spawn(
            function(
                &lua,
                "return drive(coroutine.create(function() coroutine.yield('nested') end))",
            ),
            (),
        )
        .unwrap();
    assert_eq!(
        scheduler
            .take_result::<String>(&task)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap(),
        "nested"
    );
    assert_eq!(*resumed.borrow(), ["from hook"]);
}

#[test]
fn a_resumed_thread_whose_error_tostring_fails_is_still_reported_as_failed() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, _) = logged(&lua, configure);
        let co = coroutine(
            &lua,
            r#"error(setmetatable({}, { __tostring = function() error("tostring too") end }))"#,
        );
        assert!(matches!(
            scheduler.resume::<()>(&co, ()).unwrap(),
            Resumed::Failed(_)
        ));
        assert_eq!(scheduler.task_count(), 0);
        assert_eq!(scheduler.error_count(), 0);
    });
}

#[test]
fn a_resumed_thread_that_runs_out_of_memory_fails_and_gives_the_memory_back() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    lua.set_memory_limit(lua.used_memory() + (4 << 20)).unwrap();
    let co = coroutine(
        &lua,
        "local hog = {} while true do hog[#hog + 1] = { #hog, tostring(#hog) } end",
    );
    let Resumed::Failed(error) = scheduler.resume::<()>(&co, ()).unwrap() else {
        panic!("the greedy thread did not fail")
    };
    assert!(error.message.contains("not enough memory"), "{error}");
    let modest = coroutine(
        &lua,
        "local r = {} for i = 1, 1000 do r[i] = { i } end return #r",
    );
    assert!(matches!(
        scheduler.resume::<i64>(&modest, ()).unwrap(),
        Resumed::Finished(1000)
    ));
}

#[test]
fn a_resumed_thread_over_its_timeout_fails_and_over_its_slice_goes_to_the_scheduler() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b.timeout(Duration::from_millis(20)));
    let spin = coroutine(&lua, "while true do end");
    let Resumed::Failed(error) = scheduler.resume::<()>(&spin, ()).unwrap() else {
        panic!("the spinning thread was not stopped")
    };
    assert!(
        error.message.starts_with(spindle::TIMEOUT_MESSAGE),
        "{error}"
    );
    assert_eq!(spin.status(), ThreadStatus::Finished, "closed");
    assert_eq!(scheduler.error_count(), 0);
    drop(scheduler);

    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b.time_slice(Duration::from_millis(5)));
    let busy = coroutine(
        &lua,
        "local t = os.clock() while os.clock() - t < 0.03 do end return 'done'",
    );
    let Resumed::Pending(id) = scheduler.resume::<()>(&busy, ()).unwrap() else {
        panic!("a sliced thread is the scheduler's to go on with")
    };
    assert_eq!(scheduler.status(id), TaskStatus::Scheduled);
    scheduler.run_blocking().unwrap();
    assert_eq!(busy.status(), ThreadStatus::Finished);
}

#[test]
fn a_resumed_thread_that_waits_can_be_cancelled_from_lua() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, log) = logged(&lua, configure);
        let co = coroutine(&lua, "task.wait(1) error('never')");
        let Resumed::Pending(id) = scheduler.resume::<()>(&co, ()).unwrap() else {
            panic!("a task.wait is the scheduler's")
        };
        lua.globals().set("co", &co).unwrap();
        lua.load("task.cancel(co)").exec().unwrap();
        assert_eq!(scheduler.status(id), TaskStatus::Unknown);
        assert_eq!(co.status(), ThreadStatus::Finished);
        assert!(!scheduler.has_work());
        scheduler.run_blocking().unwrap();
        assert_eq!(*log.borrow(), [format!("end {id}: Cancelled")]);
    });
}

// ---------------------------------------------------------------------------------------------
// The adoption hook
// ---------------------------------------------------------------------------------------------

/// The adoptions a hook was told of.
type Adopted = Rc<RefCell<Vec<(TaskId, Thread)>>>;

/// A scheduler whose adoption hook logs the tasks it is told of.
fn adopting(lua: &Lua) -> (Scheduler, Adopted) {
    let adopted: Adopted = Rc::default();
    let seen = Rc::clone(&adopted);
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_adopt(move |_, id, thread| seen.borrow_mut().push((id, thread.clone())))
        .build(lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    (scheduler, adopted)
}

#[test]
fn a_thread_resumed_behind_the_schedulers_back_that_awaits_is_reported() {
    let lua = Lua::new();
    let (scheduler, adopted) = adopting(&lua);
    let spindle_fn = scheduler
        .create_async_function(|_, ()| PendOnce(false))
        .unwrap();
    lua.globals().set("spindle_fn", spindle_fn).unwrap();
    let mlua_fn = lua.create_async_function(|_, ()| PendOnce(false)).unwrap();
    lua.globals().set("mlua_fn", mlua_fn).unwrap();
    for source in ["task.wait(0.01)", "spindle_fn()", "Signal.new():Wait()"] {
        let co = coroutine(&lua, source);
        co.resume::<()>(()).unwrap();
        let id = scheduler.task_of(&co).expect("adopted");
        let told = adopted.borrow_mut().drain(..).collect::<Vec<_>>();
        assert_eq!(told.len(), 1, "{source}");
        assert_eq!((told[0].0, &told[0].1), (id, &co), "{source}");
        scheduler.cancel(id).unwrap();
    }
    // An mlua async function resumed with mlua's own `Thread::resume` polls with no waker of
    // the scheduler's and yields to the host: the scheduler never sees it (and the host must
    // poll it), so nothing is reported.
    let co = coroutine(&lua, "mlua_fn()");
    co.resume::<()>(()).unwrap();
    assert_eq!(scheduler.task_of(&co), None);
    assert!(adopted.borrow().is_empty());
}

#[test]
fn a_script_coroutine_that_waits_is_reported_too_and_a_spawned_task_is_not() {
    let lua = Lua::new();
    let (scheduler, adopted) = adopting(&lua);
    let mlua_fn = lua.create_async_function(|_, ()| PendOnce(false)).unwrap();
    lua.globals().set("mlua_fn", mlua_fn).unwrap();
    scheduler
        .spawn(
            function(
                &lua,
                r#"
                task.spawn(function() task.wait(0.01) end)
                task.wait(0.01)
                coroutine.wrap(function() task.wait(0.01) end)()
                coroutine.wrap(function() mlua_fn() end)()
                "#,
            ),
            (),
        )
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(adopted.borrow().len(), 2, "the two wrapped coroutines");
}

#[test]
fn the_adoption_hook_cannot_cancel_the_running_thread_and_a_panic_in_it_stops_nothing() {
    let lua = Lua::new();
    let told: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = Rc::clone(&told);
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_adopt(move |scheduler, id, thread| {
            let cancel = format!("{:?}", scheduler.cancel(id));
            let resume = format!("{:?}", scheduler.resume::<()>(thread, ()).map(|_| ()));
            seen.borrow_mut().push(format!("{cancel} / {resume}"));
            panic!("the hook panics");
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let co = coroutine(&lua, "task.wait(0.01) return 'woke'");
    co.resume::<()>(()).unwrap();
    let told = told.borrow();
    assert!(told[0].starts_with("Err(TaskRunning("), "{told:?}");
    assert!(told[0].ends_with("Err(NotResumable(Running))"), "{told:?}");
    scheduler.run_blocking().unwrap();
    assert_eq!(co.status(), ThreadStatus::Finished);
}

// ---------------------------------------------------------------------------------------------
// The values a host task hands to its plain `coroutine.yield`
// ---------------------------------------------------------------------------------------------

#[test]
fn a_host_tasks_plain_yield_values_are_its_released_outcome() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, _) = logged(&lua, configure);
        let task = scheduler
            .spawn(
                function(&lua, "coroutine.yield(1, 'a') return 'never read'"),
                (),
            )
            .unwrap();
        assert_eq!(scheduler.status(&task), TaskStatus::Released);
        // Values that do not convert leave the outcome in place.
        assert!(scheduler.take_result::<(String, i64)>(&task).is_err());
        match scheduler.take_result::<(i64, String)>(&task).unwrap() {
            Some(Outcome::Released((n, s))) => assert_eq!((n, s.as_str()), (1, "a")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(scheduler.status(&task), TaskStatus::Unknown);
    });
}

#[test]
fn a_host_task_that_yields_plainly_after_a_rust_future_keeps_its_values() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, _) = logged(&lua, configure);
        let spindle_fn = scheduler
            .create_async_function(|_, ()| PendOnce(false))
            .unwrap();
        lua.globals().set("spindle_fn", spindle_fn).unwrap();
        let task = scheduler
            .spawn(function(&lua, "coroutine.yield(spindle_fn(), 'after')"), ())
            .unwrap();
        let joined = super::bounded(
            scheduler.run_until(async_io::Timer::at, scheduler.join::<(i64, String)>(&task)),
        )
        .unwrap()
        .unwrap();
        match joined {
            Outcome::Released((n, s)) => assert_eq!((n, s.as_str()), (40, "after")),
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn a_host_task_resumed_by_hand_out_of_its_wait_is_released_with_no_values() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let task = scheduler
        .spawn(
            function(&lua, "parked = coroutine.running() task.wait(5)"),
            (),
        )
        .unwrap();
    lua.load("coroutine.resume(parked)").exec().unwrap();
    assert_eq!(scheduler.status(&task), TaskStatus::Released);
    let outcome = scheduler.take_result::<MultiValue>(&task).unwrap();
    assert!(
        matches!(&outcome, Some(Outcome::Released(values)) if values.is_empty()),
        "{outcome:?}"
    );
}

#[test]
fn the_values_of_a_released_task_go_when_it_is_cancelled_or_its_handle_dropped() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let weak_of = |task: &spindle::Task| -> mlua::Table {
        let _ = task;
        lua.load("return setmetatable({ v = kept }, { __mode = 'v' })")
            .eval()
            .unwrap()
    };
    for cancel in [true, false] {
        lua.load("kept = {}").exec().unwrap();
        let task = scheduler
            .spawn(
                function(&lua, "local v = kept kept = nil coroutine.yield(v)"),
                (),
            )
            .unwrap();
        let weak = weak_of(&task);
        if cancel {
            assert!(scheduler.cancel(&task).unwrap());
        } else {
            drop(task);
        }
        lua.gc_collect().unwrap();
        lua.gc_collect().unwrap();
        assert!(
            weak.get::<Option<mlua::Table>>("v").unwrap().is_none(),
            "cancel: {cancel}: the yielded value is still held"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One identity per thread: a released task's thread spawned again is that task again
// ---------------------------------------------------------------------------------------------

#[test]
fn a_released_thread_spawned_again_from_lua_gets_its_id_back() {
    both_ways(|configure| {
        for how in [
            "task.spawn(parked, 'again')",
            "task.defer(parked, 'again')",
            "task.delay(0, parked, 'again')",
        ] {
            let lua = Lua::new();
            let (scheduler, log) = logged(&lua, configure);
            let task = scheduler
                .spawn(
                    function(
                        &lua,
                        "parked = coroutine.running() local v = coroutine.yield('first') \
                         task.wait(0) return v",
                    ),
                    (),
                )
                .unwrap();
            let id = task.id();
            assert_eq!(scheduler.status(id), TaskStatus::Released, "{how}");
            lua.load(how).exec().unwrap();
            assert_eq!(scheduler.status(id), TaskStatus::Scheduled, "{how}");
            scheduler.run_blocking().unwrap();
            let outcome = scheduler.take_result::<String>(&task).unwrap();
            assert!(
                matches!(&outcome, Some(Outcome::Finished(v)) if v == "again"),
                "{how}: {outcome:?}"
            );
            assert_eq!(
                *log.borrow(),
                [format!("end {id}: Released"), format!("end {id}: Finished")],
                "{how}"
            );
        }
    });
}

#[test]
fn a_join_resolves_at_the_release_and_a_read_release_lets_the_thread_go() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let task = scheduler
        .spawn(
            function(
                &lua,
                "parked = coroutine.running() task.wait(0.01) coroutine.yield(1) \
                 task.wait(0.01) return 2",
            ),
            (),
        )
        .unwrap();
    let first =
        super::bounded(scheduler.run_until(async_io::Timer::at, scheduler.join::<i64>(&task)))
            .unwrap()
            .unwrap();
    assert!(matches!(first, Outcome::Released(1)), "{first:?}");
    // Read: the handle's claim is spent, as with any outcome, and the thread is let go.
    assert_eq!(scheduler.status(&task), TaskStatus::Unknown);
    let parked: Thread = lua.globals().get("parked").unwrap();
    let again = scheduler.spawn(&parked, ()).unwrap();
    assert_ne!(again.id(), task.id());
    assert_eq!(scheduler.status(&task), TaskStatus::Unknown);
}

#[test]
fn a_join_made_after_the_respawn_waits_for_the_tasks_next_end() {
    both_ways(|configure| {
        let lua = Lua::new();
        let (scheduler, _) = logged(&lua, configure);
        let task = scheduler
            .spawn(
                function(
                    &lua,
                    "parked = coroutine.running() coroutine.yield(1) task.wait(0.01) return 2",
                ),
                (),
            )
            .unwrap();
        assert_eq!(scheduler.status(&task), TaskStatus::Released);
        // Resumed by hand, the thread waits: it is the same task again (and it is no new
        // adoption for the host's handle: the id is the handle's).
        lua.load("coroutine.resume(parked)").exec().unwrap();
        assert_eq!(scheduler.status(&task), TaskStatus::Scheduled);
        let end =
            super::bounded(scheduler.run_until(async_io::Timer::at, scheduler.join::<i64>(&task)))
                .unwrap()
                .unwrap();
        assert!(matches!(end, Outcome::Finished(2)), "{end:?}");
    });
}

#[test]
fn a_dropped_handle_lets_a_released_thread_go_and_a_respawn_is_a_new_task() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let thread = coroutine(&lua, "coroutine.yield() coroutine.yield()");
    let first = scheduler.spawn(&thread, ()).unwrap();
    let id = first.id();
    drop(first);
    assert_eq!(scheduler.status(id), TaskStatus::Unknown);
    let second = scheduler.spawn(&thread, ()).unwrap();
    assert_ne!(second.id(), id);
    // The reserved slot was given back: the new task took it, under a new generation.
    assert_eq!(
        second.id().to_string().split('.').next(),
        id.to_string().split('.').next()
    );
}

#[test]
fn a_released_thread_driven_by_the_host_is_the_hosts_and_the_handle_keeps_its_release() {
    let lua = Lua::new();
    let (scheduler, _) = logged(&lua, &|b| b);
    let thread = coroutine(&lua, "coroutine.yield('a') return 'b'");
    let task = scheduler.spawn(&thread, ()).unwrap();
    assert!(matches!(
        scheduler.resume::<String>(&thread, ()).unwrap(),
        Resumed::Finished(b) if b == "b"
    ));
    assert!(matches!(
        scheduler.take_result::<String>(&task).unwrap(),
        Some(Outcome::Released(a)) if a == "a"
    ));
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn a_clone_of_a_released_tasks_handle_claims_its_release_and_follows_it_back() {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    // Another task first, so that the released task's number is not zero.
    let _earlier = scheduler.spawn(function(&lua, "task.wait()"), ()).unwrap();
    let body = function(
        &lua,
        "local v = coroutine.yield(5) task.wait() return v * 2",
    );
    let first = scheduler.spawn(body, ()).unwrap();
    assert_eq!(scheduler.status(&first), TaskStatus::Released);
    // Cloned after the release, then the original let go: the release is still claimed.
    let second = first.clone();
    drop(first);
    let thread = scheduler.thread_of(&second).unwrap();
    // Spawned again, the thread is the same task: the clone reads its final outcome.
    let again = scheduler.spawn(&thread, 21).unwrap();
    assert_eq!(again.id(), second.id());
    // The same task: still its own script, with no creator.
    assert_eq!(scheduler.script_of(&again), Some(again.id()));
    assert_eq!(scheduler.creator_of(&again), None);
    scheduler.run_blocking().unwrap();
    let outcome = scheduler.take_result::<i64>(&second).unwrap();
    assert!(
        matches!(outcome, Some(Outcome::Finished(42))),
        "{outcome:?}"
    );
}
