//! Spindle's async functions: Rust futures that the scheduler owns.
//!
//! mlua's `create_async_function` keeps a call's future inside the Lua thread: the scheduler
//! resumes the thread to poll it, and a cancelled task's future lives on until the collector frees
//! the thread. A Spindle async function instead hands the future to the scheduler, which polls it
//! with the task's waker and drops it the moment the task is cancelled or the run ends. Either
//! kind suspends only the calling task, and only while the future is pending.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, MultiValue};

use crate::error::Result;
use crate::host::Scheduler;

/// A call's future, with its results already converted to Lua values.
pub(crate) type OwnedFuture = Pin<Box<dyn Future<Output = mlua::Result<MultiValue>>>>;

impl Scheduler {
    /// Creates a Lua function backed by a Rust async function whose future the scheduler owns:
    /// a task that calls it is suspended until the future completes, and cancelling the task
    /// drops the future at once. Errors surface in the task as Lua errors with the Rust message.
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
        R: IntoLuaMulti,
    {
        let make_async = self.inner.library(&self.lua)?.make_async;
        let inner = Rc::clone(&self.inner);
        let start = self.lua.create_function(move |lua, args: MultiValue| {
            inner.ensure_open()?;
            let args = A::from_lua_multi(args, lua)?;
            let future = f(lua.clone(), args);
            let owner = lua.clone();
            let future: OwnedFuture = Box::pin(async move { future.await?.into_lua_multi(&owner) });
            inner.start_owned_future(lua, future)
        })?;
        Ok(make_async.call(start)?)
    }
}
