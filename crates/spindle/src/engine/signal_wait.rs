//! `Signal:Wait` as a scheduler suspension: a wait that no timer ends, carrying a token that
//! the signal hands back when it fires (contract rule 12).
//!
//! The waiting task is suspended as by `task.wait(math.huge)`: it keeps no run alive (only a
//! fire, which the host or another task makes, can end it), `coroutine.resume` by hand ends the
//! suspension (`task.luau`'s `abandon_wait` path), and cancelling frees the task, so a fire that
//! comes later finds no suspension with its token and does nothing.

use mlua::{Lua, MultiValue, Thread, Value};

use super::{resume_mark, Inner, Suspension, Wakeup};
use crate::vm;

/// What a signal keeps of a waiter's suspension: its token, and its task's slot and generation.
pub(crate) type WaitStamp = (u32, u32, u32);

impl Inner {
    /// `Signal:Wait`'s first half: the running thread becomes a task suspended until a fire
    /// wakes it with the returned stamp: the token and the task's slot and generation.
    /// `signal.luau` yields right after. Tokens count per slot, so a thread that left its task
    /// (a hand resume frees an idle one) could meet the same token again in another task: the
    /// slot and generation tell them apart.
    pub(crate) fn begin_signal_wait(&self, lua: &Lua) -> mlua::Result<WaitStamp> {
        let thread = lua.current_thread();
        if !vm::can_yield(&thread) {
            return Err(mlua::Error::runtime(crate::error::CANNOT_YIELD));
        }
        let id = self.adopt_waiting(&thread)?;
        // Untimed, as `task.wait(math.huge)`: only a fire ends it.
        let Some(token) = self.suspend_waiting(id, f64::INFINITY) else {
            return Err(mlua::Error::runtime(
                "the waiting task ended while it began to wait",
            ));
        };
        self.note_signal_wait(id, token);
        Ok((token, id.slot(), id.generation()))
    }

    /// Whether `thread` still waits in the signal wait that handed out `stamp`.
    pub(crate) fn is_signal_waiting(&self, thread: &Thread, stamp: WaitStamp) -> bool {
        let (token, slot, generation) = stamp;
        let Some(id) = self.find(thread) else {
            return false;
        };
        if id != self.core(|core| core.id(slot, generation)) {
            return false;
        }
        matches!(
            self.core(|core| core.task(id).map(|slot| slot.suspension())),
            Some(Suspension::Wait { token: t, timed: false, .. }) if t == token
        )
    }

    /// A signal fired: resumes the waiting thread with `args` now, unless its wait ended
    /// meanwhile (resumed by hand, cancelled), in which case the wake-up is dropped.
    pub(crate) fn wake_signal_waiter(
        &self,
        lua: &Lua,
        thread: &Thread,
        stamp: WaitStamp,
        mut args: MultiValue,
    ) {
        if !self.is_signal_waiting(thread, stamp) {
            return;
        }
        let Some(id) = self.find(thread) else {
            return;
        };
        args.push_front(Value::LightUserData(resume_mark()));
        self.timeline.hint(id, super::Cause::Signal);
        self.resume(lua, id, Wakeup::Args(args));
    }

    /// The host fired a signal from outside any resumption: that is a resumption point, so the
    /// deferred queue drains (as after the host's `spawn`). Inside a cycle, a resumption or a
    /// drain, the enclosing one drains it.
    pub(crate) fn host_resumption_point(&self, lua: &Lua) {
        if !self.core(|core| core.in_cycle()) {
            self.drain_deferred(lua);
        }
    }
}
