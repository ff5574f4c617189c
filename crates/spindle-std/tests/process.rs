//! `@spindle/process` as scripts use it, on a scheduler: arguments, environment, exit codes, and
//! `exit` ending the run from anywhere.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, Value};
use spindle::Scheduler;
use spindle_std::process::{self, Exit, ProcessInfo};

/// A VM with the task library and `process` as a global; the errors the scheduler reports are
/// kept, except those `exit` causes.
struct Host {
    lua: Lua,
    scheduler: Scheduler,
    exit: Exit,
    errors: Rc<RefCell<Vec<String>>>,
}

fn host(args: &[&str]) -> Host {
    let lua = Lua::new();
    let exit = Exit::new();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let (seen, ending) = (errors.clone(), exit.clone());
    let scheduler = Scheduler::builder()
        .on_error(move |_, error| {
            if ending.requested().is_none() {
                seen.borrow_mut().push(error.message.clone());
            }
        })
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let info = ProcessInfo {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        exit: exit.clone(),
    };
    lua.globals()
        .set("process", process::module(&lua, info).unwrap())
        .unwrap();
    Host {
        lua,
        scheduler,
        exit,
        errors,
    }
}

impl Host {
    /// Runs `code` as the main task until the run ends; returns the exit status.
    fn run(&self, code: &str) -> u8 {
        let main = self
            .lua
            .load(code)
            .set_name("=main")
            .into_function()
            .unwrap();
        self.scheduler.spawn(main, ()).unwrap();
        async_io::block_on(self.exit.run(&self.scheduler, async_io::Timer::at)).unwrap();
        self.exit.status(!self.errors.borrow().is_empty())
    }

    fn global<T: mlua::FromLua>(&self, name: &str) -> T {
        self.lua.globals().get(name).unwrap()
    }
}

#[test]
fn args_are_a_frozen_list_of_the_scripts_words() {
    let host = host(&["one", "--two", ""]);
    let status = host.run(
        r#"
        n, first, last = #process.args, process.args[1], process.args[3]
        frozen = table.isfrozen(process.args)
    "#,
    );
    assert_eq!(status, 0);
    assert_eq!(host.global::<u32>("n"), 3);
    assert_eq!(host.global::<String>("first"), "one");
    assert_eq!(host.global::<String>("last"), "");
    assert!(host.global::<bool>("frozen"));
}

#[test]
fn platform_fields_and_cwd_follow_lune() {
    let host = host(&[]);
    host.run("os_, arch, endian, cwd = process.os, process.arch, process.endianness, process.cwd");
    assert_eq!(host.global::<String>("os_"), std::env::consts::OS);
    assert_eq!(host.global::<String>("arch"), std::env::consts::ARCH);
    assert_eq!(host.global::<String>("endian"), "little");
    let cwd = host.global::<String>("cwd");
    assert!(cwd.ends_with(std::path::MAIN_SEPARATOR), "{cwd}");
    assert_eq!(
        std::path::Path::new(&cwd),
        std::env::current_dir().unwrap().as_path()
    );
}

#[test]
fn env_reads_sets_unsets_and_iterates_the_real_environment() {
    let host = host(&[]);
    let status = host.run(
        r#"
        assert(process.env.SPINDLE_STD_TEST_UNSET == nil)
        process.env.SPINDLE_STD_TEST_VAR = "hello"
        seen = process.env.SPINDLE_STD_TEST_VAR
        found = false
        for name, value in process.env do
            if name == "SPINDLE_STD_TEST_VAR" then found = value end
        end
        process.env.SPINDLE_STD_TEST_VAR = nil
        gone = process.env.SPINDLE_STD_TEST_VAR == nil
        bad = select(2, pcall(function() process.env["A=B"] = "x" end))
        badValue = select(2, pcall(function() process.env.X = 5 end))
    "#,
    );
    assert_eq!(status, 0, "{:?}", host.errors.borrow());
    assert_eq!(host.global::<String>("seen"), "hello");
    assert_eq!(host.global::<String>("found"), "hello");
    assert!(host.global::<bool>("gone"));
    assert_eq!(std::env::var_os("SPINDLE_STD_TEST_VAR"), None);
    assert_eq!(
        host.global::<String>("bad"),
        "main:11: process.env: cannot set 'A=B': the name holds '=' or a NUL character"
    );
    assert_eq!(
        host.global::<String>("badValue"),
        "main:12: process.env: the value of X must be a string or nil, got number"
    );
}

#[test]
fn exit_code_is_settable_and_an_uncaught_error_makes_zero_one() {
    let host = host(&[]);
    assert_eq!(host.run("process.exitCode = 3 code = process.exitCode"), 3);
    assert_eq!(host.global::<u8>("code"), 3);
    let host = self::host(&[]);
    assert_eq!(host.run("task.spawn(error, 'boom')"), 1);
    let host = self::host(&[]);
    assert_eq!(
        host.run("process.exitCode = 4 task.spawn(error, 'boom')"),
        4
    );
    let host = self::host(&[]);
    let status = host.run(
        r#"
        bad = select(2, pcall(function() process.exitCode = 256 end))
        other = select(2, pcall(function() process.cwd = "/" end))
    "#,
    );
    assert_eq!(status, 0);
    assert_eq!(
        host.global::<String>("bad"),
        "main:2: invalid argument #1 to 'exitCode' (integer from 0 to 255 expected, got 256)"
    );
    assert_eq!(
        host.global::<String>("other"),
        "main:3: process.cwd cannot be assigned (only process.exitCode can)"
    );
}

#[test]
fn exit_ends_the_run_at_once_with_its_code_dropping_timers() {
    let host = host(&[]);
    let started = Instant::now();
    let status = host.run(
        r#"
        log = {}
        task.delay(1000, function() table.insert(log, "delay") end)
        task.spawn(function() task.wait(500) table.insert(log, "waiter") end)
        task.defer(function() table.insert(log, "deferred") end)
        table.insert(log, "main")
        process.exit(7)
        table.insert(log, "after exit")
    "#,
    );
    assert_eq!(status, 7);
    assert!(started.elapsed() < Duration::from_secs(10));
    let log: Vec<String> = host.global("log");
    assert_eq!(log, ["main"]);
    // The scheduler was shut down: nothing is left.
    assert_eq!(host.scheduler.task_count(), 0);
    assert!(!host.scheduler.has_work());
    assert_eq!(host.exit.requested(), Some(7));
}

#[test]
fn exit_inside_pcall_and_nested_coroutines_stops_every_level() {
    let host = host(&[]);
    let status = host.run(
        r#"
        log = {}
        local inner = coroutine.wrap(function()
            local ok = pcall(function()
                coroutine.resume(coroutine.create(function()
                    pcall(process.exit, 5)
                    table.insert(log, "after exit in the innermost coroutine")
                end))
                table.insert(log, "after resume")
            end)
            table.insert(log, "after pcall")
        end)
        local ok = pcall(inner)
        table.insert(log, "after wrap")
        while true do end
    "#,
    );
    assert_eq!(status, 5);
    let log: Vec<String> = host.global("log");
    assert!(log.is_empty(), "{log:?}");
    assert!(
        host.errors.borrow().is_empty(),
        "{:?}",
        host.errors.borrow()
    );
}

#[test]
fn exit_from_a_later_task_ends_the_run_and_the_first_code_wins() {
    let host = host(&[]);
    let status = host.run(
        r#"
        log = {}
        for i = 1, 3 do
            task.spawn(function()
                task.wait(0.01 * i)
                table.insert(log, i)
                process.exit(10 + i)
            end)
        end
    "#,
    );
    assert_eq!(status, 11);
    let log: Vec<u32> = host.global("log");
    assert_eq!(log, [1]);
}

#[test]
fn exit_refuses_codes_outside_a_byte() {
    let host = host(&[]);
    let status = host.run(
        r#"
        a = select(2, pcall(process.exit, -1))
        b = select(2, pcall(process.exit, 1.5))
        c = select(2, pcall(process.exit, "1"))
    "#,
    );
    assert_eq!(status, 0);
    assert_eq!(
        host.global::<String>("a"),
        "invalid argument #1 to 'exit' (integer from 0 to 255 expected, got -1)"
    );
    assert_eq!(
        host.global::<String>("b"),
        "invalid argument #1 to 'exit' (integer from 0 to 255 expected, got 1.5)"
    );
    assert_eq!(
        host.global::<String>("c"),
        "invalid argument #1 to 'exit' (integer from 0 to 255 expected, got string)"
    );
}

#[test]
fn a_script_that_replaces_globals_still_gets_argument_errors_at_its_line() {
    // The module binds the globals and library functions it uses when it is made: replacing
    // them afterwards changes nothing (a replaced `error` that returns would make refusals
    // silent and let a bad exit code through).
    let host = host(&[]);
    let status = host.run(
        r#"
        local pcall, select = pcall, select
        error = function() end
        type = function() return "number" end
        typeof = function() return "number" end
        tostring = function() return "?" end
        math.floor = function(x) return x end
        string.format = function() return "" end
        code = select(2, pcall(function() process.exitCode = 1.5 end))
        name = select(2, pcall(function() return process.env[1] end))
        field = select(2, pcall(function() process.cwd = "/" end))
        exit = select(2, pcall(process.exit, "1"))
    "#,
    );
    assert_eq!(status, 0);
    assert_eq!(
        host.global::<String>("code"),
        "main:9: invalid argument #1 to 'exitCode' (integer from 0 to 255 expected, got 1.5)"
    );
    assert_eq!(
        host.global::<String>("name"),
        "main:10: process.env: names are strings, got number"
    );
    assert_eq!(
        host.global::<String>("field"),
        "main:11: process.cwd cannot be assigned (only process.exitCode can)"
    );
    assert_eq!(
        host.global::<String>("exit"),
        "invalid argument #1 to 'exit' (integer from 0 to 255 expected, got string)"
    );
}

#[test]
fn a_run_with_no_exit_ends_when_its_work_does() {
    let host = host(&[]);
    let status = host.run("task.wait(0.01) done = true");
    assert_eq!(status, 0);
    assert!(host.global::<bool>("done"));
    assert_eq!(host.exit.requested(), None);
    let _: Value = host.global("process");
}

#[test]
fn exit_from_a_metamethod_or_a_sort_comparator_ends_the_run() {
    let host = host(&[]);
    let status = host.run(
        r#"
        log = {}
        local t = setmetatable({}, {__index = function() process.exit(4) end})
        local _ = t.x
        table.insert(log, "after the metamethod")
    "#,
    );
    assert_eq!(status, 4);
    assert!(host.global::<Vec<String>>("log").is_empty());

    let host = self::host(&[]);
    let status = host.run(
        r#"
        log = {}
        table.sort({3, 2, 1}, function(a, b) process.exit(6) return a < b end)
        table.insert(log, "after sort")
    "#,
    );
    assert_eq!(status, 6);
    assert!(host.global::<Vec<String>>("log").is_empty());
}
