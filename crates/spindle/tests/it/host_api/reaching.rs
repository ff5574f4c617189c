//! Reaching the scheduler from a Rust function (`Scheduler::from_lua`, `WeakScheduler`) and
//! telling threads and tasks apart (`current_task`, `task_of`, `thread_of`).

use std::cell::RefCell;
use std::rc::Rc;

use spindle::{Scheduler, TaskId, TaskStatus};

use super::scheduler;

#[test]
fn a_rust_function_reaches_the_scheduler_from_lua_alone() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let later = lua
        .create_function(|lua, (f, seconds): (mlua::Function, f64)| {
            let scheduler = Scheduler::from_lua(lua).expect("attached");
            let task = scheduler.delay(std::time::Duration::from_secs_f64(seconds), f, ())?;
            Ok(task.id().to_string())
        })
        .unwrap();
    lua.globals().set("later", later).unwrap();
    let main = lua
        .load(
            r#"
            local order = {}
            later(function() table.insert(order, "delayed") end, 0.01)
            task.wait(0.02)
            table.insert(order, "main")
            return table.concat(order, " ")
            "#,
        )
        .into_function()
        .unwrap();
    let task = scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    let order: String = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(order, "delayed main");
}

#[test]
fn handles_share_one_scheduler_and_the_last_one_ends_it() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let weak = scheduler.downgrade();
    let clone = scheduler.clone();
    let task = scheduler
        .spawn(lua.load("task.wait(1)").into_function().unwrap(), ())
        .unwrap();
    drop(scheduler);
    // The clone is the same scheduler: it still holds the task.
    assert_eq!(clone.status(&task), TaskStatus::Scheduled);
    assert_eq!(clone.task_count(), 1);
    assert!(Scheduler::from_lua(&lua).is_some());
    assert!(weak.upgrade().is_some());
    drop(clone);
    // The last handle is gone: the scheduler ended, and Lua knows no scheduler.
    assert!(Scheduler::from_lua(&lua).is_none());
    assert!(weak.upgrade().is_none());
    assert!(task.is_finished());
    let error = lua.load("task.defer(print)").exec().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the task scheduler of this Lua state was dropped"),
        "{error}"
    );
    // A new scheduler may attach now.
    let again = self::scheduler(&lua);
    assert!(Scheduler::from_lua(&lua).is_some());
    drop(again);
}

#[test]
fn current_task_names_the_task_whose_thread_calls() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let seen: Rc<RefCell<Vec<Option<TaskId>>>> = Rc::default();
    let whoami = {
        let seen = seen.clone();
        lua.create_function(move |lua, ()| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            seen.borrow_mut().push(scheduler.current_task());
            Ok(())
        })
        .unwrap()
    };
    lua.globals().set("whoami", whoami).unwrap();
    let main = lua
        .load(
            r#"
            whoami()                                  -- the host's task
            task.wait(0)
            whoami()                                  -- the same task, resumed by the scheduler
            coroutine.wrap(function() whoami() end)() -- a coroutine resumed by hand: no task
            "#,
        )
        .into_function()
        .unwrap();
    let task = scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    // From the host, outside any task.
    lua.load("whoami()").exec().unwrap();
    assert_eq!(
        *seen.borrow(),
        [Some(task.id()), Some(task.id()), None, None]
    );
}

#[test]
fn task_of_and_thread_of_map_between_threads_and_tasks() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let thread = lua
        .create_thread(lua.load("task.wait(1) return 1").into_function().unwrap())
        .unwrap();
    assert_eq!(scheduler.task_of(&thread), None);
    let task = scheduler.spawn(&thread, ()).unwrap();
    assert_eq!(scheduler.task_of(&thread), Some(task.id()));
    assert_eq!(scheduler.thread_of(&task), Some(thread.clone()));
    let other = lua
        .create_thread(lua.load("return 2").into_function().unwrap())
        .unwrap();
    assert_eq!(scheduler.task_of(&other), None);
    scheduler.cancel(&task).unwrap();
    assert_eq!(scheduler.task_of(&thread), None);
    assert_eq!(scheduler.thread_of(&task), None);
}

#[test]
fn thread_of_a_task_of_another_scheduler_is_none() {
    let lua = mlua::Lua::new();
    let other_lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let other = self::scheduler(&other_lua);
    let ours = scheduler
        .spawn(lua.load("task.wait(1)").into_function().unwrap(), ())
        .unwrap();
    let theirs = other
        .spawn(other_lua.load("task.wait(1)").into_function().unwrap(), ())
        .unwrap();
    // The two tasks have the same slot and generation; only the ids' schedulers differ.
    assert_eq!(ours.id().as_u64(), theirs.id().as_u64());
    assert_eq!(scheduler.thread_of(&theirs), None);
    assert!(scheduler.thread_of(&ours).is_some());
}

#[test]
fn the_schedulers_errors_convert_to_lua_errors_with_their_message() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let reenter = lua
        .create_function(|lua, ()| {
            Scheduler::from_lua(lua).unwrap().cycle()?;
            Ok(())
        })
        .unwrap();
    lua.globals().set("reenter", reenter).unwrap();
    let main = lua
        .load("local ok, err = pcall(reenter) return tostring(err)")
        .into_function()
        .unwrap();
    let task = scheduler.spawn(main, ()).unwrap();
    let message: String = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert!(
        message.starts_with(
            "the scheduler is already running; Scheduler::cycle cannot be called from inside a task"
        ),
        "{message}"
    );
}

#[test]
fn the_host_cancels_a_task_that_left_with_a_plain_yield_by_closing_its_thread() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let task = scheduler
        .spawn(
            lua.load("coroutine.yield() error('never')")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    assert_eq!(scheduler.status(&task), TaskStatus::Released);
    let thread = scheduler.thread_of(&task).unwrap();
    assert_eq!(thread.status(), mlua::thread::ThreadStatus::Resumable);
    assert!(scheduler.cancel(&task).unwrap());
    assert_eq!(
        thread.status(),
        mlua::thread::ThreadStatus::Finished,
        "closed: never resumes"
    );
    assert!(!scheduler.cancel(&task).unwrap(), "once");
    let outcome = scheduler.take_result::<()>(&task).unwrap();
    assert!(
        matches!(outcome, Some(spindle::Outcome::Cancelled)),
        "{outcome:?}"
    );
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn a_released_task_running_under_its_new_owner_is_not_cancelled() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let attempt = lua
        .create_function(|lua, ()| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            let id: TaskId = lua
                .globals()
                .get::<mlua::AnyUserData>("handle")?
                .take::<Handle>()?
                .0;
            Ok(match scheduler.cancel(id) {
                Err(spindle::Error::TaskRunning(refused)) if refused == id => "refused".to_string(),
                other => format!("{other:?}"),
            })
        })
        .unwrap();
    lua.globals().set("attempt", attempt).unwrap();
    let task = scheduler
        .spawn(
            lua.load("coroutine.yield() return attempt()")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    lua.globals()
        .set(
            "handle",
            lua.create_any_userdata(Handle(task.id())).unwrap(),
        )
        .unwrap();
    // The host resumes the released thread by hand; from inside it, the cancel is refused.
    let thread = scheduler.thread_of(&task).unwrap();
    assert_eq!(thread.resume::<String>(()).unwrap(), "refused");
}

/// A task id a script carries to a Rust function.
struct Handle(TaskId);

#[test]
fn a_released_thread_spawned_again_by_the_host_is_the_same_task() {
    let lua = mlua::Lua::new();
    let scheduler = scheduler(&lua);
    let thread = lua
        .create_thread(
            lua.load("coroutine.yield() task.wait(1)")
                .into_function()
                .unwrap(),
        )
        .unwrap();
    let first = scheduler.spawn(&thread, ()).unwrap();
    assert_eq!(scheduler.status(&first), TaskStatus::Released);
    let second = scheduler.spawn(&thread, ()).unwrap();
    assert_eq!(first.id(), second.id(), "one identity per thread");
    assert_eq!(scheduler.status(&first), TaskStatus::Scheduled);
    assert_eq!(scheduler.task_of(&thread), Some(first.id()));
    assert!(
        scheduler.cancel(&first).unwrap(),
        "the first handle still reaches it"
    );
    assert!(!scheduler.cancel(&second).unwrap());
    assert!(matches!(
        scheduler.take_result::<()>(&second).unwrap(),
        Some(spindle::Outcome::Cancelled)
    ));
}

#[test]
fn the_error_handler_receives_the_scheduler_and_may_restart_the_task() {
    // A supervisor written in the handler alone: no handle on the scheduler kept by hand.
    let lua = mlua::Lua::new();
    let restarts = Rc::new(RefCell::new(Vec::new()));
    let seen = restarts.clone();
    let scheduler = Scheduler::builder()
        .on_error(move |scheduler, error| {
            let tries: i64 = scheduler.lua().globals().get("tries").unwrap();
            seen.borrow_mut().push((error.task, tries));
            if tries < 3 {
                let again: mlua::Function = scheduler.lua().globals().get("flaky").unwrap();
                scheduler.spawn(again, ()).unwrap();
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    lua.load(
        "tries = 0
         function flaky() tries += 1; error('try ' .. tries, 0) end",
    )
    .exec()
    .unwrap();
    let flaky: mlua::Function = lua.globals().get("flaky").unwrap();
    let first = scheduler.spawn(flaky, ()).unwrap().id();
    let restarts = restarts.borrow();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    assert_eq!(restarts[0], (Some(first), 1));
    assert_eq!(
        restarts.iter().map(|&(_, tries)| tries).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(scheduler.error_count(), 3);
}
