//! Adversarial tests of `task.wait` as a C function (the wait lane): every kind and count of
//! argument, the fallback for values that are not numbers and for threads that are not tasks
//! yet, error messages and their positions, hand resumes of every shape, the scheduler's
//! wake-up through its thread-local, and the stack room the wake-up relies on. Everything runs
//! under a virtual clock unless a test says otherwise.

use std::time::Duration;

use crate::support::{test_host, Host};
use spindle::mlua::{self, Function, LightUserData, Thread};

/// Runs `source` as a task, steps the clock `steps` times by `dt`, and returns the log.
fn run_steps(source: &str, steps: usize, dt: f64) -> Vec<String> {
    let h = test_host();
    h.spawn(source);
    for _ in 0..steps {
        h.step(dt);
    }
    assert!(
        h.messages().is_empty(),
        "no error expected: {:?}",
        h.messages()
    );
    h.log()
}

#[test]
fn wait_accepts_none_nil_numbers_and_numeric_strings_and_returns_the_exact_elapsed_time() {
    for (call, dt, steps, expected) in [
        ("task.wait()", 0.25, 1, "0.25"),
        ("task.wait(nil)", 0.25, 1, "0.25"),
        ("task.wait(0)", 0.25, 1, "0.25"),
        ("task.wait(-1)", 0.25, 1, "0.25"),
        ("task.wait(0/0)", 0.25, 1, "0.25"),
        ("task.wait(-math.huge)", 0.25, 1, "0.25"),
        ("task.wait(0.5)", 0.25, 2, "0.5"),
        ("task.wait('0.5')", 0.25, 2, "0.5"),
        ("task.wait(' 2 ')", 1.0, 2, "2"),
        ("task.wait('1')", 0.5, 2, "1"),
        ("task.wait('0x1')", 0.5, 2, "1"),
        ("task.wait(1, 'extra', {})", 0.5, 2, "1"),
        ("task.wait(nil, 'extra')", 0.5, 1, "0.5"),
        ("task.wait('1', 'extra')", 0.5, 2, "1"),
    ] {
        let log = run_steps(&format!("local t = {call} print(type(t), t)"), steps, dt);
        assert_eq!(log, [format!("number {expected}")], "{call}");
    }
}

#[test]
fn wait_never_returns_before_the_requested_time() {
    // One step short of the request, nothing has happened.
    for (call, dt, steps) in [
        ("task.wait(0.5)", 0.25, 1),
        ("task.wait('0.5')", 0.25, 1),
        ("task.wait(' 2 ')", 1.0, 1),
        ("task.wait(math.huge)", 1e6, 3),
        ("task.wait('inf')", 1e6, 3),
        ("task.wait(1e300)", 1e6, 3),
    ] {
        let log = run_steps(&format!("print({call})"), steps, dt);
        assert!(log.is_empty(), "{call}: {log:?}");
    }
}

#[test]
fn wait_always_yields_even_for_zero_and_bad_looking_numbers() {
    for call in [
        "task.wait()",
        "task.wait(0)",
        "task.wait(-5)",
        "task.wait(0/0)",
        "task.wait('0')",
    ] {
        let h = test_host();
        h.spawn(&format!("print('before') {call} print('after')"));
        assert_eq!(h.log(), ["before"], "{call}");
        h.step(0.0);
        assert_eq!(h.log(), ["before", "after"], "{call}");
    }
}

/// The message of a bad call made on line 2 of a task, and of the same call through `pcall`.
fn wait_error(arg: &str) -> (String, String) {
    let h = test_host();
    h.spawn(&format!(
        "local ok, err = pcall(function()\n task.wait({arg}) end)\nprint(err)\n\
         local ok2, err2 = pcall(task.wait, {arg})\nprint(err2)"
    ));
    let log = h.log();
    assert_eq!(log.len(), 2, "{arg}: {log:?}");
    (log[0].clone(), log[1].clone())
}

#[test]
fn wait_with_a_bad_argument_names_wait_the_type_and_the_callers_line() {
    for (arg, kind) in [
        ("'x'", "string"),
        ("''", "string"),
        ("'1x'", "string"),
        ("{}", "table"),
        ("true", "boolean"),
        ("false", "boolean"),
        ("print", "function"),
        ("coroutine.create(print)", "thread"),
        ("newproxy(false)", "userdata"),
        (
            "Vector3 and Vector3.new(1,2,3) or vector.create(1, 2, 3)",
            "vector",
        ),
    ] {
        let (direct, through_pcall) = wait_error(arg);
        assert_eq!(
            direct,
            format!("test:2: invalid argument #1 to 'wait' (number expected, got {kind})"),
            "{arg}"
        );
        // Through pcall the caller is pcall itself, a C function, which has no line: as
        // `pcall(task.spawn, 'x')` gives.
        assert_eq!(
            through_pcall,
            format!("invalid argument #1 to 'wait' (number expected, got {kind})"),
            "{arg}"
        );
    }
}

#[test]
fn wait_and_spawn_report_a_bad_argument_in_the_same_shape() {
    let h = test_host();
    h.spawn(
        "local _, a = pcall(function()\n task.spawn('x') end)\n\
         local _, b = pcall(function()\n task.wait('x') end)\n\
         local _, c = pcall(task.spawn, 'x')\n\
         local _, d = pcall(task.wait, 'x')\n\
         print(a) print(b) print(c) print(d)",
    );
    assert_eq!(
        h.log(),
        [
            "test:2: invalid argument #1 to 'spawn' (function or thread expected, got string)",
            "test:4: invalid argument #1 to 'wait' (number expected, got string)",
            "invalid argument #1 to 'spawn' (function or thread expected, got string)",
            "invalid argument #1 to 'wait' (number expected, got string)",
        ]
    );
}

#[test]
fn a_bad_argument_leaves_no_wait_filed_and_the_task_goes_on() {
    let h = test_host();
    h.spawn("print(pcall(task.wait, 'x')) print(pcall(task.wait, {})) print('done')");
    assert_eq!(h.log().len(), 3);
    assert_eq!(h.log()[2], "done");
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_bad_argument_from_a_coroutine_that_is_not_a_task_names_the_callers_line() {
    let h = test_host();
    h.spawn(
        "local co = coroutine.create(function()\n task.wait('nope') end)\n\
         print(coroutine.resume(co))",
    );
    assert_eq!(
        h.log(),
        ["false test:2: invalid argument #1 to 'wait' (number expected, got string)"]
    );
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn wait_through_pcall_and_xpcall_returns_the_elapsed_time() {
    let log = run_steps(
        "print(pcall(task.wait, 1))\n\
         print(xpcall(task.wait, function(e) return 'handled ' .. e end, 1))\n\
         print(xpcall(task.wait, function(e) return 'handled ' .. e end, 'x'))",
        2,
        1.0,
    );
    assert_eq!(
        log,
        [
            "true 1",
            "true 1",
            "false handled invalid argument #1 to 'wait' (number expected, got string)"
        ]
    );
}

#[test]
fn wait_passed_around_as_a_value_still_waits() {
    let log = run_steps(
        "local w = task.wait\n\
         local t = { w = task.wait }\n\
         print(w(1)) print(t.w(1)) print(select(1, w(0.5)))",
        5,
        0.5,
    );
    assert_eq!(log, ["1", "1", "0.5"]);
}

#[test]
fn wait_as_the_body_of_a_wrapped_coroutine_inside_a_task() {
    let h = test_host();
    h.spawn(
        "local w = coroutine.wrap(task.wait)\n\
         print('wrap returned', select('#', w(1)))\n\
         local co = coroutine.create(task.wait)\n\
         print('resume returned', coroutine.resume(co, 2))\n\
         task.wait(3)\n\
         print('status', coroutine.status(co))",
    );
    assert_eq!(h.log(), ["wrap returned 0", "resume returned true"]);
    h.step(1.0);
    h.step(1.0);
    h.step(1.0);
    assert_eq!(
        h.log(),
        ["wrap returned 0", "resume returned true", "status dead"]
    );
    assert!(h.messages().is_empty(), "{:?}", h.messages());
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn wait_inside_coroutine_wrap_inside_a_task_hands_the_coroutine_to_the_scheduler() {
    let h = test_host();
    h.spawn(
        "local f = coroutine.wrap(function(a)\n\
           print('inner got', a)\n\
           print('inner waited', task.wait(1))\n\
           return 'inner done'\n\
         end)\n\
         print('outer sees', select('#', f('x')))\n\
         print('outer waited', task.wait(2))",
    );
    assert_eq!(h.log(), ["inner got x", "outer sees 0"]);
    h.step(1.0);
    assert_eq!(h.log()[2], "inner waited 1");
    h.step(1.0);
    assert_eq!(h.log()[3], "outer waited 2");
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn wait_from_the_main_thread_is_an_error_and_files_nothing() {
    let h = test_host();
    h.exec(
        "print(pcall(task.wait, 1))\n\
         print(pcall(task.wait))\n\
         print(pcall(task.wait, 'x'))",
    );
    let log = h.log();
    assert_eq!(log.len(), 3);
    // Called through pcall, a C function: no line to name.
    for line in &log[..2] {
        assert_eq!(
            line,
            "false task.wait: attempt to yield across metamethod/C-call boundary"
        );
    }
    assert_eq!(
        log[2],
        "false invalid argument #1 to 'wait' (number expected, got string)"
    );
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn wait_inside_a_sort_comparator_or_metamethod_is_an_error_and_files_nothing() {
    let h = test_host();
    h.spawn(
        "print(pcall(table.sort, {3, 2, 1}, function(a, b) task.wait(1) return a < b end))\n\
         local t = setmetatable({}, {__index = function() return task.wait(1) end})\n\
         print(pcall(function() return t.x end))\n\
         local u = setmetatable({}, {__add = function() return task.wait() end})\n\
         print(pcall(function() return u + 1 end))\n\
         print('still running')\n\
         print('waited', task.wait(1))",
    );
    let log = h.log();
    assert_eq!(log.len(), 4, "{log:?}");
    for line in &log[..3] {
        assert!(line.starts_with("false "), "{line}");
    }
    assert_eq!(log[3], "still running");
    assert_eq!(h.scheduler.task_count(), 1);
    // A stray timer from the refused waits would end the real one early or resume it twice.
    h.step(0.5);
    assert_eq!(h.log().len(), 4, "{:?}", h.log());
    h.step(0.5);
    assert_eq!(h.log()[4], "waited 1");
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_metatable_with_call_set_to_wait_passes_the_table_as_the_duration() {
    let h = test_host();
    h.spawn(
        "local t = setmetatable({}, {__call = task.wait})\n\
         print(pcall(function() t(1) end))",
    );
    // The VM's `__call` dispatch adds no frame: the caller named is the line of `t(1)`.
    assert_eq!(
        h.log(),
        ["false test:2: invalid argument #1 to 'wait' (number expected, got table)"]
    );
}

#[test]
fn hand_resumes_of_a_wait_with_any_number_of_values_return_exactly_those_values() {
    for count in [0usize, 1, 2, 3, 30] {
        let h = test_host();
        let values: Vec<String> = (1..=count).map(|i| format!("{i}")).collect();
        let args = values.join(", ");
        h.spawn(&format!(
            "local co = task.spawn(function()\n\
               local r = table.pack(task.wait(1))\n\
               local parts = {{tostring(r.n)}}\n\
               for i = 1, r.n do parts[#parts + 1] = tostring(r[i]) end\n\
               print(table.concat(parts, ' '))\n\
               print('second', task.wait(5))\n\
             end)\n\
             print(coroutine.resume(co{comma}{args}))",
            comma = if count == 0 { "" } else { ", " },
        ));
        let mut expected = vec![count.to_string()];
        expected.extend(values.iter().cloned());
        assert_eq!(h.log()[0], expected.join(" "), "{count} values");
        assert_eq!(h.log()[1], "true", "{count} values");
        // The wait's own timer (due at 1) must not resume it during its next wait.
        h.step(1.0);
        assert_eq!(h.log().len(), 2, "{count}: {:?}", h.log());
        h.step(4.0);
        assert_eq!(h.log()[2], "second 5", "{count}");
        assert_eq!(h.scheduler.task_count(), 0);
    }
}

#[test]
fn a_hand_resume_with_one_number_is_not_taken_for_the_wake_up() {
    let h = test_host();
    h.spawn(
        "local co = task.spawn(function()\n\
           print('got', task.wait(1))\n\
           print('then', task.wait(10))\n\
         end)\n\
         task.wait(1)\n\
         coroutine.resume(co, 42)",
    );
    // Both timers are due at 1, the task's first (rule 15): it wakes with its own elapsed
    // time, then the spawner's one number ends its second wait by hand (rule 12).
    h.step(1.0);
    assert_eq!(h.log(), ["got 1", "then 42"]);
    h.step(10.0);
    assert_eq!(
        h.log().len(),
        2,
        "the dropped wake-up stays dropped: {:?}",
        h.log()
    );
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn task_spawn_of_a_waiting_thread_resumes_it_with_its_arguments_once() {
    let h = test_host();
    h.spawn(
        "local co = task.spawn(function()\n\
           print('got', task.wait(1))\n\
           print('got', task.wait(1))\n\
         end)\n\
         task.spawn(co, 'a')\n\
         task.spawn(co, nil)",
    );
    assert_eq!(h.log(), ["got a", "got nil"]);
    h.step(1.0);
    h.step(1.0);
    assert_eq!(h.log(), ["got a", "got nil"]);
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_host_resume_with_mlua_passes_its_values_and_drops_the_wake_up() {
    let h = test_host();
    h.spawn(
        "waiter = coroutine.running()\n\
         print('got', task.wait(1))\n\
         print('then', task.wait(1))",
    );
    let thread: Thread = h.lua.globals().get("waiter").unwrap();
    thread.resume::<()>(7).unwrap();
    assert_eq!(h.log(), ["got 7"]);
    thread
        .resume::<()>((LightUserData(std::ptr::null_mut()), 2.5))
        .unwrap();
    assert_eq!(h.log(), ["got 7", "then userdata: 0x0000000000000000 2.5"]);
    h.step(1.0);
    h.step(1.0);
    assert_eq!(h.log().len(), 2, "{:?}", h.log());
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn cancel_and_close_of_a_waiting_thread_end_it_for_good() {
    let h = test_host();
    h.spawn(
        "local a = task.spawn(function() task.wait(1) print('a woke') end)\n\
         local b = task.spawn(function() task.wait(1) print('b woke') end)\n\
         local c = coroutine.create(function() task.wait(1) print('c woke') end)\n\
         coroutine.resume(c)\n\
         task.cancel(a)\n\
         print('close', coroutine.close(b))\n\
         print('close', coroutine.close(c))\n\
         print(coroutine.resume(a))\n\
         print(coroutine.status(b), coroutine.status(c))",
    );
    h.step(1.0);
    h.step(1.0);
    assert_eq!(
        h.log(),
        [
            "close true",
            "close true",
            "false cannot resume dead coroutine",
            "dead dead"
        ]
    );
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn an_error_right_after_the_wake_up_names_its_line() {
    let h = test_host();
    h.spawn("task.wait(1)\nerror('after wake')");
    h.spawn("local x = task.wait(1) + nil");
    h.step(1.0);
    let messages = h.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], "test:2: after wake");
    assert!(
        messages[1].starts_with("test:1: attempt to perform arithmetic"),
        "{messages:?}"
    );
}

#[test]
fn waits_at_the_bottom_of_deep_recursion_wake_with_the_right_value() {
    let log = run_steps(
        "local function deep(n, ...)\n\
           if n == 0 then return task.wait(1), select('#', ...) end\n\
           return deep(n - 1, n, ...)\n\
         end\n\
         print(deep(150))\n\
         local function down(n) if n == 0 then return task.wait(0.5) end return (down(n - 1)) end\n\
         print(down(5000))\n\
         local t = {} for i = 1, 7000 do t[i] = i end\n\
         print(task.wait(table.unpack(t, 1, 7000)))",
        6,
        0.5,
    );
    assert_eq!(log, ["1 150", "0.5", "1"]);
}

#[test]
fn many_arguments_then_many_waits_keep_the_stack_sound() {
    // Each wait is called with a different number of arguments, and the thread's stack grows
    // and shrinks between waits (the collector may shrink a suspended thread's stack).
    let h = test_host();
    h.spawn(
        "local total = 0\n\
         for i = 1, 200 do\n\
           local args = table.create(i * 37 % 500 + 1, 0)\n\
           args[1] = 0\n\
           local r = table.pack(task.wait(table.unpack(args)))\n\
           assert(r.n == 1 and r[1] == 0.125, tostring(r.n) .. ' ' .. tostring(r[1]))\n\
           if i % 10 == 0 then collectgarbage('collect') end\n\
           total += 1\n\
         end\n\
         print('done', total)",
    );
    for _ in 0..200 {
        h.step(0.125);
    }
    assert!(h.messages().is_empty(), "{:?}", h.messages());
    assert_eq!(h.log(), ["done 200"]);
}

#[test]
fn signal_waits_and_task_waits_mix_in_one_task() {
    let h = test_host();
    h.spawn(
        "local s = Signal.new()\n\
         task.delay(1, function() s:Fire('fired', 2) end)\n\
         print('signal', s:Wait())\n\
         print('wait', task.wait(1))\n\
         task.spawn(function() task.wait(0.5) s:Fire('again') end)\n\
         print('signal', s:Wait())\n\
         print('wait', task.wait())",
    );
    h.step(1.0);
    h.step(1.0);
    h.step(0.5);
    h.step(0.25);
    assert_eq!(
        h.log(),
        ["signal fired 2", "wait 1", "signal again", "wait 0.25"]
    );
    assert!(h.messages().is_empty(), "{:?}", h.messages());
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_waiting_thread_resumed_by_hand_inside_a_batch_of_wake_ups_gets_only_the_hand_values() {
    let h = test_host();
    h.spawn(
        "local b\n\
         task.spawn(function() task.wait(1) print('a resumes b', coroutine.resume(b, 'hand')) end)\n\
         b = task.spawn(function() print('b got', task.wait(1)) print('b then', task.wait(1)) end)",
    );
    h.step(1.0);
    assert_eq!(h.log(), ["b got hand", "a resumes b true"]);
    h.step(1.0);
    assert_eq!(h.log(), ["b got hand", "a resumes b true", "b then 1"]);
}

#[test]
fn an_old_wait_kept_after_its_scheduler_is_dropped_fails_in_a_new_scheduler() {
    let lua = mlua::Lua::new();
    {
        let first = spindle::Scheduler::new(&lua).unwrap();
        first.install_task_library().unwrap();
        lua.load("old_wait = task.wait").exec().unwrap();
    }
    let clock = spindle::VirtualClock::new();
    let errors = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let kept = std::rc::Rc::clone(&errors);
    let second = spindle::Scheduler::builder()
        .clock(spindle::Clock::from(clock.clone()))
        .on_error(move |_, e| kept.borrow_mut().push(e.message.clone()))
        .build(&lua)
        .unwrap();
    second.install_task_library().unwrap();
    let f: Function = lua
        .load(
            "return function()\n\
               local ok, err = pcall(old_wait, 1)\n\
               result = tostring(ok) .. ' ' .. tostring(err)\n\
               local ok2, err2 = pcall(old_wait)\n\
               result2 = tostring(ok2) .. ' ' .. tostring(err2)\n\
               result3 = task.wait(1)\n\
             end",
        )
        .eval()
        .unwrap();
    drop(second.spawn(f, ()).unwrap());
    clock.advance(Duration::from_secs(1));
    second.cycle().unwrap();
    let result: String = lua.globals().get("result").unwrap();
    let result2: String = lua.globals().get("result2").unwrap();
    assert!(result.starts_with("false "), "{result}");
    assert!(result.contains("dropped"), "{result}");
    assert!(result2.starts_with("false "), "{result2}");
    let result3: f64 = lua.globals().get("result3").unwrap();
    assert_eq!(result3, 1.0);
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert_eq!(second.task_count(), 0);
}

#[test]
fn wait_as_the_body_of_spawned_deferred_and_delayed_tasks_returns_and_ends_them() {
    let h = test_host();
    h.spawn(
        "task.spawn(task.wait, 1)\n\
         task.defer(task.wait, 1)\n\
         task.delay(0, task.wait, 1)\n\
         task.spawn(task.wait, 'x')",
    );
    assert_eq!(
        h.messages(),
        ["invalid argument #1 to 'wait' (number expected, got string)"]
    );
    for _ in 0..4 {
        h.step(0.5);
    }
    assert_eq!(h.messages().len(), 1, "{:?}", h.messages());
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_host_task_whose_function_is_wait_finishes_with_the_elapsed_time() {
    let h = test_host();
    let task_table: mlua::Table = h.lua.globals().get("task").unwrap();
    let wait: Function = task_table.get("wait").unwrap();
    let claimed = h.scheduler.spawn(wait.clone(), 0.75).unwrap();
    let claimed_str = h.scheduler.spawn(wait, "0.5").unwrap();
    h.step(0.5);
    h.step(0.25);
    for (task, expected) in [(&claimed, 0.75), (&claimed_str, 0.5)] {
        match h.scheduler.take_result::<f64>(task).unwrap() {
            Some(spindle::Outcome::Finished(elapsed)) => assert_eq!(elapsed, expected),
            _ => panic!("the task finished with its elapsed time"),
        }
    }
}

#[test]
fn integers_buffers_and_vectors_are_argument_errors_as_before() {
    let h = test_host();
    h.spawn(
        "local function try(v)\n\
           local ok, err = pcall(function() return task.wait(v) end)\n\
           print(ok, err)\n\
         end\n\
         try(buffer.create(1))\n\
         try(vector.create(1, 2, 3))\n\
         if integer then try(integer.create(1)) else print('false no integer') end",
    );
    let log = h.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        log[0],
        "false test:2: invalid argument #1 to 'wait' (number expected, got buffer)"
    );
    assert_eq!(
        log[1],
        "false test:2: invalid argument #1 to 'wait' (number expected, got vector)"
    );
    assert!(log[2].starts_with("false "), "{log:?}");
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_frame_budget_carries_wake_ups_over_and_they_report_the_time_that_really_passed() {
    let clock = spindle::VirtualClock::new();
    let lua = mlua::Lua::new();
    let scheduler = spindle::Scheduler::builder()
        .clock(spindle::Clock::from(clock.clone()))
        .frame_budget_fn(|work| work.resumed < 1)
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let f: Function = lua
        .load(
            "return function()\n\
               got = {}\n\
               for i = 1, 3 do\n\
                 task.spawn(function() got[i] = task.wait(0.25) end)\n\
               end\n\
               task.spawn(function() got[4] = task.wait('0.25') end)\n\
             end",
        )
        .eval()
        .unwrap();
    drop(scheduler.spawn(f, ()).unwrap());
    let dt = Duration::from_millis(250);
    let mut resumed = Vec::new();
    // Under a virtual clock, `frame` moves the clock by `dt` itself.
    for _ in 0..5 {
        resumed.push(scheduler.frame(dt).unwrap().timers);
    }
    assert_eq!(resumed, [1, 1, 1, 1, 0]);
    let got: Vec<f64> = lua.globals().get("got").unwrap();
    assert_eq!(got, [0.25, 0.5, 0.75, 1.0]);
    assert!(!scheduler.has_work());
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn under_tiny_time_slices_every_kind_of_wait_returns_and_counts_right() {
    let h = Host::builder()
        .real_time()
        .scheduler(|b| {
            b.time_slice(Duration::from_nanos(1))
                .timeout(Duration::from_secs(20))
        })
        .build();
    h.script(
        r#"
        for t = 1, 4 do
            task.spawn(function()
                local sum = 0
                for k = 1, 150 do
                    for j = 1, k do end
                    local e1 = task.wait()
                    local e2 = task.wait("0")
                    local ok, e3 = pcall(task.wait, 0)
                    local co = coroutine.create(function() return task.wait(0) end)
                    coroutine.resume(co)
                    local e4 = coroutine.resume(coroutine.create(function() end))
                    if type(e1) == "number" and type(e2) == "number" and ok and e3 >= 0 then
                        sum += 1
                    end
                end
                log("task " .. t .. " got " .. sum)
            end)
        end
        "#,
    );
    let mut log = h.log();
    log.sort();
    let expected: Vec<_> = (1..=4).map(|t| format!("task {t} got 150")).collect();
    assert_eq!(log, expected);
    assert!(h.messages().is_empty(), "{:?}", h.messages());
}

#[test]
fn running_out_of_memory_around_waits_fails_only_that_task() {
    let h = test_host();
    let floor = h.lua.used_memory();
    h.lua.set_memory_limit(floor + 4 * 1024 * 1024).unwrap();
    h.spawn(
        r#"
        task.spawn(function()
            local hog = {}
            while true do
                task.wait()
                for i = 1, 64 do table.insert(hog, string.rep("x", 1024) .. #hog) end
            end
        end)
        task.spawn(function()
            local hog = {}
            while true do
                task.wait("0")
                for i = 1, 64 do table.insert(hog, string.rep("y", 1024) .. #hog) end
            end
        end)
        task.spawn(function()
            for i = 1, 200 do task.wait() end
            log("ticker done")
        end)
        "#,
    );
    for _ in 0..200 {
        h.step(0.0);
    }
    let messages = h.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for message in &messages {
        assert!(message.contains("not enough memory"), "{messages:?}");
    }
    assert_eq!(h.log(), ["ticker done"]);
    assert_eq!(h.scheduler.task_count(), 0);
    h.lua.set_memory_limit(0).unwrap();
}

#[test]
fn a_wait_hand_resumed_from_inside_another_tasks_wake_up_by_the_host_returns_the_hosts_values() {
    // The host resumes a waiting thread with mlua from a Rust function that a woken task calls:
    // the wake-up of the caller is in flight when the other thread is resumed with one value.
    let h = test_host();
    let poke = h
        .lua
        .create_function(|_, (thread, value): (Thread, f64)| thread.resume::<()>(value))
        .unwrap();
    h.lua.globals().set("poke", poke).unwrap();
    h.spawn(
        "local b\n\
         task.spawn(function() task.wait(1) poke(b, 99) print('a done') end)\n\
         b = task.spawn(function() print('b got', task.wait(5)) print('b then', task.wait(1)) end)",
    );
    h.step(1.0);
    assert_eq!(h.log(), ["b got 99", "a done"]);
    h.step(1.0);
    assert_eq!(h.log(), ["b got 99", "a done", "b then 1"]);
    h.step(5.0);
    assert_eq!(h.log().len(), 3);
    assert_eq!(h.scheduler.task_count(), 0);
}

/// A host whose watchdog ends a slice at nearly every check, on the real clock.
fn tiny_slices() -> Host {
    Host::builder()
        .real_time()
        .scheduler(|b| {
            b.time_slice(Duration::from_nanos(1))
                .timeout(Duration::from_secs(20))
        })
        .build()
}

#[test]
fn a_numeric_string_wait_returns_a_number_even_when_a_slice_ends_inside_its_conversion() {
    // The string goes through `task.luau`'s fallback, Lua code called from `wait`'s C frame.
    // Luau lets Lua code called from a C function that has a continuation yield, so the
    // watchdog could stop the task inside the fallback; `wait`'s continuation then ran with
    // the argument still on the stack and returned it, without waiting.
    let h = tiny_slices();
    h.script(
        r#"
        task.spawn(function()
            local bad = 0
            for k = 1, 200 do
                for j = 1, k do end
                local t = task.wait("0.001")
                if type(t) ~= "number" or t < 0.001 then bad += 1 end
            end
            log("bad " .. bad)
        end)
        "#,
    );
    assert_eq!(h.log(), ["bad 0"]);
    assert!(h.messages().is_empty(), "{:?}", h.messages());
}

#[test]
fn a_bad_argument_still_raises_its_error_when_a_slice_ends_inside_the_check() {
    let h = tiny_slices();
    h.script(
        r#"
        task.spawn(function()
            local wrong = 0
            for k = 1, 200 do
                for j = 1, k do end
                local ok, err = pcall(function()
                    task.wait("nope") end)
                if ok or err ~= "main:7: invalid argument #1 to 'wait' (number expected, got string)" then
                    wrong += 1
                    if wrong == 1 then log(tostring(ok) .. " " .. tostring(err)) end
                end
                task.wait()
            end
            log("wrong " .. wrong)
        end)
        "#,
    );
    assert_eq!(h.log().last().unwrap(), "wrong 0", "{:?}", h.log());
    assert!(h.messages().is_empty(), "{:?}", h.messages());
}

#[test]
fn wait_as_the_iterator_of_a_generic_for_loop_yields_each_turn() {
    let h = test_host();
    h.spawn(
        "local n = 0\n\
         for dt in task.wait do\n\
           n += 1 print('turn', n, dt)\n\
           if n == 3 then break end\n\
         end\n\
         for dt in function() return task.wait('0.5') end do\n\
           print('gen', dt) break\n\
         end",
    );
    h.step(0.25);
    h.step(0.25);
    h.step(0.25);
    h.step(0.5);
    assert_eq!(
        h.log(),
        ["turn 1 0.25", "turn 2 0.25", "turn 3 0.25", "gen 0.5"]
    );
    assert!(h.messages().is_empty(), "{:?}", h.messages());
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn wake_ups_of_two_lua_states_on_one_os_thread_do_not_mix() {
    // A task of the first state, woken by its timer, runs a cycle of a second state whose
    // woken task hand-resumes one of its own waits with one number: each wait returns what its
    // own resumer gave it.
    let outer = test_host();
    let inner = std::rc::Rc::new(test_host());
    inner.spawn(
        "local waiter = task.spawn(function() print('inner waiter got', task.wait(5)) end)\n\
         task.spawn(function() print('inner got', task.wait(1)) coroutine.resume(waiter, 7) end)",
    );
    let cycled = std::rc::Rc::clone(&inner);
    let step_inner = outer
        .lua
        .create_function(move |_, ()| {
            cycled.step(1.0);
            Ok(())
        })
        .unwrap();
    outer.lua.globals().set("step_inner", step_inner).unwrap();
    outer.spawn("print('outer got', task.wait(1)) step_inner() print('outer then', task.wait(1))");
    outer.step(1.0);
    outer.step(1.0);
    assert_eq!(outer.log(), ["outer got 1", "outer then 1"]);
    assert_eq!(inner.log(), ["inner got 1", "inner waiter got 7"]);
    inner.step(5.0);
    assert_eq!(inner.log().len(), 2);
    assert_eq!(outer.scheduler.task_count(), 0);
    assert_eq!(inner.scheduler.task_count(), 0);
}
