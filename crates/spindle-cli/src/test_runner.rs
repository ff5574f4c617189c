//! `spindle test`: finds `*.test.luau` and `*.spec.luau` files, runs each in a VM of its own
//! (a fresh Lua and scheduler, with `require`, the built-in modules and the test globals of
//! `test_api.luau`), on a thread of its own, several at once, and reports every test.
//!
//! A file runs in two steps: its top level runs as the main task, collecting its tests (a file
//! that defines none is one test, passed if its top level ends without error: plain `assert`
//! works); then each test runs as a task of its own, one after the other, the scheduler driven
//! until the test's task ends. A test fails with the first error reported while it ran (its
//! own, or one of a task it started); it is stuck when it is suspended and nothing is left that
//! could resume it, and timed out when it runs longer than `--timeout` (in real time: the
//! scheduler's watchdog stops one that runs that long without yielding, the driver one that
//! keeps yielding). Either way the next test goes on.
//!
//! Invariant: every run of a scheduler goes through [`drive`], the one place that names the
//! async runtime.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clap::Args;
use spindle::mlua::{self, Function, Lua, Table};
use spindle::{Clock, Scheduler, Task, TaskStatus, VirtualClock};
use spindle_std::process::{Exit, ProcessInfo};

/// The Lua side: `describe`, `test`, `it` and `expect`.
const TEST_API_LUAU: &str = include_str!("test_api.luau");

/// Options of `spindle test`.
#[derive(Args)]
pub(crate) struct TestOptions {
    /// Files, or directories searched (recursively, hidden ones skipped) for test files.
    #[arg(value_name = "PATHS", default_value = ".")]
    paths: Vec<PathBuf>,
    /// Run on the real clock instead of a virtual one.
    #[arg(long)]
    real_time: bool,
    /// Report a test that runs SECONDS (real time) as timed out.
    #[arg(long, value_name = "SECONDS", value_parser = crate::limits::seconds, default_value = "10")]
    timeout: Duration,
    /// How many files run at once [default: the number of CPUs].
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
}

/// How one test ended.
enum Verdict {
    Passed,
    Failed(String),
}

/// One file's results: its tests in order, or why it could not run.
struct FileReport {
    path: PathBuf,
    tests: Vec<(String, Verdict)>,
    load_error: Option<String>,
}

impl FileReport {
    fn failed(&self) -> usize {
        let failed = self
            .tests
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Failed(_)))
            .count();
        failed + usize::from(self.load_error.is_some())
    }

    fn passed(&self) -> usize {
        self.tests.len() + usize::from(self.load_error.is_some()) - self.failed()
    }

    /// The report as printed: `PASS file (N tests)`, or `FAIL file` with each test.
    fn render(&self) -> String {
        let name = self.path.display();
        if self.failed() == 0 {
            let count = self.tests.len();
            let plural = if count == 1 { "" } else { "s" };
            return format!("PASS {name} ({count} test{plural})\n");
        }
        let mut out = format!("FAIL {name}\n");
        if let Some(error) = &self.load_error {
            out += &format!("  could not run the file:\n{}\n", indent(error, 4));
        }
        for (test, verdict) in &self.tests {
            match verdict {
                Verdict::Passed => out += &format!("  ok   {test}\n"),
                Verdict::Failed(why) => {
                    out += &format!("  FAIL {test}\n{}\n", indent(why, 4));
                }
            }
        }
        out
    }
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `spindle test`: exit status 0 when every test passed, 1 when any failed, 2 when a path
/// does not exist or no test file was found.
pub(crate) fn run(options: &TestOptions) -> ExitCode {
    let files = match find_files(&options.paths) {
        Ok(files) if files.is_empty() => {
            eprintln!("spindle: no *.test.luau or *.spec.luau file found");
            return ExitCode::from(2);
        }
        Ok(files) => files,
        Err(message) => {
            eprintln!("spindle: {message}");
            return ExitCode::from(2);
        }
    };
    let jobs = options
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, files.len());
    let next = AtomicUsize::new(0);
    let totals = Mutex::new((0usize, 0usize));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            std::thread::Builder::new()
                // Nested spawns resume inside each other (README, "In Rust").
                .stack_size(16 << 20)
                .spawn_scoped(scope, || loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(index) else { break };
                    // A panic loses one file's report, not the others'.
                    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_file(path, options)
                    }))
                    .unwrap_or_else(|_| FileReport {
                        path: path.clone(),
                        tests: Vec::new(),
                        load_error: Some("the test runner panicked on this file".to_owned()),
                    });
                    let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                    totals.0 += report.passed();
                    totals.1 += report.failed();
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(report.render().as_bytes());
                    let _ = out.flush();
                })
                .expect("a test thread starts");
        }
    });
    let (passed, failed) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("{passed} passed, {failed} failed");
    ExitCode::from(u8::from(failed > 0))
}

/// The test files under `paths`, sorted; a path that does not exist is an error.
fn find_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
        if meta.is_dir() {
            walk(path, &mut files)
                .map_err(|e| format!("cannot search '{}': {e}", path.display()))?;
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn is_test_file(name: &str) -> bool {
    name.ends_with(".test.luau") || name.ends_with(".spec.luau")
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let path = path.strip_prefix("./").map(Path::to_owned).unwrap_or(path);
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') {
                walk(&path, files)?;
            }
        } else if is_test_file(&name) {
            files.push(path);
        }
    }
    Ok(())
}

/// The VM of one file: its scheduler, the errors reported since they were last taken, and how
/// the file may have asked to exit.
struct FileVm {
    /// The file's own current-thread tokio runtime, as `spindle run` drives a script on one
    /// (the network library needs it); entered for as long as the file runs.
    runtime: Rc<tokio::runtime::Runtime>,
    scheduler: Scheduler,
    errors: Rc<RefCell<Vec<String>>>,
    exit: Exit,
    deadline_after: Duration,
}

/// Runs one file in a VM of its own and reports its tests.
fn run_file(path: &Path, options: &TestOptions) -> FileReport {
    let mut report = FileReport {
        path: path.to_owned(),
        tests: Vec::new(),
        load_error: None,
    };
    if let Err(message) = run_tests(path, options, &mut report.tests) {
        report.load_error = Some(message);
    }
    report
}

/// Loads the file, collects its tests and runs them into `results`; an error when the file
/// could not be loaded or its top level failed.
fn run_tests(
    path: &Path,
    options: &TestOptions,
    results: &mut Vec<(String, Verdict)>,
) -> Result<(), String> {
    let source =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let lua = Lua::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Rc::new)
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // Entered while the file runs: its top level and tests start inside the runtime, so that
    // a `net.serve` at the top level can bind.
    let _entered = runtime.enter();
    let vm = file_vm(&lua, options, runtime.clone()).map_err(|e| e.to_string())?;
    let format: Function = spindle_std::stdio::module(&lua)
        .and_then(|stdio| stdio.get("format"))
        .map_err(|e| e.to_string())?;
    let api: Table = lua
        .load(TEST_API_LUAU)
        .set_name("=[spindle test]")
        .call(format)
        .map_err(|e| e.to_string())?;
    let main = lua
        .load(&source[..])
        .set_name(format!("@{}", path.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
        .map_err(|e| crate::load_error_message(path, &e))?;

    // The top level, collecting the tests.
    let top = vm.scheduler.spawn(main, ()).map_err(|e| e.to_string())?;
    match vm.settle(&top) {
        Ending::Finished => {
            if let Some(error) = vm.take_error() {
                return Err(error);
            }
        }
        Ending::Exited(code) => return Err(format!("the file called process.exit({code})")),
        other => return Err(other.describe(vm.deadline_after)),
    }
    let close: Function = api.get("close").map_err(|e| e.to_string())?;
    close.call::<()>(()).map_err(|e| e.to_string())?;

    let tests: Vec<Table> = api
        .get::<Table>("tests")
        .and_then(|list| list.sequence_values().collect())
        .map_err(|e| e.to_string())?;
    if tests.is_empty() {
        results.push(("(the file's top level)".to_owned(), Verdict::Passed));
    }
    for entry in tests {
        let (name, body): (String, Function) = entry
            .get("name")
            .and_then(|name| Ok((name, entry.get("body")?)))
            .map_err(|e| e.to_string())?;
        let task = vm.scheduler.spawn(body, ()).map_err(|e| e.to_string())?;
        let verdict = match vm.settle(&task) {
            Ending::Finished => match vm.take_error() {
                None => Verdict::Passed,
                Some(error) => Verdict::Failed(error),
            },
            Ending::Exited(code) => {
                results.push((
                    name,
                    Verdict::Failed(format!(
                        "called process.exit({code}); the file's later tests did not run"
                    )),
                ));
                break;
            }
            other => {
                let _ = vm.scheduler.cancel(&task);
                let mut why = other.describe(vm.deadline_after);
                if let Some(error) = vm.take_error() {
                    why = format!("{why}\n{error}");
                }
                Verdict::Failed(why)
            }
        };
        results.push((name, verdict));
    }
    let _ = vm.scheduler.shutdown();
    Ok(())
}

/// A scheduler as `spindle run` makes one (the task library, `require` and the built-in
/// modules), on a virtual clock unless `--real-time`, with the watchdog set to `--timeout`.
fn file_vm(
    lua: &Lua,
    options: &TestOptions,
    runtime: Rc<tokio::runtime::Runtime>,
) -> spindle::Result<FileVm> {
    let errors = Rc::new(RefCell::new(Vec::new()));
    let exit = Exit::new();
    let (seen, ending) = (errors.clone(), exit.clone());
    let values = crate::error_values::install(lua)?;
    let mut builder = Scheduler::builder()
        .timeout(options.timeout)
        .on_error(move |_, error| {
            if ending.requested().is_none() {
                // A message that names no line (the watchdog's, an error value that is no
                // string) keeps its traceback, to say where the test was; a table raised by
                // `error` is shown by its contents.
                let report = if error.message.contains(".luau:") {
                    error.message.clone()
                } else {
                    crate::error_values::report(&values, error)
                };
                seen.borrow_mut().push(report);
            }
        });
    if !options.real_time {
        builder = builder.clock(Clock::from(VirtualClock::new()));
    }
    let scheduler = builder.build(lua)?;
    scheduler.install_task_library()?;
    crate::require::install(&scheduler)?;
    lua.set_app_data(ProcessInfo::with_os_args(Vec::new(), exit.clone()));
    Ok(FileVm {
        runtime,
        scheduler,
        errors,
        exit,
        deadline_after: options.timeout,
    })
}

/// How driving a task ended.
enum Ending {
    /// The task ended (with or without an error).
    Finished,
    /// It is suspended and nothing left could resume it.
    Stuck,
    /// It ran past the deadline.
    TimedOut,
    /// A script called `process.exit(code)`.
    Exited(u8),
    /// The scheduler itself failed.
    Broken(String),
}

impl Ending {
    fn describe(&self, timeout: Duration) -> String {
        match self {
            Ending::Stuck => "stuck: the test is suspended and nothing is left that could resume it (a signal nothing fires, a coroutine.yield nothing resumes)".to_owned(),
            Ending::TimedOut => format!("timed out after {} s", timeout.as_secs_f64()),
            Ending::Exited(code) => format!("called process.exit({code})"),
            Ending::Broken(error) => format!("the scheduler failed: {error}"),
            Ending::Finished => "finished".to_owned(),
        }
    }
}

impl FileVm {
    /// Drives the scheduler until `task` ends, is stuck, times out, or the script exits.
    fn settle(&self, task: &Task) -> Ending {
        let end = Settled {
            scheduler: &self.scheduler,
            task,
            exit: &self.exit,
        };
        let deadline = Instant::now() + self.deadline_after;
        match drive(&self.runtime, &self.scheduler, end, deadline) {
            Ok(Some(ending)) => ending,
            Ok(None) => Ending::TimedOut,
            Err(error) => Ending::Broken(error.to_string()),
        }
    }

    /// The first error reported since the last call; the others are dropped with it.
    fn take_error(&self) -> Option<String> {
        let mut errors = self.errors.borrow_mut();
        let first = errors.first().cloned();
        errors.clear();
        first
    }
}

/// Completes when the task ended, when nothing is left that could resume it (it waits on
/// something nothing will fire, or it yielded with a plain `coroutine.yield` that the scheduler
/// does not resume), or when the script asked to exit. The drivers poll it before each cycle and once they run out of work.
struct Settled<'a> {
    scheduler: &'a Scheduler,
    task: &'a Task,
    exit: &'a Exit,
}

impl Future for Settled<'_> {
    type Output = Ending;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Ending> {
        if let Some(code) = self.exit.requested() {
            Poll::Ready(Ending::Exited(code))
        } else if self.scheduler.status(self.task) == TaskStatus::Released {
            // It yielded with a plain `coroutine.yield`, outside any scheduler function.
            Poll::Ready(Ending::Stuck)
        } else if self.task.is_finished() {
            Poll::Ready(Ending::Finished)
        } else if !self.scheduler.has_work() {
            Poll::Ready(Ending::Stuck)
        } else {
            Poll::Pending
        }
    }
}

/// Drives `scheduler` on `runtime` until `end` completes (`Some` of its output) or the real
/// clock passes `deadline` (`None`), as `spindle run` drives a script: on tokio.
fn drive<T>(
    runtime: &tokio::runtime::Runtime,
    scheduler: &Scheduler,
    end: impl Future<Output = T>,
    deadline: Instant,
) -> spindle::Result<Option<T>> {
    let end = futures_lite::future::or(async { Some(end.await) }, async {
        tokio::time::sleep_until(deadline.into()).await;
        None
    });
    let sleeper = |at: Instant| tokio::time::sleep_until(at.into());
    runtime.block_on(scheduler.run_until(sleeper, end))
}
