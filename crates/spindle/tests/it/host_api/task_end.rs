//! The host's end hook (`SchedulerBuilder::on_task_end`): every task the scheduler held is
//! reported once, with how it left.

use std::cell::RefCell;
use std::rc::Rc;

use spindle::{Clock, Scheduler, TaskEnd, TaskId, VirtualClock};

type Ends = Rc<RefCell<Vec<(TaskId, String)>>>;

fn describe(end: TaskEnd<'_>) -> String {
    match end {
        TaskEnd::Finished => "finished".into(),
        TaskEnd::Failed(error) => format!("failed: {}", error.message),
        TaskEnd::Cancelled => "cancelled".into(),
        TaskEnd::Released => "released".into(),
        TaskEnd::Dropped => "dropped".into(),
        other => format!("{other:?}"),
    }
}

fn scheduler(lua: &mlua::Lua, clock: &VirtualClock) -> (Scheduler, Ends) {
    let ends: Ends = Rc::default();
    let seen = ends.clone();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(|_, _| {})
        .on_task_end(move |_, id, end| seen.borrow_mut().push((id, describe(end))))
        .build(lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    (scheduler, ends)
}

fn spawn(lua: &mlua::Lua, scheduler: &Scheduler, source: &str) -> TaskId {
    let f = lua.load(source.to_string()).into_function().unwrap();
    scheduler.spawn(f, ()).unwrap().id()
}

#[test]
fn every_way_a_task_leaves_is_reported_once() {
    let lua = mlua::Lua::new();
    let clock = VirtualClock::new();
    let (scheduler, ends) = scheduler(&lua, &clock);
    let finished = spawn(&lua, &scheduler, "task.wait(1) return 1");
    let failed = spawn(&lua, &scheduler, "task.wait(1) error('broken', 0)");
    let cancelled = spawn(&lua, &scheduler, "task.wait(5)");
    let released = spawn(&lua, &scheduler, "task.wait(1) coroutine.yield()");
    let dropped = spawn(&lua, &scheduler, "task.wait(60)");
    assert!(ends.borrow().is_empty(), "{:?}", ends.borrow());
    scheduler.cancel(cancelled).unwrap();
    clock.advance(std::time::Duration::from_secs(1));
    scheduler.cycle().unwrap();
    scheduler.shutdown().unwrap();
    let mut got = ends.borrow().clone();
    got.sort_by_key(|(id, _)| id.as_u64());
    assert_eq!(
        got,
        [
            (finished, "finished".to_string()),
            (failed, "failed: broken".to_string()),
            (cancelled, "cancelled".to_string()),
            (released, "released".to_string()),
            (dropped, "dropped".to_string()),
        ]
    );
    // In the order they left: the cancel first, the shutdown last.
    assert_eq!(ends.borrow()[0].0, cancelled);
    assert_eq!(ends.borrow()[4].0, dropped);
}

#[test]
fn tasks_that_lua_starts_are_reported_too() {
    let lua = mlua::Lua::new();
    let clock = VirtualClock::new();
    let (scheduler, ends) = scheduler(&lua, &clock);
    let main = spawn(
        &lua,
        &scheduler,
        r#"
        local child = task.spawn(function() task.wait(1) end)
        task.cancel(child)
        local co = coroutine.create(function() task.wait(1) end)
        coroutine.resume(co)
        coroutine.close(co)
        task.defer(function() end)
        "#,
    );
    scheduler.cycle().unwrap();
    let got: Vec<String> = ends.borrow().iter().map(|(_, end)| end.clone()).collect();
    // The child and the coroutine cancelled, the main task and the deferred one finished.
    assert_eq!(got, ["cancelled", "cancelled", "finished", "finished"]);
    assert_eq!(ends.borrow()[2].0, main);
}

#[test]
fn the_hook_may_use_the_scheduler() {
    // A supervisor: a task that fails is started again, up to three times in all.
    let lua = mlua::Lua::new();
    let attempts = Rc::new(RefCell::new(0));
    let counted = attempts.clone();
    let counter = lua
        .create_function(move |_, ()| {
            *counted.borrow_mut() += 1;
            Ok(*counted.borrow())
        })
        .unwrap();
    lua.globals().set("attempt", counter).unwrap();
    let body = lua
        .load("if attempt() < 3 then error('not yet', 0) end")
        .into_function()
        .unwrap();
    let again = body.clone();
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .on_task_end(move |scheduler, _, end| {
            if let TaskEnd::Failed(_) = end {
                scheduler.defer(&again, ()).unwrap();
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    scheduler.spawn(&body, ()).unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(*attempts.borrow(), 3);
    assert_eq!(scheduler.error_count(), 2);
}

#[test]
fn a_panicking_hook_stops_nothing_and_dropping_the_scheduler_calls_no_hook() {
    let lua = mlua::Lua::new();
    let calls = Rc::new(RefCell::new(0));
    let counted = calls.clone();
    let scheduler = Scheduler::builder()
        .on_task_end(move |_, _, _| {
            *counted.borrow_mut() += 1;
            panic!("a host's bug");
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let first = scheduler
        .spawn(lua.load("return 1").into_function().unwrap(), ())
        .unwrap();
    let second = scheduler
        .spawn(lua.load("return 2").into_function().unwrap(), ())
        .unwrap();
    let value: i64 = scheduler
        .take_result(&second)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(value, 2);
    assert!(first.is_finished());
    assert_eq!(*calls.borrow(), 2);
    scheduler
        .spawn(lua.load("task.wait(60)").into_function().unwrap(), ())
        .unwrap();
    drop(scheduler);
    assert_eq!(
        *calls.borrow(),
        2,
        "no hook while the last handle is dropped"
    );
}
