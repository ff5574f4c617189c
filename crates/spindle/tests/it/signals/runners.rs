//! Immediate handler calls on reused runner threads (contract rules 8, 19, 23, 24): a call that
//! returns leaves its runner for the next; one that waits keeps its thread, as a task of the
//! connecting script, and the next handler runs on another; one that fails is reported as a
//! task's failure and breaks nothing for the next. Each scenario runs twice: on the handler
//! lane (no watchdog: a call is a task only if it needs to be) and under a watchdog, where
//! every call is a task from the start.

use std::time::Duration;

use crate::support::Host;

/// A host under virtual time with errors in its log; `watched` sets a watchdog (a timeout far
/// beyond any test), which closes the handler lane.
fn host(watched: bool) -> Host {
    let builder = Host::builder().errors_in_log();
    if watched {
        builder
            .real_time()
            .scheduler(|b| b.timeout(Duration::from_secs(600)))
            .build()
    } else {
        builder.build()
    }
}

fn both_ways(scenario: impl Fn(Host)) {
    scenario(host(false));
    scenario(host(true));
}

#[test]
fn a_waiting_handler_keeps_its_own_thread_and_the_next_handler_runs_on_another() {
    both_ways(|h| {
        let main = h.spawn_task(
            r#"
            S = Signal.new("Immediate")
            threads = {}
            S:Connect(function(n)
                local me = coroutine.running()
                table.insert(threads, me)
                Waiting = me
                task.wait(0)
                print("waited", n, coroutine.running() == me)
            end)
            S:Connect(function(n)
                print("second", n, coroutine.running() ~= Waiting)
            end)
            "#,
        );
        h.exec("S:Fire(1) S:Fire(2)");
        assert_eq!(h.take_log(), ["second 1 true", "second 2 true"]);
        // The waiting calls are tasks of the connecting script, on threads of their own.
        let waiting: spindle::mlua::Table = h.lua.globals().get("threads").unwrap();
        let (first, second): (spindle::mlua::Thread, spindle::mlua::Thread) =
            (waiting.get(1).unwrap(), waiting.get(2).unwrap());
        assert_ne!(first, second);
        for thread in [&first, &second] {
            let task = h
                .scheduler
                .task_of(thread)
                .expect("a waiting call is a task");
            assert_eq!(h.scheduler.script_of(task), Some(main.id()));
            assert_eq!(h.scheduler.creator_of(task), Some(main.id()));
        }
        h.scheduler.run_blocking().unwrap();
        assert_eq!(h.take_log(), ["waited 1 true", "waited 2 true"]);
        assert!(h.messages().is_empty(), "{:?}", h.messages());
    });
}

#[test]
fn a_failing_handler_is_reported_as_a_task_of_its_script_and_the_next_handler_runs() {
    both_ways(|h| {
        let main = h.spawn_task(
            r#"
            S = Signal.new("Immediate")
            S:Connect(function(n)
                error("handler " .. n .. " broke")
            end)
            S:Connect(function(n)
                print("next ran", n)
            end)
            "#,
        );
        h.exec("S:Fire(1) S:Fire(2) S:Fire(3)");
        assert_eq!(
            h.take_log(),
            [
                "error: main:4: handler 1 broke",
                "next ran 1",
                "error: main:4: handler 2 broke",
                "next ran 2",
                "error: main:4: handler 3 broke",
                "next ran 3"
            ]
        );
        let errors = h.errors.borrow();
        for error in errors.iter() {
            assert!(error.task.is_some(), "{error:?}");
            assert_eq!(error.creator, Some(main.id()));
            assert_eq!(error.script, Some(main.id()));
            assert_eq!(
                error.traceback,
                "stack traceback:\n\t[C]: in function 'error'\n\tmain:4: in function <main:3>"
            );
        }
        assert_eq!(h.scheduler.task_count(), 0);
    });
}

#[test]
fn error_values_with_metamethods_that_fail_are_reported_and_break_no_runner() {
    both_ways(|h| {
        h.spawn(
            r#"
            S = Signal.new("Immediate")
            S:Connect(function()
                error(setmetatable({}, { __tostring = function() return "custom value" end }))
            end)
            S:Connect(function()
                error(setmetatable({}, { __tostring = function() error("tostring broke") end }))
            end)
            S:Connect(function()
                local hostile = setmetatable({}, { __index = function() error("index broke") end })
                return hostile.field
            end)
            S:Connect(function()
                print("last ran")
            end)
            "#,
        );
        h.exec("S:Fire() S:Fire()");
        let log = h.take_log();
        assert_eq!(log.len(), 8, "{log:?}");
        for fire in log.chunks(4) {
            assert_eq!(fire[0], "error: custom value");
            assert!(fire[1].starts_with("error: "), "{fire:?}");
            assert!(fire[2].contains("index broke"), "{fire:?}");
            assert_eq!(fire[3], "last ran");
        }
        assert_eq!(h.scheduler.task_count(), 0);
    });
}

#[test]
fn handlers_disconnected_during_a_fire_are_skipped_and_the_rest_run_in_order() {
    both_ways(|h| {
        h.spawn(
            r#"
            S = Signal.new("Immediate")
            local second, own
            S:Connect(function(n)
                print("first", n)
                if second then second:Disconnect() second = nil end
            end)
            second = S:Connect(function(n) print("second", n) end)
            own = S:Connect(function(n)
                print("third", n)
                own:Disconnect()
                print("still running", own.Connected)
            end)
            S:Connect(function(n)
                print("fourth", n)
                if n == 2 then S:DisconnectAll() end
            end)
            S:Connect(function(n) print("fifth", n) end)
            "#,
        );
        h.exec("S:Fire(1) S:Fire(2) S:Fire(3)");
        assert_eq!(
            h.take_log(),
            [
                "first 1",
                "third 1",
                "still running false",
                "fourth 1",
                "fifth 1",
                "first 2",
                "fourth 2",
            ]
        );
    });
}

#[test]
fn rule23_a_handler_out_of_memory_fails_alone_and_the_next_handler_can_allocate() {
    both_ways(|h| {
        let floor = h.lua.used_memory();
        h.lua.set_memory_limit(floor + (4 << 20)).unwrap();
        h.spawn(
            r#"
            S = Signal.new("Immediate")
            S:Connect(function()
                local hog = {}
                while true do hog[#hog + 1] = { #hog, tostring(#hog) } end
            end)
            S:Connect(function()
                local r = {}
                for i = 1, 1000 do r[i] = { i } end
                log("built " .. #r)
            end)
            "#,
        );
        h.exec("S:Fire() S:Fire()");
        let log = h.take_log();
        assert_eq!(log.len(), 4, "{log:?}");
        for fire in log.chunks(2) {
            assert!(fire[0].starts_with("error: ") && fire[0].contains("not enough memory"));
            assert_eq!(fire[1], "built 1000");
        }
        let errors = h.errors.borrow();
        assert!(errors[0].traceback.contains("main:5"), "{:?}", errors[0]);
    });
}

#[test]
fn a_handler_that_cancels_or_takes_over_its_runner_breaks_nothing_for_the_next() {
    both_ways(|h| {
        h.spawn(
            r#"
            S = Signal.new("Immediate")
            S:Connect(function(n)
                Runner = coroutine.running()
                if n == 1 then task.cancel(coroutine.running()) end
                print("handler", n)
            end)
            S:Connect(function(n) print("next", n) end)
            "#,
        );
        // The running thread cannot be cancelled: the first call fails, the others run.
        h.exec("S:Fire(1)");
        let log = h.take_log();
        assert!(
            log[0].contains("cannot cancel the running thread"),
            "{log:?}"
        );
        assert_eq!(log[1..], ["next 1"]);
        // The idle runner, cancelled from outside, closed by hand, or taken over by a script:
        // the next fire still calls every handler.
        h.exec("S:Fire(2) task.cancel(Runner) S:Fire(3)");
        h.exec("pcall(coroutine.close, Runner) S:Fire(4)");
        h.exec(
            r#"
            print(coroutine.resume(Runner, function(...) print("hijacked", ...) end, "x"))
            S:Fire(5)
            "#,
        );
        h.exec("task.spawn(Runner, function() print('spawned on it') end) S:Fire(6)");
        let log = h.take_log();
        let expected_tail = [
            "handler 5",
            "next 5",
            "spawned on it",
            "handler 6",
            "next 6",
        ];
        assert_eq!(
            log[..6],
            [
                "handler 2",
                "next 2",
                "handler 3",
                "next 3",
                "handler 4",
                "next 4"
            ]
        );
        assert!(
            log[6..].ends_with(&expected_tail.map(String::from)),
            "{log:?}"
        );
        assert!(h.messages().len() == 1, "{:?}", h.messages());
    });
}

#[test]
fn ending_the_connecting_script_inside_its_handler_dooms_the_call_on_the_lane() {
    // The call is no task until its script is ended: then it is one, running, and ends
    // when it yields.
    both_ways(|h| {
        let main = h.spawn_task(
            r#"
            S = Signal.new("Immediate")
            S:Connect(function()
                print("ending", End())
                print("spawn refused", not pcall(task.spawn, print, "never"))
                task.wait(0)
                print("never")
            end)
            S:Connect(function() print("other handler of the script") end)
            "#,
        );
        let id = main.id();
        let end = h
            .lua
            .create_function(move |lua, ()| {
                let scheduler = spindle::Scheduler::from_lua(lua).expect("the scheduler");
                let ended = scheduler
                    .end_script(id)
                    .map_err(spindle::mlua::Error::external)?;
                Ok(format!("{} {}", ended.running, ended.connections))
            })
            .unwrap();
        h.lua.globals().set("End", end).unwrap();
        h.exec("S:Fire()");
        assert_eq!(h.take_log(), ["ending 1 2", "spawn refused true"]);
        h.scheduler.run_blocking().unwrap();
        h.exec("S:Fire()");
        assert!(h.take_log().is_empty());
        assert_eq!(h.scheduler.task_count(), 0);
    });
}

#[test]
fn a_deferred_fire_calls_what_it_saw_in_connection_order_when_it_comes_due() {
    // Its own Once runs in its place among the others; a connection disconnected before the
    // call comes due is dropped, and one made after the fire waits for the next.
    both_ways(|h| {
        h.spawn(
            r#"
            local S = Signal.new("Deferred")
            S:Connect(function(n) print("a", n) end)
            S:Once(function(n) print("once", n) end)
            local c = S:Connect(function(n) print("c", n) end)
            S:Connect(function(n) print("d", n) end)
            S:Fire(1)
            c:Disconnect()
            S:Connect(function(n) print("late", n) end)
            S:Fire(2)
            print("fired")
            "#,
        );
        assert_eq!(
            h.take_log(),
            ["fired", "a 1", "once 1", "d 1", "a 2", "d 2", "late 2"]
        );
    });
}
