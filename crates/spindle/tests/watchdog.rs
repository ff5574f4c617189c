//! The watchdog: a task that runs too long without yielding is stopped (timeout) or suspended
//! and queued behind the others (time slicing), and nothing else is harmed.
//!
//! Budgets here are generous against the work the tests do (a runaway loop is the only thing
//! that reaches them), so the outcomes do not depend on how fast the machine is.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::{Lua, Value};
use spindle::{Scheduler, SchedulerBuilder, TaskError, TIMEOUT_MESSAGE};

struct Run {
    lua: Lua,
    scheduler: Scheduler,
    log: Rc<RefCell<Vec<String>>>,
    errors: Rc<RefCell<Vec<TaskError>>>,
}

fn run_with(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder) -> Run {
    let lua = Lua::new();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&errors);
    let scheduler = configure(Scheduler::builder())
        .on_error(move |error| seen.borrow_mut().push(error.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&log);
    let log_fn = lua
        .create_function(move |_, value: Value| {
            sink.borrow_mut().push(value.to_string()?);
            Ok(())
        })
        .unwrap();
    lua.globals().set("log", log_fn).unwrap();
    Run {
        lua,
        scheduler,
        log,
        errors,
    }
}

fn with_timeout(limit_ms: u64) -> Run {
    run_with(|builder| builder.timeout(Duration::from_millis(limit_ms)))
}

impl Run {
    fn script(&self, source: &str) {
        let main = self
            .lua
            .load(source)
            .set_name("=main")
            .into_function()
            .unwrap();
        self.scheduler.spawn(main, ()).unwrap();
        self.scheduler.run_blocking().unwrap();
    }

    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn messages(&self) -> Vec<String> {
        self.errors
            .borrow()
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }
}

#[test]
fn a_runaway_task_is_stopped_and_the_others_go_on() {
    let run = with_timeout(100);
    run.script(
        r#"
        task.spawn(function()
            log("looping")
            local n = 0 while true do n += 1 end
        end)
        task.spawn(function()
            for i = 1, 3 do
                task.wait()
                log("tick " .. i)
            end
        end)
        log("main done")
        "#,
    );
    assert_eq!(
        run.log(),
        ["looping", "main done", "tick 1", "tick 2", "tick 3"]
    );
    assert_eq!(run.messages(), [TIMEOUT_MESSAGE]);
    let error = &run.errors.borrow()[0];
    assert!(
        error.traceback.contains("main:4"),
        "the traceback names the looping line: {:?}",
        error.traceback
    );
}

#[test]
fn pcall_inside_the_task_cannot_catch_the_timeout() {
    let run = with_timeout(50);
    run.script(
        r#"
        local ok, err = pcall(function() while true do end end)
        log("caught: " .. tostring(err))
        "#,
    );
    assert!(run.log().is_empty(), "{:?}", run.log());
    assert_eq!(run.messages(), [TIMEOUT_MESSAGE]);
}

#[test]
fn a_loop_that_cannot_yield_is_stopped_by_an_error_that_pcall_cannot_keep_down() {
    // A comparator runs behind a C-call boundary, where the thread cannot yield: the watchdog
    // raises its error there, and again at every check, until the task ends.
    let run = with_timeout(50);
    run.script(
        r#"
        local caught = 0
        table.sort({3, 2, 1}, function(a, b)
            while true do
                pcall(function() while true do end end)
                caught += 1
            end
        end)
        log("sorted")
        "#,
    );
    assert!(run.log().is_empty(), "{:?}", run.log());
    let messages = run.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains(TIMEOUT_MESSAGE), "{messages:?}");
}

#[test]
fn a_coroutine_resumed_by_hand_cannot_hide_the_loop() {
    let run = with_timeout(50);
    run.script(
        r#"
        local co = coroutine.create(function() while true do end end)
        local ok, err = coroutine.resume(co)
        log("resume returned " .. tostring(ok))
        while true do end
        "#,
    );
    // The error is raised inside the coroutine, where the task's thread cannot be yielded; back
    // in the task, the resumption is still over budget and is stopped at once.
    assert!(run.log().is_empty(), "{:?}", run.log());
    assert_eq!(run.messages(), [TIMEOUT_MESSAGE]);
}

#[test]
fn the_time_of_a_spawned_task_is_not_counted_against_its_spawner() {
    // Each spawned task runs for 40% of the budget; together they run 120% of it, but the
    // spawner itself runs for almost none.
    let run = with_timeout(250);
    run.script(
        r#"
        local function busy(seconds)
            local start = os.clock()
            while os.clock() - start < seconds do end
        end
        for i = 1, 3 do
            task.spawn(busy, 0.1)
        end
        log("spawner survived")
        "#,
    );
    assert_eq!(run.log(), ["spawner survived"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn a_task_that_yields_in_time_is_never_stopped() {
    let run = with_timeout(200);
    run.script(
        r#"
        local total = 0
        for round = 1, 5 do
            for i = 1, 10000 do total += i end
            task.wait()
        end
        log(total)
        "#,
    );
    assert_eq!(run.log(), ["250025000"]);
    assert!(run.messages().is_empty());
}

#[test]
fn a_stopped_task_is_dead_and_cannot_be_resumed() {
    let run = with_timeout(50);
    run.script(
        r#"
        local looper = task.spawn(function() while true do end end)
        log(coroutine.status(looper))
        log(tostring(coroutine.resume(looper)))
        "#,
    );
    assert_eq!(run.log(), ["dead", "false"]);
    assert_eq!(run.messages(), [TIMEOUT_MESSAGE]);
}

#[test]
fn the_host_reads_the_timeout_as_the_task_outcome() {
    let run = with_timeout(50);
    let looper = run
        .lua
        .load("while true do end")
        .set_name("=looper")
        .into_function()
        .unwrap();
    let task = run.scheduler.spawn(looper, ()).unwrap();
    run.scheduler.run_blocking().unwrap();
    let outcome = run
        .scheduler
        .take_result::<()>(&task)
        .unwrap()
        .expect("the task ended");
    let error = outcome.into_result().unwrap_err();
    assert_eq!(error.message, TIMEOUT_MESSAGE);
}

// --- Time slicing ------------------------------------------------------------------------------

fn sliced() -> Run {
    // The timeout only turns a broken slicer into a failure instead of a hang.
    run_with(|builder| {
        builder
            .time_slice(Duration::from_millis(5))
            .timeout(Duration::from_secs(5))
    })
}

#[test]
fn a_busy_loop_is_sliced_so_that_the_task_it_waits_for_can_run() {
    let run = sliced();
    run.script(
        r#"
        local done = false
        local spins = 0
        task.spawn(function()
            while not done do spins += 1 end
            log("saw done")
        end)
        task.defer(function()
            done = true
            log("set done")
        end)
        "#,
    );
    assert_eq!(run.log(), ["set done", "saw done"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn a_sliced_task_goes_on_where_it_stopped_with_its_locals() {
    let run = sliced();
    run.script(
        r#"
        local ticks = 0
        task.spawn(function()
            while ticks < 3 do task.wait() ticks += 1 end
        end)
        task.spawn(function()
            local n = 0
            while ticks < 3 do n += 1 end
            log("counted " .. tostring(n > 0) .. " until " .. ticks)
        end)
        "#,
    );
    assert_eq!(run.log(), ["counted true until 3"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn a_sliced_task_resumed_by_hand_goes_on_and_its_continuation_is_dropped() {
    let run = sliced();
    run.script(
        r##"
        local release = false
        local looper = task.spawn(function()
            while not release do end
            log("looper got " .. select("#", coroutine.yield()) .. " values")
            log("looper ends")
        end)
        log(coroutine.status(looper))
        release = true
        -- Values passed to a sliced task are dropped: it goes on inside its loop.
        log(tostring(coroutine.resume(looper, "ignored")))
        log(coroutine.status(looper))
        task.wait()
        task.wait()
        log("scheduler left it alone")
        coroutine.resume(looper, 1, 2)
        "##,
    );
    assert_eq!(
        run.log(),
        [
            "suspended",
            "true",
            "suspended",
            "scheduler left it alone",
            "looper got 2 values",
            "looper ends",
        ]
    );
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn cancelling_a_sliced_task_ends_it_and_the_run() {
    let run = sliced();
    run.script(
        r#"
        local looper = task.spawn(function() while true do end end)
        task.cancel(looper)
        log(coroutine.status(looper))
        "#,
    );
    assert_eq!(run.log(), ["dead"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

// --- Memory limit --------------------------------------------------------------------------

#[test]
fn a_task_that_runs_out_of_memory_ends_and_the_others_go_on() {
    let run = with_timeout(5_000);
    let floor = run.lua.used_memory();
    run.lua.set_memory_limit(floor + 8 * 1024 * 1024).unwrap();
    run.script(
        r#"
        task.spawn(function()
            local hog = {}
            while true do table.insert(hog, string.rep("x", 1024) .. #hog) end
        end)
        task.spawn(function()
            for i = 1, 3 do task.wait() log("tick " .. i) end
        end)
        log("main done")
        "#,
    );
    assert_eq!(run.log(), ["main done", "tick 1", "tick 2", "tick 3"]);
    let messages = run.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("not enough memory"), "{messages:?}");
    run.lua.gc_collect().unwrap();
    run.lua.gc_collect().unwrap();
    let left = run.lua.used_memory();
    assert!(
        left < floor + 1024 * 1024,
        "the hog's memory is given back: {floor} bytes before, {left} after"
    );
}

#[test]
fn running_out_of_memory_while_spawning_fails_the_spawner_only() {
    let run = with_timeout(5_000);
    run.lua
        .set_memory_limit(run.lua.used_memory() + 4 * 1024 * 1024)
        .unwrap();
    run.script(
        r#"
        spawned, finished = 0, 0
        task.spawn(function()
            while true do
                task.spawn(function() task.wait() finished += 1 end)
                spawned += 1
            end
        end)
        log("main done")
        "#,
    );
    run.lua.set_memory_limit(0).unwrap();
    let (spawned, finished): (u32, u32) = run.lua.load("return spawned, finished").eval().unwrap();
    assert!(spawned > 100, "{spawned}");
    assert_eq!(
        finished, spawned,
        "every task that was spawned ran to its end"
    );
    assert_eq!(run.log(), ["main done"]);
    let messages = run.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("not enough memory"), "{messages:?}");
}

#[test]
fn a_sliced_task_keeps_the_values_only_its_registers_hold_across_a_collection() {
    let run = sliced();
    run.script(
        r#"
        local done = false
        task.spawn(function()
            local t = { "alive", string.rep("x", 100) .. "y" }
            local spins = 0
            while not done do spins += 1 end
            log(t[1] .. " " .. #t[2])
        end)
        task.defer(function()
            for i = 1, 20 do local garbage = { i } end
            collectgarbage("collect")
            done = true
        end)
        "#,
    );
    assert_eq!(run.log(), ["alive 101"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}
