//! Scripts, the host's side of `engine/scripts.rs`: who started a task, the script it belongs
//! to, and ending a script in one call.

use super::Scheduler;
use crate::core::TaskId;
use crate::error::{Error, Result};

/// What [`Scheduler::end_script`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScriptEnd {
    /// Tasks of the script that were cancelled (each told to the end hook as
    /// [`TaskEnd::Cancelled`](crate::TaskEnd::Cancelled)).
    pub cancelled: usize,
    /// Tasks of the script that were running when the call was made (the caller's own, when
    /// a task of the script asked, and the tasks of the script it was resumed from): each goes
    /// on until it yields or returns, and is cancelled then.
    pub running: usize,
    /// Signal connections of the script that were disconnected.
    pub connections: usize,
}

impl Scheduler {
    /// The task that started `task`: the task the scheduler was running when `task` became one
    /// (a coroutine that a script resumes by hand counts as the task that resumed it); for the
    /// call of a signal handler, the task that connected the handler. `None` for a task the
    /// host started (with [`spawn`](Self::spawn), [`defer`](Self::defer) or
    /// [`delay`](Self::delay), or a handler the host connected), and for a task the scheduler
    /// does not hold. An error's [`TaskError::creator`](crate::TaskError::creator) says the
    /// same of a task that has ended.
    ///
    /// ```
    /// use spindle::Scheduler;
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// let main = scheduler.spawn(lua.load("child = task.delay(1, print) task.wait(5)").into_function()?, ())?;
    /// let child = scheduler.task_of(&lua.globals().get("child")?).unwrap();
    /// assert_eq!(scheduler.creator_of(child), Some(main.id()));
    /// assert_eq!(scheduler.script_of(child), Some(main.id()));
    /// assert_eq!(scheduler.creator_of(&main), None, "the host started it");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn creator_of(&self, task: impl Into<TaskId>) -> Option<TaskId> {
        self.shared.inner.lineage(task.into())?.creator
    }

    /// The script `task` belongs to, named by the id of its first task: a task the host
    /// started is a script of its own, and every task started from it (by `task.spawn`,
    /// `task.defer`, `task.delay`, a signal handler it connected, and so on down) belongs to
    /// it, even once the first task has ended. `None` for a task the scheduler does not hold;
    /// an error's [`TaskError::script`](crate::TaskError::script) names the script of a task
    /// that has ended. End a script with [`end_script`](Self::end_script).
    pub fn script_of(&self, task: impl Into<TaskId>) -> Option<TaskId> {
        self.shared.inner.lineage(task.into())?.script
    }

    /// Ends the script `script` (a task the host started, or an id from
    /// [`script_of`](Self::script_of) or [`TaskError::script`](crate::TaskError::script)), as
    /// destroying a `Script` does in Roblox: every task of the script is cancelled, whatever
    /// it waits for (a timer, a deferral, `Signal:Wait`, a Rust future, which is dropped at
    /// once), and every signal connection its tasks made is disconnected, even one whose
    /// connecting task has ended; a handler call of theirs that a deferred signal has queued
    /// is dropped. The tasks of other scripts run on, the ones they started included.
    ///
    /// No code of the script runs once the call returns, except in its tasks that are running
    /// when it is made (the one that asked, if a task of the script called the Rust function
    /// making this call, and the tasks of the script it was resumed from): those go on until
    /// they yield or return, and are cancelled then. Meanwhile the script can start nothing:
    /// `task.spawn`, `task.defer`, `task.delay` and `Signal:Connect` raise an error in them.
    ///
    /// A thread that a task of the script let go with a plain `coroutine.yield` (contract rule
    /// 11) is no longer the scheduler's, and not reached; the host cancels one it claims with
    /// [`cancel`](Self::cancel). Ending a script that has nothing left (ended already, or
    /// twice) does nothing. The call takes time in proportion to all the tasks and connections
    /// of the scheduler, not only the script's. It may be made from anywhere: a Rust function
    /// a task calls, an error handler, the end hook.
    ///
    /// Fails with [`Error::ForeignTask`] for an id of another scheduler, and with
    /// [`Error::NotAScript`] for a task that belongs to another script (whose id it names).
    /// An error from the VM (closing a thread at the memory limit) is returned once every task
    /// was dealt with.
    ///
    /// ```
    /// use spindle::{Clock, Scheduler, VirtualClock};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::builder().clock(Clock::from(VirtualClock::new())).build(&lua)?;
    /// scheduler.install_task_library()?;
    /// let clicked = scheduler.create_signal()?;
    /// lua.globals().set("Clicked", &clicked)?;
    /// let script = scheduler.spawn(lua.load(r#"
    ///     Clicked:Connect(function() print("clicked") end)
    ///     task.spawn(function() while true do task.wait(1) end end)
    /// "#).into_function()?, ())?;
    /// let ended = scheduler.end_script(&script)?;
    /// assert_eq!((ended.cancelled, ended.connections), (1, 1));
    /// assert!(!scheduler.has_work());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end_script(&self, script: impl Into<TaskId>) -> Result<ScriptEnd> {
        let script = self.own(script.into())?;
        let inner = &self.shared.inner;
        if let Some(belongs) = self.script_of(script).filter(|&of| of != script) {
            return Err(Error::NotAScript {
                task: script,
                script: belongs,
            });
        }
        let started = inner.start_ending(script);
        // Connections first: an end hook told of a cancelled task may fire signals.
        let library = self.shared.lib.borrow().clone();
        let connections = library.map(|library| library.signal.end_connections(script));
        let (tasks, error) = inner.end_script_tasks(&self.shared.lua, script, started);
        let connections = connections.transpose()?.unwrap_or(0);
        if let Some(error) = error {
            return Err(error.into());
        }
        Ok(ScriptEnd {
            cancelled: tasks.cancelled,
            running: tasks.running,
            connections,
        })
    }
}
