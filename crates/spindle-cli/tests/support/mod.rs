//! What the command line's tests share: scripts written into a temporary directory, and
//! `spindle run` in a child process, bounded in time, run by the script's file name from its
//! directory so that messages name the file as a user would have typed it.
//!
//! Each test file uses the part of it that it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Writes a script into this test run's temporary directory and returns its path.
pub fn script(name: &str, source: impl AsRef<[u8]>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `spindle ARGS` from `dir`, its stdout and stderr piped.
pub fn start_spindle(args: &[&str], dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the spindle binary runs")
}

/// Waits for `child` to end and returns its output, killing it after `limit`; `None` if it had
/// to be killed.
pub fn output_within(mut child: Child, limit: Duration) -> Option<Output> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// Runs `spindle ARGS` from `dir`, killing it after `limit`; `None` if it had to be killed.
pub fn spindle_within(limit: Duration, args: &[&str], dir: &Path) -> Option<Output> {
    output_within(start_spindle(args, dir), limit)
}

/// Writes `files` (path, source) into a directory of their own, named after `test`, and
/// returns it.
pub fn tree(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, source) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    dir
}

/// Runs `spindle run OPTIONS NAME` from the directory of the script at `path`, killing it after
/// `limit`; `None` if it had to be killed.
pub fn run_script_within(limit: Duration, options: &[&str], path: &Path) -> Option<Output> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let args: Vec<&str> = ["run"]
        .iter()
        .chain(options)
        .chain([&name])
        .copied()
        .collect();
    spindle_within(limit, &args, path.parent().unwrap())
}

/// Writes `source` as the script `name` and runs it with `options`, as [`run_script_within`].
pub fn spindle_run_within(
    limit: Duration,
    options: &[&str],
    name: &str,
    source: &str,
) -> Option<Output> {
    run_script_within(limit, options, &script(name, source))
}

/// [`spindle_run_within`] two minutes: a run that hangs fails the test instead of hanging it.
pub fn spindle_run(options: &[&str], name: &str, source: &str) -> Output {
    spindle_run_within(Duration::from_secs(120), options, name, source)
        .unwrap_or_else(|| panic!("{name} did not end within two minutes"))
}
