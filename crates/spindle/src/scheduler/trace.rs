//! Recording a trace: the host's side of `trace.rs`.

use super::Scheduler;
use crate::trace::Trace;

impl Scheduler {
    /// Starts recording a trace (or goes on recording, if it was already on).
    pub fn start_trace(&self) {
        self.shared.inner.trace().set_on(true);
    }

    /// Stops recording; what was recorded stays for [`take_trace`](Self::take_trace).
    pub fn stop_trace(&self) {
        self.shared.inner.trace().set_on(false);
    }

    /// Takes what was recorded so far, leaving the recorder empty (and still recording if it
    /// was).
    ///
    /// ```
    /// use std::time::Duration;
    /// use spindle::{Clock, Scheduler, TraceEvent, VirtualClock};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::builder().clock(Clock::from(VirtualClock::new())).build(&lua)?;
    /// scheduler.install_task_library()?;
    /// scheduler.start_trace();
    /// scheduler.spawn(lua.load("task.wait(1)").into_function()?, ())?;
    /// scheduler.frame(Duration::from_secs(1))?;
    /// let events: Vec<_> = scheduler.take_trace().into_iter().map(|e| (e.cycle, e.event)).collect();
    /// assert_eq!(events, [(0, TraceEvent::Resume), (1, TraceEvent::Resume), (1, TraceEvent::Finish)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_trace(&self) -> Trace {
        self.shared.inner.trace().take()
    }
}
