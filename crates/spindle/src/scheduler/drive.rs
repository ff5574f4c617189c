//! Driving a coroutine by hand from Rust, under the scheduler's rules: for frameworks that
//! resume their own coroutines and must know, each time, whether the coroutine yielded to
//! them, now waits on the scheduler, returned or failed.

use mlua::{FromLuaMulti, IntoLuaMulti, MultiValue, Thread};

use super::Scheduler;
use crate::core::TaskId;
use crate::engine::Driven;
use crate::error::{Result, TaskError};

/// What one [`Scheduler::resume`] of a coroutine did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Resumed<R = MultiValue> {
    /// It yielded these values with a plain `coroutine.yield`: the coroutine is the caller's,
    /// to resume again (or to hand to [`Scheduler::spawn`]).
    Yielded(R),
    /// It waits on the scheduler (`task.wait`, a Rust async function, `Signal:Wait`, its own
    /// `task.defer`, the end of its time slice): the scheduler holds it as this task from now
    /// on and resumes it itself. Resuming it by hand again is refused
    /// ([`Error::AlreadyScheduled`](crate::Error::AlreadyScheduled)) while the scheduler holds
    /// it; when it ends there, the end hook and the error handler are told, as for any task.
    Pending(TaskId),
    /// It returned these values.
    Finished(R),
    /// It failed with this error, which is the caller's: it is not handed to the error handler.
    Failed(TaskError),
}

impl Scheduler {
    /// Resumes `thread` once with `args` as the scheduler resumes a task, and tells what it
    /// did: for frameworks that drive their own coroutines. While it runs, the thread is a
    /// task ([`current_task`](Self::current_task) names it, the watchdog watches it, an error
    /// carries its traceback without Spindle's own frames, running out of memory is handled as
    /// for a task). Use it instead of mlua's `Thread::resume`, behind which a coroutine that
    /// calls an async function silently becomes a task ([`SchedulerBuilder::on_adopt`]
    /// reports that).
    ///
    /// Refused with an error, with nothing run, for a thread that is not resumable
    /// ([`Error::NotResumable`](crate::Error::NotResumable): dead, running, or resuming
    /// another thread, which covers a resumption of the running thread from a Rust function it
    /// called), one the scheduler holds as a task
    /// ([`Error::AlreadyScheduled`](crate::Error::AlreadyScheduled)), or the main thread or a
    /// thread of another `Lua` ([`Error::NotACoroutine`](crate::Error::NotACoroutine)).
    /// Returning here is a resumption point, as after [`spawn`](Self::spawn): the deferred
    /// queue is drained, unless the call comes from inside a resumption.
    ///
    /// The values convert to `R` (default [`MultiValue`]); a conversion error is returned
    /// after the thread ran, and the values are lost then.
    ///
    /// ```
    /// use spindle::{Resumed, Scheduler};
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// let counter = lua.create_thread(lua.load(r#"
    ///     local n = ...
    ///     n = coroutine.yield(n + 1)
    ///     task.wait(0.01)
    ///     return n * 2
    /// "#).into_function()?)?;
    /// assert!(matches!(scheduler.resume::<i64>(&counter, 1)?, Resumed::Yielded(2)));
    /// // It waits on the scheduler now: the scheduler finishes it.
    /// let Resumed::Pending(id) = scheduler.resume::<()>(&counter, 20)? else { panic!() };
    /// assert_eq!(scheduler.status(id), spindle::TaskStatus::Scheduled);
    /// scheduler.run_blocking()?;
    /// assert_eq!(counter.status(), mlua::thread::ThreadStatus::Finished);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`SchedulerBuilder::on_adopt`]: crate::SchedulerBuilder::on_adopt
    pub fn resume<R: FromLuaMulti>(
        &self,
        thread: &Thread,
        args: impl IntoLuaMulti,
    ) -> Result<Resumed<R>> {
        let lua = self.lua();
        let args = args.into_lua_multi(lua)?;
        Ok(match self.inner().drive(lua, thread, args)? {
            Driven::Yielded(values) => Resumed::Yielded(R::from_lua_multi(values, lua)?),
            Driven::Pending(id) => Resumed::Pending(id),
            Driven::Finished(values) => Resumed::Finished(R::from_lua_multi(values, lua)?),
            Driven::Failed(error) => Resumed::Failed(error),
        })
    }
}
