//! Recording a timeline of resumptions: the host's side of `engine/timeline.rs`.

use super::Scheduler;
use crate::engine::Span;

impl Scheduler {
    /// Starts recording a timeline: each resumption's task, cause, start and duration in real
    /// time (or goes on, if it was on). Times count from the first start. Spans pile up until
    /// [`take_timeline`](Self::take_timeline) takes them: take them as the run goes.
    pub fn start_timeline(&self) {
        self.inner().timeline().set_on(true);
    }

    /// Stops recording; the spans recorded stay for [`take_timeline`](Self::take_timeline).
    pub fn stop_timeline(&self) {
        self.inner().timeline().set_on(false);
    }

    /// Takes the spans recorded so far, in the order their resumptions started. Called from
    /// inside a resumption, it leaves the spans of the resumptions still running (and those
    /// after them) for a later call.
    ///
    /// ```
    /// use spindle::{Cause, Scheduler};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// scheduler.start_timeline();
    /// scheduler.spawn(lua.load("task.defer(print, 'later') task.wait(0.01)").into_function()?, ())?;
    /// scheduler.run_blocking()?;
    /// let causes: Vec<Cause> = scheduler.take_timeline().iter().map(|span| span.cause).collect();
    /// assert_eq!(causes, [Cause::Spawn, Cause::Defer, Cause::Timer]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_timeline(&self) -> Vec<Span> {
        self.inner().take_timeline()
    }
}
