//! Spindle's `coroutine.resume`, `coroutine.wrap` and `coroutine.close`, as C functions.
//!
//! A coroutine that a script drives by hand mostly just yields and returns: for it, Spindle's
//! functions do what Luau's own do (`lcorolib.cpp`), with the same messages, and nothing more.
//! The scheduler has a part only in rarer cases, which `task.luau`'s functions (`hand` there)
//! handle as they did when the replacements were Lua functions (rule 13 and 22 of the task
//! contract):
//!
//! - the coroutine yields mlua's pending marker alone (it blocked in an mlua future) or the
//!   watchdog's [`slice_mark`] alone (a time slice ended inside it): `after_resume` or
//!   `after_wrapped` gets the resume's results;
//! - the coroutine failed: `after_resume` or `after_wrapped` gets its error, so that Lua runs in
//!   the resumer before the error reaches the resume's caller, as when the replacements were Lua
//!   functions: the watchdog raises its timeout again there, as a plain message, rather than
//!   letting `wrap` put a position in front of it;
//! - the coroutine is a task's thread (it carries a slot mark), or a resume carries a slice for
//!   it (it carries the sliced hint, see [`super::set_sliced_hint`]): the whole resume runs in
//!   `task.luau` (`resume_task`, `wrap_task`);
//! - a bad argument: `task.luau` raises Luau's message (`bad_resume`, `bad_wrap`);
//! - `close`, which ends a task's pending work and closes with the memory limit lifted (which
//!   only mlua can do): always `task.luau`'s `close`.
//!
//! The C functions call those as their last act, with exactly the call on their stack, so that a
//! continuation returns whatever is on the stack when a call yields (a slice carried out through
//! `carry_slices`). The functions of `task.luau` count the C function as one level of `error`.
//!
//! Invariants: as the module's (see `vm.rs`), no frame here holds anything with a destructor;
//! a Lua error raised here or in `task.luau` unwinds through it. The coroutine is used by raw
//! pointer only while the resumer's stack (argument 1, or the wrapped function's upvalue)
//! holds it, and never after Lua code ran: after a call into `task.luau`, these functions only
//! return what is on the stack.

use std::ffi::{c_int, c_void, CStr};

use mlua::ffi;
use mlua::{Function, Lua, Table};

use super::{runs_chunk_at, slice_mark, ThreadPtr};

/// The slow paths in `hand`, the table `task.luau` returns, in its order.
const AFTER_RESUME: ffi::lua_Integer = 1;
const RESUME_TASK: ffi::lua_Integer = 2;
const BAD_RESUME: ffi::lua_Integer = 3;
const AFTER_WRAPPED: ffi::lua_Integer = 4;
const WRAP_TASK: ffi::lua_Integer = 5;
const BAD_WRAP: ffi::lua_Integer = 6;
const CLOSE: ffi::lua_Integer = 7;

/// Luau's limit on the values of a stack (`LUAI_MAXCSTACK` in `luaconf.h`), which
/// `lcorolib.cpp` checks a resumed coroutine's stack against.
const MAX_C_STACK: c_int = 8000;

/// Upvalue 1 of `resume`: identifies it to the watchdog (see [`resuming`]). The address of a
/// static, which no script can make, compared by identity.
fn resume_identity() -> *mut c_void {
    static IDENTITY: u8 = 0;
    &IDENTITY as *const u8 as *mut c_void
}

/// Upvalue 1 of every function that `wrap` makes, as [`resume_identity`] (another value, so
/// that no merging of equal statics could make the two one).
fn wrapped_identity() -> *mut c_void {
    static IDENTITY: u8 = 1;
    &IDENTITY as *const u8 as *mut c_void
}

/// Makes `coroutine.resume`, `wrap` and `close` on `hand`, the slow paths of `task.luau`.
pub(crate) fn create(lua: &Lua, hand: &Table) -> mlua::Result<(Function, Function, Function)> {
    // SAFETY: `exec_raw` runs the closure in a protected call with `hand` on the stack and room
    // for three values more; the closure holds nothing with a destructor, so an allocation
    // error raised by the VM can unwind it. It leaves the three functions alone on the stack.
    unsafe {
        lua.exec_raw::<(Function, Function, Function)>(hand, |state| {
            ffi::lua_pushlightuserdata(state, resume_identity());
            ffi::lua_pushvalue(state, -2);
            ffi::lua_pushcclosurek(
                state,
                resume_entry,
                c"resume".as_ptr(),
                2,
                Some(continue_with_stack),
            );
            ffi::lua_pushvalue(state, -2);
            ffi::lua_pushcclosurek(state, wrap_entry, c"wrap".as_ptr(), 1, None);
            ffi::lua_pushvalue(state, -3);
            ffi::lua_pushcclosurek(
                state,
                close_entry,
                c"close".as_ptr(),
                1,
                Some(continue_with_stack),
            );
            ffi::lua_remove(state, -4);
        })
    }
}

/// `sliced_hint(thread, on)` for `task.luau`: sets or clears the thread's sliced hint.
pub(crate) fn create_sliced_hint(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `sliced_hint` is a C function that raises no error and holds nothing.
    unsafe { lua.create_c_function(sliced_hint) }
}

unsafe extern "C-unwind" fn sliced_hint(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by the VM with its arguments; a thread argument is alive while the stack
    // holds it, and the hint is one field of it. Nothing here raises.
    unsafe {
        let co = ffi::lua_tothread(state, 1);
        if !co.is_null() {
            super::set_sliced_hint_raw(ThreadPtr(co), ffi::lua_toboolean(state, 2) != 0);
        }
    }
    0
}

/// The coroutine that `thread` resumes, if its running function is Spindle's `resume` or a
/// function made by Spindle's `wrap`, inside its `lua_resume`: the watchdog carries a slice out
/// of it (rule 22).
///
/// # Safety
/// `thread` must be alive, and not running (it is resuming another): its running function is
/// then at the resume. Reads its call frame, one upvalue and one stack slot; allocates nothing,
/// so it may run inside an interrupt.
pub(crate) unsafe fn resuming(thread: ThreadPtr) -> Option<ThreadPtr> {
    // SAFETY: `thread` is alive (the caller's guarantee), which is all `runs_chunk_at` asks.
    if !unsafe { runs_chunk_at(thread, 0, b"=[C]") } {
        return None;
    }
    // SAFETY: the running function of `thread` is a C function, so its upvalue pseudo-indices
    // read that function's upvalues (or nil past them), and index 1 its first argument; the
    // reads allocate nothing. The identities are upvalue 1 of Spindle's functions only.
    unsafe {
        let identity = ffi::lua_tolightuserdata(thread.0, ffi::lua_upvalueindex(1));
        let co = if identity == resume_identity() {
            ffi::lua_tothread(thread.0, 1)
        } else if identity == wrapped_identity() {
            ffi::lua_tothread(thread.0, ffi::lua_upvalueindex(2))
        } else {
            return None;
        };
        (!co.is_null()).then_some(ThreadPtr(co))
    }
}

/// The continuation of every function here: what a call into `task.luau` that yielded
/// returned, which is all there is on the stack.
unsafe extern "C-unwind" fn continue_with_stack(state: *mut ffi::lua_State, _: c_int) -> c_int {
    // SAFETY: called by the VM with the stack of the function continued.
    unsafe { ffi::lua_gettop(state) }
}

/// What a function here returns once a call into `task.luau` came back: the call's results,
/// all that is on the stack; or, when the call yielded (a slice carried out), -1, which tells
/// the VM that the function yields (as Luau's `pcall` does), and `continue_with_stack`
/// returns the results once the call finishes.
///
/// # Safety
/// Only right after such a call, in the function that made it.
unsafe fn results(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: per the caller; reads the thread's status and top.
    unsafe {
        if ffi::lua_status(state) == ffi::LUA_YIELD {
            -1
        } else {
            ffi::lua_gettop(state)
        }
    }
}

/// Calls the slow path `which` of the `hand` table at `hand` with every value on the stack, and
/// returns what it returns.
///
/// # Safety
/// Only from a function here, as its last act, with room for one value on the stack.
unsafe fn call_hand(state: *mut ffi::lua_State, hand: c_int, which: ffi::lua_Integer) -> c_int {
    // SAFETY: per the caller; `hand` holds Lua functions at these indices, which may raise
    // (through this frame, which holds nothing) or yield (the caller's continuation returns
    // their results, the whole stack).
    unsafe {
        let nargs = ffi::lua_gettop(state);
        ffi::lua_rawgeti(state, hand, which);
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, nargs, ffi::LUA_MULTRET);
        results(state)
    }
}

/// Luau's message for a resume of a coroutine in `status` (`lua_costatus`) other than
/// suspended.
fn refusal(status: c_int) -> &'static CStr {
    match status {
        ffi::LUA_CORUN => c"cannot resume running coroutine",
        ffi::LUA_CONOR => c"cannot resume normal coroutine",
        _ => c"cannot resume dead coroutine",
    }
}

/// Moves the `nargs` values on top of the stack to `co`, as Luau's `auxresume` does.
///
/// # Safety
/// `co` must be alive and another thread of the VM than `state`, which holds `nargs` values.
unsafe fn move_args(state: *mut ffi::lua_State, co: *mut ffi::lua_State, nargs: c_int) {
    // SAFETY: per the caller. `lua_checkstack` grows `co`'s stack, or fails past Luau's limit;
    // either error is raised in `state`, through a frame that holds nothing.
    unsafe {
        if nargs > 0 {
            if ffi::lua_checkstack(co, nargs) == 0 {
                ffi::luaL_error(state, c"too many arguments to resume".as_ptr());
            }
            ffi::lua_xmove(state, co, nargs);
        } else if ffi::lua_gettop(co) > MAX_C_STACK {
            ffi::luaL_error(state, c"too many arguments to resume".as_ptr());
        }
    }
}

/// The mark that a coroutine which yielded (or returned) it alone came back with, if it is
/// one the scheduler must see: mlua's pending marker or the watchdog's slice mark.
///
/// # Safety
/// `co` must be alive, with one value on its stack.
unsafe fn scheduler_mark(co: *mut ffi::lua_State) -> Option<*mut c_void> {
    // SAFETY: per the caller; `lua_tolightuserdata` is null for anything else.
    let value = unsafe { ffi::lua_tolightuserdata(co, -1) };
    (value == Lua::poll_pending().0 || value == slice_mark().0).then_some(value)
}

/// Hands a resume to `task.luau`'s `after_resume` or `after_wrapped` (`which`): its coroutine
/// came back with `ok` and the value on top of the stack alone (a mark, or its error), and the
/// resume's caller is at level 3 from there. Errors go there too: the watchdog's timeout is
/// raised in the coroutine, and then again at the next interrupt of the resumer, which `task.luau`
/// gives before the error reaches the resume's caller (as when `task.luau` resumed).
///
/// # Safety
/// Only from `resume_entry` or `wrapped_entry` as its last act, with nothing on the running
/// function's stack but `co` itself (`resume`'s argument 1, `co_on_stack`; `wrap`'s function
/// holds it in upvalue 2) and the value.
unsafe fn hand_over(
    state: *mut ffi::lua_State,
    co_on_stack: bool,
    ok: bool,
    hand: c_int,
    which: ffi::lua_Integer,
) -> c_int {
    // SAFETY: per the caller; at most five values are on the stack, within the `LUA_MINSTACK`
    // slots a C function has. Lua runs only in the call, as the last act: the stack then holds
    // the call alone, and its results alone after.
    unsafe {
        ffi::lua_rawgeti(state, hand, which);
        ffi::lua_insert(state, 1);
        if !co_on_stack {
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
            ffi::lua_insert(state, 2);
        }
        ffi::lua_pushinteger(state, 3);
        ffi::lua_insert(state, 3);
        ffi::lua_pushboolean(state, c_int::from(ok));
        ffi::lua_insert(state, 4);
        ffi::lua_call(state, 4, ffi::LUA_MULTRET);
        results(state)
    }
}

/// [`hand_over`] of a coroutine that came back with `mark` alone: the mark moves over.
///
/// # Safety
/// As [`hand_over`], with `co` alive and the mark alone on its stack.
unsafe fn after_mark(
    state: *mut ffi::lua_State,
    co: *mut ffi::lua_State,
    co_on_stack: bool,
    mark: *mut c_void,
    hand: c_int,
    which: ffi::lua_Integer,
) -> c_int {
    // SAFETY: per the caller.
    unsafe {
        ffi::lua_settop(co, 0);
        ffi::lua_pushlightuserdata(state, mark);
        hand_over(state, co_on_stack, true, hand, which)
    }
}

/// `coroutine.resume(co, ...)`. Upvalues: 1, [`resume_identity`]; 2, `hand`.
unsafe extern "C-unwind" fn resume_entry(state: *mut ffi::lua_State) -> c_int {
    let hand = ffi::lua_upvalueindex(2);
    // SAFETY: called by the VM with the function's arguments and upvalues, and `LUA_MINSTACK`
    // free slots. Errors raised here unwind this frame, which holds nothing with a destructor.
    // `co` is alive while argument 1 holds it, which it does until this returns; `lua_resume`
    // catches every error raised inside it.
    unsafe {
        let co = ffi::lua_tothread(state, 1);
        if co.is_null() {
            return call_hand(state, hand, BAD_RESUME);
        }
        if !ffi::lua_getthreaddata(co).is_null() {
            return call_hand(state, hand, RESUME_TASK);
        }
        let status = ffi::lua_costatus(state, co);
        if status != ffi::LUA_COSUS {
            ffi::lua_pushboolean(state, 0);
            ffi::lua_pushstring(state, refusal(status).as_ptr());
            return 2;
        }
        let nargs = ffi::lua_gettop(state) - 1;
        move_args(state, co, nargs);
        match ffi::lua_resume_(co, state, nargs) {
            ffi::LUA_OK | ffi::LUA_YIELD => {
                let nres = ffi::lua_gettop(co);
                if nres == 1 {
                    if let Some(mark) = scheduler_mark(co) {
                        return after_mark(state, co, true, mark, hand, AFTER_RESUME);
                    }
                }
                if nres + 1 > ffi::LUA_MINSTACK && ffi::lua_checkstack(state, nres + 1) == 0 {
                    ffi::luaL_error(state, c"too many results to resume".as_ptr());
                }
                ffi::lua_pushboolean(state, 1);
                ffi::lua_xmove(co, state, nres);
                nres + 1
            }
            _ => {
                ffi::lua_xmove(co, state, 1);
                hand_over(state, true, false, hand, AFTER_RESUME)
            }
        }
    }
}

/// `coroutine.wrap(f)`. Upvalue 1: `hand`.
unsafe extern "C-unwind" fn wrap_entry(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by the VM with the function's arguments and upvalue, and `LUA_MINSTACK`
    // free slots, of which three are used. Errors (no memory) unwind this frame, which holds
    // nothing with a destructor.
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TFUNCTION {
            return call_hand(state, ffi::lua_upvalueindex(1), BAD_WRAP);
        }
        let co = ffi::lua_newthread(state);
        ffi::lua_xpush(state, co, 1);
        ffi::lua_pushlightuserdata(state, wrapped_identity());
        ffi::lua_insert(state, -2);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_pushcclosurek(
            state,
            wrapped_entry,
            std::ptr::null(),
            3,
            Some(continue_with_stack),
        );
        1
    }
}

/// Raises the string on top of the stack behind the position of the caller of the running
/// function, as Luau's wrap raises a coroutine's error.
///
/// # Safety
/// Only from a C function, with room for one value more.
unsafe fn raise_at_caller(state: *mut ffi::lua_State) -> ! {
    // SAFETY: per the caller; the frames the error unwinds hold nothing with a destructor.
    unsafe {
        ffi::luaL_where(state, 1);
        ffi::lua_insert(state, -2);
        ffi::lua_concat(state, 2);
        ffi::lua_error(state)
    }
}

/// A function that `coroutine.wrap` made. Upvalues: 1, [`wrapped_identity`]; 2, the coroutine;
/// 3, `hand`.
unsafe extern "C-unwind" fn wrapped_entry(state: *mut ffi::lua_State) -> c_int {
    let hand = ffi::lua_upvalueindex(3);
    let co_slot = ffi::lua_upvalueindex(2);
    // SAFETY: called by the VM with the function's arguments and upvalues, and `LUA_MINSTACK`
    // free slots. Errors raised here unwind this frame, which holds nothing with a destructor.
    // `co` is alive while the upvalue holds it, as long as this function runs; `lua_resume`
    // catches every error raised inside it.
    unsafe {
        let co = ffi::lua_tothread(state, co_slot);
        if !ffi::lua_getthreaddata(co).is_null() {
            ffi::lua_pushvalue(state, co_slot);
            ffi::lua_insert(state, 1);
            return call_hand(state, hand, WRAP_TASK);
        }
        let status = ffi::lua_costatus(state, co);
        if status != ffi::LUA_COSUS {
            ffi::lua_pushstring(state, refusal(status).as_ptr());
            raise_at_caller(state);
        }
        let nargs = ffi::lua_gettop(state);
        move_args(state, co, nargs);
        match ffi::lua_resume_(co, state, nargs) {
            ffi::LUA_OK | ffi::LUA_YIELD => {
                let nres = ffi::lua_gettop(co);
                if nres == 1 {
                    if let Some(mark) = scheduler_mark(co) {
                        return after_mark(state, co, false, mark, hand, AFTER_WRAPPED);
                    }
                }
                if nres + 1 > ffi::LUA_MINSTACK && ffi::lua_checkstack(state, nres + 1) == 0 {
                    ffi::luaL_error(state, c"too many results to resume".as_ptr());
                }
                ffi::lua_xmove(co, state, nres);
                nres
            }
            _ => {
                ffi::lua_xmove(co, state, 1);
                hand_over(state, false, false, hand, AFTER_WRAPPED)
            }
        }
    }
}

/// `coroutine.close(co)`. Upvalue 1: `hand`.
unsafe extern "C-unwind" fn close_entry(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by the VM with the function's arguments and upvalue, and room for one
    // value more; the call is the last act.
    unsafe { call_hand(state, ffi::lua_upvalueindex(1), CLOSE) }
}
