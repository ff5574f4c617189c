//! `install_task_library` replaces `coroutine.resume` and `coroutine.wrap` so that a coroutine
//! resumed by hand that blocks in an mlua async function becomes the scheduler's (rule 13).
//! For everything else they must behave exactly as Luau's own.

use std::time::Duration;

use spindle::mlua::Lua;
use spindle::{Clock, Outcome, Scheduler, VirtualClock};

/// Exercises resume and wrap: values in and out, errors of every kind, dead coroutines.
const PROBE: &str = r##"
local out = {}
local function note(...) table.insert(out, table.concat(table.pack(...), "|", 1, select("#", ...))) end
local function show(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end return table.unpack(t, 1, t.n) end

local co = coroutine.create(function(a, b)
    local c = coroutine.yield(a + b, "y")
    local d, e = coroutine.yield(c * 2)
    return d, e, nil
end)
note(show(coroutine.resume(co, 1, 2)))
note(show(coroutine.resume(co, 5)))
note(show(coroutine.resume(co, "p", "q")))
note(show(coroutine.resume(co)))
note(show(pcall(coroutine.resume, 42)))

local gen = coroutine.wrap(function(n) for i = 1, n do coroutine.yield(i, i * i) end return "done" end)
note(show(gen(2)))
note(show(gen()))
note(show(gen()))
note(show(pcall(gen)))
note(show(pcall(coroutine.wrap(function() error("string error") end))))
note(show(pcall(coroutine.wrap(function() error("no position", 0) end))))
note(show(pcall(coroutine.wrap(function() error(404) end))))
note(show(pcall(coroutine.wrap(function() error({ code = 7 }) end))))
note(show(pcall(coroutine.wrap(function() error() end))))
note(show(pcall(coroutine.wrap, 5)))
local ok, err = pcall(function() local f = coroutine.wrap(function() error("deep") end) f() end)
note(show(ok, err))
local suspended = coroutine.create(function() coroutine.yield() end)
coroutine.resume(suspended)
note(show(coroutine.close(suspended)))
note(show(coroutine.status(suspended)))
local failed = coroutine.create(function() error("failed body") end)
coroutine.resume(failed)
note(show(coroutine.close(failed)))
note(show(pcall(coroutine.close, coroutine.running())))
note(show(pcall(coroutine.close, {})))
local outer = coroutine.create(function(inner_outer)
    local inner = coroutine.create(function() note(show(pcall(coroutine.close, inner_outer))) end)
    coroutine.resume(inner)
end)
coroutine.resume(outer, outer)
return table.concat(out, "\n")
"##;

fn probe(install: bool) -> String {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    if install {
        scheduler.install_task_library().unwrap();
    }
    lua.load(PROBE)
        .set_name("@probe.luau")
        .eval::<String>()
        .unwrap()
}

#[test]
fn replaced_resume_and_wrap_behave_like_luaus_own_for_plain_coroutines() {
    let native = probe(false);
    let replaced = probe(true);
    // Tables print with their address, which differs between the two states.
    let strip = |s: &str| {
        s.lines()
            .map(|l| if l.contains("table: ") { "table" } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&replaced), strip(&native));
    assert!(native.contains("cannot resume dead coroutine"), "{native}");
}

#[test]
fn a_hand_resumed_coroutine_blocked_in_an_mlua_future_is_taken_over_by_the_scheduler() {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let sleep = lua
        .create_async_function(|_, ms: u64| async move {
            async_io::Timer::after(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .unwrap();
    lua.globals().set("sleep_ms", sleep).unwrap();
    let main = lua
        .load(
            r##"
            local log = {}
            -- 200 ms against 10: the wrapped sleep, which starts later, still ends first on a
            -- loaded machine (with 20 against 10 it once ended second).
            local co = coroutine.create(function()
                table.insert(log, "slept " .. sleep_ms(200))
            end)
            local results = table.pack(coroutine.resume(co))
            table.insert(log, "resume returned " .. results.n .. " value(s): " .. tostring(results[1]))
            local wrapped_done = false
            local w = coroutine.wrap(function()
                table.insert(log, "wrapped slept " .. sleep_ms(10))
                wrapped_done = true
            end)
            table.insert(log, "wrap returned " .. select("#", w()) .. " values")
            -- Until the scheduler has finished both coroutines (at most 10 s), so that a slow
            -- machine cannot end the test before the sleeps do.
            for _ = 1, 1000 do
                if coroutine.status(co) == "dead" and wrapped_done then
                    break
                end
                task.wait(0.01)
            end
            table.insert(log, coroutine.status(co))
            return table.concat(log, "; ")
            "##,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    async_io::block_on(scheduler.run(async_io::Timer::at)).unwrap();
    let log = match scheduler.take_result::<String>(&id).unwrap() {
        Some(Outcome::Finished(log)) => log,
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert_eq!(
        log,
        "resume returned 1 value(s): true; wrap returned 0 values; wrapped slept 10; slept 200; dead"
    );
}

#[test]
fn closing_a_task_blocked_in_a_spindle_future_ends_its_work() {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let forever = scheduler
        .create_async_function(|_, ()| async {
            std::future::pending::<spindle::mlua::Result<()>>().await
        })
        .unwrap();
    lua.globals().set("forever", forever).unwrap();
    let main = lua
        .load(
            r#"
            local blocked = task.spawn(forever)
            local waiting = task.spawn(function() task.wait(3600) end)
            coroutine.close(blocked)
            coroutine.close(waiting)
            return coroutine.status(blocked), coroutine.status(waiting)
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    assert!(!scheduler.has_work(), "a closed task leaves no work behind");
    assert_eq!(scheduler.task_count(), 0);
    let statuses = match scheduler.take_result::<(String, String)>(&id).unwrap() {
        Some(Outcome::Finished(statuses)) => statuses,
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert_eq!(statuses, ("dead".to_owned(), "dead".to_owned()));
}

#[test]
fn a_task_hand_resumed_in_and_out_of_mlua_futures_is_released_each_time_it_comes_out() {
    let lua = Lua::new();
    // Virtual time: the delay that keeps the thread a task fires without an hour's wait.
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    // Pending at its first poll (without waking: the scheduler's own poll comes from the
    // hand-over), ready at its second.
    let pend = lua
        .create_async_function(|_, n: i64| {
            let mut polled = false;
            std::future::poll_fn(move |_| {
                if std::mem::replace(&mut polled, true) {
                    std::task::Poll::Ready(Ok(n))
                } else {
                    std::task::Poll::Pending
                }
            })
        })
        .unwrap();
    lua.globals().set("pend", pend).unwrap();
    let main = lua
        .load(
            r##"
            local log = {}
            local co = coroutine.create(function(first)
                for round = 1, 3 do
                    table.insert(log, "got " .. pend(round))
                    coroutine.yield("out " .. round)
                end
                return "done"
            end)
            -- A pending delay keeps the thread a task between the rounds.
            task.delay(3600, co)
            for round = 1, 3 do
                local ok, value = coroutine.resume(co)
                table.insert(log, "blocked " .. tostring(ok) .. " " .. tostring(value))
                ok, value = coroutine.resume(co)
                table.insert(log, "resumed " .. tostring(ok) .. " " .. tostring(value))
            end
            table.insert(log, tostring(select(2, coroutine.resume(co))))
            return table.concat(log, "; ")
            "##,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    let log = match scheduler.take_result::<String>(&id).unwrap() {
        Some(Outcome::Finished(log)) => log,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let rounds: Vec<String> = (1..=3)
        .map(|r| format!("blocked true nil; got {r}; resumed true out {r}"))
        .collect();
    assert_eq!(log, format!("{}; done", rounds.join("; ")));
    assert_eq!(scheduler.task_count(), 0);
}

/// Calls of the replaced coroutine functions (and of the ones they build on) that fail, or
/// whose coroutine fails: each is run as `pcall(...)` on a plain VM and under Spindle, and the
/// results must be the same values (rule 13).
const FAILING_CALLS: &[&str] = &[
    // Missing, nil and wrong-typed arguments.
    "coroutine.resume()",
    "coroutine.resume(nil)",
    "coroutine.resume(42)",
    "coroutine.resume('co')",
    "coroutine.resume({})",
    "coroutine.resume(print)",
    "coroutine.resume(newproxy(false))",
    "coroutine.wrap()",
    "coroutine.wrap(nil)",
    "coroutine.wrap(42)",
    "coroutine.wrap(coroutine.create(print))",
    "coroutine.close()",
    "coroutine.close(nil)",
    "coroutine.close(true)",
    "coroutine.close(print)",
    "coroutine.create()",
    "coroutine.status()",
    "coroutine.status(5)",
    // Calls that reach the coroutine, from a Lua caller so that positions show.
    "(function() return coroutine.resume() end)()",
    "(function() return coroutine.close() end)()",
    "(function() return coroutine.wrap() end)()",
    "(function() return coroutine.resume(coroutine.running()) end)()",
    "(function() return coroutine.close(coroutine.running()) end)()",
    "(function() local co = coroutine.create(function() end) coroutine.resume(co) return coroutine.resume(co) end)()",
    "(function() local f = coroutine.wrap(function() end) f() return f() end)()",
    // Errors inside the coroutine: every kind of value, with and without levels.
    "coroutine.resume(coroutine.create(function() error('s') end))",
    "coroutine.resume(coroutine.create(function() error('s', 0) end))",
    "coroutine.resume(coroutine.create(function() error('s', 2) end))",
    "coroutine.resume(coroutine.create(function() error(42) end))",
    "coroutine.resume(coroutine.create(function() error(4.5, 2) end))",
    "coroutine.resume(coroutine.create(function() error(true) end))",
    "coroutine.resume(coroutine.create(function() error(nil) end))",
    "coroutine.resume(coroutine.create(function() error() end))",
    "coroutine.resume(coroutine.create(function() error(TABLE) end))",
    "coroutine.resume(coroutine.create(function() local x = nil; return x.y end))",
    "coroutine.wrap(function() error('s') end)()",
    "coroutine.wrap(function() error('s', 0) end)()",
    "coroutine.wrap(function() error('s', 2) end)()",
    "coroutine.wrap(function() error(42) end)()",
    "coroutine.wrap(function() error(4.5, 0) end)()",
    "coroutine.wrap(function() error(true) end)()",
    "coroutine.wrap(function() error(nil) end)()",
    "coroutine.wrap(function() error() end)()",
    "coroutine.wrap(function() error(TABLE) end)()",
    "coroutine.wrap(function() local x = nil; return x.y end)()",
    "(function() local v = coroutine.wrap(function() error('s') end)() return v end)()",
    "(function() local v = coroutine.wrap(function() error(42) end)() return v end)()",
    "(function() local v = coroutine.wrap(function() error('s', 2) end)() return v end)()",
    "coroutine.wrap(function() coroutine.wrap(function() error('inner') end)() end)()",
    "coroutine.wrap(function() coroutine.wrap(function() error(7) end)() end)()",
    "coroutine.close((function() local co = coroutine.create(function() error('closed') end) coroutine.resume(co) return co end)())",
    "coroutine.close((function() local co = coroutine.create(function() error(TABLE) end) coroutine.resume(co) return co end)())",
    "coroutine.close((function() local co = coroutine.create(function() error() end) coroutine.resume(co) return co end)())",
    "coroutine.close(coroutine.create(print))",
    "coroutine.wrap(function() return coroutine.yield(1, nil, 3) end)()",
    "coroutine.resume(coroutine.create(function(...) return select('#', ...), ... end), nil, nil)",
    // Errors that Luau's resume raises itself, and C functions as coroutine bodies.
    "(function() local co = coroutine.create(function(...) return select('#', ...) end) return coroutine.resume(co, table.unpack(table.create(9000, 1))) end)()",
    "(function() local f = coroutine.wrap(function(...) return select('#', ...) end) return f(table.unpack(table.create(9000, 1))) end)()",
    "(function() local co = coroutine.create(function() return table.unpack(table.create(9000, 1)) end) return select('#', coroutine.resume(co)) end)()",
    "coroutine.resume(coroutine.create(string.rep))",
    "coroutine.wrap(string.rep)()",
    "coroutine.wrap(error)('from error itself')",
    "coroutine.resume(coroutine.create(error), setmetatable({}, { __tostring = function() return 'shown' end }))",
    "coroutine.wrap(function() error(setmetatable({}, { __tostring = function() return 'shown' end })) end)()",
    "(function() local co co = coroutine.create(function() return coroutine.resume(co) end) return coroutine.resume(co) end)()",
    "(function() local f f = coroutine.wrap(function() return f() end) return f() end)()",
    "(function() local co co = coroutine.create(function() return coroutine.close(co) end) return coroutine.resume(co) end)()",
    "coroutine.wrap(newproxy(false))",
    // Yielding where no yield is possible: Luau's own message, as a string.
    "coroutine.wrap(function() table.sort({ 1, 2, 3 }, function(a, b) coroutine.yield() return a < b end) end)()",
    "coroutine.resume(coroutine.create(function() return tostring(setmetatable({}, { __tostring = function() coroutine.yield() return '' end })) end))",
];

/// Each call's pcall results on a fresh VM, with or without Spindle's task library, as text:
/// each value's type and string, tables as `table`.
fn failing_calls(install: bool) -> Vec<String> {
    let lua = Lua::new();
    let _scheduler = install.then(|| {
        let scheduler = Scheduler::new(&lua).unwrap();
        scheduler.install_task_library().unwrap();
        scheduler
    });
    lua.load(
        r#"
        TABLE = {}
        function show(...)
            local t = table.pack(...)
            for i = 1, t.n do
                local v = t[i]
                t[i] = if v == TABLE then "TABLE" else typeof(v) .. " " .. tostring(v)
            end
            return table.concat(t, ", ", 1, t.n)
        end
        "#,
    )
    .exec()
    .unwrap();
    FAILING_CALLS
        .iter()
        .map(|call| {
            let source = format!("return show(pcall(function() return {call} end))");
            let shown: String = lua.load(source).set_name("=calls").eval().unwrap();
            format!("{call}\n    => {shown}")
        })
        .collect()
}

#[test]
fn rule13_replaced_coroutine_functions_fail_with_luaus_own_messages_and_values() {
    let native = failing_calls(false);
    let replaced = failing_calls(true);
    let differ: Vec<String> = native
        .iter()
        .zip(&replaced)
        .filter(|(n, r)| n != r)
        .map(|(n, r)| format!("luau:    {n}\nspindle: {r}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
    assert!(
        native[0].ends_with("missing argument #1 to 'resume' (thread expected)"),
        "{}",
        native[0]
    );
}
