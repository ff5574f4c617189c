//! Tasks the host starts without keeping their outcome, and the future that tells when a task
//! is over: for a host that gets a task's answer another way (a Rust function the task calls
//! hands it over) and needs the scheduler only to run the task and to say that it ended.
//!
//! A task nobody claims costs less: nothing is filed when it ends, and its `task.wait`s take
//! the scheduler's raw lane, which a kept outcome closes (its results must then be converted).
//! [`Ended`] holds no claim and reads no outcome; it resolves once the scheduler no longer
//! holds the task, whichever way the task left.

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use mlua::IntoLuaMulti;

use super::{IntoThread, Scheduler, Shared};
use crate::core::TaskId;
use crate::engine::TaskStatus;
use crate::error::Result;

impl Scheduler {
    /// Spawns `f` (a function, or a suspended thread) with `args` and resumes it at once, as
    /// [`spawn`](Self::spawn) does, but keeps no outcome for the host, as a `task.spawn` from
    /// a script keeps none: returns the task's id, for [`status`](Self::status),
    /// [`cancel`](Self::cancel) and [`ended`](Self::ended). An error in the task is reported
    /// to the error handler, not returned here.
    ///
    /// ```
    /// use spindle::{Scheduler, TaskStatus};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// let quick = scheduler.spawn_detached(lua.load("return 1").into_function()?, ())?;
    /// assert_ne!(scheduler.status(quick), TaskStatus::Scheduled); // over, nothing kept
    /// let slow = scheduler.spawn_detached(lua.load("task.wait(0.01)").into_function()?, ())?;
    /// assert_eq!(scheduler.status(slow), TaskStatus::Scheduled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_detached(&self, f: impl IntoThread, args: impl IntoLuaMulti) -> Result<TaskId> {
        let (thread, fresh) = f.into_thread(&self.shared.lua)?;
        let args = args.into_lua_multi(&self.shared.lua)?;
        self.shared
            .inner
            .host_spawn(&self.shared.lua, &thread, args, false, fresh)
    }

    /// A future that resolves once the scheduler no longer holds the task: it finished,
    /// failed, was cancelled, left with a plain `coroutine.yield`, or was dropped by
    /// [`shutdown`](Self::shutdown). It resolves at once for an id that names no task the
    /// scheduler holds (one that ended already, or another scheduler's), and once every
    /// [`Scheduler`] handle is dropped, since it holds the scheduler only weakly. Unlike
    /// [`join`](Self::join) it claims no outcome and reads none: how the task ended is for
    /// the host to learn otherwise. Something must drive the scheduler meanwhile, as for a
    /// join.
    ///
    /// ```
    /// use spindle::{Scheduler, TaskStatus};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// let id = scheduler.spawn_detached(lua.load("task.wait(0.01)").into_function()?, ())?;
    /// async_io::block_on(scheduler.run_until(async_io::Timer::at, scheduler.ended(id)))?;
    /// assert_ne!(scheduler.status(id), TaskStatus::Scheduled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ended(&self, task: impl Into<TaskId>) -> Ended {
        Ended {
            scheduler: Rc::downgrade(&self.shared),
            task: task.into(),
            key: None,
        }
    }
}

/// The future of [`Scheduler::ended`]: resolves once the scheduler no longer holds the task.
///
/// It is `'static` and holds the scheduler weakly, as a [`Join`](crate::Join) does, but with no
/// claim on the task's outcome.
#[must_use = "it does nothing unless awaited"]
#[derive(Debug)]
pub struct Ended {
    scheduler: Weak<Shared>,
    task: TaskId,
    /// The key its waker is registered under, once it waited.
    key: Option<u64>,
}

impl Future for Ended {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(shared) = this.scheduler.upgrade() else {
            return Poll::Ready(());
        };
        if shared.inner.status(this.task) != TaskStatus::Scheduled {
            return Poll::Ready(());
        }
        this.key = Some(shared.inner.wait_for_end(this.task, this.key, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        // Given up on (a timeout, a `select`): no waker is left behind for as long as the
        // task lives.
        if let (Some(key), Some(shared)) = (self.key.take(), self.scheduler.upgrade()) {
            shared.inner.forget_join(self.task, key);
        }
    }
}
