//! Making Spindle async functions: the host's side of `async_fn.rs`.

use std::future::Future;
use std::rc::Rc;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua};

use super::Scheduler;
use crate::async_fn::{Call, Caught, Started};
use crate::error::{refusal, Result};

impl Scheduler {
    /// Creates a Lua function backed by a Rust async function whose future the scheduler owns:
    /// a task that calls it is suspended until the future completes, and cancelling the task
    /// drops the future at once. Errors surface in the task as Lua errors with the Rust message.
    ///
    /// Compared with mlua's own `Lua::create_async_function`, which works under the scheduler
    /// too: mlua keeps a call's future inside the Lua thread, so the scheduler resumes the
    /// thread to poll it, and a cancelled task's future lives on until the collector frees the
    /// thread; here the scheduler holds the future, polls it with the task's waker and drops it
    /// the moment the task is cancelled or the run ends. Either kind suspends only the calling
    /// task, and only while the future is pending: a future ready at its first poll returns
    /// its values at once. Called from a coroutine that is no task (one a script resumes by
    /// hand), the call makes the coroutine a task for its duration.
    ///
    /// ```
    /// # let lua = mlua::Lua::new();
    /// # let scheduler = spindle::Scheduler::new(&lua)?;
    /// # scheduler.install_task_library()?;
    /// let double = scheduler.create_async_function(|_lua, n: i64| async move {
    ///     async_io::Timer::after(std::time::Duration::from_millis(5)).await;
    ///     Ok(n * 2)
    /// })?;
    /// lua.globals().set("double", double)?;
    /// let id = scheduler.spawn(lua.load("return double(21)").into_function()?, ())?;
    /// async_io::block_on(scheduler.run(async_io::Timer::at))?;
    /// assert_eq!(scheduler.take_result::<i64>(&id)?.unwrap().into_result()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_async_function<F, A, Fut, R>(&self, f: F) -> Result<Function>
    where
        F: Fn(Lua, A) -> Fut + 'static,
        A: FromLuaMulti,
        Fut: Future<Output = mlua::Result<R>> + 'static,
        R: IntoLuaMulti + 'static,
    {
        let make_async = self.library()?.make_async;
        let inner = Rc::clone(&self.shared.inner);
        let start = self
            .shared
            .lua
            .create_function(move |lua, args: Caught<A>| {
                let started = (|| {
                    inner.ensure_open()?;
                    let args = args.0?;
                    let (id, target) = inner.caller_task(lua)?;
                    let mut call = Box::pin(Call {
                        future: f(lua.clone(), args),
                        lua: lua.clone(),
                    });
                    let poll = inner.first_poll(target, |cx| call.as_mut().poll_first(cx));
                    inner.started(id, target, poll, call)
                })();
                Ok(started.unwrap_or_else(|error| Started::Refused(refusal(&error))))
            })?;
        Ok(make_async.call(start)?)
    }
}
