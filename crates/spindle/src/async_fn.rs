//! Spindle's async functions: Rust futures that the scheduler owns.
//!
//! mlua's `create_async_function` keeps a call's future inside the Lua thread: the scheduler
//! resumes the thread to poll it, and a cancelled task's future lives on until the collector frees
//! the thread. A Spindle async function instead hands the future to the scheduler, which polls it
//! with the task's waker and drops it the moment the task is cancelled or the run ends. Either
//! kind suspends only the calling task, and only while the future is pending.
//!
//! How a call reaches Lua (`task.luau`'s `first_poll` and `settle` read it): a future ready at its
//! first poll returns its values as they are; a pending one returns the resume mark alone, and
//! the task is later resumed with the mark and the values; a failed one returns (or is resumed
//! with) the failure mark and the error's message. A call that Spindle refuses (a bad argument,
//! a thread that cannot yield, a dropped scheduler) returns the failure mark, the reason and
//! `true`, raised at the caller's line. Scripts cannot get hold of either mark, so no result is
//! mistaken for one.

use std::ffi::c_int;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use mlua::state::RawLua;
use mlua::{FromLuaMulti, IntoLuaMulti, LightUserData, Lua, MultiValue, Value};

use crate::error::TaskError;
use crate::vm::resume_mark;

/// A pending call's future, with its results converted to Lua values when it completes.
pub(crate) type OwnedFuture = Pin<Box<dyn Future<Output = mlua::Result<MultiValue>>>>;

/// The pending futures of the tasks blocked on one, by task slot: a flat table rather than a
/// hash map, whose hashing, insertion and removal cost 600 of the 7,000 instructions of a
/// pend-once call (callgrind). It grows to the highest slot that ever blocked on a future.
#[derive(Default)]
pub(crate) struct OwnedFutures {
    by_slot: Vec<Option<OwnedFuture>>,
}

impl OwnedFutures {
    pub(crate) fn insert(&mut self, slot: u32, future: OwnedFuture) {
        let index = slot as usize;
        if index >= self.by_slot.len() {
            self.by_slot.resize_with(index + 1, || None);
        }
        self.by_slot[index] = Some(future);
    }

    pub(crate) fn remove(&mut self, slot: u32) -> Option<OwnedFuture> {
        self.by_slot.get_mut(slot as usize).and_then(Option::take)
    }

    /// Gives back the table's memory; only for when no future is left.
    pub(crate) fn reset(&mut self) {
        debug_assert!(self.by_slot.iter().all(Option::is_none));
        self.by_slot = Vec::new();
    }
}

/// The value a failed call returns first (or its task is resumed with), before the message.
/// Plain data: the address of a static, compared by identity.
pub(crate) fn failure_mark() -> LightUserData {
    static FAILED: u8 = 0;
    LightUserData(&FAILED as *const u8 as *mut std::ffi::c_void)
}

/// One call's future, boxed once: polled with its own output type at the first poll (so that a
/// ready call converts its results straight onto the Lua stack), and as an [`OwnedFuture`] after.
pub(crate) struct Call<Fut> {
    pub(crate) future: Fut,
    pub(crate) lua: Lua,
}

impl<Fut, R> Call<Fut>
where
    Fut: Future<Output = mlua::Result<R>>,
{
    pub(crate) fn poll_first(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fut::Output> {
        // SAFETY: structural pinning of `future`: `Call` never moves it out, has no `Drop`, and
        // is `Unpin` only when `Fut` is.
        unsafe { self.map_unchecked_mut(|call| &mut call.future) }.poll(cx)
    }
}

impl<Fut, R> Future for Call<Fut>
where
    Fut: Future<Output = mlua::Result<R>>,
    R: IntoLuaMulti,
{
    type Output = mlua::Result<MultiValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let values = std::task::ready!(self.as_mut().poll_first(cx))?;
        Poll::Ready(values.into_lua_multi(&self.lua))
    }
}

/// A call's arguments, or the error of their conversion, which mlua would raise itself as an
/// error userdata: kept so that the call refuses with a plain string instead.
pub(crate) struct Caught<A>(pub(crate) mlua::Result<A>);

impl<A: FromLuaMulti> FromLuaMulti for Caught<A> {
    fn from_lua_multi(values: MultiValue, lua: &Lua) -> mlua::Result<Self> {
        Ok(Caught(A::from_lua_multi(values, lua)))
    }

    fn from_lua_args(
        args: MultiValue,
        i: usize,
        to: Option<&str>,
        lua: &Lua,
    ) -> mlua::Result<Self> {
        Ok(Caught(A::from_lua_args(args, i, to, lua)))
    }

    // mlua's hidden fast paths (mlua is pinned at 0.12.2), so that the arguments are converted
    // straight from the stack as they were before.
    unsafe fn from_stack_multi(nvals: c_int, lua: &RawLua) -> mlua::Result<Self> {
        // SAFETY: this method has the contract of `A`'s, which it forwards to unchanged: mlua
        // calls it with `lua` locked and `nvals` values on top of the running state's stack.
        Ok(Caught(unsafe { A::from_stack_multi(nvals, lua) }))
    }

    unsafe fn from_stack_args(
        nargs: c_int,
        i: usize,
        to: Option<&str>,
        lua: &RawLua,
    ) -> mlua::Result<Self> {
        // SAFETY: as in `from_stack_multi`: the same contract as `A`'s, forwarded unchanged
        // (`nargs` arguments on top of the running state's stack, `lua` locked).
        Ok(Caught(unsafe { A::from_stack_args(nargs, i, to, lua) }))
    }
}

/// What the first poll of a call returns to Lua.
pub(crate) enum Started<R> {
    Ready(R),
    Pending,
    Failed(String),
    /// Spindle refused the call: `task.luau` raises the reason at the caller's line.
    Refused(String),
}

impl<R> Started<R> {
    /// A failure, as `task.luau` raises it: a plain string with the Rust error's message.
    pub(crate) fn failed(error: &mlua::Error) -> Self {
        Started::Failed(TaskError::from_lua(None, error).message)
    }
}

/// `failure_mark()` and the message: how a failed call or resumption reaches `task.luau`.
pub(crate) fn failure_values(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::LightUserData(failure_mark()),
        Value::String(lua.create_string(message)?),
    ]))
}

impl<R: IntoLuaMulti> IntoLuaMulti for Started<R> {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        match self {
            Started::Ready(values) => values.into_lua_multi(lua),
            Started::Pending => Ok(MultiValue::from_iter([Value::LightUserData(resume_mark())])),
            Started::Failed(message) => failure_values(lua, &message),
            Started::Refused(reason) => {
                let mut values = failure_values(lua, &reason)?;
                values.push_back(Value::Boolean(true));
                Ok(values)
            }
        }
    }

    // mlua's hidden fast path, so that a ready call's values go onto the stack with no
    // `MultiValue` in between (mlua is pinned at 0.12.2, whose traits have it).
    unsafe fn push_into_stack_multi(self, lua: &RawLua) -> mlua::Result<c_int> {
        match self {
            // SAFETY: each arm forwards this method's own contract (mlua calls it with `lua`
            // locked, as the running state's handle) to the values' `push_into_stack_multi`,
            // which checks the stack for what it pushes.
            Started::Ready(values) => unsafe { values.push_into_stack_multi(lua) },
            // SAFETY: as for `Ready`: the same contract, for one light userdata.
            Started::Pending => unsafe { resume_mark().push_into_stack_multi(lua) },
            // SAFETY: as for `Ready`: the same contract, for a light userdata and a string.
            Started::Failed(message) => unsafe {
                (failure_mark(), message).push_into_stack_multi(lua)
            },
            // SAFETY: as for `Ready`: the same contract, for three plain values.
            Started::Refused(reason) => unsafe {
                (failure_mark(), reason, true).push_into_stack_multi(lua)
            },
        }
    }
}
