//! The `spindle` command as a user meets it: exit statuses, messages, and the examples.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::{script, text};

fn spindle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("the spindle binary runs")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `spindle run NAME` from the directory of the script at `path`, so that messages name
/// the file as the user typed it.
fn run_by_name(path: &Path) -> Output {
    support::run_script_within(Duration::from_secs(120), &[], path)
        .expect("the run ended within two minutes")
}

#[test]
fn hello_example_runs_and_exits_zero() {
    const HELLO: &str = "hello, tester!
1. spawned: runs at once
2. main task goes on
3. deferred: runs once the main task yields
4. spawned task, 0.1 s later
5. main task waited 0.20 s
";
    let out = spindle(&["run", "--virtual-time", "examples/hello.luau", "tester"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), HELLO);
    assert_eq!(text(&out.stderr), "");
    // The README's command, on the real clock: the same lines, but for the time waited, which
    // is at least the 0.2 s asked for.
    let out = spindle(&["run", "examples/hello.luau", "tester"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (lines, expected) = (stdout.lines(), HELLO.lines());
    for (line, expected) in lines.clone().zip(expected.clone()).take(5) {
        assert_eq!(line, expected);
    }
    let waited: f64 = stdout.lines().nth(5).unwrap()["5. main task waited ".len()..]
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(waited >= 0.2, "{stdout}");
    assert_eq!(lines.count(), expected.count(), "{stdout}");
}

#[test]
fn json_api_example_passes_its_self_test_over_loopback() {
    // The README's command: the server and its net.request client in one run.
    let out = support::spindle_within(
        Duration::from_secs(60),
        &["run", "examples/json_api.luau", "--self-test"],
        &workspace(),
    )
    .expect("the self-test ended within a minute");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.ends_with("all checks passed\n"), "{stdout}");
    assert_eq!(stdout.matches("ok   ").count(), 8, "{stdout}");
}

#[test]
fn producer_consumer_and_timer_examples_run_cleanly() {
    let out = spindle(&["run", "--virtual-time", "examples/producer_consumer.luau"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "alice got item 1
bob got item 2
alice got item 3
bob got item 4
alice got item 5
bob got item 6
alice stops
bob stops
consumed 6 items
"
    );

    let out = spindle(&["run", "--virtual-time", "examples/timers.luau"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The last line measures the real time the run took (`os.clock`), which virtual time does
    // not move: a few milliseconds.
    let (timeline, elapsed) = stdout.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(
        timeline,
        "tick 1 after 0.05 s
delay 0.1 s
tick 2 after 0.05 s
tick 3 after 0.05 s
delay 0.3 s
main waited 0.40 s; ticker is dead"
    );
    assert!(
        elapsed.starts_with("elapsed: 0.") && elapsed.ends_with(" s"),
        "{elapsed}"
    );
}

#[test]
fn arguments_reach_the_script_as_its_varargs() {
    let path = script("args.luau", b"print(select('#', ...), ...)");
    let out = spindle(&["run", path.to_str().unwrap(), "one", "--two", "3"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "3\tone\t--two\t3\n");
}

#[test]
fn every_word_after_file_is_the_scripts_even_one_that_looks_like_an_option() {
    let path = script("words.luau", b"print(select('#', ...), ...)");
    let path = path.to_str().unwrap();
    let out = spindle(&[
        "run",
        path,
        "--timeout",
        "5",
        "--help",
        "--",
        "--virtual-time",
        "-V",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "6\t--timeout\t5\t--help\t--\t--virtual-time\t-V\n"
    );
    assert_eq!(text(&out.stderr), "");

    let out = spindle(&["run", path, "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "1\t--help\n",
        "the script's, not Spindle's help"
    );
}

#[test]
fn options_before_file_are_spindles_and_a_double_dash_before_file_ends_them() {
    let path = script(
        "options_first.luau",
        b"print(task.wait(600), select('#', ...), ...)",
    );
    let path = path.to_str().unwrap();
    let out = spindle(&["run", "--virtual-time", "--timeout", "5", path, "a", "-b"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "600\t2\ta\t-b\n");

    let out = spindle(&["run", "--virtual-time", "--", path, "--", "x"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "600\t2\t--\tx\n");
}

#[test]
fn an_unknown_option_before_file_is_a_usage_error_with_exit_status_two() {
    let path = script("never_runs.luau", b"print('ran')");
    let out = spindle(&["run", "--bogus", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: unexpected argument '--bogus' found"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn arguments_that_are_not_utf8_reach_the_script_as_the_same_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let path = script(
        "bytes.luau",
        b"local out = {}\nfor i = 1, select('#', ...) do\n  local s = select(i, ...)\n  table.insert(out, type(s) .. ':' .. s:gsub('.', function(c) return string.format('%02x', c:byte()) end))\nend\nprint(table.concat(out, ' '))\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .arg(&path)
        .args([
            OsStr::from_bytes(b"\xff\xfe"),
            OsStr::from_bytes(b""),
            OsStr::from_bytes(b"a\x80b"),
            OsStr::from_bytes("é".as_bytes()),
        ])
        .output()
        .expect("the spindle binary runs");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "string:fffe string: string:618062 string:c3a9\n"
    );
}

#[cfg(unix)]
#[test]
fn a_file_name_that_is_not_utf8_runs() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let path = script("plain_name.luau", b"print('ran', ...)");
    let odd = path.with_file_name(OsStr::from_bytes(b"odd\xffname.luau"));
    std::fs::rename(&path, &odd).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .arg(&odd)
        .arg("x")
        .output()
        .expect("the spindle binary runs");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\tx\n");
}

#[test]
fn an_uncaught_error_is_reported_and_the_other_tasks_go_on_with_exit_status_one() {
    let path = script(
        "fails.luau",
        b"task.spawn(function()\n  task.wait(0.01)\n  error('worker broke')\nend)\ntask.wait(0.05)\nprint('main finished')\n",
    );
    let out = run_by_name(&path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "main finished\n");
    assert_eq!(
        text(&out.stderr),
        "fails.luau:3: worker broke
stack traceback:
\t[C]: in function 'error'
\tfails.luau:3: in function <fails.luau:1>
"
    );
}

#[test]
fn a_missing_file_is_named_with_exit_status_two() {
    let out = spindle(&["run", "does/not/exist.luau"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "spindle: cannot read 'does/not/exist.luau': No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_missing_file_suggests_the_closest_luau_file_beside_it() {
    let dir = support::tree(
        "suggest",
        &[("main.luau", "print(1)"), ("lib/server.luau", "")],
    );
    let out = support::spindle_within(Duration::from_secs(60), &["run", "mian.luau"], &dir)
        .expect("spindle ends");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "spindle: cannot read 'mian.luau': No such file or directory (os error 2)\n  did you mean 'main.luau'?\n"
    );
    let out = support::spindle_within(Duration::from_secs(60), &["run", "lib/srever"], &dir)
        .expect("spindle ends");
    assert!(
        text(&out.stderr).ends_with("did you mean 'lib/server.luau'?\n"),
        "{}",
        text(&out.stderr)
    );
    let out = support::spindle_within(Duration::from_secs(60), &["run", "other.luau"], &dir)
        .expect("spindle ends");
    assert!(!text(&out.stderr).contains("did you mean"));
}

#[test]
fn error_values_that_are_tables_are_reported_by_their_contents() {
    let path = script(
        "table_errors.luau",
        b"task.spawn(function() error({ code = 7, tags = { \"a\" } }) end)\ntask.defer(function() error(setmetatable({}, { __tostring = function() return 'custom' end })) end)\ntask.wait()\nlocal ok, e = pcall(error, { kept = true })\nassert(e.kept)\nerror(\"plain\")\n",
    );
    let out = run_by_name(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let messages: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with('\t') && *line != "stack traceback:")
        .collect();
    assert_eq!(
        messages,
        [
            "{ code = 7, tags = { \"a\" } }",
            "custom",
            "table_errors.luau:6: plain"
        ],
        "{stderr}"
    );
    // The `error` wrapper's own level is left out of tracebacks.
    assert!(!stderr.contains("[spindle"), "{stderr}");
    assert!(
        stderr.contains("\ttable_errors.luau:1: in function"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_commands_flags_with_an_example() {
    let out = spindle(&["--help"]);
    let main = text(&out.stdout);
    for command in ["run", "test", "repl", "setup"] {
        assert!(main.contains(&format!("  {command} ")), "{main}");
        assert!(
            main.contains(&format!("spindle {command}")),
            "an example of {command}: {main}"
        );
    }
    let expected: [(&str, &[&str]); 4] = [
        (
            "run",
            &[
                "--timeout",
                "--time-slice",
                "--memory-limit",
                "--virtual-time",
                "--no-native",
            ],
        ),
        ("test", &["--real-time", "--timeout", "--jobs"]),
        ("repl", &["--timeout", "--virtual-time"]),
        ("setup", &["--no-vscode", "--force"]),
    ];
    for (command, flags) in expected {
        let out = spindle(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        for flag in flags {
            // Each flag on a line of its own, with its meaning on that line.
            let line = help
                .lines()
                .find(|line| {
                    line.trim_start().starts_with(flag) || line.contains(&format!(", {flag}"))
                })
                .unwrap_or_else(|| panic!("{command} --help lacks {flag}:\n{help}"));
            assert!(
                line.trim_end().len() > flag.len() + 12,
                "{command} {flag}: {line:?}"
            );
        }
        assert!(
            help.contains("Example"),
            "{command} --help has no example:\n{help}"
        );
        assert!(help.contains(&format!("spindle {command}")), "{help}");
    }
}

#[test]
fn a_syntax_error_names_the_file_and_line_with_exit_status_two() {
    let path = script("syntax.luau", b"print('fine')\nlocal x = = 1\n");
    let out = run_by_name(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing runs when the script does not compile"
    );
    assert_eq!(
        text(&out.stderr),
        "spindle: syntax.luau:2: Expected identifier when parsing expression, got '='\n"
    );
}

#[test]
fn a_binary_file_is_refused_as_source_not_run_as_bytecode() {
    let mut bytes = vec![0x1b, b'L', b'u', b'a', 0, 0xff, 0xfe];
    bytes.extend((0..=255u8).cycle().take(4096));
    let path = script("binary.luau", &bytes);
    let out = spindle(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("binary.luau"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn help_and_version_answer() {
    let out = spindle(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("run"));
    let out = spindle(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("spindle {}", env!("CARGO_PKG_VERSION"))
    );
    let out = spindle(&["run"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing FILE is a usage error"
    );
}

#[test]
#[ignore = "needs about 1.5 GB and a release build: cargo test --release -p spindle-cli -- --ignored"]
fn a_million_tasks_each_waiting_finish_within_thirty_seconds() {
    let started = std::time::Instant::now();
    let out = spindle(&["run", "examples/million_waits.luau"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("1000000 of 1000000 tasks woke\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
}

#[test]
fn a_directory_or_a_path_through_a_file_is_named_with_exit_status_two() {
    let file = script("plain.luau", b"print('never')\n");
    let dir = file.parent().unwrap().to_owned();
    let through_file = file.join("inner.luau");
    for path in [&dir, &through_file] {
        let out = spindle(&["run", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("spindle: cannot read '{}'", path.display())),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_is_named_with_exit_status_two() {
    use std::os::unix::fs::PermissionsExt;
    let path = script("unreadable.luau", b"print('never')\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&path).is_ok() {
        eprintln!("skipped: this user (root?) reads files without read permission");
        return;
    }
    let out = spindle(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("spindle: cannot read '{}'", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("ermission denied"), "{stderr}");
}

/// 50 MB of printable bytes from a fixed pseudo-random sequence.
fn garbage(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b' ' + (state % 95) as u8
        })
        .collect()
}

#[test]
fn fifty_megabytes_of_garbage_are_a_syntax_error_with_exit_status_two() {
    let path = script("garbage.luau", garbage(50 << 20));
    let out = spindle(&["run", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("spindle: "), "{stderr}");
    assert!(stderr.contains("garbage.luau:1:"), "{stderr}");
    assert!(
        stderr.len() < 1024,
        "a short message, not the source: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_fifty_megabyte_script_that_is_valid_runs() {
    let mut source = b"local s = \"".to_vec();
    source.resize(source.len() + (50 << 20), b'x');
    source.extend_from_slice(b"\"\nprint(#s)\n");
    let path = script("huge.luau", &source);
    let out = spindle(&["run", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", 50 << 20));
}

#[test]
fn a_file_that_looks_like_bytecode_is_refused_naming_the_file() {
    // Luau bytecode starts with a version byte; a leading NUL marks a compile error.
    for (name, bytes) in [
        ("nul.luau", &b"\0smuggled compile error"[..]),
        ("bytecode.luau", &[5u8, 0, 1, 2, 3][..]),
    ] {
        let path = script(name, bytes);
        let out = spindle(&["run", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn a_stack_overflow_in_one_task_is_reported_briefly_and_the_others_go_on() {
    let path = script(
        "overflow.luau",
        b"task.spawn(function()\n  local function f(n) return f(n + 1) + 1 end\n  f(1)\nend)\ntask.wait(0.01)\nprint('main goes on')\n",
    );
    let out = spindle(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "main goes on\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("overflow.luau:2: stack overflow"),
        "{stderr}"
    );
    assert!(
        stderr.lines().count() < 30,
        "{} lines",
        stderr.lines().count()
    );
}

#[test]
fn nested_task_spawn_past_luaus_limit_fails_one_task_and_does_not_crash() {
    // Luau allows 200 nested resumptions; each level takes Rust and C stack (about 18 KB in a
    // debug build), so this also checks the main thread's stack is enough for all of them.
    let path = script(
        "nested.luau",
        b"local depth = 0\nlocal function go(k) depth = k; if k < 250 then task.spawn(go, k + 1) end end\ngo(1)\nprint('depth', depth)\n",
    );
    let out = run_by_name(&path);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "depth\t200\n");
    // Reported once, at the line that asked for the 201st level.
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("nested.luau:2: C stack overflow\nstack traceback:\n"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("C stack overflow").count(), 1, "{stderr}");
}

#[test]
fn error_values_whose_tostring_fails_are_reported_and_the_others_go_on() {
    let path = script(
        "values.luau",
        b"local u = newproxy(true)\ngetmetatable(u).__tostring = function() error('tostring exploded', 0) end\ntask.spawn(function() error(u) end)\ntask.spawn(function() error(setmetatable({}, {__tostring = function() return {} end})) end)\ntask.spawn(function() error({}) end)\ntask.wait(0.01)\nprint('main goes on')\n",
    );
    let out = run_by_name(&path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "main goes on\n");
    // One report for each, in order: its message, then a traceback. (A failing `__tostring`'s
    // report carries the traceback of the `__tostring`, as mlua gives it.)
    let stderr = text(&out.stderr);
    let messages: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with('\t') && *line != "stack traceback:")
        .collect();
    assert_eq!(messages.len(), 3, "{stderr}");
    assert_eq!(
        messages[0],
        "userdata (its __tostring failed: tostring exploded)"
    );
    assert_eq!(
        messages[1],
        "{} (its __tostring failed: '__tostring' must return a string)"
    );
    assert_eq!(messages[2], "{}", "{stderr}");
    assert_eq!(stderr.matches("stack traceback:\n").count(), 3, "{stderr}");
    assert!(
        stderr.ends_with("\tvalues.luau:5: in function <values.luau:5>\n"),
        "{stderr}"
    );
}

/// Luau's `print` writes into C's buffer, which holds a block when the output is a pipe: the
/// line must reach the pipe by the time the script waits, not when the run ends.
#[test]
fn printed_lines_reach_a_pipe_when_the_script_waits() {
    use std::io::BufRead;
    let path = script(
        "print_then_wait.luau",
        "print('ready')\nprint('set')\ntask.wait(30)\nprint('late')\n",
    );
    let dir = path.parent().unwrap();
    let mut child = support::start_spindle(&["run", "print_then_wait.luau"], dir);
    let stdout = child.stdout.take().unwrap();
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = arrived.recv_timeout(Duration::from_secs(10));
    let second = arrived.recv_timeout(Duration::from_secs(5));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        first.as_deref(),
        Ok("ready"),
        "the first line, while the script waits"
    );
    assert_eq!(second.as_deref(), Ok("set"));
}
