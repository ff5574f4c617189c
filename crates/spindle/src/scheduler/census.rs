//! The task list: the host's side of `engine/census.rs`.

use super::Scheduler;
use crate::core::TaskId;
use crate::engine::{CreationSite, TaskInfo};

impl Scheduler {
    /// Every task the scheduler knows, in the order of their slots: its id, where it stands
    /// ([`TaskState`](crate::TaskState)), who started it, its script, and where it was created
    /// when the scheduler records that
    /// ([`SchedulerBuilder::record_creation_sites`](crate::SchedulerBuilder::record_creation_sites)).
    ///
    /// A thread that left the scheduler with a plain `coroutine.yield` belongs to whoever
    /// resumes it (contract rule 11): it is listed ([`TaskState::Yielded`](crate::TaskState::Yielded))
    /// only while a host handle claims it. The list is a snapshot, O(tasks + timers) to make:
    /// for diagnostics, not for every frame.
    ///
    /// ```
    /// use spindle::{Clock, Scheduler, TaskState, VirtualClock};
    /// use std::time::Duration;
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::builder()
    ///     .clock(Clock::from(VirtualClock::new()))
    ///     .record_creation_sites(true)
    ///     .build(&lua)?;
    /// scheduler.install_task_library()?;
    /// let main = scheduler.spawn(lua.load("task.spawn(task.wait, 5)\ntask.wait(1)").set_name("=main").into_function()?, ())?;
    /// let tasks = scheduler.tasks();
    /// assert_eq!(tasks.len(), 2);
    /// assert_eq!(tasks[0].id, main.id());
    /// assert_eq!(tasks[0].state, TaskState::Waiting { until: Some(Duration::from_secs(1)) });
    /// assert_eq!(tasks[1].creator, Some(main.id()));
    /// assert_eq!(tasks[1].site.as_ref().unwrap().to_string(), "main:1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.inner().census()
    }

    /// Where `task` was created, if the scheduler records creation sites and holds the task.
    pub fn creation_site(&self, task: impl Into<TaskId>) -> Option<CreationSite> {
        self.inner().creation_site(task.into())
    }

    /// The traceback of `task`'s thread, written as an error's is (`stack traceback:`, then a
    /// line a level, innermost first): where a suspended task stands. `None` for a task the
    /// scheduler does not hold (nor a handle claims, for one that left with a plain yield).
    /// Taking it runs no Lua code, so it may be called from anywhere, a Rust function a task
    /// called included.
    ///
    /// ```
    /// let lua = mlua::Lua::new();
    /// let scheduler = spindle::Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// let task = scheduler.spawn(lua.load("local function nap()\n  task.wait(5)\nend\nnap()").set_name("=nap").into_function()?, ())?;
    /// let traceback = scheduler.traceback(&task).unwrap();
    /// assert!(traceback.contains("nap:2"), "{traceback}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn traceback(&self, task: impl Into<TaskId>) -> Option<String> {
        self.inner().traceback_of(self.lua(), task.into())
    }
}
