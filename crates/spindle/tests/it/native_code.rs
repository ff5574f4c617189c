//! Native code: scripts are compiled by Luau's code generator by default where it runs
//! (`spindle::native_code_supported`), `SchedulerBuilder::native_code(false)` keeps them on the
//! interpreter, and what the scheduler does at the VM's edge holds inside native code: the
//! watchdog's timeout and time slices (interrupts), `task.wait` (a C function that yields), the
//! memory limit, and the lines of errors and tracebacks.
//!
//! Every test here checks first, with `in_native()`, that the code it runs is native, so that
//! none passes on the interpreter by accident. The rest of the suite runs natively too (a new
//! `Lua` compiles what it loads); `scripts` and `hostile::fuzz` run both ways.

use std::ffi::c_int;
use std::time::Duration;

use crate::support::{lines, Host};
use spindle::mlua::ffi;
use spindle::{native_code_supported, SchedulerBuilder, TIMEOUT_MESSAGE};

/// `in_native()`: whether the Lua function that calls it was compiled to native code (its
/// prototype has native code attached). Luau's other probe, `lua_incustomexecution`, answers 0
/// at a call from native code into a C function, which Luau makes through the interpreter's
/// path.
unsafe extern "C-unwind" fn in_native(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: Luau calls this with its running thread; level 1 is the caller's frame, and a C
    // function has room for one result.
    unsafe {
        let native = ffi::lua_hascustomexecution(state, 1);
        ffi::lua_pushboolean(state, native);
    }
    1
}

/// A host on the real clock (the watchdog measures real time) with `in_native` installed.
fn host(configure: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static) -> Host {
    let host = Host::builder()
        .real_time()
        .errors_in_log()
        .chunk_name("test")
        .scheduler(configure)
        .build();
    // SAFETY: `in_native` follows the C function protocol and raises nothing.
    let probe = unsafe { host.lua.create_c_function(in_native) }.unwrap();
    host.lua.globals().set("in_native", probe).unwrap();
    host
}

/// Whether this test binary's build compiles native code on this machine: with Spindle's
/// `native` feature, on x86-64 and arm64.
fn expect_native() -> bool {
    cfg!(all(
        feature = "native",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
}

#[test]
fn native_code_is_supported_with_the_feature_on_x86_64_and_arm64() {
    assert_eq!(native_code_supported(), expect_native());
}

#[test]
fn scripts_run_as_native_code_by_default() {
    let host = host(|b| b);
    host.script("local function f() return in_native() end log(f())");
    assert_eq!(host.log(), lines(&[&expect_native().to_string()]));
}

#[test]
fn native_code_false_keeps_scripts_and_the_task_library_on_the_interpreter() {
    let host = host(|b| b.native_code(false));
    host.script(
        r#"
        local function f() return in_native() end
        log(f())
        -- A function of the task library, called back into Lua: runs `in_native` through it.
        task.spawn(function() log(in_native()) end)
        "#,
    );
    assert_eq!(host.log(), lines(&["false", "false"]));
}

#[cfg(feature = "native")]
#[test]
fn native_code_true_turns_it_back_on_for_a_vm_the_host_switched_off() {
    use spindle::mlua::Lua;
    use spindle::{Outcome, Scheduler};

    let lua = Lua::new();
    lua.enable_jit(false);
    let scheduler = Scheduler::builder().native_code(true).build(&lua).unwrap();
    // SAFETY: `in_native` follows the C function protocol and raises nothing.
    let probe = unsafe { lua.create_c_function(in_native) }.unwrap();
    lua.globals().set("in_native", probe).unwrap();
    let main = lua
        .load("local function f() return in_native() end return f()")
        .into_function()
        .unwrap();
    let task = scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    let native = match scheduler.take_result::<bool>(&task).unwrap() {
        Some(Outcome::Finished(native)) => native,
        other => panic!("the task did not finish: {other:?}"),
    };
    assert_eq!(native, expect_native());
}

#[test]
fn a_busy_loop_in_native_code_is_stopped_by_the_timeout() {
    let host = host(|b| b.timeout(Duration::from_millis(50)));
    host.script(
        r#"
        local function spin()
            log(in_native())
            local n = 0
            while true do n += 1 end
        end
        task.spawn(function() log("other task") end)
        spin()
        "#,
    );
    let native = expect_native().to_string();
    assert_eq!(
        host.log(),
        lines(&["other task", &native, &format!("error: {TIMEOUT_MESSAGE}")])
    );
}

#[test]
fn a_busy_loop_in_native_code_is_sliced_and_goes_on_where_it_stopped() {
    let host = host(|b| {
        b.time_slice(Duration::from_millis(2))
            .timeout(Duration::from_secs(20))
    });
    host.script(
        r#"
        local done = false
        task.defer(function() log("deferred ran while the loop was sliced") done = true end)
        local function spin()
            log(in_native())
            local n = 0
            while not done do n += 1 end
            log(n > 0)
        end
        spin()
        "#,
    );
    let native = expect_native().to_string();
    assert_eq!(
        host.log(),
        lines(&[&native, "deferred ran while the loop was sliced", "true"])
    );
}

#[test]
fn task_wait_from_native_code_yields_and_resumes_it() {
    let host = host(|b| b);
    host.script(
        r#"
        local function count()
            local sum = 0
            for i = 1, 3 do
                sum += i
                task.wait()
                assert(in_native() == in_native())
            end
            log(in_native(), sum)
        end
        count()
        "#,
    );
    assert_eq!(host.log(), lines(&[&format!("{} 6", expect_native())]));
}

#[test]
fn errors_in_native_code_name_their_line_and_traceback() {
    let host = host(|b| b);
    host.script(
        "local function inner()\n\
         \tlog(in_native())\n\
         \tlocal t = nil\n\
         \treturn t.field\n\
         end\n\
         local function outer() return inner() + 1 end\n\
         outer()\n",
    );
    let native = expect_native().to_string();
    assert_eq!(
        host.log(),
        lines(&[&native, "error: test:4: attempt to index nil with 'field'"])
    );
    let errors = host.errors.borrow();
    let traceback = &errors[0].traceback;
    for line in ["test:4", "test:6", "test:7"] {
        assert!(
            traceback.contains(line),
            "{line} is missing from the traceback:\n{traceback}"
        );
    }
}

#[test]
fn the_memory_limit_stops_a_native_allocation_loop() {
    let host = host(|b| b.memory_limit(4 << 20));
    host.script(
        r#"
        task.spawn(function()
            local function grow()
                log(in_native())
                local t = {}
                for i = 1, 1e9 do t[i] = {i} end
            end
            grow()
        end)
        log("after")
        "#,
    );
    let log = host.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], expect_native().to_string());
    assert!(
        log[1].starts_with("error: ") && log[1].contains("not enough memory"),
        "{log:?}"
    );
    assert_eq!(log[2], "after");
}
