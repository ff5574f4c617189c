//! What `spindle run` shows of its tasks: every live task with its state, creation site and
//! traceback on SIGQUIT (Ctrl-\), as Go prints its goroutines, after which the run goes on; the
//! tasks still suspended when a run ends (`--report-stuck`); and the timeline's spans written
//! as the run goes (`--timeline`).
//!
//! Invariant: the scheduler is read only between cycles, where no resumption is in progress:
//! [`Watch::drive`] does its work when the run's future is not being polled, that is, when the
//! driver sleeps or lets the runtime's other futures run (every 64 resumptions or so while
//! busy). A task that runs without yielding delays a dump until it yields (or `--timeout`
//! stops it).

use std::fmt::Write as _;
use std::future::Future;
use std::task::Poll;

use spindle::{Scheduler, TaskInfo, TaskState};

use crate::timeline::TimelineFile;

/// The run's companions: the SIGQUIT listener and the timeline file.
pub(crate) struct Watch {
    #[cfg(unix)]
    quit: Option<tokio::signal::unix::Signal>,
    timeline: Option<TimelineFile>,
}

impl Watch {
    /// Starts listening for SIGQUIT (on Unix; inside the tokio runtime), from now on: a
    /// Ctrl-\ no longer ends the process.
    pub(crate) fn new(timeline: Option<TimelineFile>) -> Watch {
        Watch {
            #[cfg(unix)]
            quit: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit()).ok(),
            timeline,
        }
    }

    /// Runs `run` (the scheduler's driver) to its end, dumping the tasks on each SIGQUIT and
    /// writing the timeline between cycles.
    pub(crate) async fn drive<F: Future>(&mut self, scheduler: &Scheduler, run: F) -> F::Output {
        let mut run = std::pin::pin!(run);
        std::future::poll_fn(|cx| {
            #[cfg(unix)]
            if let Some(quit) = &mut self.quit {
                while let Poll::Ready(Some(())) = quit.poll_recv(cx) {
                    eprint!("{}", dump(scheduler));
                }
            }
            if let Some(timeline) = &mut self.timeline {
                timeline.write(scheduler.take_timeline());
            }
            run.as_mut().poll(cx)
        })
        .await
    }

    /// Writes what the timeline has left and closes its file.
    pub(crate) fn finish(self, scheduler: &Scheduler) -> Result<(), String> {
        match self.timeline {
            Some(mut timeline) => {
                timeline.write(scheduler.take_timeline());
                timeline.finish()
            }
            None => Ok(()),
        }
    }
}

/// Every live task, with its state, creation site and traceback, headed by the time and cycle.
pub(crate) fn dump(scheduler: &Scheduler) -> String {
    let tasks = scheduler.tasks();
    let mut text = format!(
        "spindle: SIGQUIT: {} at {:.3} s, cycle {}\n",
        count(tasks.len(), "live task"),
        scheduler.clock().now().as_secs_f64(),
        scheduler.cycle_count(),
    );
    for task in &tasks {
        text.push('\n');
        describe(&mut text, scheduler, task);
    }
    text.push('\n');
    text
}

/// The tasks still suspended at the end of a run, when there are any: nothing will resume
/// them, since the run ended with no timer, deferral or future left.
pub(crate) fn stuck(scheduler: &Scheduler) -> Option<String> {
    let tasks = scheduler.tasks();
    if tasks.is_empty() {
        return None;
    }
    let mut text = format!(
        "spindle: {} still suspended at the end of the run, which nothing can resume:\n",
        count(tasks.len(), "task"),
    );
    for task in &tasks {
        text.push('\n');
        describe(&mut text, scheduler, task);
    }
    Some(text)
}

/// `task #1.0 (waiting on a signal), created at main.luau:3 by task #0.0`, then its traceback.
fn describe(text: &mut String, scheduler: &Scheduler, task: &TaskInfo) {
    let _ = write!(text, "task {} ({}", task.id, task.state);
    if let TaskState::Waiting { until: Some(at) } | TaskState::Delayed { until: at } = task.state {
        let left = at.saturating_sub(scheduler.clock().now());
        let _ = write!(text, ", in {:.3} s", left.as_secs_f64());
    }
    text.push(')');
    if let Some(site) = &task.site {
        let _ = write!(text, ", created at {site}");
    }
    if let Some(creator) = task.creator {
        let _ = write!(text, " by task {creator}");
    }
    text.push('\n');
    if let Some(traceback) = scheduler.traceback(task.id) {
        text.push_str(traceback.trim_end());
        text.push('\n');
    }
}

fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}
