//! Who owns a yield: a plain `coroutine.yield` belongs to whoever resumed the thread, a
//! scheduler yield (`task.wait`, an async function) to the scheduler; and the coroutine library
//! as scripts see it (contract rule 11).

mod coroutine_library;
mod hand_coroutines;

use std::time::Duration;

use spindle::mlua::Lua;

use crate::support::{harness, install_gates, lines};

// ---------------------------------------------------------------------------------------------
// Scheduler yields where no yield is possible (C calls, the main thread), inside coroutines
// and pcall; the replaced coroutine functions against Luau's own
// ---------------------------------------------------------------------------------------------

#[test]
fn coroutine_wrap_around_task_wait_returns_at_once_and_resumes_on_timer() {
    let h = harness();
    h.run(
        r##"
        local f = coroutine.wrap(function(x)
            print("in wrap", x)
            local e = task.wait(2)
            print("wrap resumed after", e)
            return "done"
        end)
        print("call returned", select("#", f("arg")))
        task.wait(3)
        print(pcall(f))
        "##,
    );
    let log = h.log();
    assert_eq!(log[0], "in wrap arg");
    assert_eq!(log[1], "call returned 0");
    assert_eq!(log[2], "wrap resumed after 2");
    assert!(
        log[3].starts_with("false") && log[3].contains("dead"),
        "{log:?}"
    );
}

#[test]
fn pcall_around_task_wait_yields_and_returns_true_and_elapsed() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.wait, 1.5))
        print(xpcall(function() return task.wait(0.5) end, debug.traceback))
        "##,
    );
    assert_eq!(h.log(), lines(&["true 1.5", "true 0.5"]));
}

#[test]
fn task_wait_in_table_sort_comparator_raises_clear_error_and_task_continues() {
    let h = harness();
    h.run(
        r##"
        local t = {3, 1, 2}
        local ok, err = pcall(table.sort, t, function(a, b) task.wait(); return a < b end)
        print(ok, string.find(tostring(err), "yield", 1, true) ~= nil)
        print("waited", task.wait(1))
        "##,
    );
    assert_eq!(h.log(), lines(&["false true", "waited 1"]));
    assert!(!h.sched.has_work());
}

#[test]
fn task_wait_in_index_metamethod_raises_clear_error_and_leaves_no_timer() {
    let h = harness();
    h.run(
        r##"
        local obj = setmetatable({}, {__index = function(_, k) task.wait(10); return k end})
        local ok, err = pcall(function() return obj.x end)
        print(ok, string.find(tostring(err), "yield", 1, true) ~= nil)
        "##,
    );
    assert_eq!(h.log(), lines(&["false true"]));
    assert_eq!(h.clock.now(), Duration::ZERO, "no timer was left behind");
}

#[test]
fn owned_async_in_metamethod_errors_drops_future_and_task_continues() {
    let h = harness();
    let gates = install_gates(&h);
    h.run(
        r##"
        local obj = setmetatable({}, {__index = function(_, k) return owned_wait("never") end})
        local ok, err = pcall(function() return obj.x end)
        print(ok, err, dropped())
        print("waited", task.wait(1))
        "##,
    );
    // A plain string at the caller's line, naming the function, in Luau's words.
    assert_eq!(
        h.log(),
        lines(&[
            "false test:2: async function: attempt to yield across metamethod/C-call boundary 1",
            "waited 1"
        ])
    );
    assert_eq!(gates.dropped(), 1);
    assert!(!h.sched.has_work());
}

#[test]
fn owned_async_that_completes_at_once_works_inside_a_sort_comparator() {
    let h = harness();
    install_gates(&h);
    h.run(
        r##"
        local t = {3, 1, 2}
        table.sort(t, function(a, b) local x = owned_values_now(); return a < b end)
        print(table.concat(t, ","))
        "##,
    );
    assert_eq!(h.log(), lines(&["1,2,3"]));
}

#[test]
fn task_wait_on_the_main_thread_is_a_clear_error() {
    let h = harness();
    let err = h.lua.load("task.wait(1)").exec().unwrap_err().to_string();
    assert!(
        err.contains("task.wait: attempt to yield across metamethod/C-call boundary"),
        "{err}"
    );
    assert!(!h.sched.has_work());
}

#[test]
fn owned_async_on_the_main_thread_is_a_clear_error() {
    let h = harness();
    let gates = install_gates(&h);
    let err = h
        .lua
        .load("return owned_wait('g')")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("async function: attempt to yield across metamethod/C-call boundary"),
        "{err}"
    );
    assert_eq!(gates.dropped(), 1);
    assert!(!h.sched.has_work());
    assert_eq!(h.sched.task_count(), 0);
}

/// Runs `src` in an untouched Luau state and, as a task, under Spindle; returns both results.
fn native_and_spindle(src: &str) -> (String, String) {
    let native = Lua::new();
    let f = native.load(src).set_name("=probe").into_function().unwrap();
    // Inside a coroutine, as the Spindle side runs inside a task.
    let native: String = native.create_thread(f).unwrap().resume(()).unwrap();
    let h = harness();
    let id = h
        .sched
        .spawn(
            h.lua.load(src).set_name("=probe").into_function().unwrap(),
            (),
        )
        .unwrap();
    h.sched.run_blocking().unwrap();
    (native, h.result::<String>(&id))
}

const WRAP_PROBE: &str = r##"
local out = {}
local function note(...)
    local t = table.pack(...)
    for i = 1, t.n do
        local v = t[i]
        t[i] = type(v) .. ":" .. (type(v) == "table" and "tbl" or tostring(v))
    end
    table.insert(out, table.concat(t, "|", 1, t.n))
end
note(pcall(coroutine.wrap(function() error(404, 0) end)))
note(pcall(coroutine.wrap(function() error(12.5, 0) end)))
note(pcall(function() local f = coroutine.wrap(function() error(7, 0) end); f() end))
note(pcall(coroutine.wrap(function() error(true) end)))
local e = {}
local ok, got = pcall(coroutine.wrap(function() error(e) end))
note(ok, got == e)
note(pcall(function() local f = coroutine.wrap(function() error("lvl", 2) end); f() end))
note(select("#", coroutine.wrap(function() return nil, nil end)()))
return table.concat(out, "\n")
"##;

#[test]
fn replaced_coroutine_wrap_propagates_error_values_exactly_as_luau() {
    let (native, spindle) = native_and_spindle(WRAP_PROBE);
    assert_eq!(spindle, native);
}

#[test]
fn replaced_coroutine_resume_keeps_error_values_and_messages_as_luau() {
    let (native, spindle) = native_and_spindle(
        r##"
        local out = {}
        local e = {}
        local co = coroutine.create(function() error(e) end)
        local ok, got = coroutine.resume(co)
        table.insert(out, tostring(ok) .. " " .. tostring(got == e))
        table.insert(out, table.concat({tostring(select(2, pcall(coroutine.resume, nil)))}, ""))
        table.insert(out, tostring(select("#", coroutine.resume(coroutine.create(function() return nil, nil end)))))
        table.insert(out, tostring(select(2, coroutine.resume(coroutine.running()))))
        return table.concat(out, "\n")
        "##,
    );
    assert_eq!(spindle, native);
}
