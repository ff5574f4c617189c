//! The watchdog: how long one resumption of a task may run without yielding (Roblox's
//! `ScriptContext:SetTimeout`), and optional time slicing.
//!
//! Luau calls the VM interrupt at every loop back-edge and call. The interrupt counts down and
//! reads the clock only every [`CHECK_EVERY`] calls (at every call where calls are sparse), so a
//! watched run costs one decrement per call. There is no interrupt, and no cost, when no budget
//! is set. A resumption's time is its own: the time of a task it resumes through
//! `task.spawn` is taken off its account.
//!
//! A time slice is not a yield of the task's own (rule 21 of the task contract): the time a
//! task ran in earlier slices since it last yielded by itself counts against its timeout, the
//! time it waited for its turn between them does not.
//!
//! Once a resumption is over budget, the interrupt yields the task's thread if it can; the
//! scheduler then ends the task with [`TIMEOUT_MESSAGE`] (a yield passes through `pcall`, so the
//! task cannot catch it) or, when slicing, queues it behind the others. A slice that ends in a
//! coroutine the task resumed by hand (through Spindle's `coroutine.resume` or `wrap`) yields
//! that coroutine with [`vm::slice_mark`], and `task.luau` carries the slice out to the task,
//! resuming the coroutine when the task goes on. Where the thread cannot yield (inside a
//! metamethod, a `table.sort` comparator), only the timeout applies; a timed-out resumption gets
//! the error raised at every interrupt, until control is back where the task's thread can
//! yield.
//!
//! The VM has one interrupt slot, which mlua's `Lua::set_interrupt` writes too. The watchdog
//! does not silently lose it to the host, nor take it from the host: it chains. An interrupt
//! the host set before the scheduler was built, or sets later, is called after the watchdog's
//! own at every interrupt where the watchdog did not stop the task, and is put back when the
//! scheduler is dropped. A host that replaces the watchdog's interrupt is found out at the next
//! watched resumption ([`keep_installed`]), which puts the watchdog's back in front of the
//! host's; one replaced from inside a running task therefore leaves that resumption unwatched
//! until it yields.
//!
//! Invariant: [`CURRENT`] points at the innermost watched resumption on this OS thread, or is
//! null; a [`Watch`] unlinks itself when it drops, even if a panic unwinds through it.
//! [`CHAINS`] has one entry for each VM of this OS thread that has a watchdog: the interrupt
//! it installed there and the host's that it calls after its own.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::time::{Duration, Instant};

use mlua::{Lua, Thread};

use crate::vm::{self, ThreadPtr};

/// The message of a task stopped by the watchdog, as Roblox words it.
pub const TIMEOUT_MESSAGE: &str = "Script timeout: exhausted allowed execution time";

/// Interrupt calls between two readings of the clock. A tight Luau loop calls the interrupt
/// every few nanoseconds: reading `Instant::now()` at each call made a loop 5x slower. With a
/// reading every 128 calls, a loop runs 31% more instructions than with no interrupt, most of
/// them Luau's own cost of calling one (callgrind, 1.2e7 loop steps and 2e6 calls).
const CHECK_EVERY: u32 = 128;

/// The first check of a resumption comes this soon, so that a resumption whose interrupts are
/// far apart (a loop around slow host calls) is not let run 128 of them unchecked.
const FIRST_CHECK: u32 = 8;

/// After two checks further apart than this, the next [`SPARSE_RUN`] interrupts are checked one
/// by one: reading the clock then costs little next to the work between them, and a loop around
/// a slow host call (two interrupts a step) is checked at every step.
const SPARSE: Duration = Duration::from_millis(1);
const SPARSE_RUN: u32 = 16;

/// Interrupts in a row inside `task.luau` at which the end of a slice may be put off. Its
/// functions reach a resume or a yield in a few (the longest path, `after_resume` after a
/// resume, has about ten).
const MAX_PUT_OFF: u32 = 64;

/// The limits a host sets on one resumption.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Budget {
    /// Past this, the task is stopped with [`TIMEOUT_MESSAGE`].
    pub timeout: Option<Duration>,
    /// Past this, the task is suspended and queued behind the others.
    pub slice: Option<Duration>,
}

impl Budget {
    pub(crate) fn is_unlimited(&self) -> bool {
        self.timeout.is_none() && self.slice.is_none()
    }
}

/// Why the watchdog yielded a task's thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// Over its slice: resume it again later.
    Sliced,
    /// Over the timeout: end it.
    TimedOut,
}

thread_local! {
    /// Interrupt calls left before the next check. Per OS thread: a static shared by the VMs of
    /// several threads ran 4% fewer instructions, but let one VM's calls postpone the check that
    /// another VM's over-budget task is owed at its very next interrupt.
    static COUNTDOWN: Cell<u32> = const { Cell::new(CHECK_EVERY) };
    static CURRENT: Cell<*const Watch> = const { Cell::new(ptr::null()) };
    /// The watchdogs of this OS thread's VMs (a `Lua` never leaves its OS thread).
    static CHAINS: RefCell<Vec<Chain>> = const { RefCell::new(Vec::new()) };
}

/// The watchdog's interrupt in one VM, and the host's that it chains.
struct Chain {
    vm: vm::VmKey,
    /// As read back from the VM's slot once written: the slot still holds the watchdog's
    /// interrupt while it holds this.
    installed: Option<vm::Interrupt>,
    /// The interrupt the host had set, called after the watchdog's.
    host: Option<vm::Interrupt>,
}

/// One watched resumption, linked from [`CURRENT`] while it runs.
pub(crate) struct Watch {
    thread: ThreadPtr,
    budget: Budget,
    /// When the resumption started, moved forward by the time of nested resumptions.
    started: Cell<Instant>,
    /// What the task ran before this resumption since it last yielded of its own accord (in
    /// earlier slices): counted against the timeout, not the slice.
    ran_before: Duration,
    last_check: Cell<Instant>,
    /// Interrupts still to be checked one by one since checks were last found far apart.
    sparse_left: Cell<u32>,
    timed_out: Cell<bool>,
    /// Set when the interrupt yielded the thread, which the scheduler must then deal with.
    yielded: Cell<Option<Overrun>>,
    /// Interrupts in a row at which the end of a slice was put off, inside `task.luau`.
    put_off: Cell<u32>,
    outer: *const Watch,
}

impl Watch {
    /// Runs `resume` (which resumes `thread`) under `budget`, counting time from `started`,
    /// after the task already ran `ran_before` in earlier slices; returns its result, whether
    /// the watchdog yielded the thread, and the task's run time so far, both counted.
    pub(crate) fn run<R>(
        thread: &Thread,
        budget: Budget,
        started: Instant,
        ran_before: Duration,
        resume: impl FnOnce() -> R,
    ) -> (R, Option<Overrun>, Duration) {
        let watch = Watch {
            thread: ThreadPtr::of(thread),
            budget,
            started: Cell::new(started),
            ran_before,
            last_check: Cell::new(started),
            sparse_left: Cell::new(0),
            timed_out: Cell::new(false),
            yielded: Cell::new(None),
            put_off: Cell::new(0),
            outer: CURRENT.get(),
        };
        CURRENT.set(&watch);
        COUNTDOWN.set(COUNTDOWN.get().min(FIRST_CHECK));
        let linked = Linked(&watch);
        let result = resume();
        drop(linked);
        let ran = ran_before.saturating_add(watch.started.get().elapsed());
        (result, watch.yielded.get(), ran)
    }

    /// Whether the resumption is over budget, reading the clock; sets when the next check is.
    fn overrun(&self) -> Option<Overrun> {
        if self.timed_out.get() {
            return Some(Overrun::TimedOut);
        }
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_check.replace(now));
        if gap > SPARSE {
            self.sparse_left.set(SPARSE_RUN);
        }
        if let Some(left) = self.sparse_left.get().checked_sub(1) {
            self.sparse_left.set(left);
            COUNTDOWN.set(0);
        }
        let ran = now.saturating_duration_since(self.started.get());
        let since_own_yield = self.ran_before.saturating_add(ran);
        if self
            .budget
            .timeout
            .is_some_and(|limit| since_own_yield >= limit)
        {
            self.timed_out.set(true);
            return Some(Overrun::TimedOut);
        }
        if self.budget.slice.is_some_and(|limit| ran >= limit) {
            return Some(Overrun::Sliced);
        }
        None
    }
}

impl Watch {
    /// Whether `state` runs in a coroutine that the watched thread resumed by hand through
    /// Spindle's `coroutine.resume` or `wrap`, maybe through further such coroutines, with
    /// every thread on the way able to yield: a slice that ends there can be carried out.
    /// Not through a coroutine that a Rust function resumed, which would take the mark for a
    /// value the coroutine yielded.
    ///
    /// # Safety
    /// `state` must be alive, and the watched thread must be alive (it is being resumed).
    unsafe fn hand_resumes(&self, state: ThreadPtr) -> bool {
        let mut link = self.thread;
        // Luau's C-call limit (200) bounds how deeply coroutines nest.
        for _ in 0..256 {
            // SAFETY: `link` is the watched thread or a coroutine that a live thread resumes.
            if !unsafe { vm::can_yield_raw(link) } {
                return false;
            }
            if link == state {
                return true;
            }
            // SAFETY: `link` is alive, as just above; `hand_resumed_by` asks no more.
            match unsafe { vm::hand_resumed_by(link) } {
                Some(next) => link = next,
                None => return false,
            }
        }
        false
    }
}

/// Unlinks a [`Watch`] from [`CURRENT`], and takes its time off the outer resumption's account.
struct Linked<'a>(&'a Watch);

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        let watch = self.0;
        CURRENT.set(watch.outer);
        // SAFETY: `outer` was the innermost watch when this one was linked; it lives on a stack
        // frame below this one, which cannot have returned while this one runs.
        if let Some(outer) = unsafe { watch.outer.as_ref() } {
            let nested = watch.started.get().elapsed();
            outer.started.set(outer.started.get() + nested);
        }
    }
}

/// The chains of this OS thread, if it has not started to tear down its thread-locals (a
/// scheduler kept in one may be dropped then), and unless one is being changed already.
fn with_chains<R>(f: impl FnOnce(&mut Vec<Chain>) -> R) -> Option<R> {
    CHAINS
        .try_with(|chains| Some(f(&mut *chains.try_borrow_mut().ok()?)))
        .ok()
        .flatten()
}

/// Installs the interrupt that enforces budgets, in front of the one the VM has (the host's,
/// from `Lua::set_interrupt`), which it goes on calling.
pub(crate) fn install(lua: &Lua) {
    let (vm, current) = vm::interrupt(lua);
    chain(lua, vm, current);
}

/// Puts the watchdog's interrupt back in front of the host's if the host replaced it (with
/// `Lua::set_interrupt`, or removed it with `Lua::remove_interrupt`) since it was installed.
/// Called before each watched resumption: a pointer comparison when nothing changed.
pub(crate) fn keep_installed(lua: &Lua) {
    let (vm, current) = vm::interrupt(lua);
    let replaced = with_chains(|chains| {
        chains
            .iter()
            .find(|chain| chain.vm == vm)
            .is_none_or(|chain| !same_interrupt(chain.installed, current))
    });
    if replaced == Some(true) {
        chain(lua, vm, current);
    }
}

/// Removes the watchdog's interrupt, and puts back the host's in its place. An interrupt the
/// host set since the last watched resumption stays as it is.
pub(crate) fn uninstall(lua: &Lua) {
    let (vm, current) = vm::interrupt(lua);
    let removed = with_chains(|chains| {
        let at = chains.iter().position(|chain| chain.vm == vm)?;
        Some(chains.swap_remove(at))
    })
    .flatten();
    if let Some(chain) = removed {
        if same_interrupt(chain.installed, current) {
            vm::set_interrupt(lua, chain.host);
        }
    }
}

/// Installs the watchdog's interrupt in front of `host`, recording the chain.
fn chain(lua: &Lua, vm: vm::VmKey, host: Option<vm::Interrupt>) {
    let ours: vm::Interrupt = if host.is_some() {
        interrupt_chained
    } else {
        interrupt
    };
    vm::set_interrupt(lua, Some(ours));
    let (_, installed) = vm::interrupt(lua);
    let recorded = with_chains(|chains| {
        chains.retain(|chain| chain.vm != vm);
        chains.push(Chain {
            vm,
            installed,
            host,
        });
    });
    if recorded.is_none() {
        // Nowhere to keep the host's interrupt (the OS thread is ending): leave it be.
        vm::set_interrupt(lua, host);
    }
}

fn same_interrupt(a: Option<vm::Interrupt>, b: Option<vm::Interrupt>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => ptr::fn_addr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The interrupt of a VM whose host had one: the watchdog's, then the host's unless the
/// watchdog yielded the thread (the host's would yield it a second time, or raise in a thread
/// that is no longer running). A raise of the watchdog's never comes back here.
unsafe extern "C-unwind" fn interrupt_chained(
    state: *mut mlua::ffi::lua_State,
    gc: std::ffi::c_int,
) {
    // SAFETY: the VM calls this as its interrupt, with the thread it runs.
    if unsafe { watch(state, gc) } {
        return;
    }
    // SAFETY: `state` is the thread the VM is running, which is alive during its interrupt.
    let vm = unsafe { vm::vm_key_raw(ThreadPtr::from_ptr(state)) };
    // Copied out before the call: the host's interrupt may run Lua code, and this again.
    // `try_with`: at the OS thread's exit the table may be gone before the last VM.
    let host = CHAINS
        .try_with(|chains| {
            let chains = chains.try_borrow().ok()?;
            chains.iter().find(|chain| chain.vm == vm)?.host
        })
        .ok()
        .flatten();
    if let Some(host) = host {
        // SAFETY: `host` is the VM's own interrupt as the host set it, called as the VM would
        // call it: from the interrupt, with the same thread and GC phase. No Rust value with a
        // destructor is alive in this frame if it raises.
        unsafe { host(state, gc) }
    }
}

/// The VM interrupt of a VM whose host had none.
unsafe extern "C-unwind" fn interrupt(state: *mut mlua::ffi::lua_State, gc: std::ffi::c_int) {
    // SAFETY: the VM calls this as its interrupt, with the thread it runs.
    unsafe { watch(state, gc) };
}

/// The watchdog's part of the VM interrupt: cheap until a check finds the innermost watched
/// resumption over budget. Returns whether it yielded the thread; it does not return when it
/// raises the timeout.
///
/// # Safety
/// Only from the VM's interrupt, with the thread it runs and the GC phase it was given.
#[inline(always)]
unsafe fn watch(state: *mut mlua::ffi::lua_State, gc: std::ffi::c_int) -> bool {
    // Calls from the collector (gc >= 0) cannot yield or raise.
    if gc >= 0 {
        return false;
    }
    let left = COUNTDOWN.get();
    if left > 0 {
        COUNTDOWN.set(left - 1);
        return false;
    }
    COUNTDOWN.set(CHECK_EVERY);
    // SAFETY: `CURRENT` is null or points at a live `Watch` (module invariant).
    let Some(watch) = (unsafe { CURRENT.get().as_ref() }) else {
        return false;
    };
    let Some(overrun) = watch.overrun() else {
        return false;
    };
    // The thread the VM is running: alive during its interrupt, which the raw reads below
    // rely on.
    let state = ThreadPtr::from_ptr(state);
    if overrun == Overrun::Sliced {
        // Not inside `task.luau`'s own functions: they check a coroutine's slice mark, then
        // resume it, and a slice between the two let another task resume the coroutine
        // first, and this one then resume it again past a yield. They are short, and their
        // loops yield: the slice ends at one of the next interrupts, in the caller or in the
        // coroutine resumed. Only so many in a row: a script can name a chunk of its own as
        // `task.luau` is named, and must not escape its slices so.
        let put_off = watch.put_off.get();
        // SAFETY: `state` is the running thread, alive during its interrupt; reading its
        // frame allocates nothing.
        if put_off < MAX_PUT_OFF && unsafe { vm::runs_task_library(state) } {
            watch.put_off.set(put_off + 1);
            COUNTDOWN.set(0);
            return false;
        }
        watch.put_off.set(0);
    }
    // SAFETY: `state` is the running thread, alive during its interrupt.
    if state == watch.thread && unsafe { vm::can_yield_raw(state) } {
        watch.yielded.set(Some(overrun));
        // SAFETY: the thread is yieldable and running Luau code, from which an interrupt may
        // yield; Luau resumes it at the same instruction.
        unsafe { vm::yield_from_interrupt(state) };
        return true;
    }
    // SAFETY: `state` is running, so alive; the watched thread resumes it, so it is alive too.
    if overrun == Overrun::Sliced && unsafe { watch.hand_resumes(state) } {
        // SAFETY: as above; every thread between the watched one and this one resumed the next
        // through Spindle's `coroutine.resume` or `wrap`, which carry the mark out to the task
        // (rule 22 of the task contract), and each of them can yield.
        unsafe { vm::yield_slice_from_interrupt(state) };
        return true;
    }
    if overrun == Overrun::TimedOut {
        // Raised again at every interrupt (no clock reading once timed out) until the thread
        // can be yielded. A slice instead waits for the next check, back in the task's thread.
        COUNTDOWN.set(0);
        // SAFETY: raising from an interrupt is how Luau stops running code; no Rust value with
        // a destructor is alive in this frame.
        unsafe { vm::raise_from_interrupt(state, TIMEOUT_MESSAGE) }
    }
    false
}
