//! What Spindle asks of the Lua VM that mlua does not offer: a few raw reads of a thread's
//! state, and the hot paths of `task.wait` (a C function that files the wait and yields, and a
//! resumption through `lua_resume`), of a Spindle future's completion (the same resumption,
//! with the future's values), and of coroutines resumed by hand (Spindle's `coroutine.resume`,
//! `wrap` and `close`, C functions in [`coroutines`]), where mlua's per-call machinery or Lua
//! wrappers cost more than the coroutine work itself. Kept here so that the rest of the crate never touches the C API, and
//! so that the differences between Lua versions stay at this edge.
//!
//! Invariant of the raw code: no Rust frame with a destructor is live where the VM may raise a
//! Lua error. Luau raises with C++ exceptions here (mlua builds it so); a raise must not skip a
//! destructor, nor reach a `catch_unwind`, where a foreign exception aborts. Such calls run
//! inside mlua's protected `exec_raw`, or in C functions whose frames own nothing. A raise on a
//! thread must also be caught by a protected call of that same thread: Luau traps when another
//! thread's catches it. Closing a thread (`lua_resetthread`, under Luau's `coroutine.close`)
//! reallocates its stack outside any protected call of its own, so it runs with the memory
//! limit lifted ([`with_memory_limit_lifted`]); every other allocating call here is protected.
//!
//! Invariant of raw thread pointers ([`ThreadPtr`]): a pointer keeps nothing alive, so it is
//! used only while something Lua cannot drop holds the thread, and never across a point where
//! Lua code runs (a metamethod, an error value's `__tostring`, an error handler), which could
//! cancel, close or free it. (An allocation may run the collector, but Luau runs no Lua code
//! from it.) Every use, audited: the running thread (`running_thread`, the interrupt's and
//! `wait`'s own state) is alive while it runs. A task's thread, read from its occupied slot, is
//! held by the thread store until `free_task`; the fast lanes (`resume_from_wait`,
//! `resume_with_values`, `start_with_values`) use it before any Lua runs, and while it runs nothing can free it:
//! `task.cancel` and `coroutine.close` refuse a running or normal thread, the host's cancel a
//! task marked running, and `shutdown` a scheduler inside a resumption. After the resumption,
//! `take_results`, `drop_results` and the status reads run no Lua; [`take_resume_error`] is the one use after
//! which Lua runs (turning the error value into a string), so it takes a handle on the thread
//! and its traceback first. The slot's pointer and the watchdog's are identities, compared
//! while the slot is occupied or while the resumption's handle holds the thread. A signal
//! handler frame's runner (`core/handler_calls.rs`) is held, for as long as the frame lasts, by
//! the stack of the C function that resumed it ([`handler_call`]), which no Lua code can reach;
//! a running or normal thread cannot be closed, so the pointer stays the runner's while the
//! handler runs, and [`handler_call::runner_handle`] takes a handle on it before any use.
//!
//! # Contacts with mlua's internals
//!
//! Each place where Spindle relies on more than mlua's documented API, all checked against
//! mlua `=0.12.2` (the workspace pins it exactly; re-check every item on an upgrade):
//!
//! 1. **The pending marker.** `Lua::poll_pending()` (doc-hidden) is the light userdata a thread
//!    yields while an mlua future is pending. Read here ([`resume_with_values`]'s outcome,
//!    [`handler_call`]'s, the tests) and handed to `task.luau` by `task_lib.rs`
//!    (`rt.poll_pending`).
//! 2. **mlua's polling loop by name.** [`MLUA_POLL_LOOP`] (`=__mlua_async_poll`) is the chunk
//!    name of the Lua loop with which mlua's async functions poll their future; the engine tells
//!    a thread blocked in an mlua future by it ([`is_blocked_in_mlua_future`]).
//! 3. **The raw state is the coroutine.** Inside a callback, `Lua::exec_raw_lua` (doc-hidden)
//!    gives mlua's `RawLua`, whose `state()` is the running coroutine itself, also under
//!    `call_async` ([`running_thread`]); `Lua::exec_raw` runs C API code in a protected call.
//! 4. **Hidden conversion fast paths.** The doc-hidden trait methods `FromLuaMulti::
//!    from_stack_multi` / `from_stack_args` and `IntoLuaMulti::push_into_stack_multi` are
//!    forwarded by `async_fn.rs` (`Caught`, `Started`) and `error.rs` (`Checked`), so that
//!    values keep mlua's stack fast path through Spindle's wrappers.
//! 5. **The interrupt slot.** [`set_interrupt`] and [`interrupt`] write and read the VM's one
//!    interrupt past `Lua::set_interrupt`, which writes the same slot: `watchdog.rs` chains a
//!    host's interrupt found there, and re-checks it before each watched resumption.
//! 6. **mlua's resume errors, reproduced.** The raw lanes report a failed thread as mlua's
//!    own resume would ([`take_resume_error`]): an error from Rust as it was (a panic resumes),
//!    anything else as a `RuntimeError` with the thread's traceback, out of memory as a
//!    `MemoryError`; [`with_thread_traceback`] fills in what mlua leaves out, recognising mlua's
//!    texts [`NO_TRACEBACK`] (`<traceback unavailable>`) and [`TRACEBACK_FAILED`].
//! 7. **Stack room.** A C function gets `LUA_MINSTACK` (20) free slots above its arguments
//!    (Luau's guarantee, which mlua's callbacks also rely on): `wait` yields without
//!    `lua_checkstack` because of it.
//! 8. **mlua's `AsyncThread`** is the general path (the engine's resumer, `engine/resume.rs`): dropping one
//!    does not drop the future it polls (the collector does), and a plain `Thread::resume` polls
//!    with a no-op waker. The engine keeps the futures of tasks it owns (`OwnedFutures`) for
//!    that reason.

mod coroutines;
pub(crate) mod handler_call;

pub(crate) use coroutines::{create as create_coroutine_functions, create_sliced_hint};

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mlua::ffi;
use mlua::{Function, IntoLuaMulti, LightUserData, Lua, MultiValue, Table, Thread, Value};

#[cfg(not(feature = "luau"))]
compile_error!("Spindle supports Luau only for now: enable the `luau` feature");

/// Whether this build and this CPU run Luau's native code: Spindle built with its `native`
/// feature (the default), on a processor Luau's code generator supports (x86-64 and arm64).
/// Where it is false, every chunk runs on Luau's interpreter.
pub fn native_code_supported() -> bool {
    #[cfg(feature = "native")]
    // SAFETY: a query of the code generator's target, with no state.
    return unsafe { ffi::luau_codegen_supported() != 0 };
    #[cfg(not(feature = "native"))]
    return false;
}

/// Sets the VM's switch for compiling the chunks it loads from now on to native code (mlua
/// compiles a chunk as it loads it when the switch is on and the CPU is supported).
pub(crate) fn set_native_code(lua: &Lua, on: bool) {
    #[cfg(feature = "native")]
    lua.enable_jit(on);
    #[cfg(not(feature = "native"))]
    let _ = (lua, on);
}

/// Whether the thread has started and is suspended in a yield (mlua's `ThreadStatus` does not
/// tell a new thread from a yielded one).
pub(crate) fn has_started(thread: &Thread) -> bool {
    // SAFETY: `thread.state()` is valid while the handle lives.
    unsafe { has_started_raw(ThreadPtr::of(thread)) }
}

/// `has_started` for a raw state.
///
/// # Safety
/// `thread` must be alive.
pub(crate) unsafe fn has_started_raw(thread: ThreadPtr) -> bool {
    // SAFETY: per the caller; `lua_status` only reads the state.
    unsafe { ffi::lua_status(thread.0) == ffi::LUA_YIELD }
}

/// Whether `thread` is suspended, as `coroutine.status` says it from the running thread: new,
/// or yielded. Reads the two threads' states; allocates nothing.
pub(crate) fn is_suspended(lua: &Lua, thread: &Thread) -> bool {
    let running = running_thread(lua);
    // SAFETY: the handle keeps `thread` alive, and the running thread is alive while it runs;
    // `lua_costatus` reads fields of both.
    unsafe { ffi::lua_costatus(running.0, thread.state()) == ffi::LUA_COSUS }
}

/// Whether the thread may yield now: not the main thread, and not inside a metamethod or other
/// C-call boundary.
pub(crate) fn can_yield(thread: &Thread) -> bool {
    // SAFETY: the state is valid while the handle lives.
    unsafe { can_yield_raw(ThreadPtr::of(thread)) }
}

/// The address of a thread's VM state: identifies a thread while something keeps it alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadPtr(*mut ffi::lua_State);

// SAFETY: a `ThreadPtr` is an address; every use of it as a thread is an `unsafe` function of
// this module, whose caller must be on the thread that runs the VM and keep the thread alive.
// Sending the address itself is harmless, and lets the engine hand one to the core
// (`core/mod.rs`), whose closures must be `Send`.
unsafe impl Send for ThreadPtr {}

impl ThreadPtr {
    pub(crate) fn of(thread: &Thread) -> Self {
        ThreadPtr(thread.state())
    }

    pub(crate) fn from_ptr(state: *mut ffi::lua_State) -> Self {
        ThreadPtr(state)
    }
}

/// The thread running now, as mlua's handle knows it: [`Lua::current_thread`] makes (and drops)
/// a reference each call, 330 instructions (callgrind). Unlike it, this is the thread itself
/// inside a coroutine that mlua's `call_async` runs, not the thread that called it.
pub(crate) fn running_thread(lua: &Lua) -> ThreadPtr {
    ThreadPtr(lua.exec_raw_lua(|raw| raw.state()))
}

/// A VM interrupt, as Luau calls it: the running thread, and a GC phase (negative when the VM
/// calls it from running code).
pub(crate) type Interrupt = unsafe extern "C-unwind" fn(*mut ffi::lua_State, std::ffi::c_int);

/// Sets (or with `None` removes) the VM's interrupt, replacing whatever is set, one set with
/// mlua's `Lua::set_interrupt` too (the watchdog chains that one behind its own). Spindle sets
/// its own rather than mlua's, whose per-call overhead
/// doubled the time of a tight loop (1.69 s against 0.80 s for 1e8 additions).
pub(crate) fn set_interrupt(lua: &Lua, interrupt: Option<Interrupt>) {
    let thread = running_thread(lua);
    // SAFETY: the callbacks are the VM's global table, valid while the VM lives; this writes one
    // field, on the thread that runs the VM.
    unsafe { (*ffi::lua_callbacks(thread.0)).interrupt = interrupt };
}

/// Tells VMs apart while they live: the address of the callbacks that all threads of a VM
/// share. Compared only, never read through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmKey(*const ffi::lua_Callbacks);

/// The VM's interrupt as it is now (Spindle's, one set with mlua's `Lua::set_interrupt`, or
/// none), and the key of the VM.
pub(crate) fn interrupt(lua: &Lua) -> (VmKey, Option<Interrupt>) {
    let thread = running_thread(lua);
    // SAFETY: the running thread is alive, and its callbacks are the VM's global table, valid
    // while the VM lives; this reads one field, on the thread that runs the VM.
    let callbacks = unsafe { ffi::lua_callbacks(thread.0) };
    // SAFETY: `callbacks` points at the VM's callbacks, which live as long as the VM; this
    // OS thread runs the VM, so nothing writes the field meanwhile.
    (VmKey(callbacks), unsafe { (*callbacks).interrupt })
}

/// The key of the VM that `state` belongs to, from inside its interrupt.
///
/// # Safety
/// `state` must be a live thread of the VM.
pub(crate) unsafe fn vm_key_raw(state: ThreadPtr) -> VmKey {
    // SAFETY: per the caller; `lua_callbacks` only takes the address of a field of the VM's
    // global state.
    VmKey(unsafe { ffi::lua_callbacks(state.0) })
}

/// Whether `thread` is a thread of `lua`'s VM, and not its main thread: one that the host
/// may resume. A handle keeps its thread alive, whichever VM it belongs to.
pub(crate) fn is_coroutine_of(lua: &Lua, thread: &Thread) -> bool {
    let running = running_thread(lua);
    // SAFETY: both threads are alive (the running one runs, the handle holds the other); these
    // read the addresses of their VMs' global fields, and nothing else.
    unsafe {
        ffi::lua_mainthread(thread.state()) == ffi::lua_mainthread(running.0)
            && ffi::lua_mainthread(thread.state()) != thread.state()
    }
}

/// `can_yield` for a raw state, from inside an interrupt.
///
/// # Safety
/// `state` must be a live thread of the VM.
pub(crate) unsafe fn can_yield_raw(state: ThreadPtr) -> bool {
    // SAFETY: the caller guarantees the state is live; this only reads it.
    unsafe { ffi::lua_isyieldable(state.0) != 0 }
}

/// Yields the running thread from inside an interrupt, with no values.
///
/// # Safety
/// Only from the VM's interrupt, for the thread it runs, when that thread can yield.
pub(crate) unsafe fn yield_from_interrupt(state: ThreadPtr) {
    // SAFETY: the caller passes the thread the interrupt runs, and it can yield, so
    // `lua_yield` raises no "attempt to yield across a C-call boundary" through this frame;
    // Luau then leaves the interpreter loop and resumes the same instruction on the next resume.
    unsafe { ffi::lua_yield(state.0, 0) };
}

/// The value a coroutine stopped at the end of a time slice yields alone, so that Spindle's
/// `coroutine.resume` and `wrap`, which resumed it, carry the slice out to the task (rule 22 of
/// the task contract). Plain data that no script can make: the address of a static.
pub(crate) fn slice_mark() -> LightUserData {
    static MARK: u8 = 0;
    LightUserData(&MARK as *const u8 as *mut c_void)
}

/// Yields the running thread from inside an interrupt with [`slice_mark`] alone.
///
/// # Safety
/// As [`yield_from_interrupt`]. The mark goes into the stack's reserve above the top (Luau
/// keeps `EXTRA_STACK` slots there for such pushes), and the resumer takes it off before
/// the thread runs again: Luau resumes code yielded from an interrupt at the same
/// instruction, with the top it had.
pub(crate) unsafe fn yield_slice_from_interrupt(state: ThreadPtr) {
    // SAFETY: as in `yield_from_interrupt`, the caller passes the running thread of the
    // interrupt, which can yield. The one push needs no `lua_checkstack`: it lands in the
    // `EXTRA_STACK` reserve above the top, and nothing else is pushed before the yield.
    unsafe {
        ffi::lua_pushlightuserdata(state.0, slice_mark().0);
        ffi::lua_yield(state.0, 1);
    }
}

/// The coroutine that `thread` is resuming through Spindle's `coroutine.resume` or `wrap`, if
/// that is what it is doing: its running function is one of those (C functions, see
/// [`coroutines`]), or the standard resume called from `task.luau` (which resumes tasks and
/// carries slices), with the coroutine as its first argument.
///
/// # Safety
/// `thread` must be alive. Reads its call frames, an upvalue and one stack slot; allocates
/// nothing, so it may run inside an interrupt.
pub(crate) unsafe fn hand_resumed_by(thread: ThreadPtr) -> Option<ThreadPtr> {
    // SAFETY: the caller guarantees `thread` is alive, which is all `resuming` asks.
    if let Some(co) = unsafe { coroutines::resuming(thread) } {
        return Some(co);
    }
    let task_lib = TASK_LIB_CHUNK.as_bytes();
    // SAFETY: the caller guarantees `thread` is alive, which is all `runs_chunk_at` asks.
    let resuming =
        unsafe { runs_chunk_at(thread, 0, b"=[C]") && runs_chunk_at(thread, 1, task_lib) };
    if !resuming {
        return None;
    }
    // SAFETY: `thread` is alive (the caller's guarantee) and its running function is a C
    // function, so stack index 1 is that function's first argument (or none, read as null);
    // `lua_tothread` only reads the slot.
    let co = unsafe { ffi::lua_tothread(thread.0, 1) };
    (!co.is_null()).then_some(ThreadPtr(co))
}

/// Whether the running function of `state` is one of `task.luau`'s.
///
/// # Safety
/// `state` must be alive. Reads its current call frame; allocates nothing, so it may run
/// inside an interrupt.
pub(crate) unsafe fn runs_task_library(state: ThreadPtr) -> bool {
    // SAFETY: the caller guarantees `state` is alive, which is all `runs_chunk_at` asks.
    unsafe { runs_chunk_at(state, 0, TASK_LIB_CHUNK.as_bytes()) }
}

/// Whether the function at `level` of the thread's call stack (0: the running one) comes from
/// the chunk named `source` (`=[C]` for a C function). A script can name a chunk of its own
/// so too (`loadstring`): an answer to rely on only where a forged name gains nothing.
///
/// # Safety
/// `thread` must be alive. Reads one call frame; allocates nothing, so it may run inside an
/// interrupt.
unsafe fn runs_chunk_at(thread: ThreadPtr, level: c_int, source: &[u8]) -> bool {
    let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
    // SAFETY: `thread` is alive (the caller's guarantee); with "s", `lua_getinfo` only fills
    // `ar` (zeroed, so `assume_init` reads no uninitialised field even when no frame is
    // found), whose `source` points into the function's prototype, alive while its frame is.
    unsafe {
        let found = ffi::lua_getinfo(thread.0, level, c"s".as_ptr(), ar.as_mut_ptr()) != 0;
        let ar = ar.assume_init();
        found && !ar.source.is_null() && std::ffi::CStr::from_ptr(ar.source).to_bytes() == source
    }
}

/// Raises `message` as a Lua error in the running thread, from inside an interrupt.
///
/// # Safety
/// Only from the VM's interrupt, for the thread it runs; the Rust frames that the error
/// unwinds must hold nothing with a destructor.
pub(crate) unsafe fn raise_from_interrupt(state: ThreadPtr, message: &str) -> ! {
    // SAFETY: the caller passes the interrupt's running thread, whose protected caller catches
    // the error, and owns nothing the unwinding would skip; `lua_pushlstring` copies the
    // message (into the `EXTRA_STACK` reserve), and `lua_error` does not return.
    unsafe {
        ffi::lua_pushlstring(state.0, message.as_ptr().cast(), message.len());
        ffi::lua_error(state.0)
    }
}

/// The value a task is resumed with first when the scheduler ends a suspension it made itself,
/// so that the task can tell that resumption from any other (contract rule 12). Plain data:
/// the address of a static, compared by identity.
pub(crate) fn resume_mark() -> LightUserData {
    static MARK: u8 = 0;
    LightUserData(&MARK as *const u8 as *mut c_void)
}

/// `task.wait` as a plain C function with a continuation, in place of a Lua function calling
/// an mlua callback and `coroutine.yield`: `wait(seconds?)` has `record` file the calling
/// thread as waiting; a duration that is not a number or nil is first converted by `convert`
/// (a Lua function, which raises for a value that does not convert), and when `record`
/// declines (false, or a panic) `begin` files the thread, making it a task first, or returns
/// why it cannot, which `wait` raises as a string at its caller's line; then it yields.
/// Resumed with the scheduler's wake-up ([`resume_from_wait`], or the resume mark and one
/// value), it returns the wake-up's value; resumed with anything else, it calls `abandon`
/// (which drops the wake-up, contract rule 12) and returns what it was resumed with.
///
/// mlua's callback machinery (argument conversion, error wrapping, `Lua::current_thread`) cost
/// about 1,100 instructions a wait: wait_cycles took 6.61e9 instructions with it, 5.50e9
/// without (callgrind); yielding from here rather than from Lua saved about 300 more, and
/// checking the argument here rather than in a Lua wrapper 160 more.
///
/// The closure owns `data` through a userdata upvalue, released when the collector frees it.
pub(crate) fn create_wait<T: 'static>(
    lua: &Lua,
    data: Rc<T>,
    record: fn(&T, ThreadPtr, f64) -> bool,
    convert: Function,
    begin: Function,
    abandon: Function,
) -> mlua::Result<Function> {
    let payload = Box::into_raw(Box::new(Waiter { data, record }));
    let owned = Cell::new(false);
    // SAFETY: `exec_raw` runs the closure in a protected call with `convert`, `abandon` and
    // `begin` on the stack and room for three values more; the closure holds nothing with a
    // destructor, so an allocation error raised by the VM can unwind it. Once the userdata
    // holds `payload`, its destructor owns it.
    let made = unsafe {
        lua.exec_raw::<Function>((convert, abandon, begin), |state| {
            let slot = ffi::lua_newuserdatadtor(
                state,
                std::mem::size_of::<*mut Waiter<T>>(),
                drop_waiter::<T>,
            );
            slot.cast::<*mut Waiter<T>>().write(payload);
            owned.set(true);
            ffi::lua_insert(state, -4);
            ffi::lua_pushcclosurek(
                state,
                wait_entry::<T>,
                c"wait".as_ptr(),
                4,
                Some(wait_continue),
            );
        })
    };
    if made.is_err() && !owned.get() {
        // SAFETY: no userdata took the payload, so this is its only owner.
        drop(unsafe { Box::from_raw(payload) });
    }
    made
}

struct Waiter<T> {
    data: Rc<T>,
    record: fn(&T, ThreadPtr, f64) -> bool,
}

/// The waiter of the running `wait` closure.
///
/// # Safety
/// Only inside `wait_entry` or `wait_continue`, whose upvalue 1 is the userdata made by
/// `create_wait`: it holds a live payload until the closure is collected.
unsafe fn waiter<'a, T>(state: *mut ffi::lua_State) -> &'a Waiter<T> {
    // SAFETY: in `wait_entry` or `wait_continue` (the caller's guarantee), upvalue 1 is the
    // userdata `create_wait` made, holding a `*mut Waiter<T>` of the same `T` that stays live
    // until the closure, which is running, is collected.
    unsafe { &**ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<*const Waiter<T>>() }
}

unsafe extern "C-unwind" fn wait_entry<T>(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by the VM as the `wait` closure, whose upvalues are those `create_wait`
    // gave it. Lua errors raised here (by `convert`, by `begin`, or `begin`'s refusal) unwind
    // this frame, which then holds nothing with a destructor; a C function may push three
    // values without checking the stack.
    unsafe {
        // `task.wait()` first: it is the common call, and `lua_gettop` the cheapest test.
        let nargs = ffi::lua_gettop(state);
        let seconds = match nargs {
            0 => 0.0,
            _ => match ffi::lua_type(state, 1) {
                ffi::LUA_TNUMBER => ffi::lua_tonumber(state, 1),
                ffi::LUA_TNIL => 0.0,
                _ => {
                    // Through `call_unyieldable` (see there); `convert` returns a number.
                    ffi::lua_settop(state, 1);
                    ffi::lua_pushcfunction(state, call_unyieldable);
                    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
                    ffi::lua_pushvalue(state, 1);
                    ffi::lua_call(state, 2, 1);
                    ffi::lua_tonumber(state, -1)
                }
            },
        };
        let waiter = waiter::<T>(state);
        let thread = ThreadPtr(state);
        let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (waiter.record)(&waiter.data, thread, seconds)
        }))
        .unwrap_or(false);
        if !recorded {
            ffi::lua_settop(state, 0);
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(4));
            ffi::lua_pushnumber(state, seconds);
            ffi::lua_call(state, 1, 1);
            if ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
                // A refusal: raised as Luau's own functions raise theirs, a plain string
                // behind the caller's position (an mlua callback's error is a userdata).
                ffi::luaL_where(state, 1);
                ffi::lua_insert(state, -2);
                ffi::lua_concat(state, 2);
                ffi::lua_error(state);
            }
            ffi::lua_settop(state, 0);
        }
        // Luau shows a C continuation its function's arguments below the resumer's values:
        // none are left, so that it finds the resumer's alone (`begin` left none). Nothing
        // else is pushed, so the thread has at least `LUA_MINSTACK` free slots (see
        // `is_suspended_in_yield`).
        if nargs != 0 {
            ffi::lua_settop(state, 0);
        }
        ffi::lua_yield(state, 0)
    }
}

/// Calls the function below the top of the stack with the value on top, for one result, from
/// a C frame that has no continuation. Luau lets Lua code that a C function with a
/// continuation calls yield (`wait` has one): called from `wait` directly, `task.luau`'s
/// conversion could be stopped midway by the watchdog at the end of a slice, and once resumed
/// it returned into `wait`'s continuation, which took the argument left on the stack for a
/// hand resume's value and returned it at once (tests/it/time/wait.rs).
unsafe extern "C-unwind" fn call_unyieldable(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by `wait_entry` with the function and its argument; errors raised by the
    // function unwind this frame, which holds nothing with a destructor.
    unsafe { ffi::lua_call(state, 1, 1) };
    1
}

unsafe extern "C-unwind" fn wait_continue(state: *mut ffi::lua_State, _: c_int) -> c_int {
    // SAFETY: called by the VM when the `wait` closure's thread is resumed, with the resumer's
    // values on the stack; errors raised by `abandon` unwind this frame, which holds nothing
    // with a destructor.
    unsafe {
        let count = ffi::lua_gettop(state);
        if count == 1 && WAKING.get() == state {
            WAKING.set(std::ptr::null_mut());
            return 1;
        }
        // The wake-up as other paths deliver it. `lua_tolightuserdata` is null for anything
        // else; the mark is a constant rather than an upvalue: fetching an upvalue cost 65
        // instructions (callgrind).
        if count == 2 && ffi::lua_tolightuserdata(state, 1) == resume_mark().0 {
            return 1;
        }
        ffi::lua_checkstack(state, 1);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(3));
        ffi::lua_call(state, 0, 0);
        count
    }
}

unsafe extern "C" fn drop_waiter<T>(_: *mut ffi::lua_State, slot: *mut c_void) {
    // SAFETY: the VM calls this once, when it frees the userdata, whose block `create_wait`
    // wrote the payload's pointer into.
    let payload = unsafe { slot.cast::<*mut Waiter<T>>().read() };
    // SAFETY: the payload came from `Box::into_raw` in `create_wait`, and the userdata was its
    // only owner from then on: this is the one release.
    drop(unsafe { Box::from_raw(payload) });
}

/// How a thread came back from [`resume_from_wait`].
pub(crate) enum RawResumed {
    /// It yielded; `pending` when it yielded mlua's pending marker alone (blocked in an mlua
    /// future, polled with no waker of the scheduler's).
    Yielded { pending: bool },
    /// It returned; its results were dropped, unless the caller asked to keep them.
    Finished,
    /// It failed with this status; the error value is on top of its stack for
    /// [`take_resume_error`].
    Failed(c_int),
}

/// Whether the thread is suspended in a yield and has room for the two values of a wake-up.
/// A thread that yielded from a C function (`wait`, `coroutine.yield`) has that room already;
/// otherwise its stack grows, which can raise an out-of-memory error, as mlua's own
/// `check_stack` before a resumption can: call it with no borrow held.
///
/// # Safety
/// `thread` must be alive.
pub(crate) unsafe fn can_resume_with_wakeup(thread: ThreadPtr) -> bool {
    // SAFETY: `thread` is alive (the caller's guarantee); `lua_checkstack` grows the stack of
    // a suspended thread, as mlua does before pushing a resumption's arguments.
    unsafe { is_suspended_in_yield(thread) && ffi::lua_checkstack(thread.0, 2) != 0 }
}

/// Whether the thread is suspended in a yield. One that yielded from `wait` (see
/// [`create_wait`]) also has room for a wake-up's values, with no check: Luau gives a C
/// function `LUA_MINSTACK` (20) free slots above its arguments, `wait` yields without pushing
/// any, and the collector's shrinking of stacks keeps them. That holds only while nothing that
/// `wait` calls can yield: Luau lowers the frame's limit when code called from a C function
/// with a continuation yields, which is why `wait` converts a duration through a frame that
/// cannot. `lua_checkstack` cost 46 instructions a wait (callgrind).
///
/// # Safety
/// `thread` must be alive.
pub(crate) unsafe fn is_suspended_in_yield(thread: ThreadPtr) -> bool {
    // SAFETY: `thread` is alive (the caller's guarantee); `lua_status` reads one field.
    unsafe { ffi::lua_status(thread.0) == ffi::LUA_YIELD }
}

thread_local! {
    /// The thread that [`resume_from_wait`] is resuming, until `wait`'s continuation takes it:
    /// how the continuation knows the scheduler's wake-up without a mark on the stack. Pushing
    /// the mark and checking it cost 64 instructions a wait (callgrind).
    static WAKING: Cell<*mut ffi::lua_State> = const { Cell::new(std::ptr::null_mut()) };
}

/// Resumes a thread suspended in `wait` (see [`create_wait`]) with the scheduler's wake-up,
/// `elapsed`, through the VM's own `lua_resume` rather than mlua's async thread: `wait` then
/// returns `elapsed`, as if resumed with `(resume_mark(), elapsed)`, at a third of what mlua's
/// `AsyncThread` and `MultiValue` cost (callgrind). An mlua async function reached this way is
/// polled with no waker of the scheduler's, so the caller treats a pending one as woken and
/// polls it again with the task's own waker.
///
/// # Safety
/// `thread` must be alive and suspended in `wait` (which leaves room for the value, see
/// [`is_suspended_in_yield`]); `from` is the running thread.
// Kept a call of its own, with `resume_pushed` inside: inlined into the cycle instead, it
// reached its thread-local through a call, 9 instructions more a wait (callgrind, wait_cycles).
#[inline(never)]
pub(crate) unsafe fn resume_from_wait(
    from: ThreadPtr,
    thread: ThreadPtr,
    elapsed: f64,
) -> RawResumed {
    let co = thread.0;
    WAKING.set(co);
    // SAFETY: per the caller, the thread is suspended in `wait` with room for the value.
    let resumed = unsafe {
        ffi::lua_pushnumber(co, elapsed);
        resume_pushed(from, co, 1, false)
    };
    // Taken by the continuation, unless the resumption failed before it ran.
    WAKING.set(std::ptr::null_mut());
    resumed
}

/// Resumes a yielded thread with `mark` and `values`, as [`resume_from_wait`] does with a
/// wake-up: how a task blocked on a Spindle future gets its results. mlua's
/// `AsyncThread`, the thread's handle and a `MultiValue` with the mark in front cost 2,500 of
/// the 9,400 instructions of a pend-once call (callgrind). With `keep`, a thread that returns
/// keeps its results on its stack for [`take_results`].
///
/// # Safety
/// `thread` must be alive and [`can_resume_with_wakeup`]. Call with no borrow held: growing
/// the thread's stack for the values can raise an out-of-memory error, as mlua's own
/// `check_stack` before a resumption can.
pub(crate) unsafe fn resume_with_values(
    lua: &Lua,
    thread: ThreadPtr,
    mark: LightUserData,
    values: &MultiValue,
    keep: bool,
) -> mlua::Result<RawResumed> {
    let co = thread.0;
    let count = c_int::try_from(values.len() + 1).map_err(|_| mlua::Error::StackError)?;
    // SAFETY: the thread is alive and suspended (the caller's guarantee); growing its stack
    // may raise, which the caller allows for.
    let from = unsafe { push_values(lua, co, Some(mark), values, count) }?;
    // SAFETY: the caller guarantees the thread is alive and suspended in a yield, and
    // `push_values` pushed its `count` resumption values, as `resume_pushed` asks.
    Ok(unsafe { resume_pushed(from, co, count, keep) })
}

/// Pushes `mark`, when given, and then `values` onto `co`'s stack, `room` slots in all,
/// checked first. The values go through the running thread's stack, which mlua's push code
/// works on (it is also the thread a resumption comes from), and move over with `lua_xmove`.
/// Returns the running thread.
///
/// # Safety
/// `co` must be alive and not running; `room` must count the mark and the values.
unsafe fn push_values(
    lua: &Lua,
    co: *mut ffi::lua_State,
    mark: Option<LightUserData>,
    values: &MultiValue,
    room: c_int,
) -> mlua::Result<ThreadPtr> {
    lua.exec_raw_lua(|raw| {
        // SAFETY: `co` is alive (the caller's guarantee); `push_into_stack_multi` checks the
        // running thread's stack and pushes the values, which `lua_xmove` moves over, behind
        // the mark, into the room checked for.
        unsafe {
            if ffi::lua_checkstack(co, room) == 0 {
                return Err(mlua::Error::StackError);
            }
            let running = raw.state();
            let top = ffi::lua_gettop(running);
            let pushed = match values.push_into_stack_multi(raw) {
                Ok(pushed) => pushed,
                Err(error) => {
                    ffi::lua_settop(running, top);
                    return Err(error);
                }
            };
            if let Some(mark) = mark {
                ffi::lua_pushlightuserdata(co, mark.0);
            }
            ffi::lua_xmove(running, co, pushed);
            Ok(ThreadPtr(running))
        }
    })
}

/// How many values [`start_with_values`] moves onto a thread that has never run: a new
/// thread's stack has `2 * LUA_MINSTACK` (40) slots, one of them its function, so no stack
/// grows (growing one could raise an out-of-memory error outside any protected call of the
/// thread's own). A start with more takes the general path.
pub(crate) const MAX_START_VALUES: usize = 16;

/// Whether `thread`, made by mlua's `create_thread` and never resumed since, can be started
/// by [`start_with_values`] with `count` values: its function is alone on its stack, and
/// `count` is at most [`MAX_START_VALUES`].
///
/// # Safety
/// `thread` must be alive, made by `Lua::create_thread` and not resumed since.
pub(crate) unsafe fn can_start_with(thread: ThreadPtr, count: usize) -> bool {
    let co = thread.0;
    // SAFETY: `thread` is alive (the caller's guarantee); the reads only look at its state.
    count <= MAX_START_VALUES
        && unsafe {
            ffi::lua_status(co) == ffi::LUA_OK
                && ffi::lua_gettop(co) == 1
                && ffi::lua_type(co, 1) == ffi::LUA_TFUNCTION
        }
}

/// Starts a thread that has never run with `values` as its function's arguments, through
/// `lua_resume` rather than mlua's `AsyncThread`, as [`resume_with_values`] resumes a yielded
/// one: the host's spawn of a task whose outcome it does not keep. Its results are dropped.
///
/// # Safety
/// `thread` must be alive and pass [`can_start_with`] for `values`, with no Lua run since.
pub(crate) unsafe fn start_with_values(
    lua: &Lua,
    thread: ThreadPtr,
    values: &MultiValue,
) -> mlua::Result<RawResumed> {
    let co = thread.0;
    let count = c_int::try_from(values.len()).map_err(|_| mlua::Error::StackError)?;
    // SAFETY: the thread is alive and new, with room for `count` values above its function
    // (`can_start_with`), so `lua_checkstack` grows nothing and the values land above the
    // function.
    let from = unsafe { push_values(lua, co, None, values, count) }?;
    // SAFETY: the thread is alive and new, its function and then its `count` arguments on
    // its stack, which is how `lua_resume` starts a coroutine.
    Ok(unsafe { resume_pushed(from, co, count, false) })
}

/// `lua_resume` of a thread with its `nargs` resumption values pushed; with `keep`, the
/// results of a thread that returns, or the values of one that yields (not for an mlua
/// future), stay on its stack, for [`take_results`] or [`drop_results`].
///
/// # Safety
/// `co` must be alive, suspended in a yield, with its `nargs` values on top of its stack.
#[inline(always)]
unsafe fn resume_pushed(
    from: ThreadPtr,
    co: *mut ffi::lua_State,
    nargs: c_int,
    keep: bool,
) -> RawResumed {
    // SAFETY: the caller guarantees `co` is alive and suspended with its `nargs` values on
    // top, which `lua_resume` needs; it catches every error raised inside the thread and
    // reports it as its status, so nothing unwinds into this frame.
    unsafe {
        match ffi::lua_resume(co, from.0, nargs, std::ptr::null_mut()) {
            ffi::LUA_YIELD => {
                // `lua_tolightuserdata` is null for anything else; skipping `lua_type` and an
                // empty stack's `lua_settop` saved 50 instructions a wait (callgrind).
                let top = ffi::lua_gettop(co);
                let pending = top == 1 && ffi::lua_tolightuserdata(co, -1) == Lua::poll_pending().0;
                if top != 0 && (pending || !keep) {
                    ffi::lua_settop(co, 0);
                }
                RawResumed::Yielded { pending }
            }
            ffi::LUA_OK => {
                if !keep {
                    ffi::lua_settop(co, 0);
                }
                RawResumed::Finished
            }
            status => RawResumed::Failed(status),
        }
    }
}

/// Drops the values a thread yielded, left on its stack by [`resume_with_values`].
///
/// # Safety
/// `thread` must be alive and suspended in a yield.
pub(crate) unsafe fn drop_results(thread: ThreadPtr) {
    // SAFETY: per the caller; shrinking the stack of a suspended thread neither allocates nor
    // raises.
    unsafe { ffi::lua_settop(thread.0, 0) }
}

/// The results a thread returned with (or the values it yielded), left on its stack by
/// [`resume_with_values`].
///
/// # Safety
/// `thread` must be alive, finished, with its results (and nothing else) on its stack.
pub(crate) unsafe fn take_results(lua: &Lua, thread: ThreadPtr) -> mlua::Result<MultiValue> {
    // SAFETY: the caller guarantees the thread is alive with its results alone on its stack,
    // so `count` values move; `exec_raw` runs the closure in a protected call, which catches
    // an out-of-memory error from growing the stack, and the closure holds nothing to drop.
    unsafe {
        let count = ffi::lua_gettop(thread.0);
        lua.exec_raw::<MultiValue>((), |state| {
            ffi::luaL_checkstack(state, count, std::ptr::null());
            ffi::lua_xmove(thread.0, state, count);
        })
    }
}

/// The error a thread failed with in [`resume_from_wait`] or [`resume_with_values`], as mlua's
/// own resume reports it: an error from Rust as it was, anything else as a string with the
/// thread's traceback; running out of memory as `not enough memory` with the traceback (rule 23
/// of the task contract). A panic that a Rust function raised inside the thread resumes.
///
/// The traceback is taken before the error value is turned into a string: that runs Lua (a
/// `__tostring`), which may cancel, close or free the thread, so from then on the thread is
/// only reached through a handle, never through `thread`.
///
/// # Safety
/// `thread` must be alive, just failed with `status`, its error on top of its stack, and no Lua
/// may have run since.
pub(crate) unsafe fn take_resume_error(lua: &Lua, thread: ThreadPtr, status: c_int) -> mlua::Error {
    // A handle on the thread first, with its error value: the raw pointer is not used after.
    // SAFETY: `exec_raw` gives a protected call with room for three values; moving the error
    // off the thread leaves it the slot into which `lua_pushthread` pushes the thread itself,
    // which moves over too. No Lua runs (the limit is lifted, so the handles cannot fail).
    let taken = with_memory_limit_lifted(lua, || unsafe {
        lua.exec_raw::<(Value, Thread)>((), |state| {
            let co = thread.0;
            ffi::lua_xmove(co, state, 1);
            ffi::lua_pushthread(co);
            ffi::lua_xmove(co, state, 1);
        })
    });
    let (value, thread) = match taken {
        Ok((Value::Error(error), thread)) => return with_thread_traceback(lua, &thread, *error),
        Ok(taken) => taken,
        Err(error) => return error,
    };
    let traceback = traceback(lua, &thread).unwrap_or_default();
    if status == ffi::LUA_ERRMEM {
        return mlua::Error::MemoryError(with_traceback(MEMORY_MESSAGE, &traceback));
    }
    // Lua may run here (a `__tostring`) and do anything to the thread: its traceback is taken.
    // SAFETY: `exec_raw` gives a protected call with the value on the stack and room for
    // three more; `luaL_tolstring` may raise (a failing `__tostring`, no memory), which the
    // protected call catches, and the closure holds nothing to drop. `thread` is not used.
    let message = unsafe {
        lua.exec_raw::<mlua::LuaString>(value, |state| {
            ffi::luaL_tolstring(state, -1, std::ptr::null_mut());
            ffi::lua_remove(state, -2);
        })
    };
    let message = match message {
        Ok(message) => message.to_string_lossy(),
        // A `__tostring` that fails (or returns no string) makes the message.
        Err(error) => crate::error::TaskError::from_lua(None, &error).message,
    };
    mlua::Error::RuntimeError(with_traceback(&message, &traceback))
}

/// The error of a resumption through mlua's `AsyncThread`, with the traceback of the thread
/// that failed where mlua gave none, as [`take_resume_error`] gives one: mlua takes none for
/// running out of memory, nor for an error whose `__tostring` raises it again (Luau's "error in
/// error handling"), nor for a Rust function that failed at the memory limit (its error says
/// `<traceback unavailable>`). (When the error value's `__tostring` fails, mlua's error carries the
/// traceback of the `__tostring`; telling that from the thread's own would take a second
/// traceback of every error: 20,000 tasks failing 12 calls deep took 1.08 s against 0.72 s,
/// median of 6 runs of `spindle run`.)
pub(crate) fn with_thread_traceback(lua: &Lua, thread: &Thread, error: mlua::Error) -> mlua::Error {
    match error {
        // mlua's own traceback of the error failed for want of memory, and its message took
        // the error's place: at the limit, that is the task running out of memory (rule 23).
        mlua::Error::RuntimeError(message)
            if message == TRACEBACK_FAILED && is_near_memory_limit(lua) =>
        {
            let traced = traceback(lua, thread).unwrap_or_default();
            mlua::Error::MemoryError(with_traceback(MEMORY_MESSAGE, &traced))
        }
        mlua::Error::MemoryError(message) if !message.contains(TRACEBACK_HEADER) => {
            match traceback(lua, thread) {
                Ok(traceback) => mlua::Error::MemoryError(with_traceback(&message, &traceback)),
                Err(_) => mlua::Error::MemoryError(message),
            }
        }
        mlua::Error::RuntimeError(message) if !message.contains(TRACEBACK_HEADER) => {
            match traceback(lua, thread) {
                Ok(traceback) => mlua::Error::RuntimeError(with_traceback(&message, &traceback)),
                Err(_) => mlua::Error::RuntimeError(message),
            }
        }
        mlua::Error::CallbackError {
            traceback: untaken,
            cause,
        } if untaken == NO_TRACEBACK => match traceback(lua, thread) {
            Ok(traceback) => mlua::Error::CallbackError { traceback, cause },
            Err(_) => mlua::Error::CallbackError {
                traceback: untaken,
                cause,
            },
        },
        other => other,
    }
}

/// The error of mlua's traceback code (`luaL_traceback`, mlua-sys's compat) when it cannot
/// grow the stack, which replaces the error it was taking the traceback of.
const TRACEBACK_FAILED: &str = "stack overflow (not enough stack)";

/// Whether the VM has a memory limit and uses all but a sixteenth of it.
pub(crate) fn is_near_memory_limit(lua: &Lua) -> bool {
    let limit = memory_limit(lua);
    limit > 0 && lua.used_memory() >= limit - limit / 16
}

/// The VM's memory limit; 0 for none.
pub(crate) fn memory_limit(lua: &Lua) -> usize {
    // mlua has no getter for the limit: setting one returns the one before.
    match lua.set_memory_limit(0) {
        Ok(limit) => {
            let _ = lua.set_memory_limit(limit);
            limit
        }
        Err(_) => 0,
    }
}

/// What mlua writes for the traceback of a Rust function's error when it could not take one.
const NO_TRACEBACK: &str = "<traceback unavailable>";

/// The first line of a traceback.
const TRACEBACK_HEADER: &str = "stack traceback:";

/// Luau's message for a failed allocation.
pub(crate) const MEMORY_MESSAGE: &str = "not enough memory";

/// `message` above `traceback`, as `luaL_traceback` joins them.
pub(crate) fn with_traceback(message: &str, traceback: &str) -> String {
    if traceback.is_empty() {
        message.to_owned()
    } else {
        format!("{message}\n{traceback}")
    }
}

/// The traceback of a thread that is suspended or failed, as mlua writes the tracebacks of
/// errors (`luaL_traceback`), from its `stack traceback:` line on. Taken with the memory limit
/// lifted, so that a task that ran out of memory still gets one: no Lua runs meanwhile.
pub(crate) fn traceback(lua: &Lua, thread: &Thread) -> mlua::Result<String> {
    // SAFETY: `exec_raw` runs the closure in a protected call with the thread as its argument
    // (which keeps it alive) and room for three values: `luaL_traceback` pushes one string
    // and may raise (for want of stack), which the protected call catches; the closure holds
    // nothing to drop.
    let traced = with_memory_limit_lifted(lua, || unsafe {
        lua.exec_raw::<mlua::LuaString>(thread, |state| {
            let co = ffi::lua_tothread(state, -1);
            ffi::luaL_traceback(state, co, std::ptr::null(), 0);
            ffi::lua_remove(state, -2);
        })
    })?;
    Ok(traced.to_string_lossy())
}

/// Runs `f` with the VM's memory limit lifted, and puts the limit back after (even if `f`
/// panics). Only for work that runs no Lua code and allocates little: closing a thread (Luau
/// reallocates its stack, and an allocation failure there is raised where nothing catches it
/// and traps), or taking the traceback of a report, which a task at the limit must still get.
/// (mlua's `luaL_traceback` on Luau lists every level: a stack overflow's is about 1 MB.)
pub(crate) fn with_memory_limit_lifted<R>(lua: &Lua, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a Lua, usize);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.set_memory_limit(self.1);
        }
    }
    match lua.set_memory_limit(0) {
        Ok(0) | Err(_) => f(),
        Ok(limit) => {
            let _restore = Restore(lua, limit);
            f()
        }
    }
}

/// Whether a resumption of the thread that just failed was refused before the thread ran
/// (by Luau's `resume_start`: "C stack overflow" when the resumer is nested too deep; or by
/// mlua on its way there): the thread is then not dead but as it was, new or suspended, while
/// an error raised inside it leaves it with an error status. A failed thread that Lua code
/// reset meanwhile (`coroutine.close` from its error's `__tostring`) reads as new too.
pub(crate) fn failed_before_running(thread: &Thread) -> bool {
    // SAFETY: the state is valid while the handle lives; this reads one field.
    let status = unsafe { ffi::lua_status(thread.state()) };
    status == ffi::LUA_OK || status == ffi::LUA_YIELD
}

/// A frame of the running thread's stack, as `lua_getinfo` describes it.
pub(crate) struct Frame {
    /// The chunk's short name (`[C]` for a C function).
    pub source: String,
    /// The line running in the frame; 0 when unknown (a C function).
    pub line: c_int,
    name: Option<String>,
    defined: c_int,
    is_c: bool,
}

impl Frame {
    /// Whether the frame runs a script's code: not a C function, nor one of Spindle's own
    /// chunks (named `[spindle ...]`).
    pub(crate) fn is_script(&self) -> bool {
        self.line > 0 && !self.source.starts_with("[spindle ")
    }
}

impl std::fmt::Display for Frame {
    /// As mlua's `luaL_traceback` shows a level, without its search of loaded modules.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.source)?;
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
        }
        match &self.name {
            Some(name) => write!(f, " in function '{name}'"),
            None if !self.is_c => write!(f, " in function <{}:{}>", self.source, self.defined),
            None => write!(f, " in ?"),
        }
    }
}

/// The frames of the running thread, innermost first. Read without calling into the VM or
/// allocating in it: usable where the C stack is spent, so that no call can be made.
pub(crate) fn running_frames(lua: &Lua) -> Vec<Frame> {
    let state = running_thread(lua).0;
    let text = |ptr: *const std::ffi::c_char| {
        // SAFETY: `lua_getinfo` leaves null or a NUL-terminated string, alive while the frame
        // is (or inside `ar` itself, which stays in place).
        (!ptr.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy())
    };
    let mut frames = Vec::new();
    for level in 0.. {
        let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
        // SAFETY: the running thread is alive; `lua_getinfo` only reads it and fills `ar`.
        if unsafe { ffi::lua_getinfo(state, level, c"sln".as_ptr(), ar.as_mut_ptr()) } == 0 {
            break;
        }
        // SAFETY: filled above.
        let ar = unsafe { ar.assume_init_ref() };
        let is_c = text(ar.what).is_some_and(|what| what == "C");
        frames.push(Frame {
            source: text(ar.short_src).map_or_else(|| "?".to_owned(), |s| s.into_owned()),
            line: ar.currentline,
            name: text(ar.name).map(|s| s.into_owned()),
            defined: ar.linedefined,
            is_c,
        });
    }
    frames
}

/// Hands `f` the chunk name and line where the running thread stands in a script's code: its
/// innermost frame that is neither a C function nor one of Spindle's own chunks (`task.spawn`
/// reaches the script through both). `None` when no frame runs a script (the host's own call).
/// Reads the stack without calling into the VM or allocating in it.
pub(crate) fn script_position<R>(lua: &Lua, f: impl FnOnce(&[u8], u32) -> R) -> Option<R> {
    let state = running_thread(lua).0;
    for level in 0.. {
        let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
        // SAFETY: the running thread is alive; `lua_getinfo` only reads it and fills `ar`.
        if unsafe { ffi::lua_getinfo(state, level, c"sl".as_ptr(), ar.as_mut_ptr()) } == 0 {
            return None;
        }
        // SAFETY: filled above.
        let ar = unsafe { ar.assume_init_ref() };
        if ar.currentline <= 0 || ar.short_src.is_null() {
            continue;
        }
        // SAFETY: `lua_getinfo` left a NUL-terminated string, alive while the frame is.
        let source = unsafe { std::ffi::CStr::from_ptr(ar.short_src) }.to_bytes();
        if !source.starts_with(b"[spindle ") {
            return Some(f(source, ar.currentline as u32));
        }
    }
    None
}

/// Hands `f` the chunk name and first line of the function a thread that has not started will
/// run (what mlua put on its stack); `None` for any other thread.
pub(crate) fn defined_at<R>(thread: &Thread, f: impl FnOnce(&[u8], u32) -> R) -> Option<R> {
    let state = thread.state();
    // SAFETY: the state is valid while the handle lives; these read it only.
    unsafe {
        if ffi::lua_status(state) != ffi::LUA_OK || ffi::lua_gettop(state) < 1 {
            return None;
        }
        if ffi::lua_type(state, 1) != ffi::LUA_TFUNCTION || ffi::lua_iscfunction(state, 1) != 0 {
            return None;
        }
    }
    let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
    // SAFETY: a negative level names the value at that index from the top; the function at
    // index 1 is `-top`. `lua_getinfo` only reads it and fills `ar`.
    let found = unsafe {
        let level = -ffi::lua_gettop(state);
        ffi::lua_getinfo(state, level, c"s".as_ptr(), ar.as_mut_ptr())
    };
    if found == 0 {
        return None;
    }
    // SAFETY: filled above.
    let ar = unsafe { ar.assume_init_ref() };
    if ar.short_src.is_null() {
        return None;
    }
    // SAFETY: `lua_getinfo` left a NUL-terminated string inside `ar`.
    let source = unsafe { std::ffi::CStr::from_ptr(ar.short_src) }.to_bytes();
    Some(f(source, ar.linedefined.max(0) as u32))
}

/// The task slot marked on the thread, if any. Luau gives each thread one pointer of user data,
/// which Spindle uses for this (`slot + 1`, so that null means none), and for the sliced hint
/// (its top bit, see [`set_sliced_hint`]).
pub(crate) fn slot_mark(thread: &Thread) -> Option<u32> {
    // SAFETY: the state is valid while the handle lives.
    unsafe { slot_mark_raw(ThreadPtr::of(thread)) }
}

/// The bit of a thread's user data that says that the engine's set of sliced threads may hold
/// it: Spindle's `coroutine.resume` and `wrap` leave such a thread, as a task's, to `task.luau`,
/// which knows the set. Set wherever a thread goes into the set; cleared where `task.luau`
/// takes one out (a bit left set costs a resume its fast path, nothing else).
const SLICED_HINT: usize = 1 << (usize::BITS - 1);

/// The thread's user data, as an integer.
///
/// # Safety
/// `thread` must be alive.
unsafe fn thread_data(thread: ThreadPtr) -> usize {
    // SAFETY: `thread` is alive (the caller's guarantee); this reads one field.
    unsafe { ffi::lua_getthreaddata(thread.0) as usize }
}

/// `slot_mark` for a raw state.
///
/// # Safety
/// `thread` must be alive.
pub(crate) unsafe fn slot_mark_raw(thread: ThreadPtr) -> Option<u32> {
    // SAFETY: `thread` is alive (the caller's guarantee).
    let data = unsafe { thread_data(thread) } & !SLICED_HINT;
    data.checked_sub(1)
        .and_then(|slot| u32::try_from(slot).ok())
}

pub(crate) fn set_slot_mark(thread: &Thread, slot: u32) {
    let ptr = ThreadPtr::of(thread);
    // SAFETY: the state is valid while the handle lives.
    let hint = unsafe { thread_data(ptr) } & SLICED_HINT;
    let data = ((slot as usize + 1) | hint) as *mut std::ffi::c_void;
    // SAFETY: the state is valid while the handle lives; this writes one field.
    unsafe { ffi::lua_setthreaddata(ptr.0, data) }
}

/// Clears a thread's slot mark.
///
/// # Safety
/// The thread must still be alive: something (the task table) must still reference it.
pub(crate) unsafe fn clear_slot_mark(thread: ThreadPtr) {
    // SAFETY: the caller keeps the thread alive, so its state is valid; this reads and writes
    // one field.
    unsafe {
        let hint = thread_data(thread) & SLICED_HINT;
        ffi::lua_setthreaddata(thread.0, hint as *mut std::ffi::c_void)
    }
}

/// Marks the thread as one that the engine's set of sliced threads may hold (see
/// [`SLICED_HINT`]).
pub(crate) fn set_sliced_hint(thread: &Thread) {
    // SAFETY: the state is valid while the handle lives.
    unsafe { set_sliced_hint_raw(ThreadPtr::of(thread), true) }
}

/// Sets or clears the thread's sliced hint.
///
/// # Safety
/// `thread` must be alive.
pub(crate) unsafe fn set_sliced_hint_raw(thread: ThreadPtr, on: bool) {
    // SAFETY: `thread` is alive (the caller's guarantee); this reads and writes one field.
    unsafe {
        let data = thread_data(thread);
        let data = if on {
            data | SLICED_HINT
        } else {
            data & !SLICED_HINT
        };
        ffi::lua_setthreaddata(thread.0, data as *mut std::ffi::c_void)
    }
}

/// The chunk name of the loop with which mlua polls an async function's future (mlua 0.12).
const MLUA_POLL_LOOP: &[u8] = b"=__mlua_async_poll";

/// Whether the yielded thread is suspended inside mlua's polling loop, that is, still blocked in
/// an mlua async function (level 0 is `coroutine.yield`, level 1 the loop).
pub(crate) fn is_blocked_in_mlua_future(thread: &Thread) -> bool {
    runs_mlua_poll_loop_at(thread, 1)
}

/// Whether the thread, stopped by the VM interrupt, was running mlua's polling loop itself.
pub(crate) fn is_in_mlua_poll_loop(thread: &Thread) -> bool {
    runs_mlua_poll_loop_at(thread, 0)
}

fn runs_mlua_poll_loop_at(thread: &Thread, level: std::ffi::c_int) -> bool {
    // SAFETY: the state is valid while the handle lives.
    unsafe { runs_chunk_at(ThreadPtr::of(thread), level, MLUA_POLL_LOOP) }
}

/// The chunk name of `task.luau`: the watchdog knows its functions by it (it puts slices off
/// inside them), and its resumes of tasks' threads and of sliced coroutines ([`hand_resumed_by`]).
pub(crate) const TASK_LIB_CHUNK: &str = "=[spindle task]";

/// The standard functions Spindle builds on, captured the first time a scheduler is attached
/// to a `Lua` and kept in its app data for every later one.
#[derive(Clone)]
pub(crate) struct Pristine {
    pub resume: Function,
    pub wrap: Function,
    pub close: Function,
    pub create: Function,
    pub yield_: Function,
    pub status: Function,
}

impl Pristine {
    pub(crate) fn of(lua: &Lua) -> mlua::Result<Self> {
        if let Some(pristine) = lua.app_data_ref::<Pristine>() {
            return Ok(pristine.clone());
        }
        // Read raw, and only Luau's own functions are taken: the scheduler calls some of them
        // where no Lua code may run (`close` with the memory limit lifted), so one that code
        // run before the scheduler was attached replaced is refused.
        let coroutine: Table = lua.globals().raw_get("coroutine").map_err(|_| {
            mlua::Error::runtime("Spindle needs the coroutine library, which this Lua lacks")
        })?;
        let native = |name: &str| -> mlua::Result<Function> {
            let function: Function = coroutine.raw_get(name)?;
            if function.info().what != "C" {
                return Err(mlua::Error::runtime(format!(
                    "Spindle needs Luau's own coroutine.{name}, which was replaced before the scheduler was attached"
                )));
            }
            Ok(function)
        };
        let pristine = Pristine {
            resume: native("resume")?,
            wrap: native("wrap")?,
            close: native("close")?,
            create: native("create")?,
            yield_: native("yield")?,
            status: native("status")?,
        };
        // `set_app_data` panics while the host borrows any app data.
        if lua.try_set_app_data(pristine.clone()).is_err() {
            return Err(mlua::Error::runtime(
                "cannot attach a scheduler while the Lua's app data is borrowed",
            ));
        }
        Ok(pristine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    #[test]
    fn tells_a_new_thread_from_a_started_one() {
        let lua = Lua::new();
        let thread = lua
            .create_thread(lua.load("coroutine.yield()").into_function().unwrap())
            .unwrap();
        assert!(!has_started(&thread));
        thread.resume::<()>(()).unwrap();
        assert!(has_started(&thread));
    }

    #[test]
    fn sees_a_thread_blocked_in_an_mlua_future_and_only_that() {
        let lua = Lua::new();
        let pending = lua
            .create_async_function(|_, ()| async {
                std::future::pending::<mlua::Result<()>>().await
            })
            .unwrap();
        let blocked = lua.create_thread(pending).unwrap();
        let resumed: mlua::Value = blocked.resume(()).unwrap();
        assert!(matches!(resumed, mlua::Value::LightUserData(p) if p == Lua::poll_pending()));
        assert!(is_blocked_in_mlua_future(&blocked));

        let plain = lua
            .create_thread(lua.load("coroutine.yield()").into_function().unwrap())
            .unwrap();
        plain.resume::<()>(()).unwrap();
        assert!(!is_blocked_in_mlua_future(&plain));
    }

    #[test]
    fn lua_code_on_the_main_thread_cannot_yield_but_a_coroutine_can() {
        let lua = Lua::new();
        let check = lua
            .create_function(|lua, ()| Ok(can_yield(&lua.current_thread())))
            .unwrap();
        lua.globals().set("can_yield", check).unwrap();
        assert!(!lua.load("return can_yield()").eval::<bool>().unwrap());
        let in_coroutine: bool = lua
            .load("return coroutine.wrap(function() return can_yield() end)()")
            .eval()
            .unwrap();
        assert!(in_coroutine);
        let in_comparator: bool = lua
            .load(
                "return coroutine.wrap(function() local r table.sort({2, 1}, function(a, b) r = can_yield() return a < b end) return r end)()",
            )
            .eval()
            .unwrap();
        assert!(!in_comparator, "a C-call boundary cannot be yielded across");
    }
}
