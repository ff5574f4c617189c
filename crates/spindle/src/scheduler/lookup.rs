//! Reaching the scheduler and its tasks from where the host stands: a Rust function that Lua
//! called has only `&Lua`, and a thread in hand may or may not be a task.

use std::fmt;
use std::rc::Weak;

use mlua::{Lua, Thread};

use super::{Attached, Scheduler, Shared};
use crate::core::TaskId;

impl Scheduler {
    /// The scheduler attached to `lua`, if it has one: how a Rust function that a script calls
    /// reaches it, with no handle captured. The result is another handle on the same scheduler
    /// (see [`Scheduler`] on clones); keep it on the Rust side only, as any handle. One that
    /// an async function's future holds across an `await` is held by the scheduler itself
    /// (which owns the future): until the future ends, it keeps the scheduler and the `Lua`
    /// alive even once the host has dropped every handle of its own. Let go of it before the
    /// `await`: a [`join`](Scheduler::join) holds the scheduler weakly, and a
    /// [`WeakScheduler`] can be upgraded again after the await.
    ///
    /// ```
    /// use spindle::Scheduler;
    ///
    /// let lua = mlua::Lua::new();
    /// let scheduler = Scheduler::new(&lua)?;
    /// scheduler.install_task_library()?;
    /// // Starts a task from Rust, from inside a function that a script calls.
    /// let start = lua.create_function(|lua, f: mlua::Function| {
    ///     let scheduler = Scheduler::from_lua(lua).expect("a scheduler is attached");
    ///     let task = scheduler.defer(f, ())?;
    ///     Ok(task.id().to_string())
    /// })?;
    /// lua.globals().set("start", start)?;
    /// let main = lua.load("return start(function() end)").into_function()?;
    /// let task = scheduler.spawn(main, ())?;
    /// scheduler.run_blocking()?;
    /// let id: String = scheduler.take_result(&task)?.unwrap().into_result()?;
    /// assert!(id.starts_with('#'));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_lua(lua: &Lua) -> Option<Scheduler> {
        let attached = lua.app_data_ref::<Attached>()?;
        let shared = attached.0.upgrade()?;
        Some(Scheduler { shared })
    }

    /// A handle that does not keep the scheduler alive: for a Rust value that outlives it, or
    /// one stored where a strong handle would make a cycle.
    pub fn downgrade(&self) -> WeakScheduler {
        WeakScheduler(std::rc::Rc::downgrade(&self.shared))
    }

    /// The task running now: the one whose thread called the Rust function asking, if that
    /// thread is a task of this scheduler. `None` from the host's own code, from a coroutine
    /// that is no task (one a script resumes by hand), and while a Spindle async function's
    /// future is polled by a cycle (it runs in no thread); its first poll, inside the call,
    /// runs in the calling thread, and sees its task.
    pub fn current_task(&self) -> Option<TaskId> {
        self.task_of(&self.shared.lua.current_thread())
    }

    /// The task that `thread` is, if the scheduler holds it.
    pub fn task_of(&self, thread: &Thread) -> Option<TaskId> {
        self.shared.inner.find(thread)
    }

    /// The thread of a task the scheduler holds, or of a task that left it with a plain
    /// `coroutine.yield` while a host handle claims it ([`TaskStatus::Released`](crate::TaskStatus::Released)): the
    /// host may resume that one itself, as whoever resumes it owns it. `None` for an ended
    /// task, a task of another scheduler, or one whose outcome nobody claims.
    ///
    /// Resume a task the scheduler holds only through the scheduler: see [`Scheduler`].
    pub fn thread_of(&self, task: impl Into<TaskId>) -> Option<Thread> {
        let task = task.into();
        if !self.shared.inner.owns(task) {
            return None;
        }
        let inner = &self.shared.inner;
        inner
            .thread_of(task)
            .or_else(|| inner.released_thread(task))
    }
}

/// A weak handle on a [`Scheduler`], from [`Scheduler::downgrade`].
#[derive(Clone)]
pub struct WeakScheduler(Weak<Shared>);

impl WeakScheduler {
    /// The scheduler, while any handle on it lives.
    pub fn upgrade(&self) -> Option<Scheduler> {
        Some(Scheduler {
            shared: self.0.upgrade()?,
        })
    }
}

impl fmt::Debug for WeakScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakScheduler")
    }
}
