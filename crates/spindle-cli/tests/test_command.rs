//! `spindle test`: test files found under the paths given, each run in a VM of its own under a
//! virtual clock, `describe`/`test`/`expect`, failures with file:line and the expected and
//! received values, stuck and runaway tests reported while the others go on, files that fail
//! to load, the closing line and the exit status.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::{spindle_within, text, tree};

/// Runs `spindle test ARGS` from `dir`, failing the test after a minute.
fn spindle_test(dir: &Path, args: &[&str]) -> Output {
    let command: Vec<&str> = ["test"].iter().chain(args).copied().collect();
    spindle_within(Duration::from_secs(60), &command, dir)
        .unwrap_or_else(|| panic!("spindle test did not end within a minute"))
}

fn last_line(out: &Output) -> String {
    text(&out.stdout).lines().last().unwrap_or("").to_owned()
}

#[test]
fn passing_files_nested_describes_and_an_hour_long_wait_pass_at_once() {
    let dir = tree(
        "passing",
        &[
            (
                "math.test.luau",
                r#"
describe("math", function()
    describe("addition", function()
        test("adds", function()
            expect(1 + 1).toBe(2)
            expect({ a = { 1, 2 }, b = "x" }).toEqual({ a = { 1, 2 }, b = "x" })
            expect(nil).toBeNil()
            expect("a").never.toBe("b")
            expect(function() error("boom") end).toThrow("boom")
        end)
    end)
    it("waits an hour at once", function()
        expect(task.wait(3600)).toBe(3600)
    end)
end)
"#,
            ),
            ("lib/plain.spec.luau", "assert(1 + 1 == 2)"),
            ("lib/not_a_test.luau", "error('never run')"),
            (".hidden/x.test.luau", "error('never run')"),
        ],
    );
    let started = Instant::now();
    let out = spindle_test(&dir, &[]);
    assert!(started.elapsed() < Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("PASS math.test.luau (2 tests)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS lib/plain.spec.luau (1 test)\n"),
        "{stdout}"
    );
    assert_eq!(last_line(&out), "3 passed, 0 failed");
}

#[test]
fn a_failure_shows_the_file_and_line_and_the_expected_and_received_values() {
    let dir = tree(
        "failing",
        &[(
            "fail.test.luau",
            r#"describe("outer", function()
    describe("inner", function()
        test("compares", function()
            expect({ 1, "two" }).toEqual({ 1, "three" })
        end)
    end)
end)
test("passes", function() end)
"#,
        )],
    );
    let out = spindle_test(&dir, &["fail.test.luau"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "FAIL fail.test.luau\n  \
           FAIL outer > inner > compares\n    \
             fail.test.luau:4: expect(received).toEqual(expected)\n    \
             Expected: { 1, \"three\" }\n    \
             Received: { 1, \"two\" }\n  \
           ok   passes\n\
         1 passed, 1 failed\n"
    );
}

#[test]
fn stuck_and_runaway_tests_are_reported_and_the_later_tests_still_run() {
    let dir = tree(
        "stuck",
        &[(
            "hang.test.luau",
            r#"
test("waits on a signal nothing fires", function() Signal.new():Wait() end)
test("yields to nobody", function() coroutine.yield() end)
test("busy without yielding", function() while true do end end)
test("waits forever", function() while true do task.wait(1) end end)
test("an error in a task it started", function() task.spawn(error, "child failed") end)
test("still runs", function() expect(true).toBeTruthy() end)
"#,
        )],
    );
    let out = spindle_test(&dir, &["--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for expected in [
        "  FAIL waits on a signal nothing fires\n    stuck: the test is suspended and nothing is left",
        "  FAIL yields to nobody\n    stuck:",
        "  FAIL busy without yielding\n    Script timeout: exhausted allowed execution time",
        "  FAIL waits forever\n    timed out after 0.5 s",
        "  FAIL an error in a task it started\n    child failed",
        "  ok   still runs\n",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    assert_eq!(last_line(&out), "1 passed, 5 failed");
}

#[test]
fn a_file_that_fails_to_load_is_reported_and_the_other_files_run() {
    let dir = tree(
        "load",
        &[
            ("a.test.luau", "local x = = 1"),
            ("b.test.luau", "error('top level failed')"),
            ("c.test.luau", "test('fine', function() end)"),
        ],
    );
    let out = spindle_test(&dir, &["-j", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL a.test.luau\n  could not run the file:\n    a.test.luau:1: Expected identifier when parsing expression, got '='\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "FAIL b.test.luau\n  could not run the file:\n    b.test.luau:1: top level failed\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("PASS c.test.luau (1 test)\n"), "{stdout}");
    assert_eq!(last_line(&out), "1 passed, 2 failed");
}

#[test]
fn real_time_opts_out_of_the_virtual_clock() {
    let dir = tree(
        "real_time",
        &[(
            "wait.test.luau",
            "test('waits', function() task.wait(0.2) end)",
        )],
    );
    let started = Instant::now();
    let out = spindle_test(&dir, &["--real-time"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn no_test_file_or_a_missing_path_is_an_error() {
    let dir = tree("none", &[("main.luau", "print(1)")]);
    let out = spindle_test(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "spindle: no *.test.luau or *.spec.luau file found\n"
    );
    let out = spindle_test(&dir, &["nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("spindle: cannot read 'nope': "));
}

#[test]
fn a_test_file_may_serve_on_the_network_as_a_script_may() {
    // Test files run on tokio, as `spindle run` does: a server started at the top level binds,
    // keeps nothing stuck while a test uses it, and stops.
    let dir = tree(
        "network",
        &[(
            "server.test.luau",
            r#"
            local net = require("@spindle/net")
            local server = net.serve(0, function() return "hello" end)
            test("the server listens on a port of its own", function()
                expect(server.port > 0).toBe(true)
                server.stop()
            end)
            "#,
        )],
    );
    let out = spindle_test(&dir, &[]);
    assert_eq!(
        last_line(&out),
        "1 passed, 0 failed",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.status.success());
}

#[test]
fn a_test_that_raises_a_table_shows_its_contents() {
    let dir = tree(
        "table-error",
        &[(
            "table.test.luau",
            "test(\"raises\", function()\n    error({ code = 7 })\nend)\n",
        )],
    );
    let out = spindle_test(&dir, &["table.test.luau"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("{ code = 7 }"), "{stdout}");
    assert!(!stdout.contains("table: 0x"), "{stdout}");
    assert!(
        stdout.contains("table.test.luau:2"),
        "where it was raised: {stdout}"
    );
}
