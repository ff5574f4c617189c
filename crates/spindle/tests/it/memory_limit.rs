//! Rule 23 of the task contract: under mlua's `Lua::set_memory_limit`, a task whose allocation
//! fails ends alone; the scheduler collects garbage before any other task runs, so what the
//! failed task held comes back and a task that then allocates modestly is not harmed.

use crate::support::Host;

/// Limits the VM to what it uses now plus `headroom` bytes.
fn limited(headroom: usize) -> Host {
    let run = Host::builder().errors_in_log().build();
    let floor = run.lua.used_memory();
    run.lua.set_memory_limit(floor + headroom).unwrap();
    run
}

/// A task body that allocates until the limit stops it.
const GREEDY: &str = r#"function()
    local hog = {}
    while true do hog[#hog + 1] = { #hog, tostring(#hog) } end
end"#;

/// Builds a 1,000-entry table and logs its length.
const MODEST: &str = r#"local r = {} for i = 1, 1000 do r[i] = { i } end log("built " .. #r)"#;

fn assert_greedy_failed_alone(run: &Host, expected: &[&str]) {
    let log = run.log();
    assert_eq!(log.len(), expected.len() + 1, "{log:?}");
    assert!(
        log[0].starts_with("error: ") && log[0].contains("not enough memory"),
        "{log:?}"
    );
    assert_eq!(&log[1..], expected);
}

#[test]
fn rule23_the_main_task_allocates_after_a_greedy_task_it_spawned_ran_out_of_memory() {
    let run = limited(4 << 20);
    run.script(&format!("task.spawn({GREEDY})\n{MODEST}"));
    assert_greedy_failed_alone(&run, &["built 1000"]);
}

#[test]
fn rule23_memory_held_by_a_failed_task_comes_back_even_while_its_thread_is_kept() {
    // The spawner keeps the dead thread: what its stack held must come back all the same.
    let run = limited(4 << 20);
    run.script(&format!(
        "local greedy = task.spawn({GREEDY})\n{MODEST}\nlog(coroutine.status(greedy))"
    ));
    assert_greedy_failed_alone(&run, &["built 1000", "dead"]);
}

#[test]
fn rule23_a_task_woken_after_a_greedy_task_failed_on_a_fast_lane_can_allocate() {
    // The greedy task fails after a `task.wait` (the wait lane resumes it), the others then run.
    let run = limited(4 << 20);
    run.script(&format!(
        r#"
        task.spawn(function() task.wait(); ({GREEDY})() end)
        task.spawn(function() task.wait() task.wait() {MODEST} end)
        task.defer(function() task.wait() task.wait() {MODEST} end)
        "#
    ));
    assert_greedy_failed_alone(&run, &["built 1000", "built 1000"]);
}

#[test]
fn rule23_a_greedy_coroutine_inside_a_task_frees_its_memory_for_the_next_task() {
    let run = limited(4 << 20);
    run.script(&format!(
        r#"
        task.spawn(function() coroutine.wrap({GREEDY})() end)
        {MODEST}
        "#
    ));
    assert_greedy_failed_alone(&run, &["built 1000"]);
}

#[test]
fn rule23_many_greedy_tasks_in_a_row_each_fail_alone() {
    let run = limited(4 << 20);
    run.script(&format!(
        r#"
        for i = 1, 5 do
            task.spawn({GREEDY})
            {MODEST}
        end
        "#
    ));
    let log = run.log();
    let errors = log.iter().filter(|line| line.contains("not enough memory"));
    assert_eq!(errors.count(), 5, "{log:?}");
    let built = log.iter().filter(|line| *line == "built 1000");
    assert_eq!(built.count(), 5, "{log:?}");
}

#[test]
fn rule23_a_task_that_ends_with_another_error_at_the_limit_gives_its_memory_back_too() {
    // The hog catches its memory error and fails with one of its own, still holding the heap:
    // what counts is that the VM is at its limit, not the words of the error.
    let run = limited(4 << 20);
    run.script(&format!(
        r#"
        task.spawn(function()
            local hog = {{}}
            pcall(function()
                while true do hog[#hog + 1] = {{ #hog, tostring(#hog) }} end
            end)
            error("gave up with " .. (#hog > 0 and "a full heap" or "nothing"), 0)
        end)
        {MODEST}
        "#
    ));
    let log = run.log();
    // Its message survives where raising it could allocate: the traceback is made with the
    // limit lifted. mlua's `luau-jit` build (Spindle's `native` feature) sets Luau's flag
    // `LuauEmitCallFeedback` for the whole process, whose code makes the raise itself allocate
    // at the limit, in native code and on the interpreter alike (setting that flag alone in a
    // build without the feature does the same): it then fails with Luau's `not enough memory`.
    let kept = log[0] == "error: gave up with a full heap";
    assert!(
        kept || (cfg!(feature = "native") && log[0] == "error: not enough memory"),
        "{log:?}"
    );
    assert_eq!(&log[1..], ["built 1000"]);
}

#[test]
fn rule23_the_words_not_enough_memory_alone_cost_no_collection() {
    // A script may raise `not enough memory` itself, as often as it likes: without a limit, or
    // far from it, that must not make the scheduler run a full collection for each report.
    // The host stops the collector, so that only a collection the scheduler asked for frees
    // the garbage made here.
    for limited in [false, true] {
        let run = Host::builder().errors_in_log().build();
        if limited {
            run.lua
                .set_memory_limit(run.lua.used_memory() + (64 << 20))
                .unwrap();
        }
        run.lua.gc_stop();
        run.exec("do local junk = {} for i = 1, 20000 do junk[i] = { i } end end");
        let with_garbage = run.lua.used_memory();
        run.script("for i = 1, 3 do task.spawn(error, 'not enough memory', 0) end");
        assert_eq!(run.log(), ["error: not enough memory"; 3]);
        assert!(
            run.lua.used_memory() >= with_garbage,
            "a collection ran (limited: {limited})"
        );
    }
}

#[test]
fn rule23_the_builders_memory_limit_caps_the_vm_and_a_limit_already_passed_is_refused() {
    use spindle::{Error, Outcome, Scheduler};
    let lua = mlua::Lua::new();
    let used = lua.used_memory();
    let refused = Scheduler::builder().memory_limit(used / 2).build(&lua);
    assert!(
        matches!(refused, Err(Error::MemoryLimit { limit, used: at }) if limit == used / 2 && at >= used),
        "{refused:?}"
    );
    // Refused, the scheduler did not stay attached: a second build is not `AlreadyAttached`.
    let scheduler = Scheduler::builder()
        .on_error(|_, _| {})
        .memory_limit(used + (4 << 20))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let greedy = scheduler
        .spawn(
            lua.load(format!("({GREEDY})()")).into_function().unwrap(),
            (),
        )
        .unwrap();
    let modest = scheduler
        .spawn(
            lua.load(MODEST.replace("log(", "return ("))
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    match scheduler.take_result::<()>(&greedy).unwrap() {
        Some(Outcome::Failed(error)) => {
            assert!(error.message.contains("not enough memory"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    let built: String = scheduler
        .take_result(&modest)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(built, "built 1000");
}
