//! Hostile scripts against `spindle run`, each in a child process: a crash (segfault, a trap
//! under a memory limit) shows as a missing exit status, not as a lost test binary. Each test
//! asserts the exit status and the exact lines on stderr: every uncaught error is reported
//! once, with its message and its task's traceback (rules 8 and 23 of the task contract).

mod support;

/// What a run of `spindle run OPTIONS SCRIPT` left: its exit status (`None` when a signal
/// ended it) and its output, as text.
struct Run {
    name: String,
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stderr's lines, with the script's name written `FILE`.
    fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .map(|line| line.replace(&self.name, "FILE"))
            .collect()
    }
}

/// Runs `source` with `options`; a run that does not end within two minutes fails the test.
fn spindle_run(options: &[&str], name: &str, source: &str) -> Run {
    let out = support::spindle_run(options, name, source);
    Run {
        name: name.to_owned(),
        status: out.status.code(),
        stdout: support::text(&out.stdout),
        stderr: support::text(&out.stderr),
    }
}

// --- Lua that runs while an error is formatted ------------------------------------------------

#[test]
fn an_error_whose_tostring_cancels_its_own_task_is_reported_once_with_its_traceback() {
    // Rule 8. The task is freed by the cancel while its error is being formatted: the error
    // used to vanish (exit 0, nothing on stderr).
    let run = spindle_run(
        &[],
        "cancels_itself.luau",
        "local victim\n\
         victim = task.spawn(function()\n\
         \x20 task.wait(0.01)\n\
         \x20 error(setmetatable({}, {__tostring = function() task.cancel(victim); collectgarbage(); collectgarbage(); return \"boom\" end}))\n\
         end)\n",
    );
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr_lines(),
        [
            "boom",
            "stack traceback:",
            "\t[C]: in function 'error'",
            "\tFILE:4: in function <FILE:2>",
        ]
    );
}

#[test]
fn a_thread_freed_while_its_error_is_formatted_is_not_read_afterwards() {
    // Rule 8, and memory safety: the `__tostring` cancels the failed task, drops the last
    // reference to its thread and collects, so that the collector frees the thread (and the
    // page it sat in, the threads around it being garbage too); then it fills the freed memory
    // with bytes that are no valid pointer. The traceback used to be taken after the
    // `__tostring` ran, from the freed thread: a segfault.
    let run = spindle_run(
        &[],
        "freed_while_formatted.luau",
        r#"local junk = {}
for i = 1, 2000 do junk[i] = coroutine.create(print) end
local victim
victim = task.spawn(function()
  task.wait(0.01)
  error(setmetatable({}, {__tostring = function()
    task.cancel(victim); victim = nil; junk = nil; collectgarbage(); collectgarbage()
    local fill = {}
    local pattern = string.rep("AAAAAAAABBBBBBBBCCCCCCCCDDDDDDDDEEEEEEEE", 420)
    for i = 1, 400 do fill[i] = string.sub(pattern, 1, 16200 + i) end
    _G.fill = fill
    return "boom" end}))
end)
for i = 1, 2000 do junk[i + 2000] = coroutine.create(print) end
"#,
    );
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    assert_eq!(
        run.stderr_lines(),
        [
            "boom",
            "stack traceback:",
            "\t[C]: in function 'error'",
            "\tFILE:6: in function <FILE:4>",
        ]
    );
}

#[test]
fn errors_whose_tostring_closes_or_cancels_their_task_are_each_reported_once() {
    // Rule 8, on both ways a task is resumed: a task.wait ended by its timer (the scheduler's
    // own fast lane) and a first resumption through mlua (task.spawn, task.defer), with the
    // failed thread cancelled, closed, or cancelled from a coroutine, while its error is
    // formatted. Rule 6: cancelling the dead thread does nothing to it, so its traceback is
    // whole; `coroutine.close` resets it (as Luau's own does), which leaves a traceback to the
    // fast lane only.
    let run = spindle_run(
        &[],
        "odd_formatters.luau",
        r#"local function failing(label, finish)
  local me
  me = function()
    local thread = coroutine.running()
    error(setmetatable({}, {__tostring = function()
      finish(thread); collectgarbage()
      return label
    end}))
  end
  return me
end
local cancel = function(thread) task.cancel(thread) end
local close = function(thread) coroutine.close(thread) end
local nested = function(thread) coroutine.wrap(function() task.cancel(thread) end)() end
task.spawn(failing("spawned, cancelled", cancel))
task.spawn(failing("spawned, cancelled from a coroutine", nested))
task.defer(failing("deferred, cancelled", cancel))
task.spawn(function() task.wait() failing("woken, cancelled", cancel)() end)
task.spawn(function() task.wait() failing("woken, closed", close)() end)
task.spawn(function() task.wait() failing("woken, cancelled from a coroutine", nested)() end)
"#,
    );
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    let lines = run.stderr_lines();
    let reports: Vec<&str> = lines
        .iter()
        .filter(|line| !line.starts_with('\t') && *line != "stack traceback:")
        .map(String::as_str)
        .collect();
    assert_eq!(
        reports,
        [
            "spawned, cancelled",
            "spawned, cancelled from a coroutine",
            "deferred, cancelled",
            "woken, cancelled",
            "woken, closed",
            "woken, cancelled from a coroutine",
        ],
        "{}",
        run.stderr
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "stack traceback:").count(),
        6,
        "{}",
        run.stderr
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "\tFILE:5: in function <FILE:3>")
            .count(),
        6,
        "every traceback names the line of the error: {}",
        run.stderr
    );
}

#[test]
fn an_error_whose_tostring_raises_it_again_is_reported_without_hanging() {
    // The command's `error` turns a table into text to remember it; a `__tostring` that raises
    // the value again called `error` inside that, and each level did it twice over: the calls
    // doubled at each of Luau's 200 nested C calls, and the run never ended.
    let run = support::spindle_run_within(
        std::time::Duration::from_secs(30),
        &[],
        "reraises.luau",
        r#"local again = setmetatable({}, {__tostring = error})
local itself = setmetatable({}, {__tostring = function(self) error(self) end})
print(pcall(error, again) == false, pcall(tostring, itself) == false)
task.spawn(error, itself)
error(again)
"#,
    )
    .expect("the run ends");
    let stdout = support::text(&run.stdout);
    let stderr = support::text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stdout, "true\ttrue\n");
    assert_eq!(
        stderr.matches("stack traceback:").count(),
        2,
        "both failures are reported: {stderr}"
    );
}

// --- Globals the script replaced -------------------------------------------------------------

#[test]
fn a_module_required_after_the_script_replaced_error_and_type_still_checks_its_arguments() {
    // A built-in module binds `error`, `type` and others when it is made, at the first
    // `require`: it used to bind the script's, whose `error` returned, so that a bad call went
    // through (a failed connect returned its message as the stream).
    let run = spindle_run(
        &[],
        "replaced.luau",
        r#"local mine = function() end
error = mine
type = function() return "string" end
typeof = function() return "TcpStream" end
coroutine.isyieldable = function() return true end
local net = require("@spindle/net")
print(pcall(function() return net.tcp.connect(5, 80) end))
print(pcall(function() return net.tcp.connect("127.0.0.1", 1) end))
print(rawequal(error, mine), type(1), coroutine.isyieldable())
"#,
    );
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    let stdout = run.stdout.replace(&run.name, "FILE");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "false\tFILE:7: net.tcp.connect: invalid argument #1 (string expected, got number)"
    );
    assert!(
        lines[1].starts_with("false\tFILE:8: net.tcp.connect: cannot connect to 127.0.0.1:1"),
        "{stdout}"
    );
    assert_eq!(
        lines[2], "true\tstring\ttrue",
        "the script's globals are its own again"
    );
}

// --- Closing threads at the memory limit ------------------------------------------------------

/// A script that parks a task 200 frames deep in `Signal:Wait()`, then fills the VM's memory
/// to the limit so that closing the parked thread cannot get the memory it asks for: Luau
/// shrinks a closed thread's call frames and stack into blocks of 384 and 768 bytes, taken from
/// pages of their own size class, and the script leaves those two classes without a free block
/// and the VM too close to its limit for a new page. (Objects and arrays have pages of their
/// own; buffers are used because equal strings are one object.) Then it runs `then`.
fn at_the_memory_limit(then: &str) -> String {
    format!(
        r#"local sig = Signal.new()
local deep_task = task.spawn(function()
  local function deep(n) if n == 0 then return sig:Wait() end return deep(n - 1) + 1 end
  deep(200)
end)
local keep = table.create(100000)
local n = 0
local create, buf = table.create, buffer.create
local function objects(size) while true do n += 1 keep[n] = buf(size) end end
local function arrays(size) while true do n += 1 keep[n] = create(size) end end
-- Tables made now and freed once the heap is full, so that tables can still be made then.
local spare = table.create(2000)
for i = 1, 2000 do spare[i] = {{}} end
collectgarbage()
for size = 64, 1, -1 do pcall(arrays, size) end
for size = 1100, 0, -1 do pcall(objects, size) end
spare = nil
collectgarbage()
pcall(arrays, 24) -- 24 slots of 16 bytes: the class of a closed thread's call frames
pcall(arrays, 48) -- and of its stack (720 bytes)
{then}
"#
    )
}

#[test]
fn a_deep_task_left_waiting_is_closed_at_shutdown_at_the_memory_limit() {
    // Closing a thread reallocates its stack; at the limit that allocation failed where
    // nothing could catch it, and Luau trapped (SIGILL).
    let run = spindle_run(
        &["--memory-limit", "8M"],
        "shutdown_at_limit.luau",
        &at_the_memory_limit(""),
    );
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
}

#[test]
fn task_cancel_of_a_deep_task_works_at_the_memory_limit() {
    let run = spindle_run(
        &["--memory-limit", "8M"],
        "cancel_at_limit.luau",
        &at_the_memory_limit(
            "local ok, err = pcall(task.cancel, deep_task)\nkeep = nil\ncollectgarbage()\nprint(ok, err, coroutine.status(deep_task))",
        ),
    );
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "true\tnil\tdead\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn coroutine_close_of_a_deep_task_works_at_the_memory_limit() {
    let run = spindle_run(
        &["--memory-limit", "8M"],
        "close_at_limit.luau",
        &at_the_memory_limit(
            "local ok, closed = pcall(coroutine.close, deep_task)\nkeep = nil\ncollectgarbage()\nprint(ok, closed, coroutine.status(deep_task))",
        ),
    );
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "true\ttrue\tdead\n");
    assert_eq!(run.stderr, "");
}

// --- Memory errors ----------------------------------------------------------------------------

#[test]
fn a_task_out_of_memory_reports_not_enough_memory_with_its_traceback() {
    // Rule 23: the message is Luau's, and the traceback names the line, on both ways a task is
    // resumed (a first resumption, and a task.wait ended by its timer), and for the main task.
    let hog = "local t = {}\n  while true do t[#t + 1] = string.rep('x', 4096) .. #t end";
    let source = format!(
        "task.spawn(function()\n  {hog}\nend)\n\
         task.spawn(function()\n  task.wait(0.01)\n  {hog}\nend)\n\
         task.wait(0.05)\n\
         {hog}\n"
    );
    let run = spindle_run(&["--memory-limit", "16M"], "hogs.luau", &source);
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    let lines = run.stderr_lines();
    let reports: Vec<&str> = lines
        .iter()
        .filter(|line| !line.starts_with('\t'))
        .map(String::as_str)
        .collect();
    assert_eq!(
        reports,
        [
            "not enough memory",
            "stack traceback:",
            "not enough memory",
            "stack traceback:",
            "not enough memory",
            "stack traceback:",
        ],
        "{}",
        run.stderr
    );
    for expected in [
        "\tFILE:3: in function <FILE:1>",
        "\tFILE:8: in function <FILE:5>",
        "\tFILE:12",
    ] {
        assert!(
            lines.iter().any(|line| line.starts_with(expected)),
            "{expected:?} in {}",
            run.stderr
        );
    }
}
