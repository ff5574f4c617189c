//! Coroutines driven by hand through Spindle's `coroutine.resume`, `wrap` and `close` (C
//! functions on the VM edge, with `task.luau` behind them for the scheduler's cases): what a
//! script sees must be what it sees on plain Luau, and the scheduler's cases (a coroutine that
//! blocks in an mlua future, a time slice that ends inside one, a task's thread) must still
//! reach the scheduler.

use std::time::Duration;

use crate::support::Host;
use spindle::mlua::{Lua, Value};
use spindle::{Scheduler, SchedulerBuilder};

/// Resume, wrap and close of plain coroutines, every case printed: values and nil holes in and
/// out, errors of every type, positions of wrap's errors, dead, running and normal coroutines,
/// nested coroutines, and bad arguments.
const PROBE: &str = r##"
local out = {}
local function show(...)
    local t = table.pack(...)
    for i = 1, t.n do
        local v = t[i]
        t[i] = type(v) == "table" and "table" or tostring(v)
    end
    return select("#", ...) .. ":" .. table.concat(t, "|", 1, t.n)
end
local function note(...) table.insert(out, show(...)) end

-- Values in and out, with nil holes and trailing nils.
local co = coroutine.create(function(...)
    local got = table.pack(coroutine.yield(...))
    local again = table.pack(coroutine.yield(nil, got.n, nil))
    return nil, again.n, nil, nil
end)
note(coroutine.resume(co, 1, nil, 3, nil))
note(coroutine.resume(co, nil, nil))
note(coroutine.resume(co))
note(coroutine.resume(co))
note(coroutine.status(co))

-- No values at all, and many (more than a C function's minimum stack).
local many = coroutine.create(function(...)
    local t = table.pack(coroutine.yield(table.unpack({}, 1, 0)))
    return table.unpack(t, 1, t.n)
end)
note(coroutine.resume(many))
local big = {}
for i = 1, 300 do big[i] = i end
local back = table.pack(coroutine.resume(many, table.unpack(big)))
note(back.n, back[1], back[2], back[301])

-- Errors of every type, through resume and through wrap (pcall'd).
local values = { "'text'", "42", "{}", "nil", "true", "3.5", "'no position', 0", "'level two', 2" }
for _, v in ipairs(values) do
    local body = loadstring("return function() error(" .. v .. ") end", "=thrower")()
    note(coroutine.resume(coroutine.create(body)))
    note(pcall(coroutine.wrap(body)))
end

-- Wrap's errors carry the position of the line that called the wrapped function.
local function call_at_line(f)
    return f()
end
note(pcall(call_at_line, coroutine.wrap(function() error("inner") end)))
note(pcall(function()
    local f = coroutine.wrap(function() error("deep") end)
    f()
end))
local dead = coroutine.wrap(function() return "once" end)
note(dead())
note(pcall(dead))
note(pcall(call_at_line, dead))
local yielder = coroutine.wrap(function(a) local b = coroutine.yield(a * 2) return a + b end)
note(yielder(5))
note(yielder(7))
note(pcall(yielder, 1))

-- Dead, errored, running and normal coroutines.
local failed = coroutine.create(function() error("failed body") end)
note(coroutine.resume(failed))
note(coroutine.resume(failed))
note(coroutine.status(failed))
local outer
outer = coroutine.create(function()
    note(coroutine.resume(outer))
    note(coroutine.resume(coroutine.running()))
    local inner = coroutine.create(function()
        note(coroutine.status(outer))
        note(coroutine.resume(outer))
        note(pcall(coroutine.close, outer))
        note(pcall(coroutine.wrap(function() return coroutine.resume(outer) end)))
        coroutine.yield("inner yields")
        return "inner returns"
    end)
    note(coroutine.resume(inner))
    note(coroutine.yield("outer yields"))
    note(coroutine.resume(inner))
    return "outer returns"
end)
note(coroutine.resume(outer))
note(coroutine.resume(outer, "back in"))
note(coroutine.resume(outer))

-- Yields across nested coroutines: each yield goes to its own resumer.
local gen = coroutine.wrap(function()
    local inner = coroutine.wrap(function()
        for i = 1, 3 do coroutine.yield("inner " .. i) end
        return "inner done"
    end)
    for _ = 1, 4 do coroutine.yield("outer got " .. inner()) end
    return "outer done"
end)
for _ = 1, 5 do note(gen()) end

-- Close of new, suspended, dead and errored coroutines.
note(coroutine.close(coroutine.create(print)))
local suspended = coroutine.create(function() coroutine.yield() end)
coroutine.resume(suspended)
note(coroutine.close(suspended))
note(coroutine.status(suspended))
note(coroutine.resume(suspended))
local finished = coroutine.create(function() end)
coroutine.resume(finished)
note(coroutine.close(finished))
local errored = coroutine.create(function() error({ code = 7 }) end)
coroutine.resume(errored)
note(coroutine.close(errored))
note(coroutine.close(errored))
note(coroutine.wrap(function() return pcall(coroutine.close, coroutine.running()) end)())

-- Bad arguments.
note(pcall(coroutine.resume))
note(pcall(coroutine.resume, nil))
note(pcall(coroutine.resume, 42))
note(pcall(coroutine.resume, {}))
note(pcall(coroutine.wrap))
note(pcall(coroutine.wrap, nil))
note(pcall(coroutine.wrap, "text"))
note(pcall(coroutine.close))
note(pcall(coroutine.close, 5))
note(pcall(function() coroutine.resume() end))
note(pcall(function() coroutine.wrap(5) end))
note(pcall(function() coroutine.close(false) end))

-- Yieldable and running inside, and the identity of the wrapped function's coroutine.
note(coroutine.wrap(function() return coroutine.isyieldable() end)())
local inside
local w = coroutine.wrap(function() inside = coroutine.running() coroutine.yield() end)
w()
note(coroutine.status(inside))
note(coroutine.resume(inside))
note(coroutine.status(inside))
note(pcall(w))

return table.concat(out, "\n")
"##;

/// The probe's output on a VM, as the main thread's chunk `@probe.luau`.
fn probe_on(lua: &Lua) -> String {
    lua.load(PROBE)
        .set_name("@probe.luau")
        .eval::<String>()
        .unwrap()
}

fn plain_luau() -> String {
    probe_on(&Lua::new())
}

#[test]
fn plain_coroutines_resume_wrap_and_close_as_on_plain_luau() {
    let expected = plain_luau();
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let replaced: bool = lua
        .load("return coroutine.resume ~= nil and debug.info(coroutine.resume, 's') == '[C]'")
        .eval()
        .unwrap();
    assert!(replaced);
    assert_eq!(probe_on(&lua), expected);
    // The probe checks what it means to check.
    assert!(
        expected.contains("cannot resume dead coroutine"),
        "{expected}"
    );
    assert!(
        expected.contains("cannot resume running coroutine"),
        "{expected}"
    );
    assert!(
        expected.contains("cannot resume normal coroutine"),
        "{expected}"
    );
    assert!(
        expected.contains("cannot close running coroutine"),
        "{expected}"
    );
    assert!(expected.contains("probe.luau:"), "{expected}");
    assert!(
        expected.contains("missing argument #1 to 'resume'"),
        "{expected}"
    );
}

/// Runs the probe inside a task of a scheduler built with `configure`, and returns what it
/// returned.
fn probe_in_a_task(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder) -> String {
    let lua = Lua::new();
    let scheduler = configure(Scheduler::builder()).build(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let main = lua
        .load(PROBE)
        .set_name("@probe.luau")
        .into_function()
        .unwrap();
    let task = scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    match scheduler.take_result::<String>(&task).unwrap() {
        Some(spindle::Outcome::Finished(out)) => out,
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn plain_coroutines_driven_from_a_task_behave_as_on_plain_luau() {
    let expected = plain_luau();
    // The task's thread is itself a coroutine: `coroutine.running()` in the probe's main body
    // is a running coroutine there too.
    assert_eq!(probe_in_a_task(|builder| builder), expected);
}

#[test]
fn plain_coroutines_under_the_watchdog_behave_as_on_plain_luau() {
    let expected = plain_luau();
    let watched = probe_in_a_task(|builder| {
        builder
            .time_slice(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
    });
    assert_eq!(watched, expected);
}

#[test]
fn the_replacements_are_put_back_when_the_scheduler_is_dropped() {
    let lua = Lua::new();
    let originals: (Value, Value, Value) = lua
        .load("return coroutine.resume, coroutine.wrap, coroutine.close")
        .eval()
        .unwrap();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    let replaced: (Value, Value, Value) = lua
        .load("return coroutine.resume, coroutine.wrap, coroutine.close")
        .eval()
        .unwrap();
    assert_ne!(replaced.0, originals.0);
    assert_ne!(replaced.1, originals.1);
    assert_ne!(replaced.2, originals.2);
    drop(scheduler);
    let restored: (Value, Value, Value) = lua
        .load("return coroutine.resume, coroutine.wrap, coroutine.close")
        .eval()
        .unwrap();
    assert_eq!(restored, originals);
    assert_eq!(probe_on(&lua), plain_luau());
}

#[test]
fn nested_hand_resumed_coroutines_that_block_in_an_mlua_future_are_handed_to_the_scheduler() {
    let run = Host::builder().real_time().build();
    let sleep = run
        .lua
        .create_async_function(|_, ms: u64| async move {
            async_io::Timer::after(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .unwrap();
    run.lua.globals().set("sleep_ms", sleep).unwrap();
    run.script(
        r##"
        local inner_co
        local outer = coroutine.create(function()
            local inner = coroutine.wrap(function(x)
                inner_co = coroutine.running()
                log("inner slept " .. sleep_ms(x))
                return "inner done"
            end)
            log("inner wrap returned " .. select("#", inner(10)) .. " values")
            local v = coroutine.yield("outer yields")
            log("outer slept " .. sleep_ms(v))
        end)
        log("resume: " .. table.concat({ tostring(coroutine.resume(outer)) }, " ")
            .. " " .. coroutine.status(outer))
        local results = table.pack(coroutine.resume(outer, 5))
        log("resume returned " .. results.n .. " value(s): " .. tostring(results[1]))
        while coroutine.status(outer) ~= "dead" or coroutine.status(inner_co) ~= "dead" do
            task.wait(0.005)
        end
        log("both dead")
        "##,
    );
    assert!(run.messages().is_empty(), "{:?}", run.messages());
    let log = run.log();
    assert_eq!(
        log[..3],
        [
            "inner wrap returned 0 values",
            "resume: true suspended",
            "resume returned 1 value(s): true",
        ]
    );
    let mut rest = log[3..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        ["both dead", "inner slept 10", "outer slept 5"],
        "{log:?}"
    );
}

fn sliced() -> Host {
    // The timeout only turns a broken slicer into a failure instead of a hang.
    Host::builder()
        .real_time()
        .scheduler(|builder| {
            builder
                .time_slice(Duration::from_millis(5))
                .timeout(Duration::from_secs(10))
        })
        .build()
}

#[test]
fn a_slice_that_ends_inside_nested_hand_resumed_coroutines_lets_the_others_run() {
    let run = sliced();
    run.script(
        r##"
        local done = false
        task.spawn(function()
            local outer = coroutine.wrap(function()
                local inner = coroutine.create(function(n)
                    local spins = 0
                    while not done do spins += 1 end
                    local more = coroutine.yield("inner saw done")
                    return "inner got " .. more
                end)
                log(select(2, coroutine.resume(inner, 1)))
                log(select(2, coroutine.resume(inner, "more")))
                return "outer done"
            end)
            log(outer())
        end)
        task.defer(function()
            done = true
            log("set done")
        end)
        "##,
    );
    assert!(run.messages().is_empty(), "{:?}", run.messages());
    assert_eq!(
        run.log(),
        ["set done", "inner saw done", "inner got more", "outer done"]
    );
}

#[test]
fn a_coroutine_whose_slice_another_task_carries_is_taken_over_by_a_hand_resume() {
    // The carrier resumed `co`, which was stopped at the end of a slice: the carrier's task is
    // queued. Another resume of `co` meanwhile takes it over: the values passed are dropped
    // (the coroutine goes on inside its loop), and the carrier does not resume it again.
    let run = sliced();
    run.script(
        r##"
        local release = false
        local co = coroutine.create(function()
            while not release do end
            log("co got " .. select("#", coroutine.yield("first yield")) .. " values")
            return "co done"
        end)
        task.spawn(function()
            local results = table.pack(coroutine.resume(co))
            log("carrier: " .. results.n .. " " .. tostring(results[1]))
        end)
        log("after spawn: " .. coroutine.status(co))
        release = true
        log("taker: " .. table.concat({ tostring(coroutine.resume(co, "ignored")) }, " "))
        log("again: " .. select(2, coroutine.resume(co, 1, 2)))
        log(coroutine.status(co))
        "##,
    );
    assert!(run.messages().is_empty(), "{:?}", run.messages());
    assert_eq!(
        run.log(),
        [
            "after spawn: suspended",
            "taker: true",
            "co got 2 values",
            "again: co done",
            "dead",
            "carrier: 1 true",
        ]
    );
}

#[test]
fn a_runaway_hand_resumed_coroutine_is_stopped_by_the_timeout_with_the_plain_message() {
    let run = Host::builder()
        .real_time()
        .scheduler(|builder| builder.timeout(Duration::from_millis(50)))
        .build();
    run.script(
        r#"
        local ok, err = coroutine.resume(coroutine.create(function() while true do end end))
        log("resume returned")
        "#,
    );
    assert!(run.log().is_empty(), "{:?}", run.log());
    assert_eq!(run.messages(), [spindle::TIMEOUT_MESSAGE]);
}

#[test]
fn running_out_of_memory_around_hand_coroutines_is_a_catchable_error_at_every_margin() {
    // Where the limit falls decides which allocation fails: the wrapped function's thread or
    // closure, a coroutine's stack for the values passed, or the coroutine's own work.
    for extra in (0..32).map(|step| step * 512) {
        let lua = Lua::new();
        let scheduler = Scheduler::new(&lua).unwrap();
        scheduler.install_task_library().unwrap();
        lua.set_memory_limit(lua.used_memory() + (256 << 10) + extra)
            .unwrap();
        let out: String = lua
            .load(
                r#"
                local kept = {}
                local ok, err = pcall(function()
                    while true do
                        local w = coroutine.wrap(function(...)
                            local t = { ... }
                            while true do t = { coroutine.yield(#t) } end
                        end)
                        w(1, 2, 3)
                        w(table.unpack(kept, 1, math.min(#kept, 40)))
                        local co = coroutine.create(function(n) coroutine.yield(string.rep("x", n)) end)
                        coroutine.resume(co, 64)
                        table.insert(kept, w)
                        table.insert(kept, co)
                    end
                end)
                kept = nil
                return tostring(ok) .. " " .. tostring(err)
                "#,
            )
            .set_name("=oom")
            .eval()
            .unwrap();
        lua.set_memory_limit(0).unwrap();
        // Luau's own resume says "too many arguments to resume" when the coroutine's stack
        // cannot grow for the values passed, for want of memory too.
        assert!(
            out.starts_with("false")
                && (out.ends_with("not enough memory")
                    || (out.starts_with("false oom:")
                        && out.ends_with(": too many arguments to resume"))),
            "at 256 KB + {extra} bytes: {out}"
        );
        // The VM goes on: hand coroutines still work.
        let after: String = lua
            .load("return coroutine.wrap(function() coroutine.yield('still') end)()")
            .eval()
            .unwrap();
        assert_eq!(after, "still");
        drop(scheduler);
    }
}
