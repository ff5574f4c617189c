//! `Signal:Wait` as a scheduler suspension: a wait that no timer ends, carrying a token that
//! the signal hands back when it fires (SEMANTICS rule 12).
//!
//! The waiting task is suspended as by `task.wait(math.huge)`: it keeps no run alive (only a
//! fire, which the host or another task makes, can end it), `coroutine.resume` by hand ends the
//! suspension (`task.luau`'s `abandon_wait` path), and cancelling frees the task, so a fire that
//! comes later finds no suspension with its token and does nothing.

use mlua::{Lua, MultiValue, Thread, Value};

use super::{resume_mark, Inner, Suspension, Wakeup};
use crate::vm;

impl Inner {
    /// `Signal:Wait`'s first half: the running thread becomes a task suspended until a fire
    /// wakes it with the returned token. `signal.luau` yields right after.
    pub(crate) fn begin_signal_wait(&self, lua: &Lua) -> mlua::Result<u32> {
        let thread = lua.current_thread();
        if !vm::can_yield(&thread) {
            return Err(mlua::Error::runtime(
                "Signal:Wait can only be called from a task or coroutine (this thread cannot yield)",
            ));
        }
        let id = self.adopt(&thread)?;
        let now = self.clock.now();
        let mut state = self.state.borrow_mut();
        let Some(slot) = state.tasks.get_mut(id) else {
            return Err(mlua::Error::runtime(
                "the waiting task ended while it began to wait",
            ));
        };
        let token = slot.next_token();
        let wait = Suspension::Wait {
            token,
            since: now,
            timed: false,
        };
        state.set_suspension(id, wait);
        Ok(token)
    }

    /// Whether `thread` still waits on the signal wait that handed out `token`.
    pub(crate) fn is_signal_waiting(&self, thread: &Thread, token: u32) -> bool {
        let state = self.state.borrow();
        let Some(id) = state.tasks.find(thread) else {
            return false;
        };
        matches!(
            state.tasks.get(id).map(|slot| slot.suspension),
            Some(Suspension::Wait { token: t, timed: false, .. }) if t == token
        )
    }

    /// A signal fired: resumes the waiting thread with `args` now, unless its wait ended
    /// meanwhile (resumed by hand, cancelled), in which case the wake-up is dropped.
    pub(crate) fn wake_signal_waiter(
        &self,
        lua: &Lua,
        thread: &Thread,
        token: u32,
        mut args: MultiValue,
    ) {
        if !self.is_signal_waiting(thread, token) {
            return;
        }
        let Some(id) = self.state.borrow().tasks.find(thread) else {
            return;
        };
        args.push_front(Value::LightUserData(resume_mark()));
        self.resume(lua, id, Wakeup::Args(args));
    }

    /// The host fired a signal from outside any resumption: that is a resumption point, so the
    /// deferred queue drains (as after the host's `spawn`). Inside a cycle, a resumption or a
    /// drain, the enclosing one drains it.
    pub(crate) fn host_resumption_point(&self, lua: &Lua) {
        if !self.state.borrow().in_cycle {
            self.drain_deferred(lua);
        }
    }
}
