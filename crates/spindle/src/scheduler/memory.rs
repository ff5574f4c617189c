//! Running out of memory under a memory limit (`Lua::set_memory_limit`): what a task that
//! failed so held comes back before any other task runs (rule 23 of the task contract).
//!
//! Luau does not collect when an allocation fails, and a dead thread's stack keeps every value
//! its frames held for as long as something references the thread (the spawner's local, say).
//! So the failed task's thread is reset, which drops its stack, and then a full collection
//! runs. Both happen with no borrow of the state held and no raw thread pointer of the failed
//! task kept: the collection frees threads, and runs the destructors of Rust userdata.

use mlua::thread::ThreadStatus;
use mlua::{Lua, MultiValue, Thread};

use super::Inner;
use crate::tasks::TaskId;

/// Whether the error is the VM running out of memory, however it reached the task's end: as
/// mlua's error, inside a callback's error, or as the message a script raised again.
pub(super) fn is_out_of_memory(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_out_of_memory(cause)
        }
        mlua::Error::RuntimeError(message) => message.contains("not enough memory"),
        _ => false,
    }
}

/// Gives back, when dropped, what a task that ran out of memory held: made before the task's
/// end is filed (its slot still holds the thread), dropped once it is.
pub(super) struct Reclaim<'a> {
    lua: &'a Lua,
    inner: &'a Inner,
    thread: Option<Thread>,
}

impl<'a> Reclaim<'a> {
    /// For a task ending with `result`: `None` unless it ran out of memory.
    pub(super) fn after(
        inner: &'a Inner,
        lua: &'a Lua,
        id: TaskId,
        result: &mlua::Result<MultiValue>,
    ) -> Option<Self> {
        match result {
            Err(error) if is_out_of_memory(error) => Some(Reclaim {
                lua,
                inner,
                thread: inner.threads.get(id.slot()).ok(),
            }),
            _ => None,
        }
    }
}

impl Drop for Reclaim<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Resetting a thread shrinks its stack, and closing it goes through a call: neither
        // must fail for want of the memory it is about to give back.
        let limit = self.lua.set_memory_limit(0);
        if let Some(thread) = self.thread.take() {
            if thread.status() == ThreadStatus::Error {
                let _ = self.inner.pristine.close.call::<MultiValue>(&thread);
            }
        }
        if let Ok(limit) = limit {
            let _ = self.lua.set_memory_limit(limit);
        }
        let _ = self.lua.gc_collect();
    }
}
