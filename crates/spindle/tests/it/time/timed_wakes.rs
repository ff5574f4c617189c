//! Adversarial tests of the fast lanes and of what changed around them: `Scheduler::run`'s
//! cooperative budget, the end of a fast-lane resumption (`Resuming::finish`) and the freeing
//! of idle tasks, due timers moved straight onto the carried queue (frames and cycles mixed,
//! under a budget, with panics), the wake-up handed to `wait` through its thread-local, and the
//! timer queue's choice between its run and its heap. Virtual time unless a test says otherwise.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::support::{on_tokio_local_set, Host};
use spindle::mlua::{self, Lua};
use spindle::{Outcome, Scheduler};

fn harness() -> Host {
    Host::builder().chunk_name("test").build()
}

fn lines(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|s| s.to_string()).collect()
}

fn real_scheduler(lua: &Lua) -> Scheduler {
    let scheduler = Scheduler::new(lua).unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
}

// ---------------------------------------------------------------------------------------------
// 1. Scheduler::run and its budget
// ---------------------------------------------------------------------------------------------

/// A one-slot channel on one thread: the receiver's future is pending until a value is sent.
#[derive(Default)]
struct Slot {
    value: RefCell<Option<i64>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn send(&self, value: i64) {
        *self.value.borrow_mut() = Some(value);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

struct Recv(Rc<Slot>);

impl Future for Recv {
    type Output = mlua::Result<i64>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.value.borrow_mut().take() {
            Some(value) => Poll::Ready(Ok(value)),
            None => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[test]
fn a_task_waiting_on_a_channel_fed_by_a_neighbour_future_finishes_while_another_spins() {
    on_tokio_local_set(async {
        let lua = Lua::new();
        let scheduler = real_scheduler(&lua);
        let slot = Rc::new(Slot::default());
        let rx = Rc::clone(&slot);
        let recv = scheduler
            .create_async_function(move |_, ()| Recv(Rc::clone(&rx)))
            .unwrap();
        lua.globals().set("recv", recv).unwrap();
        lua.load(
            r#"
            got = nil
            spins = 0
            task.spawn(function() got = recv() end)
            task.spawn(function()
                while got == nil and spins < 200000 do spins += 1 task.wait() end
            end)
            "#,
        )
        .exec()
        .unwrap();
        let feeder = Rc::clone(&slot);
        let neighbour = tokio::task::spawn_local(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            feeder.send(7);
        });
        scheduler
            .run(|deadline: Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        neighbour.await.unwrap();
        let got: Option<i64> = lua.globals().get("got").unwrap();
        let spins: u32 = lua.globals().get("spins").unwrap();
        assert_eq!(
            got,
            Some(7),
            "the channel's value never arrived ({spins} spins)"
        );
        assert!(spins < 1_000, "the feeder waited {spins} busy cycles");
    });
}

#[test]
fn a_tokio_sleep_inside_an_async_function_ends_while_another_task_spins() {
    on_tokio_local_set(async {
        let lua = Lua::new();
        let scheduler = real_scheduler(&lua);
        let sleep = scheduler
            .create_async_function(|_, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            })
            .unwrap();
        lua.globals().set("sleep", sleep).unwrap();
        lua.load(
            r#"
            slept = false
            task.spawn(function() sleep(5) slept = true end)
            task.spawn(function()
                local started = os.clock()
                while not slept and os.clock() - started < 5 do task.wait() end
            end)
            "#,
        )
        .exec()
        .unwrap();
        let started = Instant::now();
        scheduler
            .run(|deadline: Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        assert!(lua.globals().get::<bool>("slept").unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a 5 ms tokio sleep took {:?} beside a spinning task",
            started.elapsed()
        );
    });
}

#[test]
fn under_futures_lite_block_on_a_zipped_neighbour_runs_during_a_busy_run() {
    let lua = Lua::new();
    let scheduler = real_scheduler(&lua);
    scheduler
        .spawn(
            lua.load("for _ = 1, 5000 do task.wait() end")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let done = Rc::new(Cell::new(false));
    let turns = Rc::new(Cell::new(0u32));
    let (d, t) = (Rc::clone(&done), Rc::clone(&turns));
    let neighbour = async move {
        while !d.get() {
            t.set(t.get() + 1);
            futures_lite::future::yield_now().await;
        }
    };
    let run = async {
        scheduler.run(async_io::Timer::at).await.unwrap();
        let turns_during_the_run = turns.get();
        done.set(true);
        turns_during_the_run
    };
    let (turns_during_the_run, ()) =
        futures_lite::future::block_on(futures_lite::future::zip(run, neighbour));
    assert!(
        turns_during_the_run >= 20,
        "the neighbour ran {turns_during_the_run} times during 5,000 busy cycles"
    );
}

/// A sleep that is already over when first polled: what any sleeper gives for a deadline that
/// passed between `next_step` and the poll (a very short `task.wait` on the real clock).
fn already_over(_: Instant) -> std::future::Ready<()> {
    std::future::ready(())
}

#[test]
fn busy_cycles_between_sleeps_that_end_at_once_still_let_the_executor_run() {
    on_tokio_local_set(async {
        let lua = Lua::new();
        let scheduler = real_scheduler(&lua);
        // Each turn: one busy cycle (the `task.wait()`), then a sleep of 50 us that the sleeper
        // reports over at once. 2,000 turns: over 4,000 cycles.
        scheduler
            .spawn(
                lua.load("for _ = 1, 2000 do task.wait() task.wait(0.00005) end")
                    .into_function()
                    .unwrap(),
                (),
            )
            .unwrap();
        let done = Rc::new(Cell::new(false));
        let turns = Rc::new(Cell::new(0u32));
        let (d, t) = (Rc::clone(&done), Rc::clone(&turns));
        let neighbour = tokio::task::spawn_local(async move {
            while !d.get() {
                t.set(t.get() + 1);
                tokio::task::yield_now().await;
            }
        });
        scheduler.run(already_over).await.unwrap();
        let turns_during_the_run = turns.get();
        done.set(true);
        neighbour.await.unwrap();
        assert!(
            turns_during_the_run >= 20,
            "the neighbour ran {turns_during_the_run} times during 2,000 busy cycles"
        );
    });
}

#[test]
fn run_and_run_blocking_give_the_same_order_for_a_mixed_script() {
    let script = r#"
        local out = {}
        for i = 1, 40 do
            task.spawn(function()
                task.wait()
                table.insert(out, "w" .. i)
                task.defer(function() table.insert(out, "d" .. i) end)
                task.wait(0.001 * (i % 3))
                table.insert(out, "x" .. i)
            end)
        end
        task.wait(0.05)
        return table.concat(out, " ")
    "#;
    let mut orders = Vec::new();
    for blocking in [false, true] {
        let lua = Lua::new();
        let scheduler = Scheduler::builder()
            .clock(spindle::Clock::from(spindle::VirtualClock::new()))
            .build(&lua)
            .unwrap();
        scheduler.install_task_library().unwrap();
        let task = scheduler
            .spawn(lua.load(script).into_function().unwrap(), ())
            .unwrap();
        if blocking {
            scheduler.run_blocking().unwrap();
        } else {
            futures_lite::future::block_on(scheduler.run(async_io::Timer::at)).unwrap();
        }
        match scheduler.take_result::<String>(&task).unwrap() {
            Some(Outcome::Finished(order)) => orders.push(order),
            _ => panic!("the script did not finish"),
        }
    }
    assert_eq!(orders[0], orders[1]);
}

// ---------------------------------------------------------------------------------------------
// 2. The end of a fast-lane resumption, and freeing idle tasks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_task_that_defers_itself_then_yields_by_hand_after_a_timed_wake_is_not_freed() {
    let h = harness();
    h.spawn(
        r#"
        task.wait(1)
        task.defer(coroutine.running(), "deferred")
        print("resumed with", coroutine.yield())
        task.wait(1)
        print("done")
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with deferred"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with deferred", "done"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_task_that_delays_itself_then_yields_by_hand_after_a_timed_wake_is_not_freed() {
    let h = harness();
    h.spawn(
        r#"
        task.wait(1)
        task.delay(1, coroutine.running(), "delayed")
        print("resumed with", coroutine.yield())
        "#,
    );
    h.step(1.0);
    assert_eq!(h.scheduler.task_count(), 1);
    h.step(1.0);
    assert_eq!(h.log(), lines(&["resumed with delayed"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_task_that_yields_by_hand_after_a_timed_wake_is_freed_and_its_holder_owns_it() {
    let h = harness();
    h.spawn(
        r#"
        co = coroutine.running()
        task.wait(1)
        print("yielding")
        print("got", coroutine.yield())
        "#,
    );
    h.step(1.0);
    assert_eq!(
        h.scheduler.task_count(),
        0,
        "rule 11: the thread is its holder's"
    );
    assert!(!h.scheduler.has_work());
    h.exec("coroutine.resume(co, 'by hand')");
    assert_eq!(h.log(), lines(&["yielding", "got by hand"]));
}

#[test]
fn a_wake_that_cancels_the_next_task_of_its_batch_leaves_counts_right() {
    let h = harness();
    h.spawn(
        r#"
        local b
        task.spawn(function() task.wait(1) print("a") task.cancel(b) end)
        b = task.spawn(function() task.wait(1) print("b must not run") end)
        task.spawn(function() task.wait(1) print("c") end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "c"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_wake_that_hand_resumes_the_next_waiter_of_its_batch_resumes_it_once() {
    let h = harness();
    h.spawn(
        r#"
        local b
        task.spawn(function() task.wait(1) print("a") coroutine.resume(b, "hand") end)
        b = task.spawn(function() print("b got", task.wait(1)) print("b again", task.wait(5)) end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "b got hand"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["a", "b got hand"]));
    h.step(5.0);
    assert_eq!(h.log(), lines(&["a", "b got hand", "b again 6"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

#[test]
fn a_host_handle_gets_the_results_and_error_of_tasks_ended_by_a_timed_wake() {
    let h = harness();
    let ok = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) return 1, 2")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let bad = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) error('late')")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    let plain = h
        .scheduler
        .spawn(
            h.lua
                .load("task.wait(1) coroutine.yield()")
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    h.step(1.0);
    match h.scheduler.take_result::<(i64, i64)>(&ok).unwrap() {
        Some(Outcome::Finished(values)) => assert_eq!(values, (1, 2)),
        _ => panic!("no result"),
    }
    assert!(matches!(
        h.scheduler.take_result::<()>(&bad).unwrap(),
        Some(Outcome::Failed(e)) if e.message.contains("late")
    ));
    // Yielded by hand: no outcome yet, and it holds no scheduler work.
    assert!(h.scheduler.take_result::<()>(&plain).unwrap().is_none());
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_panic_in_a_rust_callback_after_a_timed_wake_leaves_the_rest_of_the_batch_queued() {
    let h = harness();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.spawn(
        r#"
        task.spawn(function() task.wait(1) print("a") end)
        task.spawn(function() task.wait(1) boom() end)
        task.spawn(function() task.wait(1) print("c") end)
        task.spawn(function() task.wait(1) print("d") end)
        "#,
    );
    h.advance(Duration::from_secs(1));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.scheduler.cycle().unwrap()
    }));
    assert!(caught.is_err());
    assert_eq!(h.log(), lines(&["a"]));
    assert_eq!(h.scheduler.task_count(), 2, "the panicking task is freed");
    assert!(h.scheduler.has_work());
    let report = h.scheduler.cycle().unwrap();
    assert_eq!(report.timers, 2);
    assert_eq!(h.log(), lines(&["a", "c", "d"]));
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn running_out_of_memory_right_after_a_timed_wake_fails_only_that_task() {
    let h = Host::builder().chunk_name("test").errors_in_log().build();
    h.spawn(
        r#"
        task.spawn(function()
            task.wait(1)
            local t = {}
            for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end
        end)
        task.spawn(function() task.wait(1) print("other") end)
        task.spawn(function() task.wait(2) print("later") end)
        "#,
    );
    h.lua
        .set_memory_limit(h.lua.used_memory() + 4 * 1024 * 1024)
        .unwrap();
    h.step(1.0);
    h.lua.set_memory_limit(0).unwrap();
    h.step(1.0);
    let log = h.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("error:"), "{log:?}");
    assert_eq!(log[1..], lines(&["other", "later"]));
    assert_eq!(h.scheduler.task_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Due timers on the carried queue: frames, budgets, cycles
// ---------------------------------------------------------------------------------------------

fn budget_host(per_frame: usize) -> Host {
    Host::builder()
        .chunk_name("test")
        .errors_in_log()
        .scheduler(move |b| b.frame_budget_fn(move |work| work.resumed < per_frame))
        .build()
}

const DT: Duration = Duration::from_millis(10);

#[test]
fn carried_waits_and_new_due_timers_run_in_deadline_then_scheduling_order() {
    let h = budget_host(1);
    h.spawn(
        r#"
        for i = 1, 4 do task.delay(0.01, print, "first", i) end
        task.delay(0.02, print, "second", 1)
        "#,
    );
    let mut frames = Vec::new();
    for _ in 0..6 {
        h.scheduler.frame(DT).unwrap();
        frames.push(h.log().len());
    }
    assert_eq!(
        h.log(),
        lines(&["first 1", "first 2", "first 3", "first 4", "second 1"])
    );
    assert_eq!(frames, [1, 2, 3, 4, 5, 5]);
}

#[test]
fn frames_then_a_cycle_run_carried_work_before_newer_timers() {
    let h = budget_host(1);
    h.spawn(
        r#"
        for i = 1, 3 do task.spawn(function() task.wait(0.01) print("w", i) end) end
        task.delay(0.02, print, "late")
        "#,
    );
    h.scheduler.frame(DT).unwrap();
    assert_eq!(h.log(), lines(&["w 1"]));
    h.advance(DT);
    let report = h.scheduler.cycle().unwrap();
    assert_eq!(report.timers, 3);
    assert_eq!(h.log(), lines(&["w 1", "w 2", "w 3", "late"]));
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_carried_delay_cancelled_or_hand_resumed_drops_its_entry_and_its_arguments() {
    let h = budget_host(1);
    h.spawn(
        r#"
        weak = setmetatable({}, { __mode = "k" })
        local arg = {}
        weak[arg] = true
        task.delay(0.01, print, "first")
        cancelled = task.delay(0.01, function(t) print("cancelled ran", t) end, arg)
        arg = nil
        waiter = task.spawn(function() print("waiter got", task.wait(0.01)) end)
        task.delay(0.01, print, "last")
        "#,
    );
    assert_eq!(h.scheduler.frame(DT).unwrap().carried, 3);
    h.exec(
        r#"
        task.cancel(cancelled)
        coroutine.resume(waiter, "by hand")
        "#,
    );
    let report = h.scheduler.frame(DT).unwrap();
    assert_eq!(report.carried, 0, "{report:?}");
    assert_eq!(h.log(), lines(&["first", "waiter got by hand", "last"]));
    h.exec("collectgarbage() collectgarbage()");
    h.exec("local n = 0 for _ in weak do n += 1 end print('kept', n)");
    assert_eq!(h.log().last().unwrap(), "kept 0");
    assert_eq!(h.scheduler.task_count(), 0);
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_panic_during_a_budgeted_frame_keeps_the_entries_not_yet_run() {
    let h = budget_host(3);
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.spawn(
        r#"
        for i = 1, 5 do
            task.spawn(function() task.wait(0.01) if i == 2 then boom() end print("w", i) end)
        end
        "#,
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.scheduler.frame(DT).unwrap()
    }));
    assert!(caught.is_err());
    assert_eq!(h.log(), lines(&["w 1"]));
    assert_eq!(h.scheduler.task_count(), 3);
    let report = h.scheduler.frame(DT).unwrap();
    assert_eq!(report.timers, 3, "{report:?}");
    assert_eq!(report.carried, 0, "{report:?}");
    assert_eq!(h.log(), lines(&["w 1", "w 3", "w 4", "w 5"]));
    assert!(!h.scheduler.has_work());
}

#[test]
fn shutdown_with_carried_delays_drops_their_arguments() {
    let h = budget_host(1);
    h.spawn(
        r#"
        weak = setmetatable({}, { __mode = "k" })
        for i = 1, 4 do
            local arg = {}
            weak[arg] = true
            task.delay(0.01, function() end, arg)
        end
        "#,
    );
    assert_eq!(h.scheduler.frame(DT).unwrap().carried, 3);
    h.scheduler.shutdown().unwrap();
    h.exec("collectgarbage() collectgarbage()");
    h.exec("local n = 0 for _ in weak do n += 1 end print('kept', n)");
    assert_eq!(h.log().last().unwrap(), "kept 0");
}

// ---------------------------------------------------------------------------------------------
// 4. The wake-up through WAKING
// ---------------------------------------------------------------------------------------------

/// The host drives a cycle from deep in plain Lua code (many C calls deep), where the wake-up
/// may not enter the waiting thread (on this build at 196 levels Luau reports a C stack
/// overflow; the same at 65c1959). Either way the thread must not later take a hand resume's
/// single value for the scheduler's wake-up (WAKING must not be left naming it), and the task
/// must end or go on cleanly.
#[test]
fn a_wake_up_that_fails_before_the_continuation_leaves_no_stale_waking_thread() {
    for depth in [185, 190, 194, 195, 196, 197] {
        wake_up_driven_at_depth(depth);
    }
}

fn wake_up_driven_at_depth(depth: u32) {
    let h = Rc::new(Host::builder().chunk_name("test").errors_in_log().build());
    let host = Rc::downgrade(&h);
    let drive = h
        .lua
        .create_function(move |_, ()| {
            let host = host.upgrade().expect("the host is alive");
            host.scheduler.cycle().map_err(mlua::Error::external)?;
            Ok(())
        })
        .unwrap();
    h.lua.globals().set("drive", drive).unwrap();
    h.spawn(
        r#"
        waiter = coroutine.running()
        print("woke with", task.wait(1))
        print("then got", coroutine.yield())
        "#,
    );
    h.advance(Duration::from_secs(1));
    h.lua.globals().set("DEPTH", depth).unwrap();
    h.exec(
        r#"
        local function deep(n)
            if n == 0 then return drive() end
            local ok, err = pcall(deep, n - 1)
            if not ok then error(err, 0) end
        end
        print("drive", pcall(deep, DEPTH))
        "#,
    );
    assert!(!h.scheduler.has_work());
    assert_eq!(h.scheduler.task_count(), 0);
    h.exec("print('resume', coroutine.resume(waiter, 'hand'))");
    let log = h.log();
    if log[0] == "woke with 1" {
        assert_eq!(
            log[1..],
            lines(&["drive true", "then got hand", "resume true"])
        );
    } else {
        // The wake-up failed: the task ended with the error reported, its thread closed.
        assert!(log[0].starts_with("error: "), "depth {depth}: {log:?}");
        assert_eq!(log[1], "drive true", "depth {depth}: {log:?}");
        assert!(log[2].starts_with("resume false"), "depth {depth}: {log:?}");
    }
    assert!(!h.scheduler.has_work(), "depth {depth}: {log:?}");
}

#[test]
fn a_woken_task_that_hand_resumes_another_waiter_with_one_value_gives_it_that_value() {
    let h = harness();
    h.spawn(
        r#"
        local b = task.spawn(function()
            print("b got", task.wait(10))
            print("b later", task.wait(1))
        end)
        task.spawn(function()
            task.wait(1)
            coroutine.resume(b, 99)
        end)
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), lines(&["b got 99"]));
    h.step(1.0);
    assert_eq!(h.log(), lines(&["b got 99", "b later 1"]));
    for _ in 0..12 {
        h.step(1.0);
    }
    assert_eq!(h.log(), lines(&["b got 99", "b later 1"]));
    assert!(!h.scheduler.has_work());
}

#[test]
fn a_nested_scheduler_driven_from_inside_a_woken_task_keeps_both_wake_ups_apart() {
    let outer = harness();
    let inner = Rc::new(harness());
    inner.spawn("for i = 1, 3 do print('inner', task.wait(1)) end");
    let driven = Rc::clone(&inner);
    let drive = outer
        .lua
        .create_function(move |_, ()| {
            driven.step(1.0);
            Ok(())
        })
        .unwrap();
    outer.lua.globals().set("drive", drive).unwrap();
    outer.spawn(
        r#"
        for i = 1, 3 do
            local e = task.wait(1)
            drive()
            print("outer", e)
        end
        "#,
    );
    for _ in 0..3 {
        outer.step(1.0);
    }
    assert_eq!(outer.log(), lines(&["outer 1", "outer 1", "outer 1"]));
    assert_eq!(inner.log(), lines(&["inner 1", "inner 1", "inner 1"]));
    assert!(!outer.scheduler.has_work() && !inner.scheduler.has_work());
}

// ---------------------------------------------------------------------------------------------
// 5. The timer queue's run and heap, against a model
// ---------------------------------------------------------------------------------------------

#[test]
fn timers_in_and_out_of_order_fire_by_deadline_then_scheduling_order_as_a_model_says() {
    // A small linear congruential generator: the same cases on every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for case in 0..40 {
        let count = 5 + next(40) as usize;
        // Durations in eighths of a second: many equal, some in order, some not.
        let mut eighths: Vec<u64> = Vec::new();
        for i in 0..count {
            let d = match next(3) {
                0 => i as u64 / 3,
                1 => next(6),
                _ => eighths.last().copied().unwrap_or(0),
            };
            eighths.push(d);
        }
        let h = harness();
        let list = eighths
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        h.spawn(&format!(
            r#"
            for i, d in {{{list}}} do
                if i % 2 == 0 then
                    task.delay(d / 8, print, i)
                else
                    task.spawn(function() task.wait(d / 8) print(i) end)
                end
            end
            "#
        ));
        let mut fired: Vec<(u64, usize)> = Vec::new();
        for step in 0..=20u64 {
            if step > 0 {
                h.step(0.125);
            } else {
                h.scheduler.cycle().unwrap();
            }
            let log = h.log();
            for line in &log[fired.len()..] {
                fired.push((step, line.parse().unwrap()));
            }
        }
        let mut expected: Vec<(u64, usize)> = eighths
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, i + 1))
            .collect();
        // Deadline first, then scheduling order (stable sort). A zero delay runs in the first cycle.
        expected.sort_by_key(|&(d, _)| d);
        assert_eq!(fired, expected, "case {case}: durations {eighths:?}");
    }
}
