//! `require` and the `@spindle/...` modules as `spindle run` gives them: files found relative to
//! the requiring file, `init.luau`, `.luaurc` aliases, the built-ins, and the errors for a
//! missing module, a cycle, a failing or yielding module; `process.exit` codes and output
//! order.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::{spindle_within, text, tree};

/// Writes `files` (path, source) into a directory of their own and runs the first one from
/// that directory with `args`.
fn run_tree(test: &str, files: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tree(test, files);
    run_in(&dir, files[0].0, args)
}

fn run_in(dir: &Path, main: &str, args: &[&str]) -> Output {
    run_with_options(dir, &[], main, args)
}

/// Runs `spindle run OPTIONS MAIN ARGS` from `dir`, failing the test after a minute.
fn run_with_options(dir: &Path, options: &[&str], main: &str, args: &[&str]) -> Output {
    let command: Vec<&str> = ["run"]
        .iter()
        .chain(options)
        .chain([&main])
        .chain(args)
        .copied()
        .collect();
    spindle_within(Duration::from_secs(60), &command, dir)
        .unwrap_or_else(|| panic!("{main} did not end within a minute"))
}

fn first_line(bytes: &[u8]) -> String {
    text(bytes).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn require_finds_relative_files_init_modules_and_lua_files_and_runs_each_once() {
    let out = run_tree(
        "relative",
        &[
            (
                "main.luau",
                r#"
local lib = require("./lib")
local again = require("./lib")
print(lib.name, lib.util, lib.sibling, lib == again)
print(require("./app/deep").up)
"#,
            ),
            (
                "lib/init.luau",
                r#"
print("loading lib")
return { name = "lib", util = require("@self/util"), sibling = require("./sibling") }
"#,
            ),
            ("lib/util.luau", "return 'util'"),
            ("sibling.lua", "return 'sibling (a .lua file beside lib)'"),
            (
                "app/deep.luau",
                "return { up = require('../lib').name .. ' from app' }",
            ),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "loading lib\nlib\tutil\tsibling (a .lua file beside lib)\ttrue\nlib from app\n"
    );
}

#[test]
fn require_follows_luaurc_aliases() {
    let out = run_tree(
        "alias",
        &[
            ("src/main.luau", "print(require('@shared/greet')('alias'))"),
            (
                ".luaurc",
                r#"{ "aliases": { "shared": "./vendor/shared" } }"#,
            ),
            (
                "vendor/shared/greet.luau",
                "return function(who) return 'hello, ' .. who end",
            ),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, alias\n");
}

#[test]
fn builtin_modules_come_from_spindle_and_are_made_once() {
    let out = run_tree(
        "builtins",
        &[(
            "main.luau",
            r#"
local json = require("@spindle/json")
local process = require("@spindle/process")
local stdio = require("@spindle/stdio")
assert(require("@spindle/json") == json and require("@spindle/process") == process)
stdio.write(json.encode({ args = process.args }) .. "\n")
"#,
        )],
        &["one", "two"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"args\":[\"one\",\"two\"]}\n");
}

#[test]
fn a_missing_module_is_named_with_the_requiring_file_and_line() {
    let out = run_tree(
        "missing",
        &[
            ("main.luau", "require('./sub/a')"),
            ("sub/a.luau", "local x = 1\nreturn require('./nope')"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        first_line(&out.stderr),
        "sub/a.luau:2: cannot require './nope': could not resolve child component \"nope\""
    );
    let out = run_tree(
        "missing_builtin",
        &[("main.luau", "\nrequire('@spindle/nope')")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        first_line(&out.stderr),
        "main.luau:2: cannot require '@spindle/nope': there is no built-in module 'nope' (there are: fs, json, net, process, stdio)"
    );
    let out = run_tree("not_a_string", &[("main.luau", "require(42)")], &[]);
    assert_eq!(
        first_line(&out.stderr),
        "main.luau:1: invalid argument #1 to 'require' (string expected, got number)"
    );
}

#[test]
fn a_require_cycle_is_refused_with_its_chain() {
    let out = run_tree(
        "cycle",
        &[
            ("main.luau", "require('./a')"),
            ("a.luau", "return require('./b')"),
            ("b.luau", "\nreturn require('./a')"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        first_line(&out.stderr),
        "b.luau:2: cannot require './a': require cycle: a.luau -> b.luau -> a.luau"
    );
}

#[test]
fn modules_nested_too_deep_are_refused_with_a_clear_error() {
    let mut files: Vec<(String, String)> =
        vec![("main.luau".into(), "print(require('./m1'))".into())];
    for i in 1..=70 {
        files.push((
            format!("m{i}.luau"),
            format!("return require('./m{}')", i + 1),
        ));
    }
    files.push(("m71.luau".into(), "return 'bottom'".into()));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, s)| (p.as_str(), s.as_str()))
        .collect();
    let out = run_tree("deep", &files, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        first_line(&out.stderr),
        "m64.luau:1: cannot require './m65': modules nested more than 64 deep (each require of a loading module takes C stack, which Luau bounds)"
    );
    // 64 levels load.
    let out = run_tree(
        "deep_ok",
        &[&[("main.luau", "print(require('./m8'))")], &files[1..]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bottom\n");
}

#[test]
fn a_failing_module_reports_its_own_file_and_line_and_is_not_cached() {
    let out = run_tree(
        "failing",
        &[
            (
                "main.luau",
                r#"
local ok, err = pcall(require, "./bad")
print(ok, tostring(err):match("^[^\n]*"))
print(pcall(require, "./bad"))
print(pcall(require, "./syntax"))
require("./bad")
"#,
            ),
            ("bad.luau", "print('running bad')\nerror('boom')"),
            ("syntax.luau", "local x = = 1"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "running bad");
    assert_eq!(lines[1], "false\tbad.luau:2: boom");
    assert_eq!(
        lines[2], "running bad",
        "a module that failed runs again when required again"
    );
    assert!(lines[3].starts_with("false\tbad.luau:2: boom"), "{stdout}");
    assert!(lines[4].starts_with("false\tsyntax.luau:1:"), "{stdout}");
    assert_eq!(first_line(&out.stderr), "bad.luau:2: boom");
    assert!(
        text(&out.stderr).contains("main.luau:6"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_module_that_yields_at_its_top_level_is_refused_at_its_line() {
    let out = run_tree(
        "yielding",
        &[
            ("main.luau", "print(pcall(require, './slow'))\nprint(require('./spawns'))"),
            ("slow.luau", "local x = 1\ntask.wait(0.01)\nreturn x"),
            (
                "spawns.luau",
                "task.spawn(function() task.wait(0.01) print('spawned work ran') end)\nreturn 'spawns loaded'",
            ),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "false\tslow.luau:2: task.wait: attempt to yield across metamethod/C-call boundary\nspawns loaded\nspawned work ran\n"
    );
}

#[test]
fn process_exit_ends_the_run_with_its_code_from_any_depth() {
    let started = Instant::now();
    let out = run_tree(
        "exit",
        &[(
            "main.luau",
            r#"
local process = require("@spindle/process")
local stdio = require("@spindle/stdio")
task.delay(600, print, "never")
task.spawn(function()
    print("before")
    stdio.write("written")
    coroutine.wrap(function()
        pcall(process.exit, 3)
        print("after exit, in the coroutine")
    end)()
    print("after exit, in the task")
end)
print("after exit, in main")
"#,
        )],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "before\nwritten");
    assert_eq!(text(&out.stderr), "");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn exit_codes_follow_exit_then_exit_code_then_errors() {
    let status = |test: &str, source: &str| {
        let out = run_tree(test, &[("main.luau", source)], &[]);
        out.status.code()
    };
    let prelude = "local process = require('@spindle/process')\n";
    assert_eq!(status("zero", &format!("{prelude}process.exit()")), Some(0));
    assert_eq!(
        status("code", &format!("{prelude}process.exitCode = 9")),
        Some(9)
    );
    assert_eq!(
        status("error", &format!("{prelude}task.spawn(error, 'x')")),
        Some(1)
    );
    assert_eq!(
        status(
            "error_code",
            &format!("{prelude}process.exitCode = 4 task.spawn(error, 'x')")
        ),
        Some(4)
    );
    assert_eq!(
        status(
            "exit_wins",
            &format!("{prelude}process.exitCode = 4 task.spawn(error, 'x') process.exit(0)")
        ),
        Some(0)
    );
}

#[test]
fn stdio_writes_keep_their_order_with_print() {
    let out = run_tree(
        "order",
        &[(
            "main.luau",
            r#"
local stdio = require("@spindle/stdio")
print("one")
stdio.write("two ")
print("three")
stdio.write(buffer.fromstring("four\n"))
stdio.ewrite("to stderr")
"#,
        )],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo three\nfour\n");
    assert_eq!(text(&out.stderr), "to stderr");
}

#[test]
fn json_errors_name_the_scripts_line() {
    let out = run_tree(
        "json_error",
        &[(
            "main.luau",
            "local json = require('@spindle/json')\n\njson.decode('[1,')",
        )],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        first_line(&out.stderr),
        "main.luau:3: json.decode: EOF while parsing a value at line 1 column 3"
    );
}

#[test]
fn exit_ends_a_run_whose_other_task_is_a_sliced_busy_loop() {
    let dir = tree(
        "exit_sliced",
        &[(
            "main.luau",
            r#"
local process = require("@spindle/process")
task.spawn(function() while true do end end)
task.wait(0.05)
print("main goes on between slices")
process.exit(2)
"#,
        )],
    );
    let out = run_with_options(&dir, &["--time-slice", "0.01"], "main.luau", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "main goes on between slices\n");
}

#[test]
fn fs_reads_what_a_script_wrote_relative_to_the_working_directory_and_names_missing_paths() {
    let out = run_tree(
        "fs",
        &[(
            "main.luau",
            r#"
local fs = require("@spindle/fs")
fs.writeDir("out")
fs.writeFile("out/a.txt", "written")
fs.appendFile("out/a.txt", " and appended")
print(fs.readFile("out/a.txt"), table.concat(fs.readDir("out"), ","))
fs.readFile("missing.txt")
"#,
        )],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        // (A read the pool finishes before its first poll returns at once, without yielding: that
        // another task runs during a slow read is pinned in spindle-std's tests, on a pipe.)
        "written and appended\ta.txt\n"
    );
    assert_eq!(
        first_line(&out.stderr),
        "main.luau:7: fs.readFile: cannot read 'missing.txt': No such file or directory"
    );
}
