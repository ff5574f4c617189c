//! Lifetime (contract rules 16 to 18): ended tasks, their outcomes, timers and futures leave
//! nothing behind; shutdown and dropping the scheduler drop what is pending and report nothing;
//! task handles own their outcomes; a dropped scheduler gives the VM back as it found it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use spindle::mlua::{self, Function, Lua};
use spindle::{Clock, Scheduler, Task, TaskId, TaskStatus, VirtualClock};

use crate::support::{harness, install_gates, lines, rust_bytes, H};

#[test]
fn shutdown_while_tasks_wait_drops_futures_forgets_timers_and_reports_nothing() {
    let h = harness();
    let gates = install_gates(&h);
    let id = h.spawn(
        r##"
        task.spawn(function() owned_wait("a"); print("never a") end)
        task.spawn(function() owned_wait("b"); print("never b") end)
        task.spawn(function() mlua_wait("c"); print("never c") end)
        task.delay(5, print, "never delay")
        task.defer(print, "ran at spawn")
        waiter = task.spawn(function() task.wait(3); print("never wait") end)
        task.wait(10)
        print("never main")
        "##,
    );
    assert_eq!(h.take_log(), lines(&["ran at spawn"]));
    assert!(h.sched.has_work());
    h.sched.shutdown().unwrap();
    assert_eq!(gates.dropped(), 2, "owned futures are dropped at shutdown");
    assert!(!h.sched.has_work());
    assert_eq!(h.sched.next_deadline(), None);
    assert_eq!(h.sched.task_count(), 0);
    assert_eq!(h.sched.error_count(), 0);
    assert!(h.errors.borrow().is_empty());
    assert_eq!(h.sched.status(&id), TaskStatus::Unknown);
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    assert_eq!(
        gates.dropped(),
        3,
        "the mlua future is freed by the collector"
    );
    gates.open("a");
    gates.open("b");
    gates.open("c");
    h.clock.advance(Duration::from_secs(20));
    h.sched.run_blocking().unwrap();
    assert!(h.log().is_empty(), "{:?}", h.log());
    let status: String = h
        .lua
        .load("return coroutine.status(waiter)")
        .eval()
        .unwrap();
    assert_eq!(status, "dead");

    // The scheduler stays usable.
    let id = h.run("print('after shutdown', task.wait(1)); return 5");
    assert_eq!(h.log(), lines(&["after shutdown 1"]));
    assert_eq!(h.result::<i32>(&id), 5);
}

#[test]
fn dropping_the_scheduler_drops_pending_owned_futures() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn("task.spawn(function() owned_wait('x') end)");
    let H { sched, lua, .. } = h;
    drop(sched);
    assert_eq!(gates.dropped(), 1);
    drop(lua);
}

/// Lua memory after `rounds` runs of `body`, relative to after the first run.
fn lua_growth(h: &H, body: &str, rounds: usize) -> i64 {
    h.run(body);
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    let base = h.lua.used_memory() as i64;
    for _ in 0..rounds {
        h.run(body);
    }
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    h.lua.used_memory() as i64 - base
}

#[test]
fn finished_tasks_leave_lua_memory_where_it_started() {
    let h = harness();
    let growth = lua_growth(
        &h,
        r##"
        for i = 1, 20000 do
            task.spawn(function(x) return x end, i)
            task.spawn(function() task.wait(0) end)
            task.defer(function() end)
            task.delay(0, function() end)
        end
        task.wait(1)
        "##,
        3,
    );
    assert_eq!(h.sched.task_count(), 0);
    assert!(growth <= 16 * 1024, "Lua memory grew by {growth} bytes");
}

#[test]
fn deferral_and_delay_arguments_cost_no_more_lua_memory_than_plain_tables() {
    // Luau itself keeps some memory after 20000 small tables are made and freed (this control
    // grows a little each round); the scheduler's stored arguments must not add to that.
    let control = {
        let h = harness();
        lua_growth(
            &h,
            "T = T or {} for i = 1, 20000 do T[i] = {i, 'x', n = 2} end for i = 1, 20000 do T[i] = nil end",
            6,
        )
    };
    let h = harness();
    let growth = lua_growth(
        &h,
        r##"
        for i = 1, 10000 do
            task.defer(function(...) end, i, "x")
            task.delay(0, function(...) end, i, {})
        end
        task.wait(1)
        "##,
        6,
    );
    // Luau gives memory back in ~32 KiB steps whose timing varies by one step between runs.
    assert!(
        growth <= control + 48 * 1024,
        "scheduler grew by {growth} bytes, plain tables by {control}"
    );
}

#[test]
fn host_spawned_task_outcome_is_freed_when_read() {
    let h = harness();
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(
            h.sched
                .spawn(h.func("local i = ...; task.wait(); return {i}"), i)
                .unwrap(),
        );
    }
    h.sched.run_blocking().unwrap();
    h.lua.gc_collect().unwrap();
    let with_results = h.lua.used_memory();
    for id in ids {
        let t: mlua::Table = h.result(&id);
        assert!(t.get::<i32>(1).is_ok());
        assert_eq!(h.sched.status(&id), TaskStatus::Unknown);
    }
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    assert!(h.lua.used_memory() < with_results);
}

#[test]
fn host_spawned_task_finished_by_a_hand_resume_is_not_left_scheduled_forever() {
    let h = harness();
    let id = h.spawn(
        r##"
        main = coroutine.running()
        coroutine.yield()   -- plain yield: belongs to whoever resumes it
        return "finished by hand"
        "##,
    );
    h.run("coroutine.resume(main)");
    let status: String = h.lua.load("return coroutine.status(main)").eval().unwrap();
    assert_eq!(status, "dead");
    assert_ne!(
        h.sched.status(&id),
        TaskStatus::Scheduled,
        "a dead thread is not scheduled"
    );
    assert_eq!(
        h.sched.task_count(),
        0,
        "an ended task holds no slot (rule 16)"
    );
}

#[test]
fn ended_tasks_whose_wait_was_abandoned_leave_no_timer_entries_behind() {
    let h = harness();
    // A ticking task keeps one live timer, as in any running game.
    h.spawn("task.spawn(function() while true do task.wait(1) end end)");
    let round = r##"
        for i = 1, 20000 do
            -- A long timeout, ended early by a hand resume; then the task ends.
            local t = task.spawn(function() task.wait(1e6) end)
            coroutine.resume(t)
        end
    "##;
    let f = h.func(round);
    let mut sizes = Vec::new();
    for _ in 0..5 {
        h.sched.spawn(f.clone(), ()).unwrap();
        h.step(1.0);
        h.lua.gc_collect().unwrap();
        h.lua.gc_collect().unwrap();
        sizes.push(rust_bytes(&h.lua));
    }
    assert_eq!(h.sched.task_count(), 1);
    let growth = sizes[4] - sizes[1];
    assert!(
        growth < 256 * 1024,
        "Rust heap grew by {growth} bytes over 3 rounds of 20000 ended tasks: {sizes:?}"
    );
}

#[test]
fn task_functions_raise_after_the_scheduler_is_dropped() {
    let h = harness();
    let H { lua, sched, .. } = h;
    drop(sched);
    for call in [
        "task.spawn(function() end)",
        "task.defer(function() end)",
        "task.delay(1, function() end)",
        "coroutine.wrap(function() task.wait(1) end)()",
    ] {
        let err = lua.load(call).exec();
        assert!(
            err.is_err(),
            "{call} should raise once the scheduler is gone"
        );
    }
}

/// A second scheduler on the same Lua (the first dropped) builds on the original coroutine
/// functions, not on the dropped one's replacements.
#[test]
fn a_scheduler_attached_after_another_takes_over_hand_resumed_mlua_futures() {
    let lua = Lua::new();
    {
        let first = Scheduler::new(&lua).unwrap();
        first.install_task_library().unwrap();
    }
    let sched = Scheduler::builder()
        .clock(Clock::from(VirtualClock::new()))
        .build(&lua)
        .unwrap();
    sched.install_task_library().unwrap();
    let opened = Rc::new(Cell::new(false));
    let wakers: Rc<RefCell<Vec<Waker>>> = Rc::default();
    let (o, w) = (Rc::clone(&opened), Rc::clone(&wakers));
    let wait = lua
        .create_async_function(move |_, ()| {
            let (o, w) = (Rc::clone(&o), Rc::clone(&w));
            std::future::poll_fn(move |cx| {
                if o.get() {
                    Poll::Ready(Ok(()))
                } else {
                    w.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .unwrap();
    lua.globals().set("wait_gate", wait).unwrap();
    lua.globals().set("done", false).unwrap();
    let main = lua
        .load("local co = coroutine.create(function() wait_gate(); done = true end); coroutine.resume(co)")
        .into_function()
        .unwrap();
    let _task = sched.spawn(main, ()).unwrap();
    sched.cycle().unwrap();
    opened.set(true);
    wakers.borrow_mut().drain(..).for_each(Waker::wake);
    sched.run_blocking().unwrap();
    assert!(lua.globals().get::<bool>("done").unwrap());
}

#[test]
fn dropping_the_scheduler_puts_back_the_standard_coroutine_functions() {
    let lua = Lua::new();
    let original: Function = lua.load("return coroutine.resume").eval().unwrap();
    {
        let sched = Scheduler::new(&lua).unwrap();
        sched.install_task_library().unwrap();
        let replaced: Function = lua.load("return coroutine.resume").eval().unwrap();
        assert_ne!(replaced, original);
    }
    let restored: Function = lua.load("return coroutine.resume").eval().unwrap();
    assert_eq!(restored, original);
}

#[test]
fn dropping_a_task_handle_frees_its_outcome() {
    let h = harness();
    let f = h.func("return string.rep('x', 100000) .. tostring(...)");
    let tasks: Vec<_> = (0..200)
        .map(|i| h.sched.spawn(f.clone(), i).unwrap())
        .collect();
    h.sched.run_blocking().unwrap();
    h.lua.gc_collect().unwrap();
    let kept = h.lua.used_memory();
    let ids: Vec<TaskId> = tasks.iter().map(Task::id).collect();
    drop(tasks);
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    assert!(
        h.lua.used_memory() + 200 * 100_000 / 2 < kept,
        "{} bytes before, {} after",
        kept,
        h.lua.used_memory()
    );
    assert!(ids
        .iter()
        .all(|id| h.sched.status(id) == TaskStatus::Unknown));
}

#[test]
fn a_task_whose_handle_was_dropped_keeps_running_and_keeps_no_outcome() {
    let h = harness();
    drop(h.spawn("task.wait(1) print('still ran')"));
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["still ran"]));
}

thread_local! {
    static SCHEDULER: RefCell<Option<Rc<Scheduler>>> = const { RefCell::new(None) };
    static DROPS: Cell<u32> = const { Cell::new(0) };
}

/// A future whose destructor reads the scheduler, as a metrics hook might.
struct ReadsSchedulerOnDrop;

impl Drop for ReadsSchedulerOnDrop {
    fn drop(&mut self) {
        SCHEDULER.with(|s| {
            if let Some(scheduler) = &*s.borrow() {
                let _ = scheduler.task_count();
            }
        });
        DROPS.with(|d| d.set(d.get() + 1));
    }
}

/// Under a memory limit mlua protects table writes with a pushed C function, which can run a
/// collection step; the collector then drops the futures of cancelled threads. The scheduler
/// must not hold its state borrowed at that moment.
#[test]
fn futures_dropped_by_the_collector_may_call_the_scheduler() {
    let h = harness();
    h.lua.set_memory_limit(512 * 1024 * 1024).unwrap();
    SCHEDULER.with(|s| *s.borrow_mut() = Some(Rc::clone(&h.sched)));
    let pending = h
        .lua
        .create_async_function(|_, ()| async move {
            let _guard = ReadsSchedulerOnDrop;
            std::future::pending::<mlua::Result<()>>().await
        })
        .unwrap();
    h.lua.globals().set("pending", pending).unwrap();
    let survived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..20 {
            let _task = h.spawn(
                r#"
                local ts = {}
                for i = 1, 2000 do ts[i] = task.spawn(function() pending() end) end
                for i = 1, 2000 do task.cancel(ts[i]) end
                for i = 1, 2000 do task.spawn(function() local t = {} end) end
                "#,
            );
            h.sched.run_blocking().unwrap();
        }
    }));
    SCHEDULER.with(|s| *s.borrow_mut() = None);
    assert!(survived.is_ok());
    assert!(
        DROPS.with(Cell::get) > 0,
        "the collector dropped some futures during the run"
    );
}
