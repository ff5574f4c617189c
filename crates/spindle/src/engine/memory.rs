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
use crate::core::TaskId;
use crate::vm;

/// Whether the task that failed with `error` may have run out of memory: only under a memory
/// limit, when the VM ran out of memory in the task, or when the task failed otherwise with the
/// VM within a sixteenth of the limit (a task that caught its memory error and raised another,
/// still holding the heap). Never for the words of an error alone: a script could raise
/// `not enough memory` at will, and each report would cost a full collection.
fn may_be_out_of_memory(lua: &Lua, error: &mlua::Error) -> bool {
    vm::memory_limit(lua) > 0 && (is_out_of_memory(error) || vm::is_near_memory_limit(lua))
}

/// Whether the error is the VM running out of memory, as mlua's error or inside a callback's.
fn is_out_of_memory(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_out_of_memory(cause)
        }
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
            Err(error) if may_be_out_of_memory(lua, error) => {
                // Holding the thread takes a slot on mlua's reference stack, which may have to
                // grow: not at the limit that the task just reached.
                let thread =
                    vm::with_memory_limit_lifted(lua, || inner.threads.get(id.slot()).ok());
                Some(Reclaim { lua, inner, thread })
            }
            _ => None,
        }
    }
}

impl Drop for Reclaim<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Its error is reported by now: closing the failed thread drops its stack (with the
        // limit lifted, as every close is).
        if let Some(thread) = self.thread.take() {
            if thread.status() == ThreadStatus::Error {
                let _ = self.inner.close_raw(self.lua, &thread);
            }
        }
        let _ = self.lua.gc_collect();
    }
}
