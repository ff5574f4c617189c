//! Hostile scripts and a hostile host handler: each gets a clear error, and nothing else is
//! harmed: the other tasks go on, the scheduler stays usable, and the run ends.
//!
//! Everything runs under a virtual clock, stepped by `cycle()` or run with `run_blocking()`.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use support::{Host, HostBuilder};

fn run() -> Host {
    hostile(Host::builder())
}

/// A host whose log shows each reported error in order with what scripts print.
fn hostile(builder: HostBuilder) -> Host {
    builder.errors_in_log().chunk_name("hostile").build()
}

#[test]
fn a_stack_overflow_fails_only_its_task_with_a_short_traceback() {
    let run = run();
    run.spawn(
        r#"
        task.spawn(function()
            local function f(n) return f(n + 1) + 1 end
            f(1)
        end)
        task.defer(print, "deferred still runs")
        print("spawner goes on", task.wait(1))
        "#,
    );
    run.scheduler.run_blocking().unwrap();
    assert_eq!(
        run.log(),
        [
            "error: hostile:3: stack overflow",
            "deferred still runs",
            "spawner goes on 1"
        ]
    );
    // Luau lists all ~20,000 levels; the report keeps the first and last ones.
    let errors = run.errors.borrow();
    let traceback = &errors[0].traceback;
    assert!(traceback.lines().count() <= 23, "{traceback}");
    assert!(traceback.contains("(skipping "), "{traceback}");
    assert_eq!(run.scheduler.task_count(), 0);
}

#[test]
fn recursion_through_c_functions_stops_at_luaus_c_stack_limit_and_fails_only_its_task() {
    // pcall and string.gsub callbacks nest C calls: Luau stops at 200 with "C stack overflow".
    let run = run();
    run.spawn(
        r#"
        task.spawn(function()
            local function g() pcall(g) end
            g()
            print("pcall recursion returned")
        end)
        task.spawn(function()
            local function h()
                return (string.gsub("x", "x", function() return h() end))
            end
            h()
        end)
        print("spawner goes on")
        "#,
    );
    run.scheduler.run_blocking().unwrap();
    let log = run.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "pcall recursion returned");
    assert!(
        log[1].starts_with("error: ") && log[1].contains("stack overflow"),
        "{log:?}"
    );
    assert_eq!(log[2], "spawner goes on");
}

#[test]
fn error_values_that_do_not_turn_into_strings_are_reported_and_harm_nothing() {
    let run = run();
    run.spawn(
        r#"
        local exploding = newproxy(true)
        getmetatable(exploding).__tostring = function() error("__tostring exploded", 0) end
        task.spawn(function() error(exploding) end)
        task.spawn(function()
            error(setmetatable({}, { __tostring = function() error("table __tostring exploded", 0) end }))
        end)
        task.spawn(function() error(setmetatable({}, { __tostring = function() return {} end })) end)
        task.defer(function() error(newproxy(false)) end)
        task.delay(0, function() error(coroutine.running()) end)
        print("spawner goes on", task.wait(1))
        "#,
    );
    run.scheduler.run_blocking().unwrap();
    let log = run.log();
    assert_eq!(log.len(), 6, "{log:?}");
    // The reported message is what converting the value gave: the __tostring failure, or the
    // value's type and address.
    assert_eq!(log[0], "error: __tostring exploded");
    assert_eq!(log[1], "error: table __tostring exploded");
    assert!(
        log[2].contains("'__tostring' must return a string"),
        "{log:?}"
    );
    assert!(log[3].starts_with("error: userdata: "), "{log:?}");
    assert!(log[4].starts_with("error: thread: "), "{log:?}");
    assert_eq!(log[5], "spawner goes on 1");
    assert_eq!(run.scheduler.error_count(), 5);
}

#[test]
fn an_error_handler_that_panics_stops_nothing() {
    // Without the scheduler catching it, the panic unwound out of the cycle and lost the rest
    // of the timer batch: those tasks never ran, and stayed counted, so the run never ended.
    let run =
        hostile(Host::builder().on_error(|error| panic!("the handler broke on {}", error.message)));
    run.spawn(
        r#"
        task.delay(1, function() error("first", 0) end)
        task.delay(1, print, "same batch")
        task.spawn(function() task.wait(1) print("waiter") end)
        task.delay(2, function()
            task.spawn(function() error("nested", 0) end)
            print("spawner goes on")
        end)
        "#,
    );
    for _ in 0..2 {
        run.advance(Duration::from_secs(1));
        let cycle = catch_unwind(AssertUnwindSafe(|| run.scheduler.cycle()));
        assert!(matches!(cycle, Ok(Ok(_))), "the cycle returns normally");
    }
    assert_eq!(
        run.log(),
        [
            "error: first",
            "same batch",
            "waiter",
            "error: nested",
            "spawner goes on"
        ]
    );
    assert!(!run.scheduler.has_work());
    assert_eq!(run.scheduler.task_count(), 0);
}

#[test]
fn a_panicking_rust_function_in_one_task_does_not_strand_the_others() {
    let run = run();
    let boom = run
        .lua
        .create_function(|_, ()| -> spindle::mlua::Result<()> { panic!("boom") })
        .unwrap();
    run.lua.globals().set("boom", boom).unwrap();
    run.spawn(
        r#"
        task.delay(1, boom)
        task.delay(1, print, "same batch")
        "#,
    );
    run.advance(Duration::from_secs(1));
    let caught = catch_unwind(AssertUnwindSafe(|| run.scheduler.cycle()));
    assert!(caught.is_err(), "the panic reaches the host");
    // The host caught it; the task that was due with the panicking one must still run, and
    // the run must end (it used to be lost, and `run_blocking` slept for ever).
    for _ in 0..3 {
        run.advance(Duration::from_secs(1));
        run.scheduler.cycle().unwrap();
    }
    assert_eq!(run.log(), ["same batch"]);
    assert!(!run.scheduler.has_work());
}

#[test]
fn rule09_a_task_that_cannot_start_for_want_of_c_stack_is_reported_at_the_spawning_line() {
    on_a_deep_stack(a_task_that_cannot_start_for_want_of_c_stack);
}

/// Runs `body` on a thread with a 32 MB stack: 200 nested resumptions take up to 640 KB of
/// stack in a release build and 4 MB in a debug one (measured with `ulimit -s` under the CLI),
/// more than a test thread's 2 MB.
fn on_a_deep_stack(body: fn()) {
    let thread = std::thread::Builder::new().stack_size(32 << 20);
    thread.spawn(body).unwrap().join().unwrap();
}

fn a_task_that_cannot_start_for_want_of_c_stack() {
    // Each `task.spawn` resumes inside the one before: about 200 deep, Luau refuses to start
    // the next thread ("C stack overflow") before it runs a line of its own, so its own
    // traceback is empty. The report names the line that spawned it.
    let run = run();
    run.spawn(
        r#"
        local depth = 0
        local function nest()
            depth += 1
            task.spawn(nest)
        end
        task.spawn(nest)
        print("spawner goes on", depth)
        "#,
    );
    run.scheduler.run_blocking().unwrap();
    assert_eq!(
        run.log(),
        ["error: hostile:5: C stack overflow", "spawner goes on 199"]
    );
    let errors = run.errors.borrow();
    assert!(
        errors[0].traceback.contains("hostile:5:"),
        "the spawner's traceback: {}",
        errors[0].traceback
    );
}

#[test]
fn rule08_an_immediate_handler_that_fires_its_own_signal_is_stopped_once_at_the_firing_line() {
    on_a_deep_stack(an_immediate_handler_that_fires_its_own_signal);
}

fn an_immediate_handler_that_fires_its_own_signal() {
    let run = run();
    run.spawn(
        r#"
        local echo = Signal.new("Immediate")
        local calls = 0
        echo:Connect(function()
            calls += 1
            echo:Fire()
        end)
        echo:Fire()
        print("fired", calls)
        echo:Fire()
        print("fired again", calls)
        "#,
    );
    run.scheduler.run_blocking().unwrap();
    assert_eq!(
        run.log(),
        [
            "error: hostile:6: C stack overflow",
            "fired 199",
            "error: hostile:6: C stack overflow",
            "fired again 398",
        ]
    );
}

#[test]
fn waiting_on_the_main_thread_raises_a_plain_string_naming_the_line_and_function() {
    let run = run();
    let error = run
        .lua
        .load("local x = 1\ntask.wait()")
        .set_name("=main chunk")
        .exec()
        .unwrap_err();
    assert!(
        matches!(&error, spindle::mlua::Error::RuntimeError(message)
            if message.lines().next() == Some("main chunk:2: task.wait: attempt to yield across metamethod/C-call boundary")),
        "{error:?}"
    );
    let caught: String = run
        .lua
        .load("local ok, err = pcall(function() Signal.new():Wait() end) return typeof(err) .. ' ' .. err")
        .set_name("=main chunk")
        .eval()
        .unwrap();
    assert_eq!(
        caught,
        "string main chunk:1: Signal:Wait: attempt to yield across metamethod/C-call boundary"
    );
}

#[test]
fn task_functions_kept_after_the_scheduler_is_dropped_raise_plain_strings_naming_the_function() {
    let run = run();
    run.exec("kept = { task = task, signal = Signal.new('Immediate') }");
    run.exec("kept.signal:Connect(print)");
    let forever = run
        .scheduler
        .create_async_function(|_, ()| std::future::pending::<spindle::mlua::Result<()>>())
        .unwrap();
    run.lua.globals().set("forever", forever).unwrap();
    let support::Host { lua, scheduler, .. } = run;
    drop(scheduler);
    let results: String = lua
        .load(
            r#"
            local out = {}
            local function try(f, ...)
                local ok, err = pcall(f, ...)
                table.insert(out, tostring(ok) .. " " .. typeof(err) .. " " .. tostring(err))
            end
            try(function() kept.task.spawn(print) end)
            try(function() kept.task.defer(print) end)
            try(function() kept.task.delay(1, print) end)
            try(function() kept.task.wait() end)
            try(function() kept.signal:Fire() end)
            local function in_coroutine(f)
                return function()
                    local ok, err = coroutine.resume(coroutine.create(f))
                    error(err, 0)
                end
            end
            try(in_coroutine(function() kept.task.wait() end))
            try(in_coroutine(function() kept.signal:Wait() end))
            try(in_coroutine(function() forever() end))
            return table.concat(out, "\n")
            "#,
        )
        .set_name("=kept")
        .eval()
        .unwrap();
    let dropped = "the task scheduler of this Lua state was dropped";
    assert_eq!(
        results,
        [
            format!("false string kept:7: task.spawn: {dropped}"),
            format!("false string kept:8: task.defer: {dropped}"),
            format!("false string kept:9: task.delay: {dropped}"),
            format!("false string kept:10: task.wait: {dropped}"),
            format!("false string kept:11: Signal:Fire: {dropped}"),
            format!("false string kept:18: task.wait: {dropped}"),
            format!("false string kept:19: Signal:Wait: {dropped}"),
            format!("false string kept:20: async function: {dropped}"),
        ]
        .join("\n")
    );
}
