//! `spindle run`'s options: the virtual clock, the watchdog and the memory limit, and the
//! messages for values they refuse.

use std::path::PathBuf;
use std::process::{Command, Output};

fn spindle_run(options: &[&str], name: &str, source: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("spindle-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, source).unwrap();
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .args(options)
        .arg(&path)
        .output()
        .expect("the spindle binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Script timeout: exhausted allowed execution time\nstack traceback:"),
        "{stderr}"
    );
    assert!(stderr.contains("runaway.luau:2"), "{stderr}");
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
    assert!(
        text(&out.stderr).contains("not enough memory"),
        "{}",
        text(&out.stderr)
    );
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
