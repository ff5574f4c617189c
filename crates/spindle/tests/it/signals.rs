//! Signals seen from the host: made and fired from Rust with Rust values, handed to scripts,
//! and fired by a frame's phases. The Lua-side behaviour (Connect, Once, Wait, Fire,
//! DisconnectAll, both behaviours) is pinned by `scripts/signal_*.luau`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::{Lua, Table};
use spindle::{Clock, Scheduler, SignalBehavior, VirtualClock};

mod runners;

fn scheduler(lua: &Lua, behavior: SignalBehavior) -> (Scheduler, Rc<RefCell<Vec<String>>>) {
    let errors: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = Rc::clone(&errors);
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .signal_behavior(behavior)
        .phases(["Heartbeat"])
        .on_error(move |_, e| seen.borrow_mut().push(e.message.clone()))
        .build(lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    (scheduler, errors)
}

fn run(lua: &Lua, scheduler: &Scheduler, source: &str) -> spindle::Task {
    scheduler
        .spawn(lua.load(source).into_function().unwrap(), ())
        .unwrap()
}

#[test]
fn the_host_fires_a_signal_with_rust_values() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    let signal = scheduler
        .create_signal_with(SignalBehavior::Immediate)
        .unwrap();
    assert_eq!(signal.behavior(), SignalBehavior::Immediate);
    lua.globals().set("Hit", &signal).unwrap();
    run(
        &lua,
        &scheduler,
        "got = {} Hit:Connect(function(...) table.insert(got, table.pack(...)) end)",
    );
    signal.fire((1, "two", true)).unwrap();
    let got: Table = lua.load("return got[1]").eval().unwrap();
    assert_eq!(got.get::<i64>(1).unwrap(), 1);
    assert_eq!(got.get::<String>(2).unwrap(), "two");
    assert!(got.get::<bool>(3).unwrap());
    assert_eq!(got.get::<i64>("n").unwrap(), 3);
}

#[test]
fn a_host_fire_outside_any_task_is_a_resumption_point() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    let signal = scheduler.create_signal().unwrap();
    assert_eq!(signal.behavior(), SignalBehavior::Deferred);
    lua.globals().set("Hit", &signal).unwrap();
    run(
        &lua,
        &scheduler,
        "count = 0 Hit:Connect(function() count += 1 end)",
    );
    signal.fire(()).unwrap();
    assert_eq!(lua.globals().get::<i64>("count").unwrap(), 1);
    assert!(!scheduler.has_work());
}

#[test]
fn a_signal_made_by_a_script_can_be_fired_by_the_host() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    let task = run(
        &lua,
        &scheduler,
        "local s = Signal.new('Immediate') s:Connect(function(n) total = n end) return s",
    );
    let object: Table = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    let signal = scheduler.signal_from(object).unwrap();
    signal.fire(42).unwrap();
    assert_eq!(lua.globals().get::<i64>("total").unwrap(), 42);

    let error = scheduler
        .signal_from(lua.create_table().unwrap())
        .unwrap_err();
    assert!(
        error.to_string().contains("Scheduler::signal_from"),
        "{error}"
    );
}

#[test]
fn a_task_waiting_on_a_signal_keeps_no_run_alive_until_the_host_fires() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    let signal = scheduler.create_signal().unwrap();
    lua.globals().set("Ready", &signal).unwrap();
    let task = run(&lua, &scheduler, "local a, b = Ready:Wait() return a + b");
    scheduler.run_blocking().unwrap();
    assert!(scheduler.take_result::<i64>(&task).unwrap().is_none());
    signal.fire((40, 2)).unwrap();
    let sum: i64 = scheduler
        .take_result(&task)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(sum, 42);
}

#[test]
fn signal_wait_outside_a_task_is_an_error_that_names_it() {
    let lua = Lua::new();
    let (_scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    let error = lua.load("Signal.new():Wait()").exec().unwrap_err();
    assert!(error.to_string().contains("Signal:Wait"), "{error}");
}

#[test]
fn disconnect_during_a_deferred_fire_drops_the_pending_call() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Deferred);
    lua.globals()
        .set("Heartbeat", scheduler.phase("Heartbeat").unwrap())
        .unwrap();
    run(
        &lua,
        &scheduler,
        r#"
        calls = {}
        local second
        Heartbeat:Connect(function()
            table.insert(calls, "first")
            second:Disconnect()
        end)
        second = Heartbeat:Connect(function() table.insert(calls, "second") end)
        "#,
    );
    let report = scheduler.frame(Duration::from_millis(16)).unwrap();
    let calls: Vec<String> = lua.globals().get("calls").unwrap();
    assert_eq!(calls, ["first"]);
    // One deferred task per fire calls the handlers; the dropped one was skipped in it.
    assert_eq!(report.deferred, 1);
    scheduler.frame(Duration::from_millis(16)).unwrap();
    let calls: Vec<String> = lua.globals().get("calls").unwrap();
    assert_eq!(calls, ["first", "first"]);
}

#[test]
fn an_error_in_a_handler_goes_to_the_error_handler_and_the_others_run() {
    let lua = Lua::new();
    let (scheduler, errors) = scheduler(&lua, SignalBehavior::Deferred);
    lua.globals()
        .set("Heartbeat", scheduler.phase("Heartbeat").unwrap())
        .unwrap();
    run(
        &lua,
        &scheduler,
        r#"
        ran = 0
        Heartbeat:Connect(function() error("broken handler") end)
        Heartbeat:Connect(function() ran += 1 end)
        "#,
    );
    let report = scheduler.frame(Duration::from_millis(16)).unwrap();
    assert_eq!(report.errors, 1);
    assert_eq!(lua.globals().get::<i64>("ran").unwrap(), 1);
    assert_eq!(errors.borrow().len(), 1);
    assert!(errors.borrow()[0].contains("broken handler"));
}

#[test]
fn firing_a_signal_with_no_handlers_allocates_nothing() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Immediate);
    lua.globals()
        .set("Quiet", scheduler.create_signal().unwrap())
        .unwrap();
    let fire_many = lua
        .load("return function() for i = 1, 10000 do Quiet:Fire(i, 'x') end end")
        .eval::<spindle::mlua::Function>()
        .unwrap();
    fire_many.call::<()>(()).unwrap();
    let before = lua.used_memory();
    fire_many.call::<()>(()).unwrap();
    assert_eq!(lua.used_memory(), before);
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn disconnect_all_from_the_host_drops_every_handler() {
    let lua = Lua::new();
    let (scheduler, _) = scheduler(&lua, SignalBehavior::Immediate);
    let signal = scheduler.create_signal().unwrap();
    lua.globals().set("S", &signal).unwrap();
    let connection = signal
        .connect(
            lua.create_function(|lua, n: i64| lua.globals().set("last", n))
                .unwrap(),
        )
        .unwrap();
    signal.fire(1).unwrap();
    signal.disconnect_all().unwrap();
    signal.fire(2).unwrap();
    assert_eq!(lua.globals().get::<i64>("last").unwrap(), 1);
    assert!(!connection.get::<bool>("Connected").unwrap());
}

#[test]
fn a_handlers_error_names_the_handler_and_none_of_the_signal_librarys_own_levels() {
    let lua = spindle::mlua::Lua::new();
    let errors = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = errors.clone();
    let scheduler = spindle::Scheduler::builder()
        .on_error(move |_, error| seen.borrow_mut().push(error.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    lua.load(
        r#"
        local s = Signal.new()
        s:Connect(function(x)
            error("handler failed with " .. tostring(x))
        end)
        s:Fire(1)
        "#,
    )
    .set_name("=handlers")
    .exec()
    .unwrap();
    // Deferred by default: the handler runs at the next resumption point.
    scheduler.cycle().unwrap();
    let errors = errors.borrow();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "handlers:4: handler failed with 1");
    assert_eq!(
        errors[0].traceback,
        "stack traceback:\n\t[C]: in function 'error'\n\thandlers:4: in function <handlers:3>"
    );
}
