//! The C function through which `signal.luau` calls an immediate handler on a runner thread:
//! `call(runner, creator, script, f, ...)` resumes the runner with `f` and the fire's values
//! through `lua_resume`, with no mlua handle, conversion or allocation, as the usual pure-Luau
//! signal pattern does with `coroutine.resume`. The engine's side (`engine/signal_call.rs`)
//! decides whether the lane is open (`enter`) and files whatever did not simply return
//! (`leave`): a handler that waited, failed or became a task.
//!
//! Returns true once the handler ran; false when the lane is closed (a watchdog watches each
//! resumption, or the host asked for the general path), and nil when the runner cannot take
//! the call (closed, not at its loop's yield, or a task now): `signal.luau` then makes a
//! fresh runner, or takes the general path.

use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mlua::ffi;
use mlua::{Function, LightUserData, Lua, Thread};

use super::ThreadPtr;

/// How many values (the handler and the fire's values) the lane moves to a runner: a thread
/// suspended in `coroutine.yield` has `LUA_MINSTACK` (20) free slots (see "Stack room" in
/// `vm.rs`), so no stack grows. A call with more takes the general path.
const MAX_MOVED: c_int = 16;

/// What [`enter`](Lane::enter) says of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The call is a handler frame now: resume the runner.
    Entered,
    /// The lane is closed: take the general path.
    Closed,
    /// The runner cannot take the call (it is a task): make another.
    BadRunner,
}

/// How the runner came back, as [`leave`](Lane::leave) hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Back {
    /// The handler returned and the runner is back at its loop's yield.
    Done,
    /// It yielded mlua's pending marker alone (blocked in an mlua future).
    Pending,
    /// It yielded anything else (a plain `coroutine.yield`, a scheduler suspension).
    Yielded,
    /// The runner's function returned (it never does) or failed with this status, its error
    /// value on top of its stack.
    Ended(c_int),
}

/// The engine's two halves of a call, and their data.
pub(crate) struct Lane<T> {
    pub(crate) data: Rc<T>,
    /// The call begins: the runner, the numbers of the connecting task and its script.
    pub(crate) enter: fn(&T, ThreadPtr, u64, u64) -> Entry,
    /// The call is over: the runner and how it came back.
    pub(crate) leave: fn(&T, ThreadPtr, Back),
}

/// The light userdata the runner loop yields alone when its handler returned: the address of
/// a static, which no script can make.
pub(crate) fn done_mark() -> LightUserData {
    static DONE: u8 = 0;
    LightUserData(std::ptr::addr_of!(DONE).cast_mut().cast())
}

/// A handle on the runner of a handler frame, taken only when the call becomes a task.
///
/// # Safety
/// `runner` must be alive and not suspended: running, or normal (inside a C function that
/// resumes another coroutine: `coroutine.resume`, `wrap`, the call function), or dead. Each
/// keeps a C function's `LUA_MINSTACK` room above its top (see "Stack room" in `vm.rs`), or
/// is running the code that asks.
pub(crate) unsafe fn runner_handle(lua: &Lua, runner: ThreadPtr) -> mlua::Result<Thread> {
    // SAFETY: `exec_raw` gives a protected call with room for a value; the runner pushes
    // itself into the room above its top and the value moves over (nothing moves when the
    // runner is the running thread, whose stack `state` is), so its top is as it was. No Lua
    // runs and nothing allocates.
    unsafe {
        lua.exec_raw::<Thread>((), |state| {
            ffi::lua_pushthread(runner.0);
            ffi::lua_xmove(runner.0, state, 1);
        })
    }
}

/// Makes the call function for `lane`. The closure owns the lane through a userdata upvalue,
/// released when the collector frees it.
pub(crate) fn create<T: 'static>(lua: &Lua, lane: Lane<T>) -> mlua::Result<Function> {
    let payload = Box::into_raw(Box::new(lane));
    let owned = std::cell::Cell::new(false);
    // SAFETY: `exec_raw` runs the closure in a protected call with room for two values; the
    // closure holds nothing with a destructor, so an allocation error can unwind it. Once the
    // userdata holds `payload`, its destructor owns it.
    let made = unsafe {
        lua.exec_raw::<Function>((), |state| {
            let slot = ffi::lua_newuserdatadtor(
                state,
                std::mem::size_of::<*mut Lane<T>>(),
                drop_lane::<T>,
            );
            slot.cast::<*mut Lane<T>>().write(payload);
            owned.set(true);
            ffi::lua_pushcclosured(state, call::<T>, c"call_handler".as_ptr(), 1);
        })
    };
    if made.is_err() && !owned.get() {
        // SAFETY: no userdata took the payload, so this is its only owner.
        drop(unsafe { Box::from_raw(payload) });
    }
    made
}

unsafe extern "C" fn drop_lane<T>(_: *mut ffi::lua_State, slot: *mut c_void) {
    // SAFETY: the VM calls this once, when it frees the userdata, whose block `create` wrote
    // the payload's pointer into; the payload came from `Box::into_raw`, and the userdata was
    // its only owner from then on.
    drop(unsafe { Box::from_raw(slot.cast::<*mut Lane<T>>().read()) });
}

/// The number a connection key stands for (`Inner::task_key`): a light userdata holding it,
/// or a number where pointers are narrower; `None` for anything else.
///
/// # Safety
/// `state` must be alive, with a value at `index`.
unsafe fn key_number(state: *mut ffi::lua_State, index: c_int) -> Option<u64> {
    // SAFETY: per the caller; reading a value runs no Lua.
    unsafe {
        match ffi::lua_type(state, index) {
            ffi::LUA_TLIGHTUSERDATA => Some(ffi::lua_tolightuserdata(state, index) as usize as u64),
            ffi::LUA_TNUMBER => Some(ffi::lua_tonumber(state, index) as u64),
            _ => None,
        }
    }
}

unsafe extern "C-unwind" fn call<T>(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by the VM as the closure `create` made, whose upvalue 1 is the userdata
    // holding a live `Lane<T>` until the closure, which is running, is collected. Nothing here
    // raises a Lua error (no allocation, no metamethod: `lua_resume` catches every error inside
    // the runner), and the engine's halves run under `catch_unwind`; a C function may push a
    // value without checking the stack.
    unsafe {
        let lane = &**ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<*const Lane<T>>();
        let nargs = ffi::lua_gettop(state);
        let moved = nargs - 3;
        let keys = (key_number(state, 2), key_number(state, 3));
        let (Some(creator), Some(script)) = keys else {
            ffi::lua_pushboolean(state, 0);
            return 1;
        };
        if !(1..=MAX_MOVED).contains(&moved) || ffi::lua_type(state, 1) != ffi::LUA_TTHREAD {
            ffi::lua_pushboolean(state, 0);
            return 1;
        }
        let runner = ffi::lua_tothread(state, 1);
        // At its loop's yield: suspended, with nothing on its stack (the primer and every
        // call took what it yielded).
        if runner == state
            || ffi::lua_status(runner) != ffi::LUA_YIELD
            || ffi::lua_gettop(runner) != 0
        {
            ffi::lua_pushnil(state);
            return 1;
        }
        let runner_ptr = ThreadPtr(runner);
        let entry = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (lane.enter)(&lane.data, runner_ptr, creator, script)
        }))
        .unwrap_or(Entry::Closed);
        match entry {
            Entry::Entered => {}
            Entry::Closed => {
                ffi::lua_pushboolean(state, 0);
                return 1;
            }
            Entry::BadRunner => {
                ffi::lua_pushnil(state);
                return 1;
            }
        }
        ffi::lua_xmove(state, runner, moved);
        let back = match ffi::lua_resume(runner, state, moved, std::ptr::null_mut()) {
            ffi::LUA_YIELD => {
                let top = ffi::lua_gettop(runner);
                let alone = if top == 1 {
                    ffi::lua_tolightuserdata(runner, -1)
                } else {
                    std::ptr::null_mut()
                };
                // What it yielded goes, as a task's yield to the scheduler does: nobody takes
                // it.
                if top != 0 {
                    ffi::lua_settop(runner, 0);
                }
                if alone == done_mark().0 {
                    Back::Done
                } else if !alone.is_null() && alone == Lua::poll_pending().0 {
                    Back::Pending
                } else {
                    Back::Yielded
                }
            }
            status => Back::Ended(status),
        };
        // A panic from the host's handlers (error handler, end hook) is not carried through
        // the VM's frames: the call is over either way.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (lane.leave)(&lane.data, runner_ptr, back)
        }));
        ffi::lua_pushboolean(state, 1);
        1
    }
}
