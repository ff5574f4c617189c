//! Tasks in their hundreds of thousands: bounded by memory alone, and leaving nothing behind
//! once they end (contract rules 16 and 17).
//!
//! The binary's counting global allocator (support/heap.rs) measures the heap of the test's
//! thread: mlua allocates the Lua VM's memory through Rust's allocator, so the count covers Lua
//! objects and the scheduler's own tables alike.

use std::cell::Cell;
use std::rc::Rc;

use spindle::mlua::Lua;
use spindle::{Clock, Scheduler, VirtualClock};

use crate::support::heap::thread_bytes;
use crate::support::{harness, lines};

/// Tests in this file build hundreds of thousands of tasks: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heap_in_use(lua: &Lua) -> isize {
    lua.gc_collect().unwrap();
    lua.gc_collect().unwrap();
    thread_bytes()
}

fn virtual_scheduler(lua: &Lua) -> Scheduler {
    let scheduler = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .build(lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
}

const TASKS: usize = 200_000;

#[test]
fn tasks_that_waited_together_leave_memory_where_it_started() {
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    let main = lua
        .load(
            r#"
            local n = ...
            local done = 0
            for i = 1, n do
                task.spawn(function(x)
                    task.wait(1)
                    task.defer(function() done += 1 end)
                    task.delay(0.5, function(y) done += y end, x)
                end, 0)
            end
            task.wait(2)
            return done
            "#,
        )
        .into_function()
        .unwrap();
    // A warm-up run, so that one-time allocations (interned strings, the task library's
    // closures) are not counted.
    scheduler.spawn(main.clone(), 10).unwrap();
    scheduler.run_blocking().unwrap();
    let before = heap_in_use(&lua);

    let id = scheduler.spawn(main, TASKS).unwrap();
    assert_eq!(scheduler.task_count(), TASKS + 1);
    let peak = heap_in_use(&lua);
    scheduler.run_blocking().unwrap();
    let done: usize = scheduler
        .take_result(&id)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(done, TASKS);
    assert_eq!(scheduler.task_count(), 0);

    let after = heap_in_use(&lua);
    let grown = after - before;
    assert!(
        peak - before > 100 * TASKS as isize,
        "the measurement sees the tasks ({} bytes at peak)",
        peak - before
    );
    eprintln!(
        "peak {} bytes, {grown} bytes left after {TASKS} tasks ended",
        peak - before
    );
    assert!(
        grown < 256 * 1024,
        "{grown} bytes still held after {TASKS} tasks ended"
    );
}

#[test]
fn tasks_that_finish_one_after_another_reuse_their_slots() {
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    let main = lua
        .load("for i = 1, ... do task.spawn(function() end) task.defer(function() end) end")
        .into_function()
        .unwrap();
    scheduler.spawn(main.clone(), 10).unwrap();
    let before = heap_in_use(&lua);
    scheduler.spawn(main, TASKS).unwrap();
    scheduler.run_blocking().unwrap();
    let grown = heap_in_use(&lua) - before;
    assert!(grown < 256 * 1024, "{grown} bytes still held");
}

#[test]
fn two_hundred_thousand_tasks_wait_at_once_and_every_one_wakes() {
    // mlua's reference stack holds about a million values: the ignored test below waits a
    // million tasks at once, more than it could hold if each waiting task took a slot.
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    let main = lua
        .load(
            r#"
            local n, woke = ..., 0
            for i = 1, n do
                task.spawn(function() task.wait(1) woke += 1 end)
            end
            task.wait(2)
            return woke
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, TASKS).unwrap();
    scheduler.run_blocking().unwrap();
    let woke: usize = scheduler
        .take_result(&id)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(woke, TASKS);
}

#[test]
#[ignore = "a million coroutines take about 1.5 GB and a minute in a debug build; run with --release"]
fn a_million_tasks_wait_at_once() {
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    let main = lua
        .load(
            r#"
            local n, woke = ..., 0
            for i = 1, n do
                task.spawn(function() task.wait(0.2) woke += 1 end)
            end
            task.wait(1)
            return woke
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, 1_000_000).unwrap();
    assert_eq!(scheduler.task_count(), 1_000_001);
    scheduler.run_blocking().unwrap();
    let woke: usize = scheduler
        .take_result(&id)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(woke, 1_000_000);
}

/// Counts the futures dropped: every future a cancelled task waited on must be.
struct DropGuard(Rc<Cell<usize>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_million_tasks_spawned_and_finished_leave_memory_where_it_started() {
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    // Every task goes through a suspension (the timer path) before it ends, and the main task
    // lets them end in batches, so the peak stays small and the count is of finished tasks.
    let main = lua
        .load(
            r#"
            local n, ended = ..., 0
            local function body() task.wait(0) ended += 1 end
            for i = 1, n do
                task.spawn(body)
                if i % 10000 == 0 then task.wait(0) end
            end
            task.wait(0)
            return ended
            "#,
        )
        .into_function()
        .unwrap();
    scheduler.spawn(main.clone(), 20_000).unwrap();
    scheduler.run_blocking().unwrap();
    let before = heap_in_use(&lua);

    const MILLION: usize = 1_000_000;
    let id = scheduler.spawn(main, MILLION).unwrap();
    scheduler.run_blocking().unwrap();
    let ended: usize = scheduler
        .take_result(&id)
        .unwrap()
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(ended, MILLION);
    assert_eq!(scheduler.task_count(), 0);
    let grown = heap_in_use(&lua) - before;
    assert!(
        grown < 256 * 1024,
        "{grown} bytes still held after {MILLION} tasks ended"
    );
}

#[test]
fn cancelled_tasks_blocked_in_futures_of_both_kinds_drop_them_and_leave_memory_where_it_started() {
    let _serial = SERIAL.lock().unwrap();
    let lua = Lua::new();
    let scheduler = virtual_scheduler(&lua);
    let owned_dropped = Rc::new(Cell::new(0));
    let mlua_dropped = Rc::new(Cell::new(0));
    let counter = Rc::clone(&owned_dropped);
    let owned = scheduler
        .create_async_function(move |_, ()| {
            let guard = DropGuard(Rc::clone(&counter));
            async move {
                std::future::pending::<()>().await;
                drop(guard);
                Ok(())
            }
        })
        .unwrap();
    let counter = Rc::clone(&mlua_dropped);
    let mlua_owned = lua
        .create_async_function(move |_, ()| {
            let guard = DropGuard(Rc::clone(&counter));
            async move {
                std::future::pending::<()>().await;
                drop(guard);
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("owned_pending", owned).unwrap();
    lua.globals().set("mlua_pending", mlua_owned).unwrap();
    // Half the tasks block in Spindle futures, half in mlua's; the main task cancels them all
    // on the next cycle.
    let main = lua
        .load(
            r#"
            local n = ...
            local blocked = table.create(n)
            for i = 1, n do
                blocked[i] = task.spawn(if i % 2 == 0 then owned_pending else mlua_pending)
            end
            task.wait(0)
            for i = 1, n do
                assert(coroutine.status(blocked[i]) == "suspended")
                task.cancel(blocked[i])
            end
            "#,
        )
        .into_function()
        .unwrap();
    let dropped = || (owned_dropped.get(), mlua_dropped.get());
    scheduler.spawn(main.clone(), 1_000).unwrap();
    scheduler.run_blocking().unwrap();
    let before = heap_in_use(&lua);
    assert_eq!(dropped(), (500, 500), "the warm-up's futures were dropped");

    const TASKS: usize = 100_000;
    scheduler.spawn(main, TASKS).unwrap();
    assert_eq!(scheduler.task_count(), TASKS + 1);
    let peak = thread_bytes();
    scheduler.cycle().unwrap();
    // Spindle's futures are dropped before `task.cancel` returns (rule 6).
    assert_eq!(owned_dropped.get() - 500, TASKS / 2);
    assert!(
        !scheduler.has_work(),
        "no cancelled task keeps the run alive"
    );
    assert_eq!(scheduler.task_count(), 0);
    // mlua's go when the collector frees their threads, which `heap_in_use` makes happen.
    let grown = heap_in_use(&lua) - before;
    assert_eq!(mlua_dropped.get() - 500, TASKS / 2);
    assert!(
        peak - before > 100 * TASKS as isize,
        "the measurement sees the blocked tasks ({} bytes at peak)",
        peak - before
    );
    eprintln!(
        "peak {} bytes, {grown} bytes left after {TASKS} blocked tasks were cancelled",
        peak - before
    );
    assert!(
        grown < 256 * 1024,
        "{grown} bytes still held after {TASKS} blocked tasks were cancelled"
    );
}

// ---------------------------------------------------------------------------------------------
// Corners of the contract, on the shared corner-case host (`support::H`)
// ---------------------------------------------------------------------------------------------

#[test]
fn hundred_thousand_tasks_wait_at_once_and_all_resume() {
    let h = harness();
    let start = std::time::Instant::now();
    h.run(
        r##"
        local n, done = 100000, 0
        for i = 1, n do
            task.spawn(function() task.wait(i % 7) ; done += 1 end)
        end
        task.wait(10)
        print("done", done)
        "##,
    );
    assert_eq!(h.log(), lines(&["done 100000"]));
    assert_eq!(h.sched.task_count(), 0);
    eprintln!("100k waiting tasks: {:?}", start.elapsed());
}
