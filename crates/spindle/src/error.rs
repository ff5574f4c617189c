//! Spindle's error type, and the report of a task that ended with an uncaught error.

use std::ffi::c_int;
use std::fmt;

use mlua::state::RawLua;
use mlua::{IntoLuaMulti, Lua, MultiValue, Value};

use crate::TaskId;

/// What can go wrong when the host drives the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the Lua VM or from mlua.
    #[error(transparent)]
    Lua(#[from] mlua::Error),
    /// `cycle`, `frame`, `run`, `run_until`, `run_forever`, `run_blocking` or `shutdown` was
    /// called while the scheduler was already inside a cycle or a resumption, for example from a
    /// Rust function that a task called. The name is the function that refused.
    #[error("the scheduler is already running; {0} cannot be called from inside a task")]
    Reentrant(&'static str),
    /// The `Lua` already has a scheduler; it has at most one at a time.
    #[error("this Lua state already has a Spindle scheduler")]
    AlreadyAttached,
    /// The host asked to run a thread that cannot be resumed (it is dead, running, or resuming
    /// another thread).
    #[error("the thread cannot be resumed (its status is {0:?})")]
    NotResumable(mlua::thread::ThreadStatus),
    /// [`Scheduler::resume`](crate::Scheduler::resume) was given a thread that the scheduler
    /// holds as this task already: the scheduler resumes it, not the host.
    #[error("the thread is task {0}, which the scheduler resumes")]
    AlreadyScheduled(TaskId),
    /// [`Scheduler::resume`](crate::Scheduler::resume) was given the main thread, or a thread
    /// of another `Lua`.
    #[error(
        "the thread is not a coroutine of this scheduler's Lua (a main thread, or another Lua's)"
    )]
    NotACoroutine,
    /// The host asked to cancel a task that is running, or resuming another thread.
    #[error("task {0} is running and cannot be cancelled from inside itself")]
    TaskRunning(TaskId),
    /// A task of another scheduler, by its `Task` handle or its `TaskId`, was passed to this
    /// one (to `cancel` or `take_result`).
    #[error("task {0} belongs to another scheduler")]
    ForeignTask(TaskId),
    /// [`Scheduler::join`](crate::Scheduler::join) found no outcome to wait for: it was taken
    /// already, or [`Scheduler::shutdown`](crate::Scheduler::shutdown) dropped the task.
    #[error("task {0} has no outcome to wait for (taken already, or dropped by a shutdown)")]
    NoOutcome(TaskId),
    /// [`Scheduler::end_script`](crate::Scheduler::end_script) was given a task that is not a
    /// script: it belongs to `script`, which is the one to end.
    #[error("task {task} is not a script: it belongs to the script {script}")]
    NotAScript {
        /// The task given.
        task: TaskId,
        /// The script it belongs to.
        script: TaskId,
    },
    /// A deferral from the host, made while the deferred queue drains, went past the defer
    /// depth limit (contract rule 3).
    #[error("Maximum re-entrancy depth ({0}) exceeded calling task.defer")]
    DeferDepthExceeded(u32),
    /// The frame phases given to the builder do not make sense (a name declared twice, or a
    /// `resume_waits_before` phase that was not declared); the message says which.
    #[error("{0}")]
    InvalidPhases(String),
    /// A task ended with an error, or was cancelled: never returned by the scheduler itself,
    /// but the conversion that lets [`Outcome::into_result`](crate::Outcome::into_result)'s
    /// error go up with `?` in a function that returns [`Result`].
    #[error(transparent)]
    Task(#[from] TaskError),
    /// [`SchedulerBuilder::memory_limit`](crate::SchedulerBuilder::memory_limit) asked for a
    /// limit the VM is at or past already.
    #[error(
        "the memory limit of {limit} bytes is not more than the {used} bytes the VM uses already"
    )]
    MemoryLimit {
        /// The limit asked for, in bytes.
        limit: usize,
        /// What the VM held when the scheduler was built, in bytes.
        used: usize,
    },
}

/// So that a Rust function called from Lua can use `?` on the scheduler's results: an error
/// from Lua goes back as it was, any other as an external error whose message is Spindle's.
impl From<Error> for mlua::Error {
    fn from(error: Error) -> mlua::Error {
        match error {
            Error::Lua(error) => error,
            other => mlua::Error::external(other),
        }
    }
}

/// A shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A task that ended with an uncaught error, as handed to the host's error handler.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskError {
    /// The task, when the error came from one the scheduler knows by id; `None` for errors the
    /// scheduler raises itself, like a refused deferral.
    pub task: Option<TaskId>,
    /// The error message, with the file and line where Lua knows them.
    pub message: String,
    /// The Lua stack traceback at the point of the error (may be empty). A deep one keeps its
    /// first and last levels only, as Lua's own `luaL_traceback` does.
    pub traceback: String,
    /// The task that started the failed one (see
    /// [`Scheduler::creator_of`](crate::Scheduler::creator_of)): for a signal handler's call,
    /// the task that connected the handler, since the call's own task runs on a thread that
    /// signals reuse. `None` for a task the host started, and when `task` is `None`.
    pub creator: Option<TaskId>,
    /// The script the failed task belonged to (see
    /// [`Scheduler::script_of`](crate::Scheduler::script_of)), which
    /// [`Scheduler::end_script`](crate::Scheduler::end_script) takes; for a signal handler's
    /// call, the connecting task's script. `None` when `task` is `None`.
    pub script: Option<TaskId>,
}

impl TaskError {
    /// A report as the scheduler makes one, for a host that reports errors of its own through
    /// the same handler, or tests one: the traceback is shortened as the scheduler's are (the
    /// levels of Spindle's own Lua left out, the middle of a deep one cut).
    ///
    /// ```
    /// let error = spindle::TaskError::new(None, "request failed", "stack traceback:\n\tmain:3");
    /// assert_eq!(error.to_string(), "request failed\nstack traceback:\n\tmain:3");
    /// ```
    pub fn new(
        task: Option<TaskId>,
        message: impl Into<String>,
        traceback: impl Into<String>,
    ) -> Self {
        TaskError {
            task,
            message: message.into(),
            traceback: shortened(without_internal_frames(traceback.into())),
            creator: None,
            script: None,
        }
    }

    /// The error, naming who started its task and the task's script.
    pub(crate) fn started_by(mut self, lineage: Option<crate::core::Lineage>) -> Self {
        if let Some(lineage) = lineage {
            self.creator = lineage.creator;
            self.script = lineage.script;
        }
        self
    }

    /// Splits an mlua error into its message and the traceback mlua attached to it.
    pub(crate) fn from_lua(task: Option<TaskId>, error: &mlua::Error) -> Self {
        let (message, traceback) = split_lua_error(error);
        TaskError::new(task, message, traceback)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.traceback.is_empty() {
            write!(f, "\n{}", self.traceback.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskError {}

const TRACEBACK_HEADER: &str = "stack traceback:";

/// Levels kept from the top and from the bottom of a deep traceback (Lua 5.4's figures).
const TOP_LEVELS: usize = 10;
const BOTTOM_LEVELS: usize = 11;

/// Leaves out the levels that run Spindle's own Lua (the task and signal libraries, whose
/// chunks are named `[spindle ...]`): a script's author cannot act on them, and a signal
/// handler's traceback would otherwise end in the library's dispatch loop.
fn without_internal_frames(traceback: String) -> String {
    if !traceback.contains("\t[spindle ") {
        return traceback;
    }
    let kept: Vec<&str> = traceback
        .lines()
        .filter(|line| !line.starts_with("\t[spindle "))
        .collect();
    kept.join("\n")
}

/// Cuts the middle out of a deep traceback: mlua's tracebacks on Luau list every level, and a
/// stack overflow has about 20,000 (660 KB of text for one error).
fn shortened(traceback: String) -> String {
    let levels = traceback.lines().count().saturating_sub(1);
    if levels <= TOP_LEVELS + BOTTOM_LEVELS + 1 {
        return traceback;
    }
    let skipped = levels - TOP_LEVELS - BOTTOM_LEVELS;
    let mut lines = traceback.lines();
    let mut short: Vec<String> = lines
        .by_ref()
        .take(1 + TOP_LEVELS)
        .map(str::to_owned)
        .collect();
    short.push(format!("\t...\t(skipping {skipped} levels)"));
    short.extend(lines.skip(skipped).map(str::to_owned));
    short.join("\n")
}

fn split_lua_error(error: &mlua::Error) -> (String, String) {
    match error {
        mlua::Error::CallbackError { traceback, cause } => {
            let (message, inner) = split_lua_error(cause);
            let traceback = if inner.is_empty() {
                traceback.clone()
            } else {
                inner
            };
            (message, traceback)
        }
        // A memory error that the scheduler gave a traceback (`vm::take_resume_error`) reads
        // as Luau words it, `not enough memory`, rather than as mlua displays the variant.
        mlua::Error::RuntimeError(text) | mlua::Error::MemoryError(text) => {
            match text.find(TRACEBACK_HEADER) {
                Some(at) => (text[..at].trim_end().to_owned(), text[at..].to_owned()),
                None => (text.clone(), String::new()),
            }
        }
        mlua::Error::WithContext { context, cause } => {
            let (message, traceback) = split_lua_error(cause);
            (format!("{context}: {message}"), traceback)
        }
        other => (other.to_string(), String::new()),
    }
}

/// What a primitive with results returns to the Lua half: its results, or nil and why it
/// refused, which the Lua half raises as a plain string at its caller's line, naming the
/// function, as Luau's own functions raise their errors. An error returned from an mlua
/// callback would reach scripts as an error userdata, its text `runtime error: ...` with a
/// traceback. (A primitive with no results returns the reason alone, or nil.)
///
/// `Unfit` is nil alone: an argument that the primitive took a quick look at is not one it
/// can use, and the Lua half, which words the problem, looks again at leisure. Checking there
/// first cost `task.spawn` and `task.defer` a call of `type` each (and `coroutine.status` for
/// a thread), which make a string: about 1,000 instructions a call (callgrind, defer_flat).
pub(crate) enum Checked<T> {
    Done(T),
    Refused(String),
    Unfit,
}

impl<T> Checked<T> {
    pub(crate) fn of(result: mlua::Result<T>) -> Self {
        match result {
            Ok(values) => Checked::Done(values),
            Err(error) => Checked::Refused(refusal(&error)),
        }
    }
}

impl<T: IntoLuaMulti> IntoLuaMulti for Checked<T> {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        match self {
            Checked::Done(values) => values.into_lua_multi(lua),
            Checked::Refused(reason) => (Value::Nil, reason).into_lua_multi(lua),
            Checked::Unfit => Value::Nil.into_lua_multi(lua),
        }
    }

    // mlua's hidden fast path, as `Started` uses it: results go onto the stack directly.
    unsafe fn push_into_stack_multi(self, lua: &RawLua) -> mlua::Result<c_int> {
        match self {
            // SAFETY: each arm forwards this method's own contract (mlua calls it with `lua`
            // locked, as the running state's handle) to the values' `push_into_stack_multi`,
            // which checks the stack for what it pushes.
            Checked::Done(values) => unsafe { values.push_into_stack_multi(lua) },
            // SAFETY: as for `Done`: the same contract, for a nil and a string.
            Checked::Refused(reason) => unsafe { (Value::Nil, reason).push_into_stack_multi(lua) },
            // SAFETY: as for `Done`: the same contract, for a nil.
            Checked::Unfit => unsafe { Value::Nil.push_into_stack_multi(lua) },
        }
    }
}

/// Why an operation failed, as the text of a Lua error: the message without mlua's wrapping
/// or traceback.
pub(crate) fn refusal(error: &mlua::Error) -> String {
    match error {
        mlua::Error::MemoryError(message) => message.clone(),
        // In Luau's words for a bad argument to a function with no name.
        mlua::Error::BadArgument { pos, cause, .. } => {
            format!("invalid argument #{pos} ({})", refusal(cause))
        }
        mlua::Error::CallbackError { cause, .. } => refusal(cause),
        other => TaskError::from_lua(None, other).message,
    }
}

/// `task.wait` and `Signal:Wait` cannot suspend a thread that cannot yield: the main thread, or
/// code inside a metamethod or a C function's callback. Luau's own `coroutine.yield` says so
/// in these words there.
pub(crate) const CANNOT_YIELD: &str = "attempt to yield across metamethod/C-call boundary";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spindles_own_levels_are_left_out_of_a_traceback() {
        let traceback = "stack traceback:\n\t[C]: in function 'error'\n\tmain:3: in function <main:2>\n\t[spindle signal]:225: in function 'call_one'\n\t[spindle task]:80: in function 'resume'\n\tmain:9: in main chunk".to_string();
        let error = TaskError::new(None, "main:3: no", traceback);
        assert_eq!(
            error.traceback,
            "stack traceback:\n\t[C]: in function 'error'\n\tmain:3: in function <main:2>\n\tmain:9: in main chunk"
        );
        // A traceback with none of them is kept as it is, trailing newline and all.
        let plain = "stack traceback:\n\tmain:1: in main chunk\n".to_string();
        assert_eq!(
            TaskError::new(None, String::new(), plain.clone()).traceback,
            plain
        );
    }

    #[test]
    fn runtime_error_is_split_at_the_traceback() {
        let error = mlua::Error::RuntimeError(
            "main.luau:3: boom\nstack traceback:\n\tmain.luau:3 function f".into(),
        );
        let report = TaskError::from_lua(None, &error);
        assert_eq!(report.message, "main.luau:3: boom");
        assert!(report.traceback.starts_with("stack traceback:"));
    }

    #[test]
    fn a_deep_traceback_keeps_its_first_and_last_levels() {
        let mut text = String::from("deep.luau:1: stack overflow\nstack traceback:");
        for level in 0..20_000 {
            text.push_str(&format!("\n\tdeep.luau:1: in function 'f' (level {level})"));
        }
        let report = TaskError::from_lua(None, &mlua::Error::RuntimeError(text));
        let lines: Vec<&str> = report.traceback.lines().collect();
        assert_eq!(lines.len(), 1 + 10 + 1 + 11, "{lines:?}");
        assert_eq!(lines[0], "stack traceback:");
        assert!(lines[1].ends_with("(level 0)"));
        assert!(lines[10].ends_with("(level 9)"));
        assert_eq!(lines[11], "\t...\t(skipping 19979 levels)");
        assert!(lines[12].ends_with("(level 19989)"));
        assert!(lines[22].ends_with("(level 19999)"));
    }

    #[test]
    fn a_shallow_traceback_is_kept_whole() {
        let mut text = String::from("stack traceback:");
        for level in 0..22 {
            text.push_str(&format!("\n\tf.luau:{level}: in function 'f'"));
        }
        assert_eq!(shortened(text.clone()), text);
    }

    #[test]
    fn callback_error_reports_the_cause_and_its_traceback() {
        let error = mlua::Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in ?".into(),
            cause: mlua::Error::runtime("disk on fire").into(),
        };
        let report = TaskError::from_lua(None, &error);
        assert_eq!(report.message, "disk on fire");
        assert_eq!(report.traceback, "stack traceback:\n\t[C]: in ?");
    }
}
