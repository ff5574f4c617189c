//! `spindle run`'s options: the virtual clock, the watchdog and the memory limit, and the
//! messages for values they refuse.

mod support;

use std::time::Duration;

use support::{spindle_run, spindle_run_within, text};

#[test]
fn virtual_time_makes_an_hour_of_waits_return_exact_durations_at_once() {
    let started = std::time::Instant::now();
    let out = spindle_run(
        &["--virtual-time"],
        "hour.luau",
        "local total = 0\nfor i = 1, 6 do\n  local waited = task.wait(600)\n  assert(waited == 600, waited)\n  total += waited\nend\nprint(total)\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3600\n");
    // Not a speed target: an hour of real sleeping would take an hour.
    assert!(started.elapsed().as_secs() < 60, "the waits did not sleep");
}

#[test]
fn a_runaway_task_times_out_while_the_others_print_with_exit_status_one() {
    let out = spindle_run(
        &["--timeout", "0.5"],
        "runaway.luau",
        "task.spawn(function()\n  while true do end\nend)\nfor i = 1, 3 do\n  task.wait(0.01)\n  print('tick', i)\nend\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "tick\t1\ntick\t2\ntick\t3\n");
    assert_eq!(
        text(&out.stderr),
        "Script timeout: exhausted allowed execution time
stack traceback:
\trunaway.luau:2: in function <runaway.luau:1>
"
    );
}

#[test]
fn time_slicing_lets_a_busy_loop_wait_for_another_task() {
    let out = spindle_run(
        &["--time-slice", "0.005", "--timeout", "10"],
        "spin.luau",
        "local done = false\ntask.delay(0.02, function() done = true end)\nwhile not done do end\nprint('released')\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "released\n");
}

#[test]
fn a_memory_hog_fails_alone_under_the_memory_limit() {
    let out = spindle_run(
        &["--memory-limit", "16M"],
        "hog.luau",
        "task.spawn(function()\n  local t = {}\n  while true do table.insert(t, string.rep('x', 4096) .. #t) end\nend)\ntask.wait()\nprint('main survived')\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "main survived\n");
    // The allocation that fails may be `string.rep`'s, the concatenation's or the table's,
    // depending on how many bytes the VM held before: a `[C]` level may stand between.
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("not enough memory\nstack traceback:\n"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("\thog.luau:3: in function <hog.luau:1>\n"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 4, "{stderr}");
}

#[test]
fn bad_option_values_are_named_with_exit_status_two() {
    for (option, value, expected) in [
        ("--timeout", "soon", "expected a number of seconds"),
        ("--timeout", "-1", "positive, finite"),
        ("--time-slice", "0", "positive, finite"),
        ("--memory-limit", "lots", "expected a size in bytes"),
        ("--memory-limit", "1.5G", "expected a size in bytes"),
    ] {
        let out = spindle_run(
            &[&format!("{option}={value}")],
            "never.luau",
            "print('ran')\n",
        );
        assert_eq!(out.status.code(), Some(2), "{option} {value}");
        assert!(
            out.stdout.is_empty(),
            "{option} {value}: the script must not run"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("'{value}' for '{option}")),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{stderr}");
    }
}

// --- Found by review ---------------------------------------------------------------------------

#[test]
fn a_timeout_too_small_to_be_a_duration_is_refused_not_made_zero() {
    // `limits::seconds` checks that the number is positive, then converts it: 1e-300 seconds
    // becomes Duration::ZERO, a timeout that stops every task at its second check.
    let out = spindle_run_within(
        Duration::from_secs(30),
        &["--timeout", "1e-300"],
        "tiny_timeout.luau",
        "local s = 0\nfor i = 1, 1000 do s += i end\nprint(s)\n",
    )
    .expect("spindle ends");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the script must not run");
    assert!(
        text(&out.stderr).contains("'1e-300' for '--timeout"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn time_slicing_under_virtual_time_lets_a_busy_loop_wait_for_a_delay() {
    // Works with --time-slice alone, and with --virtual-time alone the loop is the script's
    // fault. Together, the sliced task is always due (its continuation is a timer at `now`), so
    // the virtual clock never jumps to the delay and the run spins forever.
    let out = spindle_run_within(
        Duration::from_secs(10),
        &["--virtual-time", "--time-slice", "0.005"],
        "virtual_spin.luau",
        "local done = false\ntask.delay(0.02, function() done = true end)\nwhile not done do end\nprint('released')\n",
    )
    .expect("the run ends instead of spinning forever");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "released\n");
}

#[test]
fn a_memory_limit_below_what_the_vm_already_uses_is_refused_with_exit_status_two() {
    // A limit under the VM's baseline can never let a script run: the value is bad, but the
    // script starts and its first allocation fails ("memory error: not enough memory", exit 1).
    let out = spindle_run_within(
        Duration::from_secs(30),
        &["--memory-limit", "1K"],
        "tiny_limit.luau",
        "local t = {}\nfor i = 1, 100 do t[i] = tostring(i) end\nprint(#t)\n",
    )
    .expect("spindle ends");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("--memory-limit"),
        "{}",
        text(&out.stderr)
    );
}

/// The binary's allocator (mimalloc, under the CLI's opt-in `mimalloc` feature) does not
/// change what `--memory-limit` counts: mlua counts the VM's blocks in its own allocation
/// function, which calls the global allocator. mimalloc's statistics at exit, which it prints
/// when asked through its environment variable, show that it is the allocator in use.
#[cfg(feature = "mimalloc")]
#[test]
fn the_memory_limit_holds_under_the_binarys_allocator() {
    let path = support::script(
        "hog_under_mimalloc.luau",
        "task.spawn(function()\n  local t = {}\n  while true do table.insert(t, string.rep('y', 8192) .. #t) end\nend)\ntask.wait()\nprint('main survived', collectgarbage('count') < 24 * 1024)\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["run", "--memory-limit", "16M", "hog_under_mimalloc.luau"])
        .current_dir(path.parent().unwrap())
        .env("MIMALLOC_SHOW_STATS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the hog did not end within two minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "main survived\ttrue\n");
    assert!(stderr.starts_with("not enough memory\n"), "{stderr}");
    assert!(
        stderr.contains("peak"),
        "mimalloc printed no statistics: {stderr}"
    );
}
