//! The test binary's global allocator: the system allocator, counting the live heap bytes of
//! each thread (Lua's allocations included: mlua allocates the VM's memory through Rust's
//! allocator, so the count covers Lua objects and the scheduler's own tables alike).
//!
//! The count is per thread so that tests running side by side in this one binary do not see
//! each other's allocations: a scheduler and its Lua state live on the thread that made them.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct CountingAlloc;

thread_local! {
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = NET_BYTES.try_with(|n| n.set(n.get() + delta));
}

/// Live heap bytes allocated, less those freed, by this thread so far.
pub fn thread_bytes() -> isize {
    NET_BYTES.with(|n| n.get())
}

/// Live heap bytes of this thread that are not Lua's: Rust-side memory the scheduler keeps.
pub fn rust_bytes(lua: &spindle::mlua::Lua) -> isize {
    thread_bytes() - lua.used_memory() as isize
}

// SAFETY: every method forwards to the system allocator with its own arguments, so the
// allocator's contract holds as `System` keeps it; counting touches no allocation (a const
// thread-local `Cell`, which allocates nothing).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` comes from our caller under `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`: the caller's layout, under the same contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`, as the
        // caller guarantees under `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, `ptr` and `layout` are `System`'s; `new` is valid per the
        // caller, under `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            count(new as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;
