//! `spindle run` at the edges of its limits: timers too long for the clock, the timeout across
//! time slices, slicing inside coroutines, and what a task that ran out of memory leaves for the
//! others. Each run is bounded in time: a run that hangs or spins fails its test.

mod support;

use std::time::Duration;

use support::{spindle_run_within, text};

// --- Timers too long for the clock (rule 7) ----------------------------------------------------

#[test]
fn rule07_a_wait_too_long_for_the_clock_ends_the_run_at_once_on_either_clock() {
    // From 9.2e18 s the deadline was past what `Instant` holds and the driver spun at full
    // CPU; from 2e19 the wait was "never"; under virtual time 1e19 fired. Now every one of them
    // never fires, on both clocks, and keeps no run alive.
    for duration in ["4.62e18", "9.2e18", "1e19", "2e19", "1e300", "math.huge"] {
        for clock in [&[][..], &["--virtual-time"][..]] {
            let source = format!(
                "task.spawn(function() print('woken', task.wait({duration})) end)\n\
                 task.delay({duration}, print, 'the delay fired')\n\
                 print('main done')\n"
            );
            let out = spindle_run_within(Duration::from_secs(5), clock, "huge_wait.luau", &source)
                .unwrap_or_else(|| panic!("task.wait({duration}) {clock:?}: the run did not end"));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert_eq!(
                text(&out.stdout),
                "main done\n",
                "task.wait({duration}) {clock:?}"
            );
        }
    }
}

#[test]
fn rule07_a_long_timer_that_the_clock_can_hold_sleeps_until_cancelled() {
    // 1e18 s is a real timer: the run sleeps towards it (without spinning) until the task is
    // cancelled; under virtual time the clock jumps to it.
    let source = "local t = task.delay(1e18, print, 'fired')\n\
                  local w = task.spawn(function() print('waited', task.wait(1e18)) end)\n\
                  task.wait(0.2)\n\
                  task.cancel(t)\n\
                  task.cancel(w)\n\
                  print('cancelled')\n";
    let out = spindle_run_within(Duration::from_secs(5), &[], "long_timer.luau", source)
        .expect("the run ends once the timers are cancelled");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cancelled\n");

    let out = spindle_run_within(
        Duration::from_secs(5),
        &["--virtual-time"],
        "long_virtual_timer.luau",
        "print(task.wait(1e18))\nprint(task.wait(1e18))\n",
    )
    .expect("the run ends");
    assert_eq!(
        text(&out.stdout),
        "1000000000000000000\n1000000000000000000\n"
    );
}

// --- The timeout across time slices (rule 21) --------------------------------------------------

#[test]
fn rule21_a_runaway_task_under_time_slices_still_times_out_while_the_others_run() {
    // Each slice used to start a fresh timeout: the loop was sliced forever and the run spun.
    let out = spindle_run_within(
        Duration::from_secs(20),
        &["--timeout", "0.2", "--time-slice", "0.01"],
        "sliced_runaway.luau",
        "task.spawn(function()\n  while true do end\nend)\nfor i = 1, 3 do\n  task.wait(0.01)\n  print('tick', i)\nend\n",
    )
    .expect("the runaway task is stopped and the run ends");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "tick\t1\ntick\t2\ntick\t3\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Script timeout: exhausted allowed execution time\nstack traceback:"),
        "{stderr}"
    );
    assert!(stderr.contains("sliced_runaway.luau:2"), "{stderr}");
}

// --- What a task that ran out of memory leaves for the others (rule 23) -------------------------

#[test]
fn rule23_the_main_task_builds_its_table_after_a_greedy_task_ran_out_of_memory() {
    // The greedy task's garbage used to stay until the collector came round, so the main task
    // (and any other) died of the same limit.
    let out = spindle_run_within(
        Duration::from_secs(30),
        &["--memory-limit", "8M"],
        "greedy.luau",
        "local greedy = task.spawn(function()\n  local hog = {}\n  while true do hog[#hog + 1] = { #hog, tostring(#hog) } end\nend)\n\
         local r = {}\nfor i = 1, 1000 do r[i] = { i } end\nprint('built', #r, coroutine.status(greedy))\n\
         task.wait()\nlocal s = {}\nfor i = 1, 1000 do s[i] = tostring(i) end\nprint('built', #s)\n",
    )
    .expect("the run ends");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        "built\t1000\tdead\nbuilt\t1000\n",
        "{stderr}"
    );
    assert_eq!(stderr.matches("not enough memory").count(), 1, "{stderr}");
}

// --- Slices inside coroutines (rule 22) --------------------------------------------------------

#[test]
fn rule22_a_busy_loop_in_a_wrapped_coroutine_is_sliced_so_that_the_others_run() {
    // The slice used to be ignored inside `coroutine.wrap`: the loop starved every other task
    // and the run never ended.
    let out = spindle_run_within(
        Duration::from_secs(20),
        &["--time-slice", "0.01"],
        "wrapped_spin.luau",
        "local stop = false\n\
         task.spawn(function()\n  coroutine.wrap(function() while not stop do end end)()\n  print('looper released')\nend)\n\
         for i = 1, 3 do\n  task.wait(0.01)\n  print('tick', i)\nend\nstop = true\n",
    )
    .expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "tick\t1\ntick\t2\ntick\t3\nlooper released\n"
    );
}

#[test]
fn rule22_a_busy_loop_inside_index_under_slices_ends_with_the_timeout() {
    // No yield is possible inside a metamethod: the slice cannot stop the loop, the timeout
    // does, and the other tasks go on.
    let out = spindle_run_within(
        Duration::from_secs(20),
        &["--time-slice", "0.01", "--timeout", "0.2"],
        "index_spin.luau",
        "local t = setmetatable({}, { __index = function() while true do end end })\n\
         task.spawn(function() print(t.x) end)\n\
         for i = 1, 3 do\n  task.wait(0.01)\n  print('tick', i)\nend\n",
    )
    .expect("the run ends");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "tick\t1\ntick\t2\ntick\t3\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Script timeout: exhausted allowed execution time\nstack traceback:"),
        "{stderr}"
    );
    assert!(stderr.contains("index_spin.luau:1"), "{stderr}");
}
