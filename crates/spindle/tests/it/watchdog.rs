//! The watchdog: a task that runs too long without yielding is stopped (timeout) or suspended
//! and queued behind the others (time slicing), and nothing else is harmed.
//!
//! Budgets here are generous against the work the tests do (a runaway loop is the only thing
//! that reaches them), so the outcomes do not depend on how fast the machine is. The watchdog
//! measures real time, so these hosts run on the real clock.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::support::Host;
use spindle::mlua::Lua;
use spindle::{Scheduler, SchedulerBuilder, TIMEOUT_MESSAGE};

fn run_with(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static) -> Host {
    Host::builder().real_time().scheduler(configure).build()
}

fn with_timeout(limit_ms: u64) -> Host {
    run_with(move |builder| builder.timeout(Duration::from_millis(limit_ms)))
}

/// A slice so short that every second check of a resumption finds it over: the watchdog then
/// stops a task at whatever interrupt the check lands on.
fn tiny_slices() -> Host {
    run_with(|builder| {
        builder
            .time_slice(Duration::from_nanos(1))
            .timeout(Duration::from_secs(20))
    })
}

/// Four tasks that each run `step` 400 times (a statement that sets `got`, which adds to a
/// sum) after a busy loop one turn longer each time, so that tiny slices end at every point of
/// the step. Each task logs `task <t> got <sum>`.
fn four_tasks_running(step: &str) -> String {
    format!(
        r#"
        for t = 1, 4 do
            task.spawn(function()
                local sum, got = 0, 0
                for k = 1, 400 do
                    for j = 1, k do end
                    {step}
                    sum += got
                end
                log("task " .. t .. " got " .. sum)
            end)
        end
        "#
    )
}

/// Every task of [`four_tasks_running`] finished, with `got` 1 each time, and none failed.
fn assert_four_tasks_got_400(run: &Host) {
    let mut log = run.log();
    log.sort();
    let expected: Vec<_> = (1..=4).map(|t| format!("task {t} got 400")).collect();
    assert_eq!(log, expected);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
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

fn sliced() -> Host {
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

// --- Found by review: a slice or a timeout at the worst moment -------------------------------

struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn task_wait_returns_even_when_a_slice_ends_between_its_halves() {
    // `task.wait` registers its wake-up (begin_wait) and then yields: a slice that ends at the
    // `yield` call must not turn the wait into a plain yield that nothing ever resumes.
    let run = tiny_slices();
    run.script(&four_tasks_running("task.wait() got = 1"));
    assert_four_tasks_got_400(&run);
}

#[test]
fn a_spindle_async_call_returns_even_when_a_slice_ends_before_it_yields() {
    // The owned future is filed (start) before `make_async` yields: a slice there must not drop
    // the task with its future.
    let run = tiny_slices();
    let tick = run
        .scheduler
        .create_async_function(|_, n: i64| async move {
            PendingOnce(false).await;
            Ok(n)
        })
        .unwrap();
    run.lua.globals().set("tick", tick).unwrap();
    run.script(&four_tasks_running("got = tick(1)"));
    assert_four_tasks_got_400(&run);
}

#[test]
fn a_task_that_schedules_its_own_resumption_gets_it_even_when_a_slice_ends_before_it_yields() {
    // The Roblox idiom `task.delay(0, coroutine.running(), v); coroutine.yield()` (or with
    // `task.defer`): a slice that ended at the `yield` call would turn the requested resumption
    // into a bare continuation, losing the values and the plain yield that follows.
    let run = tiny_slices();
    run.script(&four_tasks_running(
        "task.delay(0, coroutine.running(), 1) got = coroutine.yield()",
    ));
    assert_four_tasks_got_400(&run);
}

#[test]
fn an_mlua_async_call_sliced_before_it_yields_pending_is_still_woken() {
    // mlua polls the future inside the thread, with the waker of the resumption that runs it. A
    // slice that stopped the thread between that poll and its `yield(pending)` would file the
    // task as blocked under the next resumption's token, so the future's wake-up would be
    // dropped as stale and the run would wait for it for ever.
    let run = tiny_slices();
    let tick = run
        .lua
        .create_async_function(|_, n: i64| async move {
            PendingOnce(false).await;
            Ok(n)
        })
        .unwrap();
    run.lua.globals().set("tick", tick).unwrap();
    let main = run
        .lua
        .load(four_tasks_running("got = tick(1)"))
        .into_function()
        .unwrap();
    run.scheduler.spawn(main, ()).unwrap();
    // Driven by hand, so that a lost wake-up shows as work that never moves instead of a hang.
    let mut idle_cycles = 0;
    while run.scheduler.has_work() && idle_cycles < 1000 {
        let report = run.scheduler.cycle().unwrap();
        if report.is_idle() {
            idle_cycles += 1;
        }
    }
    assert!(
        !run.scheduler.has_work(),
        "the run is stuck on a lost wake-up ({} tasks left; log {:?})",
        run.scheduler.task_count(),
        run.log()
    );
    assert_four_tasks_got_400(&run);
}

#[test]
fn a_timed_out_task_is_dead_when_the_error_handler_hears_of_it() {
    // A task that ends with an error is dead when the handler runs, and so is one stopped by
    // the watchdog: a handler that runs Lua (a ScriptContext.Error-like hook) must not be able
    // to resume the runaway code, outside any watched resumption.
    let lua = Lua::new();
    let statuses = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&statuses);
    let handler_lua = lua.clone();
    let scheduler = Scheduler::builder()
        .timeout(Duration::from_millis(50))
        .on_error(move |_, _| {
            let status: String = handler_lua
                .load("return coroutine.status(current)")
                .eval()
                .unwrap();
            seen.borrow_mut().push(status);
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let main = lua
        .load(
            r#"
            local erroring = coroutine.create(function() error("plain error") end)
            local looping = coroutine.create(function() while true do end end)
            current = erroring
            task.spawn(erroring)
            current = looping
            task.spawn(looping)
            "#,
        )
        .set_name("=main")
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(*statuses.borrow(), ["dead", "dead"]);
}

#[test]
fn a_task_ten_times_over_its_timeout_is_stopped_even_when_its_loop_calls_slow_functions() {
    // The clock is read every 128 interrupts in a tight loop. A loop whose steps are slow (a
    // host function, a big string operation) gets far fewer interrupts: this one would run
    // 600 ms against a 50 ms timeout in 80 interrupts if it were not checked step by step.
    let run = run_with(|builder| builder.timeout(Duration::from_millis(50)));
    let sleep = run
        .lua
        .create_function(|_, ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        })
        .unwrap();
    run.lua.globals().set("sleep", sleep).unwrap();
    run.script(
        r#"
        task.spawn(function()
            for i = 1, 40 do sleep(15) end
            log("the slow loop finished")
        end)
        "#,
    );
    assert!(run.log().is_empty(), "{:?}", run.log());
    assert_eq!(run.messages(), [spindle::TIMEOUT_MESSAGE]);
}

#[test]
fn another_os_thread_running_luau_does_not_delay_the_watchdog() {
    // After the watchdog raises its error inside a coroutine the task resumed by hand, the task
    // is owed a check at its very next interrupt. With one countdown shared by every OS thread,
    // a VM busy on another thread took that check, and the task ran on.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let lua = Lua::new();
            // Any scheduler with a budget installs the interrupt; this code runs outside a task.
            let _scheduler = Scheduler::builder()
                .timeout(Duration::from_secs(60))
                .build(&lua)
                .unwrap();
            let stopped = lua
                .create_function(move |_, ()| Ok(stop.load(Ordering::Relaxed)))
                .unwrap();
            lua.globals().set("stopped", stopped).unwrap();
            lua.load("while not stopped() do for i = 1, 1000 do end end")
                .exec()
                .unwrap();
        })
    };
    let mut leaked = Vec::new();
    for _ in 0..200 {
        let run = run_with(|builder| builder.timeout(Duration::from_millis(20)));
        run.script(
            r#"
            local co = coroutine.create(function() while true do end end)
            local ok = coroutine.resume(co)
            for i = 1, 20 do log("ran on after the timeout " .. i) end
            while true do end
            "#,
        );
        leaked.extend(run.log());
        assert_eq!(run.messages().len(), 1, "{:?}", run.messages());
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    assert!(
        leaked.is_empty(),
        "{} lines logged: {:?}",
        leaked.len(),
        leaked.first()
    );
}

// --- The timeout across time slices (rule 21, rule 22) -----------------------------------------

/// Runs `body` on a thread of its own and fails if it takes more than `limit`: a watchdog that
/// never stops a task would otherwise hang the test.
fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(body());
    });
    result
        .recv_timeout(limit)
        .expect("the run ended in time rather than running forever")
}

#[test]
fn rule21_a_sliced_runaway_task_is_still_stopped_by_the_timeout() {
    // Each slice used to start a fresh timeout, so a runaway loop was sliced forever.
    let (log, messages, took) = within(Duration::from_secs(20), || {
        let run = run_with(|builder| {
            builder
                .time_slice(Duration::from_millis(10))
                .timeout(Duration::from_millis(200))
        });
        let started = std::time::Instant::now();
        run.script(
            r#"
            task.spawn(function() log("looping") while true do end end)
            for i = 1, 3 do task.wait() log("tick " .. i) end
            "#,
        );
        (run.log(), run.messages(), started.elapsed())
    });
    assert_eq!(log, ["looping", "tick 1", "tick 2", "tick 3"]);
    assert_eq!(messages, [TIMEOUT_MESSAGE]);
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[test]
fn rule21_the_time_a_sliced_task_waits_for_its_turn_is_not_counted() {
    // 24 tasks each run 50 ms of their own in 10 ms slices: 1.2 s of wall time in all, over
    // the 1 s timeout, but each task's own run stays well under it, with room for a loaded
    // machine (the watchdog counts wall time: preemptions count as the task's own time).
    let run = run_with(|builder| {
        builder
            .time_slice(Duration::from_millis(10))
            .timeout(Duration::from_secs(1))
    });
    run.script(
        r#"
        -- Runs `seconds` of the task's own time: a gap of more than 2 ms between two steps is
        -- another task's turn, not counted.
        local function busy(seconds)
            local mine, last = 0, os.clock()
            while mine < seconds do
                local now = os.clock()
                if now - last < 0.002 then mine += now - last end
                last = now
            end
        end
        for t = 1, 24 do
            task.spawn(function() busy(0.05) log("done") end)
        end
        "#,
    );
    assert_eq!(run.log(), ["done"; 24]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn rule21_a_task_that_yields_of_its_own_accord_starts_a_fresh_timeout() {
    // 120 ms of work, a wait, 120 ms more, under a 200 ms timeout: sliced on the way, never
    // stopped, since the wait is a yield of its own.
    let run = run_with(|builder| {
        builder
            .time_slice(Duration::from_millis(10))
            .timeout(Duration::from_millis(200))
    });
    run.script(
        r#"
        local function busy(seconds)
            local start = os.clock()
            while os.clock() - start < seconds do end
        end
        busy(0.12)
        task.wait()
        busy(0.12)
        log("done")
        "#,
    );
    assert_eq!(run.log(), ["done"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

// --- Slices inside coroutines the task resumed by hand (rule 22) -------------------------------

#[test]
fn rule22_a_busy_loop_inside_coroutine_wrap_is_sliced_so_that_the_others_run() {
    // The slice used to be ignored there: the loop starved every other task, for ever.
    let log = within(Duration::from_secs(20), || {
        let run = run_with(|builder| builder.time_slice(Duration::from_millis(5)));
        run.script(
            r#"
            local stop = false
            task.spawn(function()
                coroutine.wrap(function() while not stop do end end)()
                log("looper released")
            end)
            for i = 1, 3 do task.wait() log("tick " .. i) end
            stop = true
            "#,
        );
        assert!(run.messages().is_empty(), "{:?}", run.messages());
        run.log()
    });
    assert_eq!(log, ["tick 1", "tick 2", "tick 3", "looper released"]);
}

#[test]
fn rule22_slices_inside_nested_coroutines_leave_their_values_and_errors_unchanged() {
    // Each busy loop is sliced many times, through one, two and three levels of hand resumes
    // (`resume`, `wrap`, `pcall` around `wrap`); what each level sees is what it sees when
    // nothing is sliced.
    const SCRIPT: &str = r##"
        local function show(...)
            local parts = { tostring(select("#", ...)) }
            for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
            log(table.concat(parts, " "))
        end
        local function busy() local t = os.clock() while os.clock() - t < 0.03 do end end
        local gen = coroutine.wrap(function(a, b)
            busy()
            local x, y = coroutine.yield(a + b, "two")
            local inner = coroutine.create(function(...)
                busy()
                show(coroutine.yield(...))
                busy()
                error("boom")
            end)
            show(coroutine.resume(inner, x, nil, y))
            show(coroutine.resume(inner, nil, 5))
            show(coroutine.resume(inner))
            busy()
            return "end", nil
        end)
        show(gen(1, 2))
        show(gen("p", "q"))
        show(pcall(coroutine.wrap(function() busy() error("wrapped error") end)))
        local ok, err = pcall(coroutine.wrap(function() busy() error({ "table error" }) end))
        show(ok, err[1])
        show(coroutine.wrap(function() return coroutine.wrap(function() busy() return "deep" end)() end)())
        show(coroutine.wrap(function() busy() end)())
        show(pcall(function()
            local w = coroutine.wrap(function() busy() error("bare", 0) end)
            return w()
        end))
    "##;
    let expected = [
        "2 3 two",
        "4 true p nil q",
        "2 nil 5",
        "2 false main:15: boom",
        "2 false cannot resume dead coroutine",
        "2 end nil",
        "2 false main:25: wrapped error",
        "2 false table error",
        "1 deep",
        "0",
        "2 false main:32: bare",
    ];
    let plain = Host::builder().real_time().build();
    plain.script(SCRIPT);
    assert_eq!(plain.log(), expected);

    let run = sliced();
    run.spawn("ticks = 0 while not done do task.wait() ticks += 1 end");
    run.script(&format!(
        "{SCRIPT}\nlog('others ran: ' .. tostring(ticks > 0)) done = true"
    ));
    let mut log = run.log();
    assert_eq!(log.pop().as_deref(), Some("others ran: true"));
    assert_eq!(log, expected);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn rule22_a_busy_loop_in_a_metamethod_cannot_be_sliced_and_is_stopped_by_the_timeout() {
    // No yield is possible inside `__index`, even from a coroutine it resumes: only the timeout
    // applies, and the others run once it has stopped the task.
    let (log, messages) = within(Duration::from_secs(20), || {
        let run = run_with(|builder| {
            builder
                .time_slice(Duration::from_millis(5))
                .timeout(Duration::from_millis(200))
        });
        run.script(
            r#"
            local plain = setmetatable({}, { __index = function() while true do end end })
            local nested = setmetatable({}, { __index = function()
                return coroutine.wrap(function() while true do end end)()
            end })
            task.spawn(function() local _ = plain.x log("plain returned") end)
            task.spawn(function() local _ = nested.x log("nested returned") end)
            for i = 1, 3 do task.wait() log("tick " .. i) end
            "#,
        );
        (run.log(), run.messages())
    });
    assert_eq!(log, ["tick 1", "tick 2", "tick 3"]);
    assert_eq!(messages, [TIMEOUT_MESSAGE, TIMEOUT_MESSAGE]);
}

#[test]
fn rule22_a_coroutine_that_a_rust_function_resumes_is_not_sliced_under_it() {
    // The Rust function would take the slice for a yield of the coroutine's own: such a
    // coroutine runs its slice out, and the timeout still watches it.
    let run = sliced();
    let resume = run
        .lua
        .create_function(|_, co: spindle::mlua::Thread| co.resume::<spindle::mlua::MultiValue>(()))
        .unwrap();
    run.lua.globals().set("rust_resume", resume).unwrap();
    run.script(
        r#"
        local co = coroutine.create(function()
            local t = os.clock() while os.clock() - t < 0.05 do end
            return "done"
        end)
        log(rust_resume(co))
        log(coroutine.status(co))
        "#,
    );
    assert_eq!(run.log(), ["done", "dead"]);
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn rule21_a_runaway_loop_in_a_wrapped_coroutine_is_sliced_then_stopped_by_the_timeout() {
    // Sliced through the coroutine many times, then stopped: `pcall` around the wrapped
    // function does not keep the task alive, and the others run meanwhile.
    let (log, messages) = within(Duration::from_secs(20), || {
        let run = run_with(|builder| {
            builder
                .time_slice(Duration::from_millis(5))
                .timeout(Duration::from_millis(200))
        });
        run.script(
            r#"
            task.spawn(function()
                log(tostring(pcall(coroutine.wrap(function() while true do end end))))
            end)
            for i = 1, 3 do task.wait() log("tick " .. i) end
            "#,
        );
        (run.log(), run.messages())
    });
    assert_eq!(log, ["tick 1", "tick 2", "tick 3"]);
    assert_eq!(messages, [TIMEOUT_MESSAGE]);
}

#[test]
fn rule22_tasks_hand_resuming_one_coroutine_under_tiny_slices_never_resume_a_yield_twice() {
    // Spindle's `coroutine.resume` checks a coroutine's slice mark, then resumes it: a slice
    // that ended the resumer between the two (at the call) let another task resume the
    // coroutine meanwhile, and the first then resumed it again past a `coroutine.yield` that
    // had already returned, with no values.
    let run = tiny_slices();
    run.script(
        r#"
        local co = coroutine.create(function()
            while true do
                for j = 1, 20 do end
                local v = coroutine.yield()
                if v ~= "token" then error("resumed with " .. tostring(v)) end
            end
        end)
        for t = 1, 3 do
            task.spawn(function()
                for i = 1, 3000 do
                    for j = 1, i % 7 do end
                    local ok, err = coroutine.resume(co, "token")
                    if not ok then log("task " .. t .. ": " .. err) return end
                end
            end)
        end
        "#,
    );
    assert!(run.messages().is_empty(), "{:?}", run.messages());
    assert_eq!(run.log(), Vec::<String>::new());
}

#[test]
fn rule22_a_busy_loop_in_a_chunk_named_as_the_task_library_is_still_sliced() {
    // Slices are put off inside the task library's functions, which are found by chunk name:
    // a script's own chunk of that name must not escape its slices.
    let log = within(Duration::from_secs(20), || {
        let run = run_with(|builder| builder.time_slice(Duration::from_millis(5)));
        run.script(
            r#"
            stop = false
            local spin = loadstring("while not stop do end", "=[spindle task]")
            task.spawn(function()
                spin()
                log("spinner released")
            end)
            for i = 1, 3 do task.wait() log("tick " .. i) end
            stop = true
            "#,
        );
        assert!(run.messages().is_empty(), "{:?}", run.messages());
        run.log()
    });
    assert_eq!(log, ["tick 1", "tick 2", "tick 3", "spinner released"]);
}

#[test]
fn rule23_running_out_of_memory_while_spawning_is_not_enough_memory_at_every_margin() {
    // Where the limit falls decides which allocation fails: one inside mlua's own traceback
    // of the spawner's error replaced the error with "stack overflow (not enough stack)". With
    // a timeout, every resumption goes through mlua.
    for extra in (0..64).map(|step| step * 1024) {
        let run = with_timeout(5_000);
        run.lua
            .set_memory_limit(run.lua.used_memory() + (1 << 20) + extra)
            .unwrap();
        run.script(
            r#"
            task.spawn(function()
                while true do
                    task.spawn(function() task.wait() end)
                end
            end)
            "#,
        );
        run.lua.set_memory_limit(0).unwrap();
        // Raised inside the task, or by `task.spawn` itself (which names itself and the line).
        let messages = run.messages();
        assert_eq!(messages.len(), 1, "at 1 MB + {extra} bytes: {messages:?}");
        assert!(
            messages[0].ends_with("not enough memory"),
            "at 1 MB + {extra} bytes: {messages:?}"
        );
    }
}

// --- A host's own VM interrupt (mlua's `Lua::set_interrupt`) -------------------------------------

/// An interrupt for `Lua::set_interrupt` that counts its calls and, once, after `give_up`,
/// fails the code it interrupts: a watchdog that stopped being called then shows as a wrong
/// error rather than as a hang.
fn counting_interrupt(
    give_up: Duration,
) -> (
    Rc<std::cell::Cell<u64>>,
    impl Fn(&Lua) -> spindle::mlua::Result<spindle::mlua::VmState> + 'static,
) {
    let calls = Rc::new(std::cell::Cell::new(0));
    let counted = Rc::clone(&calls);
    let started = std::time::Instant::now();
    let gave_up = std::cell::Cell::new(false);
    let interrupt = move |_: &Lua| {
        counted.set(counted.get() + 1);
        if !gave_up.get() && started.elapsed() > give_up {
            gave_up.set(true);
            return Err(spindle::mlua::Error::runtime(
                "the host's interrupt gave up: the watchdog never stopped the loop",
            ));
        }
        Ok(spindle::mlua::VmState::Continue)
    };
    (calls, interrupt)
}

#[test]
fn a_host_interrupt_set_after_building_is_called_and_the_timeout_still_stops_a_runaway_loop() {
    let (messages, calls) = within(Duration::from_secs(30), || {
        let run = with_timeout(100);
        let (calls, interrupt) = counting_interrupt(Duration::from_secs(5));
        run.lua.set_interrupt(interrupt);
        run.script("task.spawn(function() while true do end end) log('main done')");
        assert_eq!(run.log(), ["main done"]);
        (run.messages(), calls.get())
    });
    assert_eq!(messages, [TIMEOUT_MESSAGE]);
    assert!(calls > 0, "the host's interrupt was never called");
}

#[test]
fn a_host_interrupt_set_after_building_does_not_stop_time_slicing() {
    let (log, messages, calls) = within(Duration::from_secs(30), || {
        let run = run_with(|builder| builder.time_slice(Duration::from_millis(5)));
        let (calls, interrupt) = counting_interrupt(Duration::from_secs(5));
        run.lua.set_interrupt(interrupt);
        run.script(
            r#"
            local done = false
            task.spawn(function()
                while not done do end
                log("saw done")
            end)
            task.defer(function()
                done = true
                log("set done")
            end)
            "#,
        );
        (run.log(), run.messages(), calls.get())
    });
    assert_eq!(log, ["set done", "saw done"]);
    assert!(messages.is_empty(), "{messages:?}");
    assert!(calls > 0, "the host's interrupt was never called");
}

#[test]
fn a_host_interrupt_set_before_building_is_called_while_the_scheduler_lives_and_kept_after() {
    let (messages, during, after) = within(Duration::from_secs(30), || {
        let lua = Lua::new();
        let (calls, interrupt) = counting_interrupt(Duration::from_secs(5));
        lua.set_interrupt(interrupt);
        let errors: Rc<RefCell<Vec<String>>> = Rc::default();
        let seen = Rc::clone(&errors);
        let scheduler = Scheduler::builder()
            .timeout(Duration::from_millis(100))
            .on_error(move |_, error| seen.borrow_mut().push(error.message.clone()))
            .build(&lua)
            .unwrap();
        scheduler.install_task_library().unwrap();
        let runaway = lua.load("while true do end").into_function().unwrap();
        scheduler.spawn(runaway, ()).unwrap();
        scheduler.run_blocking().unwrap();
        let during = calls.get();
        drop(scheduler);
        lua.load("for i = 1, 1000 do end").exec().unwrap();
        let after = calls.get() - during;
        let messages = errors.borrow().clone();
        (messages, during, after)
    });
    assert_eq!(messages, [TIMEOUT_MESSAGE]);
    assert!(
        during > 0,
        "the host's interrupt was not called under the scheduler"
    );
    assert!(
        after > 0,
        "the host's interrupt was not put back with the scheduler gone"
    );
}

#[test]
fn a_host_interrupt_removed_after_building_does_not_take_the_watchdog_with_it() {
    let messages = within(Duration::from_secs(30), || {
        let run = with_timeout(100);
        run.lua
            .set_interrupt(|_| Ok(spindle::mlua::VmState::Continue));
        run.lua.remove_interrupt();
        run.script("task.spawn(function() while true do end end)");
        run.messages()
    });
    assert_eq!(messages, [TIMEOUT_MESSAGE]);
}

#[test]
fn an_error_from_a_host_interrupt_set_before_building_fails_the_task_as_without_a_scheduler() {
    let (log, messages) = within(Duration::from_secs(30), || {
        let lua = Lua::new();
        lua.set_interrupt(|lua| {
            if lua.globals().get::<bool>("stop_now")? {
                lua.globals().set("stop_now", false)?;
                return Err(spindle::mlua::Error::runtime("stopped by the host"));
            }
            Ok(spindle::mlua::VmState::Continue)
        });
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let errors: Rc<RefCell<Vec<String>>> = Rc::default();
        let seen = Rc::clone(&errors);
        let scheduler = Scheduler::builder()
            .timeout(Duration::from_secs(2))
            .on_error(move |_, error| seen.borrow_mut().push(error.message.clone()))
            .build(&lua)
            .unwrap();
        scheduler.install_task_library().unwrap();
        let logged = Rc::clone(&log);
        let log_fn = lua
            .create_function(move |_, line: String| {
                logged.borrow_mut().push(line);
                Ok(())
            })
            .unwrap();
        lua.globals().set("log", log_fn).unwrap();
        let main = lua
            .load(
                r#"
                stop_now = false
                local ok, err = pcall(function() stop_now = true while true do end end)
                log(tostring(ok) .. " " .. tostring(err))
                stop_now = true
                while true do end
                "#,
            )
            .into_function()
            .unwrap();
        scheduler.spawn(main, ()).unwrap();
        scheduler.run_blocking().unwrap();
        let (log, messages) = (log.borrow().clone(), errors.borrow().clone());
        (log, messages)
    });
    assert_eq!(log, ["false runtime error: stopped by the host"]);
    assert_eq!(messages, ["stopped by the host"]);
}

#[test]
fn a_task_that_a_chained_host_interrupt_yields_is_released_as_after_a_plain_yield() {
    let (log_before, resumable, log_after, messages) = within(Duration::from_secs(30), || {
        let run = with_timeout(10_000);
        run.lua.set_interrupt(|lua| {
            if lua.globals().get::<bool>("yield_now")? {
                lua.globals().set("yield_now", false)?;
                return Ok(spindle::mlua::VmState::Yield);
            }
            Ok(spindle::mlua::VmState::Continue)
        });
        let body = run
            .lua
            .load("yield_now = true local n = 0 while n < 1000 do n += 1 end log('after', n)")
            .into_function()
            .unwrap();
        let thread = run.lua.create_thread(body).unwrap();
        let task = run.scheduler.spawn(&thread, ()).unwrap();
        run.scheduler.run_blocking().unwrap();
        let before = (run.log(), thread.status(), run.scheduler.status(&task));
        run.scheduler.spawn(&thread, ()).unwrap();
        run.scheduler.run_blocking().unwrap();
        (before.0, (before.1, before.2), run.log(), run.messages())
    });
    assert!(log_before.is_empty(), "{log_before:?}");
    assert_eq!(
        resumable,
        (
            spindle::mlua::thread::ThreadStatus::Resumable,
            spindle::TaskStatus::Released
        )
    );
    assert_eq!(log_after, ["after 1000"]);
    assert!(messages.is_empty(), "{messages:?}");
}
