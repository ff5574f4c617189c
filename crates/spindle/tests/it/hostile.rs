//! Hostile scripts and a hostile host handler: each gets a clear error, and nothing else is
//! harmed: the other tasks go on, the scheduler stays usable, and the run ends.
//!
//! Everything runs under a virtual clock, stepped by `cycle()` or run with `run_blocking()`.

mod fuzz;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::support::{Host, HostBuilder};

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
    let run = hostile(
        Host::builder().on_error(|_, error| panic!("the handler broke on {}", error.message)),
    );
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
    let crate::support::Host { lua, scheduler, .. } = run;
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

/// The two ways the scheduler resumes a task woken by its timer: its own fast lane (no
/// watchdog), and mlua's resumption (which the watchdog asks for).
fn on_both_lanes() -> [(&'static str, Host); 2] {
    let watched = Host::builder().scheduler(|builder| builder.timeout(Duration::from_secs(3600)));
    [("fast lane", run()), ("through mlua", hostile(watched))]
}

#[test]
fn rule_8_an_error_whose_tostring_cancels_its_own_task_is_reported_once_with_its_traceback() {
    // The cancel frees the task while its error is formatted: the error used to be dropped,
    // and on the fast lane the traceback was then read from the freed thread.
    for (lane, run) in on_both_lanes() {
        run.script(
            r#"
            local victim
            victim = task.spawn(function()
                task.wait(1)
                error(setmetatable({}, {__tostring = function()
                    task.cancel(victim); victim = nil; collectgarbage(); collectgarbage()
                    return "boom"
                end}))
            end)
            "#,
        );
        assert_eq!(run.log(), ["error: boom"], "{lane}");
        assert_eq!(
            run.errors.borrow()[0].traceback,
            "stack traceback:\n\t[C]: in function 'error'\n\thostile:5: in function <hostile:3>",
            "{lane}"
        );
        assert_eq!(run.scheduler.error_count(), 1, "{lane}");
        assert_eq!(run.scheduler.task_count(), 0, "{lane}");
    }
}

#[test]
fn rule_8_an_error_whose_tostring_fails_is_reported_with_its_tasks_traceback() {
    // The message is the `__tostring`'s own failure; on the fast lane the traceback is still
    // the task's (it was none before). Through mlua it is the `__tostring`'s, as mlua takes it.
    for (lane, run) in on_both_lanes().into_iter().take(1) {
        run.script(
            r#"
            task.spawn(function()
                task.wait(1)
                error(setmetatable({}, {__tostring = function() error("exploded", 0) end}))
            end)
            "#,
        );
        assert_eq!(run.log(), ["error: exploded"], "{lane}");
        assert_eq!(
            run.errors.borrow()[0].traceback,
            "stack traceback:\n\t[C]: in function 'error'\n\thostile:4: in function <hostile:2>",
            "{lane}"
        );
    }
}

#[test]
fn rule_6_cancelling_a_failed_thread_from_its_tostring_leaves_it_as_it_is() {
    // The cancel of the dead thread does nothing to it: its error keeps its traceback, and
    // a `coroutine.close` after it still gets the error, as Luau's own close gives it.
    let run = run();
    run.script(
        r#"
        task.spawn(function()
            local victim = coroutine.running()
            error(setmetatable({}, {__tostring = function(self)
                task.cancel(victim)
                local closed, err = coroutine.close(victim)
                print(coroutine.status(victim), closed, rawequal(err, self))
                return "boom"
            end}))
        end)
        "#,
    );
    assert_eq!(run.log(), ["dead false true", "error: boom"]);
}

#[test]
fn rule_8_a_host_task_that_fails_and_is_cancelled_while_its_error_is_formatted_failed() {
    let run = run();
    let main = run
        .lua
        .load(
            r#"
            local me = coroutine.running()
            task.wait(1)
            error(setmetatable({}, {__tostring = function() task.cancel(me) return "boom" end}))
            "#,
        )
        .set_name("=hostile")
        .into_function()
        .unwrap();
    let task = run.scheduler.spawn(main, ()).unwrap();
    run.scheduler.run_blocking().unwrap();
    assert_eq!(run.log(), ["error: boom"]);
    match run.scheduler.take_result::<()>(&task).unwrap() {
        Some(spindle::Outcome::Failed(error)) => assert_eq!(error.message, "boom"),
        other => panic!("expected the failure, got {other:?}"),
    }
}

#[test]
fn rule_23_a_task_out_of_memory_is_reported_with_its_traceback_on_both_lanes() {
    for (lane, run) in on_both_lanes() {
        run.spawn(
            r#"
            task.spawn(function()
                task.wait(1)
                local t = {}
                while true do t[#t + 1] = string.rep("x", 4096) .. #t end
            end)
            "#,
        );
        run.lua
            .set_memory_limit(run.lua.used_memory() + (4 << 20))
            .unwrap();
        run.scheduler.run_blocking().unwrap();
        run.lua.set_memory_limit(0).unwrap();
        let errors = run.errors.borrow();
        assert_eq!(errors.len(), 1, "{lane}");
        assert_eq!(errors[0].message, "not enough memory", "{lane}");
        let traceback = &errors[0].traceback;
        assert!(
            traceback.starts_with("stack traceback:\n"),
            "{lane}: {traceback}"
        );
        assert!(
            traceback.ends_with("\thostile:5: in function <hostile:2>"),
            "{lane}: {traceback}"
        );
    }
}

/// Fills the VM to its limit so that closing a thread cannot get the memory Luau asks for: a
/// closed thread's call frames and stack shrink into blocks of 384 and 768 bytes, from pages of
/// their own size class, and this leaves those classes without a free block and the VM too close
/// to its limit for a new page. Buffers, since equal strings are one object.
const FILL_TO_THE_LIMIT: &str = r#"
    keep = table.create(100000)
    local n = 0
    local create, buf = table.create, buffer.create
    local function objects(size) while true do n += 1 keep[n] = buf(size) end end
    local function arrays(size) while true do n += 1 keep[n] = create(size) end end
    local spare = table.create(2000)
    for i = 1, 2000 do spare[i] = {} end
    collectgarbage()
    for size = 64, 1, -1 do pcall(arrays, size) end
    for size = 1100, 0, -1 do pcall(objects, size) end
    spare = nil
    collectgarbage()
    pcall(arrays, 24)
    pcall(arrays, 48)
"#;

#[test]
fn threads_deep_in_a_wait_are_cancelled_and_shut_down_at_the_memory_limit() {
    // Closing reallocates the thread's stack: at the limit the allocation failed outside any
    // protected call and Luau trapped (SIGILL), taking the test binary down.
    let run = run();
    let deep = r#"
        local function deep(n) if n == 0 then return Signal.new():Wait() end return deep(n - 1) + 1 end
        deep(200)
    "#;
    let spawn_deep = || {
        let f = run.lua.load(deep).into_function().unwrap();
        run.scheduler.spawn(f, ()).unwrap()
    };
    let (cancelled, shut_down) = (spawn_deep(), spawn_deep());
    run.lua
        .set_memory_limit(run.lua.used_memory() + (4 << 20))
        .unwrap();
    run.exec(FILL_TO_THE_LIMIT);
    assert!(
        run.scheduler.cancel(&cancelled).unwrap(),
        "it was still scheduled"
    );
    run.scheduler.shutdown().unwrap();
    run.lua.set_memory_limit(0).unwrap();
    run.exec("keep = nil");
    assert_eq!(run.scheduler.task_count(), 0);
    drop(shut_down);
    assert!(run.errors.borrow().is_empty());
}

#[test]
fn rule_8_an_error_whose_tostring_raises_itself_is_reported_with_its_tasks_traceback() {
    // Formatting the error raises the error again: Luau gives up with "error in error
    // handling", and through mlua (a task failing before its first yield) the report had no
    // traceback at all.
    for (lane, spawn) in [("first run", ""), ("after a wait", "task.wait(1)")] {
        let run = run();
        run.script(&format!(
            r#"
            local e
            e = setmetatable({{}}, {{__tostring = function(self) error(self) end}})
            task.spawn(function()
                {spawn}
                error(e)
            end)
            "#
        ));
        assert_eq!(run.log(), ["error: error in error handling"], "{lane}");
        assert_eq!(
            run.errors.borrow()[0].traceback,
            "stack traceback:\n\t[C]: in function 'error'\n\thostile:6: in function <hostile:4>",
            "{lane}"
        );
    }
}

#[test]
fn rule_23_a_task_out_of_memory_inside_a_library_function_is_reported_with_its_traceback() {
    // At the limit, the Rust half of `Signal:Fire` (or of `task.spawn`) fails to allocate:
    // mlua's error then carries "<traceback unavailable>" in place of the task's traceback.
    fn watched() -> Host {
        hostile(Host::builder().scheduler(|b| b.timeout(Duration::from_secs(3600))))
    }
    for (lane, make) in [
        ("through mlua", watched as fn() -> Host),
        ("fast lane", run),
    ] {
        for slack in (0..1024).step_by(16) {
            let run = make();
            run.spawn(
                r#"
                local s = Signal.new()
                s:Connect(function() end)
                task.wait()
                s:Fire()
                task.spawn(print)
                "#,
            );
            run.lua
                .set_memory_limit(run.lua.used_memory() + slack)
                .unwrap();
            run.scheduler.run_blocking().unwrap();
            run.lua.set_memory_limit(0).unwrap();
            for error in run.errors.borrow().iter() {
                assert!(
                    error.traceback.ends_with("in function <hostile:1>"),
                    "{lane}, {slack} bytes spare: {error}"
                );
            }
        }
    }
}

#[test]
fn dropping_the_scheduler_runs_no_script_code_through_replaced_globals() {
    // Putting the standard coroutine functions back read `coroutine.resume` through
    // metamethods: a script whose `coroutine` loops in `__index` hung the host at exit, with
    // no watchdog left to stop it.
    let host = run();
    host.exec(
        r#"
        ran = {}
        local real = coroutine
        coroutine = setmetatable({}, {
            __index = function(_, key) table.insert(ran, "get " .. key) return real[key] end,
            __newindex = function(_, key) table.insert(ran, "set " .. key) end,
        })
        "#,
    );
    let crate::support::Host { lua, scheduler, .. } = host;
    drop(scheduler);
    let ran: Vec<String> = lua.load("return ran").eval().unwrap();
    assert!(ran.is_empty(), "{ran:?}");
    // With the global `coroutine` itself behind `_G`'s `__index`.
    let host = run();
    host.exec(
        r#"
        ran = {}
        local real = coroutine
        coroutine = nil
        setmetatable(_G, {__index = function(_, key) table.insert(ran, "global " .. key) end})
        "#,
    );
    let crate::support::Host { lua, scheduler, .. } = host;
    drop(scheduler);
    let ran: Vec<String> = lua.load("return rawget(_G, 'ran')").eval().unwrap();
    assert!(ran.is_empty(), "{ran:?}");
}

#[test]
fn rule22_a_coroutine_taken_over_while_its_slice_is_carried_is_not_resumed_again_by_its_first_resumer(
) {
    // T resumes `co`, whose busy loop is sliced and carried out to T. U resumes `co` by hand
    // meanwhile and so takes it over (rule 12): T's resume used to go on with `co` anyway, when
    // T's turn came, and took what `co` yielded to U (or resumed `co` past a yield meant for U).
    // Now T's resume ends as a suspension with no values, as when a coroutine is adopted.
    let run = hostile(
        Host::builder()
            .real_time()
            .scheduler(|b| b.time_slice(Duration::from_millis(20))),
    );
    run.script(
        r#"
        local function busy(s) local t = os.clock() while os.clock() - t < s do end end
        local co = coroutine.create(function()
            busy(0.2)
            local x = coroutine.yield("first")
            print("co got", x)
            return "co done"
        end)
        task.spawn(function()
            local r = table.pack(coroutine.resume(co))
            print("T", r.n, r[1], r[2])
        end)
        task.spawn(function()
            task.wait()
            print("U", coroutine.resume(co))
            print("U", coroutine.resume(co, "for co"))
        end)
        "#,
    );
    assert_eq!(
        run.log(),
        [
            "T 1 true nil",
            "U true first",
            "co got for co",
            "U true co done"
        ]
    );
}

#[test]
fn rule22_task_spawn_of_a_coroutine_whose_slice_is_carried_takes_it_over() {
    // As above, with `task.spawn(co)`: the carry's mark stayed on `co`, so a later hand resume
    // took `co` for a sliced one and dropped the values passed to it.
    let run = hostile(
        Host::builder()
            .real_time()
            .scheduler(|b| b.time_slice(Duration::from_millis(20))),
    );
    run.script(
        r#"
        local started, go = false, false
        local co = coroutine.create(function()
            started = true
            while not go do end
            local x = coroutine.yield("first")
            print("co got", x)
            return "co done"
        end)
        task.spawn(function()
            local r = table.pack(coroutine.resume(co))
            print("T", r.n, r[1], r[2])
        end)
        task.spawn(function()
            repeat task.wait() until started
            go = true
            task.spawn(co)
            print("U", coroutine.resume(co, "for co"))
        end)
        "#,
    );
    assert_eq!(
        run.log(),
        ["co got for co", "U true co done", "T 1 true nil"]
    );
}

#[test]
fn a_script_reaches_no_internals_of_a_signal_or_a_connection() {
    // A signal's handler list and waiter entries, and a connection's handler and signal, were
    // fields of the tables scripts hold: a script could swap a handler, or write junk waiter
    // entries that `Fire` then read. They live in the library's private tables now: what a
    // script writes into its own tables is its own, and changes nothing a fire does.
    let run = run();
    run.script(
        r#"
        local s = Signal.new("Immediate")
        local c = s:Connect(function(v) print("handler", v) end)
        task.spawn(function() print("woke", s:Wait()) end)
        local seen = {}
        for key in s do table.insert(seen, tostring(key)) end
        for key in c do table.insert(seen, tostring(key)) end
        table.sort(seen)
        print(table.concat(seen, " "))
        local ok, why = pcall(function() c._fn = print end)
        print(ok, (string.find(why, "_fn cannot be assigned to", 1, true)) ~= nil)
        s._waiters = { { "x", {}, nil, true }, { coroutine.running(), 1, 1, 1 } }
        s._head, s._tail = false, false
        rawset(c, "Connected", false)
        print(pcall(s.Fire, s, "v"))
        print(pcall(s.Fire, s, "again"))
        "#,
    );
    assert_eq!(
        run.log(),
        [
            "Behavior Connected",
            "false true",
            "handler v",
            "woke v",
            "true",
            "handler again",
            "true"
        ]
    );
}
