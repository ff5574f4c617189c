//! Hostile scripts against `spindle run`, each in a child process: a crash (segfault, a trap
//! under a memory limit) shows as a missing exit status, not as a lost test binary. Each test
//! asserts the exit status and the exact lines on stderr: every uncaught error is reported
//! once, with its message and its task's traceback (rules 8 and 23 of the task contract).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Writes a script into this run's temporary directory and returns its path.
fn script(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

#[allow(dead_code)] // `path` and `stderr_lines` serve the error tests that come next.
/// What a run of `spindle run OPTIONS SCRIPT` left: its exit status (`None` when a signal
/// ended it) and its output, as text.
struct Run {
    path: String,
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

#[allow(dead_code)]
impl Run {
    /// Stderr's lines, with the script's path written `FILE`.
    fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .map(|line| line.replace(&self.path, "FILE"))
            .collect()
    }
}

/// Runs `source` with `options`; a run that does not end within two minutes fails the test.
fn spindle_run(options: &[&str], name: &str, source: &str) -> Run {
    let path = script(name, source);
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .args(options)
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the spindle binary runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("{name} did not end within two minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        path: path.display().to_string(),
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
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
