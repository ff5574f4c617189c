//! Owners and lifetimes: every task knows the task that started it and the script it belongs
//! to, a signal handler's error names the task that connected it, and the host ends a script
//! (its tasks, its timers and futures, its connections) in one call (`Scheduler::end_script`).

use std::cell::RefCell;
use std::rc::Rc;

use spindle::mlua::{Lua, Thread};
use spindle::{
    Error, Scheduler, ScriptEnd, SignalBehavior, TaskEnd, TaskError, TaskId, TaskStatus,
};

use crate::support::{harness, harness_with, install_gates, lines, rust_bytes, H};

/// `end_script_of(thread)`: ends the script of the task `thread` is (or of the running task,
/// for nil), and returns what it did as `cancelled running connections`, or the error.
/// `script_of(thread)` and `creator_of(thread)`: the ids as strings, or nil.
fn install_script_functions(lua: &Lua) {
    let task = |lua: &Lua, thread: Option<Thread>| -> Option<TaskId> {
        let scheduler = Scheduler::from_lua(lua)?;
        match thread {
            Some(thread) => scheduler.task_of(&thread),
            None => scheduler.current_task(),
        }
    };
    let end = lua
        .create_function(move |lua, thread: Option<Thread>| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            let id = task(lua, thread).expect("a task");
            let script = scheduler.script_of(id).unwrap();
            Ok(match scheduler.end_script(script) {
                Ok(end) => describe_end(end),
                Err(error) => format!("error: {error}"),
            })
        })
        .unwrap();
    let script_of = lua
        .create_function(move |lua, thread: Option<Thread>| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            Ok(task(lua, thread)
                .and_then(|id| scheduler.script_of(id))
                .map(|id| id.to_string()))
        })
        .unwrap();
    let creator_of = lua
        .create_function(move |lua, thread: Option<Thread>| {
            let scheduler = Scheduler::from_lua(lua).unwrap();
            Ok(task(lua, thread)
                .and_then(|id| scheduler.creator_of(id))
                .map(|id| id.to_string()))
        })
        .unwrap();
    let globals = lua.globals();
    globals.set("end_script_of", end).unwrap();
    globals.set("script_of", script_of).unwrap();
    globals.set("creator_of", creator_of).unwrap();
}

fn describe_end(end: ScriptEnd) -> String {
    format!(
        "cancelled {} running {} connections {}",
        end.cancelled, end.running, end.connections
    )
}

fn host() -> H {
    let h = harness();
    install_script_functions(&h.lua);
    h
}

/// What an end hook saw: `(task, how it ended)`, in order.
type Ends = Rc<RefCell<Vec<(TaskId, String)>>>;

/// A harness whose end hook records what it sees.
fn host_with_ends() -> (H, Ends) {
    let ends: Ends = Rc::default();
    let seen = ends.clone();
    let h = harness_with(move |builder| {
        builder.on_task_end(move |_, id, end| {
            let end = match end {
                TaskEnd::Cancelled => "cancelled".to_string(),
                TaskEnd::Finished => "finished".to_string(),
                TaskEnd::Failed(error) => format!("failed: {}", error.message),
                other => format!("{other:?}"),
            };
            seen.borrow_mut().push((id, end));
        })
    });
    install_script_functions(&h.lua);
    (h, ends)
}

fn task_of(h: &H, global: &str) -> TaskId {
    let thread: Thread = h.global(global);
    h.sched.task_of(&thread).expect("a task")
}

#[test]
fn a_task_knows_the_task_that_started_it_and_its_script() {
    let h = host();
    let main = h.spawn(
        r#"
        spawned = task.spawn(function()
            grandchild = task.delay(5, function() end)
            task.wait(5)
        end)
        deferred = task.defer(function() task.wait(5) end)
        delayed = task.delay(5, function() end)
        -- A coroutine resumed by hand is its resumer's: the task it becomes is started by it.
        local co = coroutine.create(function()
            adopted = coroutine.running()
            task.wait(5)
        end)
        coroutine.resume(co)
        task.wait(5)
        "#,
    );
    let main = main.id();
    assert_eq!(h.sched.creator_of(main), None, "the host started it");
    assert_eq!(
        h.sched.script_of(main),
        Some(main),
        "a root is its own script"
    );
    for child in ["spawned", "deferred", "delayed", "adopted"] {
        let id = task_of(&h, child);
        assert_eq!(h.sched.creator_of(id), Some(main), "{child}");
        assert_eq!(h.sched.script_of(id), Some(main), "{child}");
    }
    let grandchild = task_of(&h, "grandchild");
    assert_eq!(h.sched.creator_of(grandchild), Some(task_of(&h, "spawned")));
    assert_eq!(h.sched.script_of(grandchild), Some(main));
    // The host's own starts are roots, wherever they come from.
    let other = h.spawn("task.wait(5)").id();
    assert_eq!(h.sched.script_of(other), Some(other));
    assert_ne!(other, main);
}

#[test]
fn a_task_started_from_a_rust_function_by_the_host_api_is_a_script_of_its_own() {
    let h = host();
    let weak = Rc::downgrade(&h.sched);
    let start = h
        .lua
        .create_function(move |_, f: spindle::mlua::Function| {
            let scheduler = weak.upgrade().unwrap();
            Ok(scheduler.defer(f, ())?.id().to_string())
        })
        .unwrap();
    h.lua.globals().set("start", start).unwrap();
    let main = h.spawn("started = start(function() task.wait(5) end) task.wait(5)");
    let started: String = h.global("started");
    assert_ne!(started, main.id().to_string());
    assert_eq!(h.sched.task_count(), 2);
    assert_eq!(h.sched.end_script(&main).unwrap().cancelled, 1);
    assert_eq!(
        h.sched.task_count(),
        1,
        "the host's task is not the script's"
    );
}

#[test]
fn ending_a_script_cancels_its_tasks_in_every_state() {
    let (h, ends) = host_with_ends();
    let gates = install_gates(&h);
    let signal = h.sched.create_signal().unwrap();
    h.lua.globals().set("Changed", &signal).unwrap();
    let main = h.spawn(
        r#"
        task.spawn(function() task.wait(1) print("timer") end)
        task.delay(1, function() print("delayed") end)
        task.spawn(function() task.wait(math.huge) print("forever") end)
        task.spawn(function() Changed:Wait() print("signal") end)
        task.spawn(function() owned_wait("g") print("future") end)
        task.spawn(function() mlua_wait("g") print("mlua future") end)
        task.wait(1)
        print("main")
        "#,
    );
    let ended = h.sched.end_script(&main).unwrap();
    assert_eq!(
        (ended.cancelled, ended.running, ended.connections),
        (7, 0, 0)
    );
    assert_eq!(gates.dropped(), 1, "the Rust future was dropped at once");
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
    let cancelled = ends
        .borrow()
        .iter()
        .filter(|(_, end)| end == "cancelled")
        .count();
    assert_eq!(cancelled, 7, "{:?}", ends.borrow());
    assert_eq!(ends.borrow().len(), 7);
    signal.fire(()).unwrap();
    gates.open("g");
    h.step(2.0);
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), Vec::<String>::new());
    assert_eq!(h.sched.status(&main), TaskStatus::Done);
    assert!(matches!(
        h.sched.take_result::<()>(&main).unwrap(),
        Some(spindle::Outcome::Cancelled)
    ));
}

#[test]
fn ending_a_script_cancels_its_queued_deferrals() {
    let h = host();
    h.spawn(
        r#"
        task.spawn(function()
            task.defer(function() print("deferred of the ended script") end)
            task.defer(function() print("deferred of the ended script") end)
            print(end_script_of(nil))
            print("goes on until it yields")
            task.wait(0)
            print("never")
        end)
        print("main after")
        "#,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "cancelled 2 running 2 connections 0",
            "goes on until it yields",
            "main after",
        ])
    );
    h.step(1.0);
    assert_eq!(h.log().len(), 3);
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
}

#[test]
fn a_thread_let_go_with_a_plain_yield_is_not_the_scripts_any_more() {
    let h = host();
    let main = h.spawn(
        r#"
        loose = coroutine.create(function() coroutine.yield() print("resumed") end)
        task.spawn(loose)
        task.wait(5)
        "#,
    );
    assert_eq!(h.sched.end_script(&main).unwrap().cancelled, 1);
    // Whoever holds it may still run it (contract rule 11).
    h.exec_lua("coroutine.resume(loose)");
    assert_eq!(h.log(), lines(&["resumed"]));
}

trait ExecLua {
    fn exec_lua(&self, source: &str);
}

impl ExecLua for H {
    fn exec_lua(&self, source: &str) {
        self.lua.load(source).exec().unwrap();
    }
}

#[test]
fn ending_a_script_disconnects_its_connections_even_once_the_connecting_task_ended() {
    let h = host();
    for (name, behavior) in [
        ("Now", SignalBehavior::Immediate),
        ("Later", SignalBehavior::Deferred),
    ] {
        let signal = h.sched.create_signal_with(behavior).unwrap();
        h.lua.globals().set(name, signal).unwrap();
    }
    let main = h.spawn(
        r#"
        connections = {
            Now:Connect(function() print("now") end),
            Later:Connect(function() print("later") end),
            Now:Once(function() print("once") end),
        }
        -- A handler may also connect: that connection is the script's too.
        Later:Connect(function()
            if not nested then nested = Now:Connect(function() print("nested") end) end
        end)
        "#,
    );
    let fire = |name: &str| {
        let signal: spindle::mlua::Table = h.global(name);
        h.sched.signal_from(signal).unwrap().fire(()).unwrap();
    };
    fire("Now");
    fire("Later");
    assert_eq!(h.take_log(), lines(&["now", "once", "later"]));
    assert_eq!(h.sched.task_count(), 0, "the connecting task has ended");
    let ended = h.sched.end_script(&main).unwrap();
    assert_eq!(
        ended.connections, 4,
        "three still connected, and the nested one"
    );
    assert_eq!(ended.cancelled, 0);
    h.exec_lua(
        r#"
        Now:Fire() Later:Fire()
        for _, c in connections do print(c.Connected) end
        print(nested.Connected)
        "#,
    );
    assert_eq!(h.log(), lines(&["false", "false", "false", "false"]));
}

#[test]
fn handler_calls_a_deferred_signal_queued_for_an_ended_script_are_dropped() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Deferred)
        .unwrap();
    h.lua.globals().set("Later", &signal).unwrap();
    h.spawn(r#"Later:Once(function() print("lone once") end)"#);
    h.spawn(
        r#"
        Later:Connect(function() print("ended script") end)
        Later:Once(function() print("ended script once") end)
        ended = coroutine.running()
        task.wait(5)
        "#,
    );
    h.spawn(r#"Later:Connect(function() print("other script") end)"#);
    // The fire queues one task that calls the four handlers of three scripts, in order; one
    // script is ended before it runs (its `Once` was disconnected by the fire already).
    h.spawn(
        r#"
        Later:Fire()
        print(end_script_of(ended))
        "#,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "cancelled 1 running 0 connections 1",
            "lone once",
            "other script",
        ])
    );
}

#[test]
fn a_lone_deferred_handler_call_queued_for_an_ended_script_is_dropped() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Deferred)
        .unwrap();
    h.lua.globals().set("Later", &signal).unwrap();
    h.spawn(
        r#"
        Later:Once(function() print("never") end)
        task.spawn(function()
            Later:Fire()
            print(end_script_of(nil))
        end)
        "#,
    );
    // The queued call was a task of the script: cancelled with it. The `Once` was disconnected
    // by the fire; the main task and the child are running.
    assert_eq!(h.log(), lines(&["cancelled 1 running 2 connections 0"]));
    h.step(1.0);
    assert_eq!(h.log().len(), 1);
}

#[test]
fn a_child_that_a_handler_started_is_ended_with_the_connecting_script() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    h.lua.globals().set("Clicked", &signal).unwrap();
    let main = h.spawn(
        r#"
        Clicked:Connect(function()
            child = task.spawn(function()
                while true do task.wait(1) print("tick") end
            end)
        end)
        "#,
    );
    signal.fire(()).unwrap();
    let child = task_of(&h, "child");
    assert_eq!(h.sched.script_of(child), Some(main.id()));
    assert_ne!(
        h.sched.creator_of(child),
        Some(main.id()),
        "the handler's call started it"
    );
    h.step(1.0);
    assert_eq!(h.take_log(), lines(&["tick"]));
    let ended = h.sched.end_script(&main).unwrap();
    assert_eq!((ended.cancelled, ended.connections), (1, 1));
    h.step(1.0);
    assert!(h.log().is_empty());
    assert_eq!(h.sched.status(child), TaskStatus::Unknown);
}

#[test]
fn other_scripts_and_what_they_started_run_on() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    h.lua.globals().set("Clicked", &signal).unwrap();
    let script = |name: &str| {
        h.spawn(&format!(
            r#"
            Clicked:Connect(function() print("{name} handler") end)
            task.spawn(function() while true do task.wait(1) print("{name} child") end end)
            "#
        ))
    };
    let ended = script("a");
    let _other = script("b");
    assert_eq!(h.sched.end_script(&ended).unwrap().cancelled, 1);
    signal.fire(()).unwrap();
    h.step(1.0);
    assert_eq!(h.log(), lines(&["b handler", "b child"]));
}

#[test]
fn ending_a_script_with_nothing_left_does_nothing_and_bad_ids_are_refused() {
    let h = host();
    let main = h.spawn("child = task.spawn(function() task.wait(5) end) task.wait(5)");
    let child = task_of(&h, "child");
    match h.sched.end_script(child) {
        Err(Error::NotAScript { task, script }) => assert_eq!((task, script), (child, main.id())),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.sched.task_count(), 2, "a refused call ends nothing");
    assert_eq!(h.sched.end_script(&main).unwrap().cancelled, 2);
    assert_eq!(h.sched.end_script(&main).unwrap(), ScriptEnd::default());
    // An id of a task that ended (no longer held) names nothing to end.
    assert_eq!(h.sched.end_script(child).unwrap(), ScriptEnd::default());
    let other_lua = Lua::new();
    let other = Scheduler::new(&other_lua).unwrap();
    other.install_task_library().unwrap();
    let foreign = other
        .spawn(other_lua.load("task.wait(1)").into_function().unwrap(), ())
        .unwrap();
    assert!(matches!(
        h.sched.end_script(&foreign),
        Err(Error::ForeignTask(_))
    ));
    assert_eq!(other.task_count(), 1);
}

#[test]
fn a_task_that_ends_its_own_script_goes_on_until_it_yields_and_starts_nothing() {
    let (h, ends) = host_with_ends();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    h.lua.globals().set("Clicked", &signal).unwrap();
    let main = h.spawn(
        r#"
        task.spawn(function() task.wait(1) print("sibling") end)
        print(end_script_of(nil))
        print("still running")
        print(pcall(task.spawn, function() print("never") end))
        print(pcall(task.defer, function() print("never") end))
        print(pcall(function() return Clicked:Connect(print) end))
        task.wait(1)
        print("never")
        "#,
    );
    let log = h.log();
    assert_eq!(log[0], "cancelled 1 running 1 connections 0");
    assert_eq!(log[1], "still running");
    let script = main.id();
    let refused = format!("the script {script} was ended by the host: it starts no more tasks");
    assert_eq!(log[2], format!("false task.spawn: {refused}"));
    assert_eq!(log[3], format!("false task.defer: {refused}"));
    assert_eq!(
        log[4],
        format!(
            "false test:7: Signal:Connect: the script {script} was ended by the host: it connects no more handlers"
        )
    );
    assert_eq!(log.len(), 5);
    // It yielded in `task.wait`: cancelled then, and told to the end hook so.
    assert_eq!(h.sched.task_count(), 0);
    assert_eq!(
        ends.borrow().last().cloned(),
        Some((main.id(), "cancelled".to_string()))
    );
    h.step(2.0);
    signal.fire(()).unwrap();
    assert_eq!(h.log().len(), 5);
    // Once its tasks are gone, the script's id may be given again... it never is: a new
    // task is a new script.
    let next = h.spawn("task.wait(1) print('next')");
    assert_ne!(next.id(), main.id());
    h.step(1.0);
    assert_eq!(h.log().last().unwrap(), "next");
}

#[test]
fn a_task_that_ends_its_own_script_and_returns_finishes() {
    let (h, ends) = host_with_ends();
    let main = h.spawn("print(end_script_of(nil)) return 1");
    assert_eq!(h.log(), lines(&["cancelled 0 running 1 connections 0"]));
    assert_eq!(ends.borrow().clone(), [(main.id(), "finished".to_string())]);
    // The script may start tasks again once nothing of it runs: a new host task is a new
    // script anyway.
    assert_eq!(h.sched.end_script(&main).unwrap(), ScriptEnd::default());
}

#[test]
fn a_signal_handler_that_ends_its_own_script() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    h.lua.globals().set("Quit", &signal).unwrap();
    h.spawn(
        r#"
        task.spawn(function() while true do task.wait(1) print("child") end end)
        Quit:Connect(function()
            print(end_script_of(nil))
            task.wait(1)
            print("never")
        end)
        "#,
    );
    let other = h.spawn(
        r#"
        Quit:Connect(function() print("other handler") end)
        "#,
    );
    drop(other);
    signal.fire(()).unwrap();
    assert_eq!(
        h.take_log(),
        lines(&["cancelled 1 running 1 connections 1", "other handler"])
    );
    h.step(1.0);
    signal.fire(()).unwrap();
    assert_eq!(h.log(), lines(&["other handler"]));
    assert_eq!(h.sched.task_count(), 0);
}

#[test]
fn the_end_hook_may_end_the_script_of_a_task_that_ended() {
    let roots: Rc<RefCell<Vec<TaskId>>> = Rc::default();
    let known = roots.clone();
    let ended: Rc<RefCell<Vec<ScriptEnd>>> = Rc::default();
    let seen = ended.clone();
    let h = harness_with(move |builder| {
        // A script's first task ending ends the whole script, as when its `Script` goes.
        builder.on_task_end(move |scheduler, id, _| {
            if known.borrow().contains(&id) {
                seen.borrow_mut().push(scheduler.end_script(id).unwrap());
            }
        })
    });
    let main = h.sched.spawn(
        h.func(
            r#"
            task.spawn(function() while true do task.wait(1) print("child") end end)
            task.delay(1, print, "delayed")
            task.wait(2)
            "#,
        ),
        (),
    );
    let main = main.unwrap();
    roots.borrow_mut().push(main.id());
    h.step(1.5);
    assert_eq!(h.take_log(), lines(&["child", "delayed"]));
    h.step(1.0);
    // `main` finished at 2, before its child's timer of the same time (schedule order).
    assert_eq!(h.take_log(), Vec::<String>::new());
    assert_eq!(ended.borrow().len(), 1);
    assert_eq!(ended.borrow()[0].cancelled, 1);
    h.step(5.0);
    assert!(h.log().is_empty());
    assert_eq!(h.sched.task_count(), 0);
}

#[test]
fn a_handlers_error_names_the_connecting_task_and_its_script() {
    let h = host();
    let now = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    let later = h
        .sched
        .create_signal_with(SignalBehavior::Deferred)
        .unwrap();
    h.lua.globals().set("Now", &now).unwrap();
    h.lua.globals().set("Later", &later).unwrap();
    let main = h.spawn(
        r#"
        connector = task.spawn(function()
            Now:Connect(function() error("immediate", 0) end)
            Later:Connect(function() error("deferred", 0) end)
            task.wait(5)
        end)
        Now:Connect(function() task.wait(1) error("after a wait", 0) end)
        "#,
    );
    let connector = task_of(&h, "connector");
    let main = main.id();
    now.fire(()).unwrap();
    later.fire(()).unwrap();
    // A second handler on `Later` makes its fire queue one task that calls both.
    h.spawn("Later:Connect(function() error('second', 0) end)");
    later.fire(()).unwrap();
    h.step(1.0);
    let named: Vec<(String, Option<TaskId>, Option<TaskId>)> = h
        .errors
        .borrow()
        .iter()
        .map(|e: &TaskError| (e.message.clone(), e.creator, e.script))
        .collect();
    let second = named.iter().find(|(m, ..)| m == "second").unwrap().2;
    assert_ne!(second, Some(main), "the second handler's script is its own");
    assert_eq!(
        named,
        [
            ("immediate".to_string(), Some(connector), Some(main)),
            ("deferred".to_string(), Some(connector), Some(main)),
            ("deferred".to_string(), Some(connector), Some(main)),
            ("second".to_string(), second, second),
            ("after a wait".to_string(), Some(main), Some(main)),
        ]
    );
    // The task that failed is the handler call's own, not the connecting one.
    assert!(h.errors.borrow().iter().all(|e| e.task != Some(connector)));
}

#[test]
fn a_host_connection_is_no_scripts() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    h.lua.globals().set("Clicked", &signal).unwrap();
    let main = h.spawn("task.wait(5)");
    let handler = h.func("error('host handler', 0)");
    signal.connect(handler).unwrap();
    assert_eq!(h.sched.end_script(&main).unwrap().connections, 0);
    signal.fire(()).unwrap();
    let errors = h.errors.borrow();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].creator, None);
    assert_eq!(errors[0].script, errors[0].task, "a root, its own script");
}

#[test]
fn a_script_that_keeps_spawning_is_ended_whole() {
    let h = host();
    let main = h.spawn(
        r#"
        local function grow()
            while true do
                task.delay(0.1, grow)
                task.defer(function() task.wait(0.05) end)
                task.wait(0.1)
            end
        end
        grow()
        "#,
    );
    for _ in 0..6 {
        h.step(0.1);
    }
    let before = h.sched.task_count();
    assert!(before > 60, "{before}");
    let other = h.spawn("while true do task.wait(0.1) end");
    let ended = h.sched.end_script(&main).unwrap();
    assert_eq!(ended.cancelled, before);
    for _ in 0..5 {
        h.step(0.1);
    }
    assert_eq!(h.sched.task_count(), 1);
    assert_eq!(h.sched.script_of(&other), Some(other.id()));
}

#[test]
fn a_script_that_ends_itself_while_spawning_in_a_loop_starts_nothing() {
    let h = host();
    h.spawn(
        r#"
        print(end_script_of(nil))
        local refused = 0
        for i = 1, 1000 do
            if not pcall(task.spawn, function() print("never") end) then refused += 1 end
            if not pcall(task.delay, 0, function() print("never") end) then refused += 1 end
        end
        print(refused)
        coroutine.yield()
        "#,
    );
    assert_eq!(
        h.log(),
        lines(&["cancelled 0 running 1 connections 0", "2000"])
    );
    h.step(1.0);
    assert_eq!(h.log().len(), 2);
    assert_eq!(h.sched.task_count(), 0);
}

#[test]
fn ending_scripts_keeps_no_memory() {
    let h = host();
    let signal = h
        .sched
        .create_signal_with(SignalBehavior::Deferred)
        .unwrap();
    h.lua.globals().set("Changed", &signal).unwrap();
    let source = r#"
        for i = 1, 200 do
            task.spawn(function() task.wait(10) end)
            Changed:Connect(function() end)
        end
        task.delay(10, print)
        task.wait(10)
    "#;
    let round = || {
        let main = h.spawn(source);
        let ended = h.sched.end_script(&main).unwrap();
        assert_eq!((ended.cancelled, ended.connections), (202, 200));
        h.step(0.0);
        h.lua.gc_collect().unwrap();
        h.lua.gc_collect().unwrap();
    };
    for _ in 0..3 {
        round();
    }
    let (lua_before, rust_before) = (h.lua.used_memory(), rust_bytes(&h.lua));
    for _ in 0..20 {
        round();
    }
    let lua_grew = h.lua.used_memory() as isize - lua_before as isize;
    let rust_grew = rust_bytes(&h.lua) - rust_before;
    assert!(lua_grew < 16 * 1024, "Lua heap grew by {lua_grew} bytes");
    assert!(rust_grew < 16 * 1024, "Rust heap grew by {rust_grew} bytes");
    assert_eq!(h.sched.task_count(), 0);
}
