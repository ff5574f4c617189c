//! `spindle repl` driven through its standard input (not a terminal: no prompt, no history),
//! and once through a pseudo-terminal (`script`), as a person would use it.

mod support;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{output_within, text};

fn start(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("repl")
        .current_dir(dir)
        // No history file is read or written in a test.
        .env_remove("HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the spindle binary runs")
}

/// Feeds `input` to a REPL and returns its output once the end of input ended it.
fn repl(input: &str) -> Output {
    repl_bytes(input.as_bytes())
}

/// [`repl`] for input that need not be UTF-8.
fn repl_bytes(input: &[u8]) -> Output {
    // A directory for each call: the tests run in parallel, and `tree` empties its directory.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = support::tree(&format!("repl-{call}"), &[]);
    let mut child = start(&dir);
    child.stdin.take().unwrap().write_all(input).unwrap();
    output_within(child, Duration::from_secs(60)).expect("the REPL ends at the end of its input")
}

#[test]
fn expressions_print_their_values_readably() {
    let out = repl("1 + 2\n\"a\\\"b\", nil, true\n{ 1, 2, x = { y = \"z\" } }\nprint(\"said\")\n");
    assert_eq!(
        text(&out.stdout),
        "3\n\"a\\\"b\", nil, true\n{ 1, 2, x = { y = \"z\" } }\nsaid\n"
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn statements_run_and_globals_last_between_entries() {
    let out = repl("x = 20\nx += 1\nx * 2\n");
    assert_eq!(text(&out.stdout), "42\n");
}

#[test]
fn an_entry_left_open_goes_on_at_the_next_line() {
    let out = repl("function double(n)\n  local m = n * 2\n  return m\nend\ndouble(21)\nlocal t = {\n  1,\n  2,\n}\n");
    assert_eq!(text(&out.stdout), "42\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn the_prompt_waits_for_an_entry_that_waits_or_calls_async_functions() {
    // `fs`'s functions are async: the entry's task waits for the disk.
    let out = repl(
        "task.wait(0.05) >= 0.05\nfs = require(\"@spindle/fs\")\nfs.writeFile(\"note.txt\", \"hi\")\nfs.readFile(\"note.txt\")\n",
    );
    assert_eq!(text(&out.stdout), "true\n\"hi\"\n", "{}", text(&out.stderr));
}

#[test]
fn tasks_started_at_the_prompt_run_between_entries() {
    // The delayed print comes while the REPL waits for the next line, which comes later.
    let dir = support::tree("repl-background", &[]);
    let mut child = start(&dir);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"task.delay(0.05, print, \"from the background\")\nnil\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"\"next\"\n").unwrap();
    drop(stdin);
    let out = output_within(child, Duration::from_secs(60)).expect("the REPL ends");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("thread"))
        .collect();
    assert_eq!(lines, ["nil", "from the background", "\"next\""]);
}

#[test]
fn an_error_is_reported_and_the_session_goes_on() {
    let out = repl("error(\"boom\")\nerror({ code = 7 })\nlocal = 1\n\"still here\"\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("repl:1: boom\nstack traceback:"),
        "{stderr}"
    );
    assert!(stderr.contains("{ code = 7 }"), "{stderr}");
    assert!(!stderr.contains("table: 0x"), "{stderr}");
    assert!(stderr.contains("repl:1: Expected identifier"), "{stderr}");
    assert_eq!(text(&out.stdout), "\"still here\"\n");
    assert!(out.status.success());
}

#[test]
fn a_line_that_is_not_utf8_runs_and_the_session_goes_on() {
    // Luau source may hold any bytes in a string; reading lines as text ended the session here.
    let out = repl_bytes(b"x = \"\xff\xfe\"\n#x, string.byte(x)\n\"after\"\n");
    assert_eq!(
        text(&out.stdout),
        "2, 255\n\"after\"\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn long_strings_and_comments_left_open_go_on_at_the_next_line() {
    // Luau calls them malformed rather than incomplete: the second line used to run alone.
    let out = repl("x = [[one\ntwo]]\n#x\n--[==[ a\nlong ]] comment ]==] \"after\"\n");
    assert_eq!(text(&out.stdout), "7\n\"after\"\n", "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn an_entry_the_input_ends_in_the_middle_of_is_reported() {
    let out = repl("\"first\"\nfunction f()\n  return 1\n");
    assert_eq!(text(&out.stdout), "\"first\"\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Expected 'end' (to close 'function' at line 1), got <eof>"),
        "{stderr}"
    );
}

#[test]
fn values_and_errors_whose_tostring_is_error_are_shown_without_hanging() {
    // `__tostring = error` raised the value again inside the command's `error`, which doubled
    // its calls at each nested level: the session hung.
    let out = repl(
        "setmetatable({}, {__tostring = error})\nerror(setmetatable({}, {__tostring = error}))\n\"after\"\n",
    );
    assert_eq!(
        text(&out.stdout),
        "<table whose __tostring failed with a table>\n\"after\"\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn process_exit_ends_the_session_with_its_code() {
    let out = repl("require(\"@spindle/process\").exit(3)\n\"not reached\"\n");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "");
}

#[cfg(unix)]
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_runaway_entry_and_the_session_goes_on() {
    let dir = support::tree("repl-interrupt", &[]);
    let mut child = start(&dir);
    let mut stdin = child.stdin.take().unwrap();
    // A busy loop (Lua running: the VM interrupt stops it), then a long wait (no Lua
    // running: the entry is cancelled).
    for entry in ["while true do end\n", "task.wait(600)\n"] {
        stdin.write_all(b"\"before\"\n").unwrap();
        stdin.write_all(entry.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        interrupt(&child);
        std::thread::sleep(Duration::from_millis(200));
    }
    stdin.write_all(b"\"after\"\n").unwrap();
    drop(stdin);
    let out = output_within(child, Duration::from_secs(60)).expect("the REPL goes on, then ends");
    assert_eq!(
        text(&out.stdout),
        "\"before\"\n\"before\"\n\"after\"\n",
        "{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("interrupted").count(), 2, "{stderr}");
    assert!(out.status.success());
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_busy_background_task_and_then_still_stops_entries() {
    let dir = support::tree("repl-interrupt-background", &[]);
    let mut child = start(&dir);
    let mut stdin = child.stdin.take().unwrap();
    // The background task's loop holds the scheduler while the REPL waits for a line.
    stdin
        .write_all(b"task.delay(0.1, function() while true do end end) ~= nil\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(b"while true do end\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(b"\"after\"\n").unwrap();
    drop(stdin);
    let out = output_within(child, Duration::from_secs(60)).expect("the REPL goes on, then ends");
    assert_eq!(
        text(&out.stdout),
        "true\n\"after\"\n",
        "{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("interrupted").count(), 2, "{stderr}");
}

/// Through a terminal: `script` gives the REPL a pseudo-terminal, so rustyline edits lines,
/// shows the prompts, and takes Ctrl-D (byte 4) as the end; Ctrl-C (byte 3) while an entry
/// runs reaches the REPL as SIGINT, as from a keyboard.
#[cfg(target_os = "linux")]
#[test]
fn at_a_terminal_the_prompt_shows_and_ctrl_d_ends_the_session() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command");
        return;
    }
    let dir = support::tree("repl-pty", &[]);
    let command = format!("{} repl", env!("CARGO_BIN_EXE_spindle"));
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(&dir)
        .env_remove("HOME")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for keys in [
        "6 * 7\r",
        "if true then\r",
        "  print(\"multi\")\r",
        "end\r",
        // Ctrl-C (byte 3) while the loop runs: the terminal sends SIGINT, which stops it.
        "while true do end\r",
        "\u{3}",
        "\"after\" .. \"wards\"\r",
        "\u{4}",
    ] {
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = output_within(child, Duration::from_secs(60)).expect("Ctrl-D ends the REPL");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("> "), "{stdout:?}");
    assert!(stdout.contains(">> "), "{stdout:?}");
    assert!(stdout.contains("42"), "{stdout:?}");
    assert!(stdout.contains("multi"), "{stdout:?}");
    assert!(stdout.contains("interrupted"), "{stdout:?}");
    assert!(stdout.contains("\"afterwards\""), "{stdout:?}");
    drop(stdin);
}

/// `process.exit` from a task while rustyline holds the terminal in raw mode: the terminal's
/// settings are put back (`stty -a` after the REPL shows canonical mode and echo again).
#[cfg(target_os = "linux")]
#[test]
fn an_exit_while_the_prompt_waits_gives_the_terminal_back() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command");
        return;
    }
    let dir = support::tree("repl-pty-exit", &[]);
    let command = format!("{} repl; stty -a", env!("CARGO_BIN_EXE_spindle"));
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(&dir)
        .env_remove("HOME")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"task.delay(0.3, require(\"@spindle/process\").exit, 0)\r")
        .unwrap();
    stdin.flush().unwrap();
    let out = output_within(child, Duration::from_secs(60)).expect("process.exit ends the REPL");
    drop(stdin);
    let stdout = text(&out.stdout);
    let settings = stdout.rsplit("speed").next().unwrap_or("");
    let flags: Vec<&str> = settings.split_whitespace().collect();
    assert!(flags.contains(&"icanon"), "{stdout:?}");
    assert!(flags.contains(&"echo"), "{stdout:?}");
}
