//! Adversarial tests against the task contract (docs/contract.md): each test pins one behaviour that Lua code (or the
//! host) may rely on, in a corner the ordinary rule scripts do not reach. Everything timing
//! related runs under a virtual clock and is driven with `cycle()` or `run_blocking()`, so every
//! test is deterministic.
//!
//! Futures are "gates": a future that stays pending until the test opens its gate from Rust
//! (or Lua), keeping only the latest waker it was polled with, as ordinary futures do
//! (channels, timers). A drop guard counts futures dropped before they completed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use spindle::mlua::{self, Function, Lua, MultiValue, Value};
use spindle::{
    Clock, Error, Outcome, Scheduler, Task, TaskError, TaskId, TaskStatus, VirtualClock,
};

// ---------------------------------------------------------------------------------------------
// Rust-side memory that the scheduler keeps: the binary's allocator counts each thread's heap
// (support/heap.rs), Lua's allocations included.
// ---------------------------------------------------------------------------------------------

/// Live heap bytes of this thread that are not Lua's.
fn rust_bytes(lua: &Lua) -> isize {
    crate::support::heap::thread_bytes() - lua.used_memory() as isize
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct H {
    lua: Lua,
    clock: VirtualClock,
    sched: Rc<Scheduler>,
    log: Rc<RefCell<Vec<String>>>,
    errors: Rc<RefCell<Vec<TaskError>>>,
}

fn harness() -> H {
    harness_with(|b| b)
}

fn harness_with(
    configure: impl FnOnce(spindle::SchedulerBuilder) -> spindle::SchedulerBuilder,
) -> H {
    let lua = Lua::new();
    let clock = VirtualClock::new();
    let errors: Rc<RefCell<Vec<TaskError>>> = Rc::default();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let e = Rc::clone(&errors);
    let l = Rc::clone(&log);
    let builder = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(move |error| {
            l.borrow_mut().push(format!("error: {}", error.message));
            e.borrow_mut().push(error.clone());
        });
    let sched = Rc::new(configure(builder).build(&lua).unwrap());
    sched.install_task_library().unwrap();

    let tostring: Function = lua.globals().get("tostring").unwrap();
    let printed = Rc::clone(&log);
    let print = lua
        .create_function(move |_, values: MultiValue| {
            let mut line = Vec::new();
            for value in values {
                line.push(tostring.call::<String>(value)?);
            }
            printed.borrow_mut().push(line.join(" "));
            Ok(())
        })
        .unwrap();
    lua.globals().set("print", print).unwrap();
    let c = clock.clone();
    let now = lua
        .create_function(move |_, ()| Ok(c.now().as_secs_f64()))
        .unwrap();
    lua.globals().set("now", now).unwrap();
    H {
        lua,
        clock,
        sched,
        log,
        errors,
    }
}

impl H {
    fn func(&self, src: &str) -> Function {
        self.lua
            .load(src)
            .set_name("=test")
            .into_function()
            .unwrap()
    }

    /// Spawns `src` as a host task (resumed at once, deferred queue drained).
    fn spawn(&self, src: &str) -> Task {
        self.sched.spawn(self.func(src), ()).unwrap()
    }

    /// Spawns `src` and runs the scheduler to completion.
    fn run(&self, src: &str) -> Task {
        let id = self.spawn(src);
        self.sched.run_blocking().unwrap();
        id
    }

    fn step(&self, seconds: f64) -> spindle::CycleReport {
        self.clock.advance(Duration::from_secs_f64(seconds));
        self.sched.cycle().unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    fn global<T: mlua::FromLua>(&self, name: &str) -> T {
        self.lua.globals().get(name).unwrap()
    }

    fn result<R: mlua::FromLuaMulti>(&self, id: &Task) -> R {
        match self.sched.take_result::<R>(id).unwrap() {
            Some(Outcome::Finished(v)) => v,
            Some(Outcome::Failed(e)) => panic!("task failed: {e}"),
            Some(_) => panic!("task was cancelled"),
            None => panic!("task has no outcome yet"),
        }
    }
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Gates: futures the test completes by hand
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct GateState {
    open: bool,
    wakers: BTreeMap<u64, Waker>,
}

#[derive(Clone, Default)]
struct Gates {
    gates: Rc<RefCell<HashMap<String, Rc<RefCell<GateState>>>>>,
    next: Rc<Cell<u64>>,
    polls: Rc<Cell<u32>>,
    /// Futures dropped before they completed.
    dropped_pending: Rc<Cell<u32>>,
}

impl Gates {
    fn gate(&self, name: &str) -> Rc<RefCell<GateState>> {
        Rc::clone(self.gates.borrow_mut().entry(name.to_owned()).or_default())
    }

    fn open(&self, name: &str) {
        let gate = self.gate(name);
        let wakers: Vec<Waker> = {
            let mut g = gate.borrow_mut();
            g.open = true;
            std::mem::take(&mut g.wakers).into_values().collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    fn wait(&self, name: &str) -> GateWait {
        let id = self.next.get();
        self.next.set(id + 1);
        GateWait {
            gate: self.gate(name),
            id,
            done: false,
            polls: Rc::clone(&self.polls),
            dropped_pending: Rc::clone(&self.dropped_pending),
        }
    }

    fn dropped(&self) -> u32 {
        self.dropped_pending.get()
    }
}

struct GateWait {
    gate: Rc<RefCell<GateState>>,
    id: u64,
    done: bool,
    polls: Rc<Cell<u32>>,
    dropped_pending: Rc<Cell<u32>>,
}

impl Future for GateWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.set(self.polls.get() + 1);
        let mut g = self.gate.borrow_mut();
        if g.open {
            g.wakers.remove(&self.id);
            drop(g);
            self.done = true;
            Poll::Ready(())
        } else {
            // Like any ordinary future: keep only the waker of the latest poll.
            g.wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for GateWait {
    fn drop(&mut self) {
        if !self.done {
            self.dropped_pending.set(self.dropped_pending.get() + 1);
        }
        self.gate.borrow_mut().wakers.remove(&self.id);
    }
}

/// Installs, as globals:
/// - `owned_wait(name)` / `mlua_wait(name)`: block until gate `name` opens, return `name`
///   (Spindle's async API / mlua's `create_async_function`);
/// - `owned_fail_now(msg)`, `owned_fail_later(name, msg)`, `mlua_fail_later(name, msg)`;
/// - `owned_values_now()`, `owned_values_later(name)`: return `1, nil, 3`;
/// - `open_gate(name)`, `dropped()`.
fn install_gates(h: &H) -> Gates {
    let gates = Gates::default();
    let g = h.lua.globals();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok(name)
            }
        })
        .unwrap();
    g.set("owned_wait", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok(name)
            }
        })
        .unwrap();
    g.set("mlua_wait", f).unwrap();

    let f = h
        .sched
        .create_async_function(
            |_, msg: String| async move { Err::<(), _>(mlua::Error::runtime(msg)) },
        )
        .unwrap();
    g.set("owned_fail_now", f).unwrap();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, (name, msg): (String, String)| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Err::<(), _>(mlua::Error::runtime(msg))
            }
        })
        .unwrap();
    g.set("owned_fail_later", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_async_function(move |_, (name, msg): (String, String)| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Err::<(), _>(mlua::Error::runtime(msg))
            }
        })
        .unwrap();
    g.set("mlua_fail_later", f).unwrap();

    let f = h
        .sched
        .create_async_function(|_, ()| async move { Ok((1, Value::Nil, 3)) })
        .unwrap();
    g.set("owned_values_now", f).unwrap();

    let gs = gates.clone();
    let f = h
        .sched
        .create_async_function(move |_, name: String| {
            let w = gs.wait(&name);
            async move {
                w.await;
                Ok((1, Value::Nil, 3))
            }
        })
        .unwrap();
    g.set("owned_values_later", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_function(move |_, name: String| {
            gs.open(&name);
            Ok(())
        })
        .unwrap();
    g.set("open_gate", f).unwrap();

    let gs = gates.clone();
    let f = h
        .lua
        .create_function(move |_, ()| Ok(gs.dropped()))
        .unwrap();
    g.set("dropped", f).unwrap();

    gates
}

// ---------------------------------------------------------------------------------------------
// Rule 6: cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_inside_deferred_drain_drops_later_deferrals() {
    let h = harness();
    h.run(
        r##"
        local b
        task.defer(function() print("a"); task.cancel(b) end)
        b = task.defer(function() print("never b") end)
        task.defer(function() print("c") end)
        "##,
    );
    assert_eq!(h.log(), lines(&["a", "c"]));
}

#[test]
fn cancel_of_a_level2_deferral_from_its_sibling_drops_it() {
    let h = harness();
    h.run(
        r##"
        local victim
        task.defer(function()
            victim = task.defer(function() print("never victim") end)
        end)
        task.defer(function()
            task.defer(function() task.cancel(victim); print("cancelled") end)
        end)
        "##,
    );
    // Order of level 2: victim was queued first, so it runs before the canceller.
    assert_eq!(h.log(), lines(&["never victim", "cancelled"]));
}

#[test]
fn host_cancel_of_only_deferred_task_leaves_no_work() {
    let h = harness();
    let f = h.func("print('never')");
    let id = h.sched.defer(f, ()).unwrap();
    assert!(h.sched.has_work());
    assert!(h.sched.cancel(&id).unwrap());
    assert!(
        !h.sched.has_work(),
        "rule 6: the deferral is dropped at once, so nothing is left to do"
    );
    h.sched.run_blocking().unwrap();
    assert!(h.log().is_empty());
    assert!(matches!(
        h.sched.take_result::<()>(&id).unwrap(),
        Some(Outcome::Cancelled)
    ));
}

#[test]
fn lua_cancel_of_only_deferred_task_leaves_no_work() {
    let h = harness();
    // Run from a Rust function so that we can look at has_work between the cancel and the drain.
    let h_sched = Rc::downgrade(&h.sched);
    let probe = h
        .lua
        .create_function(move |_, ()| Ok(h_sched.upgrade().unwrap().has_work()))
        .unwrap();
    h.lua.globals().set("has_work", probe).unwrap();
    h.run(
        r##"
        local t = task.defer(print, "never")
        task.cancel(t)
        print("has work", has_work())
        "##,
    );
    assert_eq!(h.log(), lines(&["has work false"]));
}

#[test]
fn cancel_of_delayed_task_ends_run_without_advancing_the_clock() {
    let h = harness();
    h.run(
        r##"
        local t = task.delay(100, print, "never")
        local w = task.spawn(function() task.wait(50); print("never w") end)
        task.cancel(t)
        task.cancel(w)
        "##,
    );
    assert!(h.log().is_empty());
    assert_eq!(h.clock.now(), Duration::ZERO);
    assert!(!h.sched.has_work());
    assert_eq!(h.sched.next_deadline(), None);
}

#[test]
fn cancel_drops_both_pending_deferral_and_delay_of_one_thread() {
    let h = harness();
    h.run(
        r##"
        local co = coroutine.create(function(...) print("never", ...) end)
        task.defer(co, "d")
        task.delay(1, co, "t")
        task.cancel(co)
        print(coroutine.status(co))
        "##,
    );
    assert_eq!(h.log(), lines(&["dead"]));
    assert_eq!(h.clock.now(), Duration::ZERO);
}

#[test]
fn cancelled_waiter_slot_reused_in_same_timer_batch_is_not_woken_by_stale_entry() {
    let h = harness();
    h.run(
        r##"
        local b
        -- a's delay is scheduled first, so it runs first among the timers due at 1.
        task.delay(1, function()
            task.cancel(b)
            -- Likely reuses b's freed slot.
            task.spawn(function()
                local e = task.wait(5)
                print("c waited", e)
            end)
            task.spawn(function()
                print("d got", coroutine.yield())
            end)
        end)
        b = task.spawn(function()
            task.wait(1)
            print("never b")
        end)
        "##,
    );
    assert_eq!(h.log(), lines(&["c waited 5"]));
}

#[test]
fn cancelled_deferral_slot_reused_before_drain_is_not_resumed_by_stale_entry() {
    let h = harness();
    h.run(
        r##"
        local b = task.defer(function() print("never b") end)
        task.cancel(b)
        -- New tasks likely reuse b's slot; b's queued deferral must not resume them.
        local c = task.spawn(function()
            print("c got", coroutine.yield())
        end)
        task.spawn(function()
            print("d waited", task.wait(1))
        end)
        "##,
    );
    assert_eq!(h.log(), lines(&["d waited 1"]));
}

#[test]
fn task_cancel_of_running_and_normal_threads_errors_in_caller() {
    let h = harness();
    h.run(
        r##"
        local me = coroutine.running()
        print(pcall(task.cancel, me))
        -- A task spawned by me cancels me indirectly: I am "normal" while it runs.
        task.spawn(function()
            print(pcall(task.cancel, me))
        end)
        -- A deferred task may cancel me later: I am suspended then.
        task.defer(function() task.cancel(me) end)
        task.wait(1)
        print("never after self-cancel by deferral")
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("false ") && log[0].contains("running"),
        "{log:?}"
    );
    assert!(
        log[1].starts_with("false ") && log[1].contains("normal"),
        "{log:?}"
    );
    assert_eq!(h.errors.borrow().len(), 0);
}

#[test]
fn host_cancel_from_inside_the_running_task_is_an_error_not_a_panic() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let slot: Rc<Cell<Option<TaskId>>> = Rc::default();
    let s = Rc::clone(&slot);
    let f = h
        .lua
        .create_function(move |_, ()| {
            let sched = weak.upgrade().unwrap();
            match sched.cancel(s.get().unwrap()) {
                Ok(v) => Ok(format!("ok {v}")),
                Err(e) => Ok(format!("err {e}")),
            }
        })
        .unwrap();
    h.lua.globals().set("cancel_me", f).unwrap();
    // Defer the body so the id is known before it runs.
    let id = h
        .sched
        .defer(
            h.func("print(cancel_me()); task.wait(1); print('still alive')"),
            (),
        )
        .unwrap();
    slot.set(Some(id.id()));
    h.sched.run_blocking().unwrap();
    let log = h.log();
    assert_eq!(
        log[0],
        format!(
            "err task {} is running and cannot be cancelled from inside itself",
            id.id()
        )
    );
    assert_eq!(log[1], "still alive");
}

#[test]
fn host_cancel_of_a_task_in_normal_state_is_an_error() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let slot: Rc<Cell<Option<TaskId>>> = Rc::default();
    let s = Rc::clone(&slot);
    let f = h
        .lua
        .create_function(move |_, ()| {
            let sched = weak.upgrade().unwrap();
            Ok(matches!(
                sched.cancel(s.get().unwrap()),
                Err(Error::TaskRunning(_))
            ))
        })
        .unwrap();
    h.lua.globals().set("cancel_outer", f).unwrap();
    let id = h
        .sched
        .defer(
            h.func(
                r##"
                local co = coroutine.create(function() print("refused", cancel_outer()) end)
                coroutine.resume(co)
                print("outer alive")
                "##,
            ),
            (),
        )
        .unwrap();
    slot.set(Some(id.id()));
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["refused true", "outer alive"]));
}

#[test]
fn cancel_owned_async_drops_future_before_cancel_returns() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        local t = task.spawn(function() owned_wait("g"); print("never") end)
        print("before", dropped())
        task.cancel(t)
        print("after", dropped())
        print(coroutine.status(t))
        "##,
    );
    assert_eq!(h.log(), lines(&["before 0", "after 1", "dead"]));
    assert!(!h.sched.has_work());
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log().len(), 3);
}

#[test]
fn cancel_mlua_async_resets_thread_and_collector_drops_future() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        t = task.spawn(function() mlua_wait("g"); print("never") end)
        task.cancel(t)
        print(coroutine.status(t), coroutine.resume(t))
        t = nil
        "##,
    );
    assert_eq!(h.log(), lines(&["dead false cannot resume dead coroutine"]));
    assert!(
        !h.sched.has_work(),
        "the cancelled task no longer counts as awaiting"
    );
    h.lua.gc_collect().unwrap();
    h.lua.gc_collect().unwrap();
    assert_eq!(gates.dropped(), 1);
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log().len(), 1);
}

#[test]
fn cancel_of_task_whose_future_already_woke_in_the_same_cycle_drops_the_wakeup() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        victim = task.spawn(function() owned_wait("g"); print("never owned") end)
        victim2 = task.spawn(function() mlua_wait("g"); print("never mlua") end)
        task.delay(1, function() task.cancel(victim); task.cancel(victim2); print("cancelled") end)
        "##,
    );
    gates.open("g"); // both wake-ups are queued now
    h.step(1.0); // timers run before wake-ups: the canceller goes first
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["cancelled"]));
}

// ---------------------------------------------------------------------------------------------
// Rules 2 and 3: defer
// ---------------------------------------------------------------------------------------------

#[test]
fn host_spawn_is_a_resumption_point_that_drains_deferrals() {
    let h = harness();
    h.spawn("task.defer(print, 'A'); print('B')");
    assert_eq!(h.log(), lines(&["B", "A"]));
}

#[test]
fn deferrals_made_during_drain_run_after_earlier_queued_ones() {
    let h = harness();
    h.run(
        r##"
        task.defer(function() print("a1"); task.defer(print, "c2") end)
        task.defer(function() print("b1"); task.defer(print, "d2") end)
        "##,
    );
    assert_eq!(h.log(), lines(&["a1", "b1", "c2", "d2"]));
}

#[test]
fn defer_depth_limit_is_configurable_and_counts_spawns_and_coroutines_inside_deferred_tasks() {
    let h = harness_with(|b| b.max_defer_depth(3));
    h.run(
        r##"
        local runs = 0
        local function again()
            runs += 1
            -- defer from a nested coroutine inside a spawned task: still one level deeper
            task.spawn(function()
                local co = coroutine.create(function() task.defer(again) end)
                coroutine.resume(co)
            end)
        end
        task.defer(again)
        task.wait()
        print("runs", runs)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "error: Maximum re-entrancy depth (3) exceeded calling task.defer",
            "runs 3"
        ])
    );
    assert_eq!(h.sched.error_count(), 1);
}

#[test]
fn defer_depth_is_per_chain_so_many_level1_deferrals_all_run() {
    let h = harness_with(|b| b.max_defer_depth(2));
    h.run(
        r##"
        local count = 0
        for i = 1, 500 do task.defer(function() count += 1 end) end
        task.wait()
        print("count", count)
        "##,
    );
    assert_eq!(h.log(), lines(&["count 500"]));
}

#[test]
fn deferral_from_timer_callback_is_level1_even_after_a_deep_chain() {
    let h = harness_with(|b| b.max_defer_depth(2));
    h.run(
        r##"
        local function chain(n) print("chain", n); task.defer(chain, n + 1) end
        task.defer(chain, 1)
        task.delay(0, function()
            task.defer(function()
                task.defer(function() print("level 2 from timer") end)
            end)
        end)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "chain 1",
            "chain 2",
            "error: Maximum re-entrancy depth (2) exceeded calling task.defer",
            "level 2 from timer"
        ])
    );
}

#[test]
fn refused_deferral_does_not_run_the_thread_and_does_not_keep_the_run_alive() {
    let h = harness_with(|b| b.max_defer_depth(1));
    h.run(
        r##"
        task.defer(function()
            refused = task.defer(function() print("never") end)
        end)
        "##,
    );
    assert!(!h.sched.has_work());
    assert_eq!(
        h.lua
            .load("return coroutine.status(refused)")
            .eval::<String>()
            .unwrap(),
        "suspended"
    );
    assert_eq!(h.sched.error_count(), 1);
}

#[test]
fn deferred_fresh_thread_started_by_task_spawn_first_runs_once() {
    let h = harness();
    h.run(
        r##"
        local t = task.defer(function(...)
            print("body", ...)
            coroutine.yield()
            print("never: resumed by the stale deferral")
        end, "deferred-arg")
        task.spawn(t, "spawn-arg")
        "##,
    );
    assert_eq!(h.log(), lines(&["body spawn-arg"]));
}

#[test]
fn task_defer_of_running_thread_then_plain_yield_resumes_it_with_args() {
    let h = harness();
    h.run(
        r##"
        task.defer(coroutine.running(), 1, nil, 3)
        local a, b, c = coroutine.yield()
        print("resumed", a, b, c, select("#", a, b, c))
        "##,
    );
    assert_eq!(h.log(), lines(&["resumed 1 nil 3 3"]));
}

#[test]
fn deferred_args_with_trailing_nils_keep_their_count() {
    let h = harness();
    h.run(
        r##"
        task.defer(function(...) print("defer", select("#", ...)) end, nil, nil)
        task.delay(0, function(...) print("delay", select("#", ...)) end, 1, nil)
        "##,
    );
    assert_eq!(h.log(), lines(&["defer 2", "delay 2"]));
}

// ---------------------------------------------------------------------------------------------
// Rules 4, 5, 7, 15: time
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_returns_at_least_the_requested_time_for_sub_nanosecond_fractions() {
    let h = harness();
    h.run(
        r##"
        local req = 1.0000000004
        local got = task.wait(req)
        print(got >= req, now() >= req)
        local tiny = 1e-10
        got = task.wait(tiny)
        print(got >= tiny)
        "##,
    );
    assert_eq!(h.log(), lines(&["true true", "true"]));
}

#[test]
fn delay_never_fires_before_the_requested_time_for_sub_nanosecond_fractions() {
    let h = harness();
    h.run(
        r##"
        task.delay(2.0000000004, function() print(now() >= 2.0000000004) end)
        "##,
    );
    assert_eq!(h.log(), lines(&["true"]));
}

#[test]
fn wait_returns_exact_elapsed_time_and_zero_wait_always_yields() {
    let h = harness();
    h.spawn(
        r##"
        local order = {}
        task.spawn(function() table.insert(order, "waiter before"); task.wait(0); table.insert(order, "waiter after") end)
        table.insert(order, "spawner")
        result = order
        "##,
    );
    let order: Vec<String> = h.global("result");
    assert_eq!(order, lines(&["waiter before", "spawner"]));
    h.step(0.25);
    let order: Vec<String> = h.global("result");
    assert_eq!(order, lines(&["waiter before", "spawner", "waiter after"]));
}

#[test]
fn wait_zero_during_a_timer_batch_goes_to_the_next_cycle() {
    let h = harness();
    h.spawn(
        r##"
        count = 0
        task.spawn(function() while true do task.wait(0); count += 1 end end)
        "##,
    );
    for i in 1..=5 {
        let report = h.sched.cycle().unwrap();
        assert_eq!(report.timers, 1, "cycle {i}");
        assert_eq!(h.global::<u32>("count"), i);
    }
}

#[test]
fn delay_zero_and_nil_fire_on_the_next_cycle_not_immediately() {
    let h = harness();
    h.spawn(
        r##"
        task.delay(0, print, "zero")
        task.delay(nil, print, "nil")
        task.delay(-5, print, "negative")
        task.delay(0/0, print, "nan")
        task.delay("0", print, "string zero")
        print("spawned")
        "##,
    );
    assert_eq!(h.take_log(), lines(&["spawned"]));
    let report = h.sched.cycle().unwrap();
    assert_eq!(report.timers, 5);
    assert_eq!(
        h.log(),
        lines(&["zero", "nil", "negative", "nan", "string zero"])
    );
}

#[test]
fn equal_deadlines_from_waits_and_delays_run_in_schedule_order() {
    let h = harness();
    h.run(
        r##"
        task.delay(1, print, "d1")
        task.spawn(function() task.wait(1); print("w2") end)
        task.delay(1, print, "d3")
        task.spawn(function() task.wait(1); print("w4") end)
        task.delay(0.5, print, "early")
        task.delay(2, print, "late")
        "##,
    );
    assert_eq!(h.log(), lines(&["early", "d1", "w2", "d3", "w4", "late"]));
}

#[test]
fn earlier_deadline_scheduled_later_runs_first_within_one_cycle() {
    let h = harness();
    h.spawn(
        r##"
        task.delay(3, print, "three")
        task.delay(2, print, "two")
        task.delay(1, print, "one")
        "##,
    );
    h.step(10.0);
    assert_eq!(h.log(), lines(&["one", "two", "three"]));
}

#[test]
fn math_huge_wait_never_fires_but_ends_by_manual_resume() {
    let h = harness();
    h.run(
        r##"
        t = task.spawn(function() print("got", task.wait(math.huge)) end)
        "##,
    );
    assert!(h.log().is_empty());
    assert!(!h.sched.has_work());
    assert_eq!(h.clock.now(), Duration::ZERO);
    h.run("coroutine.resume(t, 'manual')");
    assert_eq!(h.log(), lines(&["got manual"]));
}

#[test]
fn argument_errors_name_function_and_argument() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.spawn, "x"))
        print(pcall(task.defer, 42))
        print(pcall(task.delay, 1, {}))
        print(pcall(task.delay, "soon", print))
        print(pcall(task.wait, "abc"))
        print(pcall(task.wait, true))
        print(pcall(task.cancel, function() end))
        "##,
    );
    let log = h.log();
    let expected = [
        "invalid argument #1 to 'spawn' (function or thread expected, got string)",
        "invalid argument #1 to 'defer' (function or thread expected, got number)",
        "invalid argument #2 to 'delay' (function or thread expected, got table)",
        "invalid argument #1 to 'delay' (number expected, got string)",
        "invalid argument #1 to 'wait' (number expected, got string)",
        "invalid argument #1 to 'wait' (number expected, got boolean)",
        "invalid argument #1 to 'cancel' (thread expected, got function)",
    ];
    assert_eq!(log.len(), expected.len(), "{log:?}");
    for (line, want) in log.iter().zip(expected) {
        assert!(line.starts_with("false "), "{line}");
        assert!(line.contains(want), "{line} should contain {want}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 1 and 12: spawning threads in every state; wake tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn task_spawn_of_running_normal_dead_and_errored_threads_is_an_argument_error() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.spawn, coroutine.running()))
        local outer = coroutine.running()
        local co = coroutine.create(function() print(pcall(task.spawn, outer)) end)
        coroutine.resume(co)
        print(pcall(task.spawn, co))
        local bad = coroutine.create(function() error("x") end)
        coroutine.resume(bad)
        print(pcall(task.spawn, bad))
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].contains("invalid argument #1 to 'spawn'") && log[0].contains("running"));
    assert!(log[1].contains("invalid argument #1 to 'spawn'") && log[1].contains("normal"));
    assert!(log[2].contains("invalid argument #1 to 'spawn'") && log[2].contains("dead"));
    assert!(log[3].contains("invalid argument #1 to 'spawn'") && log[3].contains("dead"));
    assert_eq!(h.sched.error_count(), 0);
}

#[test]
fn task_spawn_of_a_plainly_yielded_coroutine_resumes_it_at_once_with_args() {
    let h = harness();
    h.run(
        r##"
        local co = coroutine.create(function() print("got", coroutine.yield()) end)
        coroutine.resume(co)
        local r = task.spawn(co, "a", "b")
        print(r == co, coroutine.status(co))
        "##,
    );
    assert_eq!(h.log(), lines(&["got a b", "true dead"]));
}

#[test]
fn waiting_thread_resumed_by_hand_then_plain_yield_is_not_resumed_by_the_stale_timer() {
    let h = harness();
    h.run(
        r##"
        t = task.spawn(function()
            print("wait returned", task.wait(1))
            print("yield returned", coroutine.yield())
        end)
        coroutine.resume(t, "early")
        task.wait(5)
        print("status", coroutine.status(t))
        "##,
    );
    assert_eq!(h.log(), lines(&["wait returned early", "status suspended"]));
}

#[test]
fn thread_resumed_by_hand_in_same_timer_batch_before_its_timer_is_resumed_once() {
    let h = harness();
    h.run(
        r##"
        local b
        task.delay(1, function() coroutine.resume(b, "by hand") end)
        b = task.spawn(function()
            print("first", task.wait(1))   -- due at 1 too, but after the delay above
            -- Durations a stale second resumption could not return: it would end them early.
            print("second", task.wait(0.25))
            print("third", task.wait(0.5))
        end)
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&["first by hand", "second 0.25", "third 0.5"])
    );
}

#[test]
fn wait_resumed_by_task_spawn_then_longer_wait_is_not_cut_short() {
    let h = harness();
    h.run(
        r##"
        local t = task.spawn(function()
            print("first", task.wait(1))
            local start = now()
            print("second", task.wait(3))
            print("at", now() - start)
        end)
        task.wait(0.5)
        task.spawn(t, "spawned")
        "##,
    );
    assert_eq!(h.log(), lines(&["first spawned", "second 3", "at 3"]));
}

#[test]
fn coroutine_wrap_around_task_wait_returns_at_once_and_resumes_on_timer() {
    let h = harness();
    h.run(
        r##"
        local f = coroutine.wrap(function(x)
            print("in wrap", x)
            local e = task.wait(2)
            print("wrap resumed after", e)
            return "done"
        end)
        print("call returned", select("#", f("arg")))
        task.wait(3)
        print(pcall(f))
        "##,
    );
    let log = h.log();
    assert_eq!(log[0], "in wrap arg");
    assert_eq!(log[1], "call returned 0");
    assert_eq!(log[2], "wrap resumed after 2");
    assert!(
        log[3].starts_with("false") && log[3].contains("dead"),
        "{log:?}"
    );
}

#[test]
fn pcall_around_task_wait_yields_and_returns_true_and_elapsed() {
    let h = harness();
    h.run(
        r##"
        print(pcall(task.wait, 1.5))
        print(xpcall(function() return task.wait(0.5) end, debug.traceback))
        "##,
    );
    assert_eq!(h.log(), lines(&["true 1.5", "true 0.5"]));
}

// ---------------------------------------------------------------------------------------------
// C-call boundaries
// ---------------------------------------------------------------------------------------------

#[test]
fn task_wait_in_table_sort_comparator_raises_clear_error_and_task_continues() {
    let h = harness();
    h.run(
        r##"
        local t = {3, 1, 2}
        local ok, err = pcall(table.sort, t, function(a, b) task.wait(); return a < b end)
        print(ok, string.find(tostring(err), "yield", 1, true) ~= nil)
        print("waited", task.wait(1))
        "##,
    );
    assert_eq!(h.log(), lines(&["false true", "waited 1"]));
    assert!(!h.sched.has_work());
}

#[test]
fn task_wait_in_index_metamethod_raises_clear_error_and_leaves_no_timer() {
    let h = harness();
    h.run(
        r##"
        local obj = setmetatable({}, {__index = function(_, k) task.wait(10); return k end})
        local ok, err = pcall(function() return obj.x end)
        print(ok, string.find(tostring(err), "yield", 1, true) ~= nil)
        "##,
    );
    assert_eq!(h.log(), lines(&["false true"]));
    assert_eq!(h.clock.now(), Duration::ZERO, "no timer was left behind");
}

#[test]
fn owned_async_in_metamethod_errors_drops_future_and_task_continues() {
    let h = harness();
    let gates = install_gates(&h);
    h.run(
        r##"
        local obj = setmetatable({}, {__index = function(_, k) return owned_wait("never") end})
        local ok, err = pcall(function() return obj.x end)
        print(ok, err, dropped())
        print("waited", task.wait(1))
        "##,
    );
    // A plain string at the caller's line, naming the function, in Luau's words.
    assert_eq!(
        h.log(),
        lines(&[
            "false test:2: async function: attempt to yield across metamethod/C-call boundary 1",
            "waited 1"
        ])
    );
    assert_eq!(gates.dropped(), 1);
    assert!(!h.sched.has_work());
}

#[test]
fn owned_async_that_completes_at_once_works_inside_a_sort_comparator() {
    let h = harness();
    install_gates(&h);
    h.run(
        r##"
        local t = {3, 1, 2}
        table.sort(t, function(a, b) local x = owned_values_now(); return a < b end)
        print(table.concat(t, ","))
        "##,
    );
    assert_eq!(h.log(), lines(&["1,2,3"]));
}

#[test]
fn task_wait_on_the_main_thread_is_a_clear_error() {
    let h = harness();
    let err = h.lua.load("task.wait(1)").exec().unwrap_err().to_string();
    assert!(
        err.contains("task.wait: attempt to yield across metamethod/C-call boundary"),
        "{err}"
    );
    assert!(!h.sched.has_work());
}

#[test]
fn owned_async_on_the_main_thread_is_a_clear_error() {
    let h = harness();
    let gates = install_gates(&h);
    let err = h
        .lua
        .load("return owned_wait('g')")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("async function: attempt to yield across metamethod/C-call boundary"),
        "{err}"
    );
    assert_eq!(gates.dropped(), 1);
    assert!(!h.sched.has_work());
    assert_eq!(h.sched.task_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Rules 8, 9, 10: errors
// ---------------------------------------------------------------------------------------------

#[test]
fn spawn_of_function_erroring_before_first_yield_returns_thread_and_reports_with_traceback() {
    let h = harness();
    h.run(
        r##"
        local function inner() error("boom") end
        local t = task.spawn(function() inner() end)
        print(type(t), coroutine.status(t))
        "##,
    );
    assert_eq!(h.log()[1], "thread dead");
    let errors = h.errors.borrow();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("boom"), "{}", errors[0].message);
    assert!(
        errors[0].traceback.contains("inner"),
        "traceback should name the failing function: {:?}",
        errors[0].traceback
    );
}

#[test]
fn errors_with_table_and_nil_values_are_reported_and_do_not_stop_others() {
    let h = harness();
    h.run(
        r##"
        task.spawn(function() error({code = 1}) end)
        task.spawn(function() error(nil) end)
        task.spawn(function() error(setmetatable({}, {__tostring = function() return "custom" end})) end)
        task.defer(function() error({}) end)
        task.delay(0, function() error() end)
        task.wait(1)
        print("main survived")
        "##,
    );
    assert_eq!(h.sched.error_count(), 5);
    assert_eq!(h.log().last().unwrap(), "main survived");
    let errors = h.errors.borrow();
    assert!(
        errors[2].message.contains("custom"),
        "a __tostring error value should give the message: {:?}",
        errors[2].message
    );
}

#[test]
fn error_in_nested_spawned_task_does_not_unwind_spawner_or_stop_the_drain() {
    let h = harness();
    h.run(
        r##"
        task.defer(function()
            task.spawn(function() error("inner") end)
            print("spawner goes on")
        end)
        task.defer(function() error("deferred fails") end)
        task.defer(print, "third deferred runs")
        "##,
    );
    let log = h.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].starts_with("error:") && log[0].contains("inner"));
    assert_eq!(log[1], "spawner goes on");
    assert!(log[2].contains("deferred fails"));
    assert_eq!(log[3], "third deferred runs");
}

#[test]
fn host_task_failure_is_kept_as_outcome_and_reported_once() {
    let h = harness();
    let id = h.run("task.wait(1); error('late')");
    assert_eq!(h.sched.error_count(), 1);
    assert_eq!(h.sched.status(&id), TaskStatus::Done);
    match h.sched.take_result::<()>(&id).unwrap() {
        Some(Outcome::Failed(e)) => assert!(e.message.contains("late")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(h.sched.take_result::<()>(&id).unwrap().is_none());
    assert_eq!(h.sched.status(&id), TaskStatus::Unknown);
}

#[test]
fn owned_async_error_after_pending_is_caught_by_pcall_with_the_rust_message() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function()
            local ok, err = pcall(owned_fail_later, "g", "disk on fire")
            print(ok, type(err), err)
        end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["false string disk on fire"]));
    assert_eq!(h.sched.error_count(), 0);
}

#[test]
fn owned_async_immediate_error_has_the_same_message_as_a_later_one() {
    let h = harness();
    install_gates(&h);
    h.run(
        r##"
        local ok, err = pcall(owned_fail_now, "disk on fire")
        print(ok, type(err), tostring(err))
        "##,
    );
    assert_eq!(h.log(), lines(&["false string disk on fire"]));
}

#[test]
fn mlua_async_error_is_caught_by_pcall_and_contains_the_rust_message() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function()
            local ok, err = pcall(mlua_fail_later, "g", "disk on fire")
            print(ok, string.find(tostring(err), "disk on fire", 1, true) ~= nil)
        end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["false true"]));
}

#[test]
fn uncaught_owned_async_error_fails_only_its_task() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function() owned_fail_later("g", "fatal") end)
        task.spawn(function() owned_wait("g"); print("sibling done") end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["error: fatal", "sibling done"]));
}

// ---------------------------------------------------------------------------------------------
// Async functions: values, ownership (rules 10 to 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn owned_async_results_with_nils_keep_their_count_now_and_later() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        task.spawn(function()
            print("now", select("#", owned_values_now()), owned_values_now())
            print("later", select("#", owned_values_later("g")))
        end)
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["now 3 1 nil 3", "later 3"]));
}

#[test]
fn owned_async_thread_resumed_by_hand_stays_blocked_until_future_done() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        t = task.spawn(function() print("got", owned_wait("g")) end)
        print("hand", coroutine.resume(t, "bogus"))
        print("spawn", task.spawn(t, "bogus2") == t)
        print("status", coroutine.status(t))
        "##,
    );
    assert_eq!(
        h.take_log(),
        lines(&["hand true", "spawn true", "status suspended"])
    );
    assert!(h.sched.has_work());
    h.sched.cycle().unwrap();
    assert!(h.log().is_empty());
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["got g"]));
}

#[test]
fn task_spawn_of_thread_blocked_in_mlua_async_repolls_and_keeps_it_scheduled() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        t = task.spawn(function() print("got", mlua_wait("g")) end)
        task.spawn(t)
        task.defer(t)
        "##,
    );
    assert!(h.sched.has_work());
    h.sched.cycle().unwrap();
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["got g"]));
}

#[test]
fn owned_async_in_hand_resumed_coroutine_is_resumed_by_scheduler() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        local co = coroutine.create(function() print("co got", owned_wait("g")) end)
        coroutine.resume(co)
        print("resume returned, co is", coroutine.status(co))
        "##,
    );
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(
        h.log(),
        lines(&["resume returned, co is suspended", "co got g"])
    );
}

#[test]
fn mlua_async_in_hand_resumed_coroutine_is_resumed_by_scheduler() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        local co = coroutine.create(function() print("co got", mlua_wait("g")) end)
        coroutine.resume(co)
        -- The task that resumed co moves on to another suspension.
        task.wait(1)
        print("main done")
        "##,
    );
    h.step(1.0);
    gates.open("g");
    for _ in 0..10 {
        h.sched.cycle().unwrap();
    }
    assert_eq!(h.log(), lines(&["main done", "co got g"]));
}

#[test]
fn mlua_async_thread_resumed_by_hand_is_still_resumed_when_its_future_completes() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        t = task.spawn(function() print("got", mlua_wait("g")) end)
        -- A hand resume only polls the future again; t stays the scheduler's.
        coroutine.resume(t)
        task.wait(1)
        "##,
    );
    h.step(1.0);
    gates.open("g");
    for _ in 0..10 {
        h.sched.cycle().unwrap();
    }
    assert_eq!(h.log(), lines(&["got g"]));
    assert!(!h.sched.has_work());
}

#[test]
fn mlua_async_completed_by_hand_resume_is_not_resumed_again_by_its_stale_wakeup() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        b = task.spawn(function()
            print("b got", mlua_wait("g"))
            print("b yields plainly")
            coroutine.yield()
            print("never: b resumed by the scheduler after a plain yield")
        end)
        task.delay(1, function()
            print("a resumes b", coroutine.resume(b))
        end)
        "##,
    );
    gates.open("g"); // b's wake-up is queued
    h.step(1.0); // the timer batch (a) runs before the wake-ups
    h.sched.run_blocking().unwrap();
    assert_eq!(
        h.log(),
        lines(&["b got g", "b yields plainly", "a resumes b true"])
    );
}

#[test]
fn owned_async_completed_while_resumed_by_hand_in_same_cycle_resumes_once() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        b = task.spawn(function()
            print("b got", owned_wait("g"))
            coroutine.yield()
            print("never")
        end)
        task.delay(1, function() print("a resumes b", coroutine.resume(b)) end)
        "##,
    );
    gates.open("g");
    h.step(1.0);
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["a resumes b true", "b got g"]));
}

#[test]
fn future_that_wakes_itself_during_first_poll_is_polled_again_next_cycle() {
    let h = harness();
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0 {
                Poll::Ready(7)
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    let owned = h
        .sched
        .create_async_function(|_, ()| async move { Ok(YieldOnce(false).await) })
        .unwrap();
    let plain = h
        .lua
        .create_async_function(|_, ()| async move { Ok(YieldOnce(false).await) })
        .unwrap();
    h.lua.globals().set("owned_once", owned).unwrap();
    h.lua.globals().set("mlua_once", plain).unwrap();
    h.spawn(
        r##"
        task.spawn(function() print("owned", owned_once()) end)
        task.spawn(function() print("mlua", mlua_once()) end)
        "##,
    );
    assert!(h.log().is_empty());
    let report = h.sched.cycle().unwrap();
    assert_eq!(report.wakeups, 2);
    assert_eq!(h.log(), lines(&["owned 7", "mlua 7"]));
    assert!(!h.sched.has_work());
}

#[test]
fn real_timer_futures_of_both_kinds_complete_under_run() {
    let h = harness();
    let owned = h
        .sched
        .create_async_function(|_, ms: u64| async move {
            async_io::Timer::after(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .unwrap();
    let plain = h
        .lua
        .create_async_function(|_, ms: u64| async move {
            async_io::Timer::after(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .unwrap();
    h.lua.globals().set("owned_sleep", owned).unwrap();
    h.lua.globals().set("mlua_sleep", plain).unwrap();
    h.spawn(
        r##"
        task.spawn(function() print("owned", owned_sleep(5)) end)
        task.spawn(function() print("mlua", mlua_sleep(10)) end)
        "##,
    );
    async_io::block_on(h.sched.run(async_io::Timer::at)).unwrap();
    assert_eq!(h.log(), lines(&["owned 5", "mlua 10"]));
}

// ---------------------------------------------------------------------------------------------
// Re-entrancy from Rust
// ---------------------------------------------------------------------------------------------

#[test]
fn cycle_run_and_shutdown_called_from_inside_a_task_are_errors_not_panics() {
    let h = harness();
    let weak: Weak<Scheduler> = Rc::downgrade(&h.sched);
    let f = h
        .lua
        .create_function(move |_, what: String| {
            let sched = weak.upgrade().unwrap();
            let result = match what.as_str() {
                "cycle" => sched.cycle().map(|_| ()),
                "run_blocking" => sched.run_blocking(),
                "shutdown" => sched.shutdown(),
                "run" => async_io::block_on(sched.run(async_io::Timer::at)),
                _ => unreachable!(),
            };
            Ok(match result {
                Err(Error::Reentrant(_)) => "reentrant".to_string(),
                Err(e) => format!("other error: {e}"),
                Ok(()) => "ok".to_string(),
            })
        })
        .unwrap();
    h.lua.globals().set("reenter", f).unwrap();
    h.run(
        r##"
        print(reenter("cycle"), reenter("run_blocking"), reenter("shutdown"), reenter("run"))
        task.defer(function() print("deferred", reenter("cycle")) end)
        task.delay(1, function() print("timer", reenter("cycle")) end)
        print("main", task.wait(2))
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&[
            "reentrant reentrant reentrant reentrant",
            "deferred reentrant",
            "timer reentrant",
            "main 2"
        ])
    );
}

#[test]
fn cycle_from_the_error_handler_is_an_error_not_a_panic() {
    let slot: Rc<RefCell<Option<Weak<Scheduler>>>> = Rc::default();
    let results: Rc<RefCell<Vec<String>>> = Rc::default();
    let (s, r) = (Rc::clone(&slot), Rc::clone(&results));
    let h = harness_with(move |b| {
        b.on_error(move |_| {
            let sched = s.borrow().as_ref().unwrap().upgrade().unwrap();
            r.borrow_mut().push(match sched.cycle() {
                Err(Error::Reentrant(_)) => "reentrant".into(),
                Err(e) => format!("error {e}"),
                Ok(_) => "ok".into(),
            });
        })
    });
    *slot.borrow_mut() = Some(Rc::downgrade(&h.sched));
    h.run(
        r##"
        task.delay(1, error, "in timer")
        task.defer(error, "in drain")
        "##,
    );
    // The deferred error comes first, from the drain at the end of the host's `spawn`: no cycle
    // runs there, so one may start. The timer's comes from inside a cycle, where none may.
    assert_eq!(*results.borrow(), ["ok", "reentrant"]);
}

#[test]
fn host_spawn_from_inside_a_task_runs_nested_and_defers_to_the_outer_resumption_point() {
    let h = harness();
    let weak = Rc::downgrade(&h.sched);
    let f = h
        .lua
        .create_function(move |lua, f: Function| {
            let sched = weak.upgrade().unwrap();
            let id = sched.spawn(f, ()).map_err(mlua::Error::external)?;
            let _ = lua;
            Ok(id.id().as_u64())
        })
        .unwrap();
    h.lua.globals().set("host_spawn", f).unwrap();
    h.run(
        r##"
        host_spawn(function() print("nested"); task.defer(print, "deferred by nested") end)
        print("outer continues")
        "##,
    );
    assert_eq!(
        h.log(),
        lines(&["nested", "outer continues", "deferred by nested"])
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 18: shutdown
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Rules 16, 17: lifetime and scale
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
fn cancelled_host_task_reports_cancelled_outcome() {
    let h = harness();
    let id = h.spawn("task.wait(5); return 1");
    assert_eq!(h.sched.status(&id), TaskStatus::Scheduled);
    assert!(h.sched.cancel(&id).unwrap());
    assert!(
        !h.sched.cancel(&id).unwrap(),
        "second cancel: not scheduled any more"
    );
    assert!(matches!(
        h.sched.take_result::<i32>(&id).unwrap(),
        Some(Outcome::Cancelled)
    ));
    assert!(!h.sched.has_work());
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

/// Runs `src` in an untouched Luau state and, as a task, under Spindle; returns both results.
fn native_and_spindle(src: &str) -> (String, String) {
    let native = Lua::new();
    let f = native.load(src).set_name("=probe").into_function().unwrap();
    // Inside a coroutine, as the Spindle side runs inside a task.
    let native: String = native.create_thread(f).unwrap().resume(()).unwrap();
    let h = harness();
    let id = h
        .sched
        .spawn(
            h.lua.load(src).set_name("=probe").into_function().unwrap(),
            (),
        )
        .unwrap();
    h.sched.run_blocking().unwrap();
    (native, h.result::<String>(&id))
}

const WRAP_PROBE: &str = r##"
local out = {}
local function note(...)
    local t = table.pack(...)
    for i = 1, t.n do
        local v = t[i]
        t[i] = type(v) .. ":" .. (type(v) == "table" and "tbl" or tostring(v))
    end
    table.insert(out, table.concat(t, "|", 1, t.n))
end
note(pcall(coroutine.wrap(function() error(404, 0) end)))
note(pcall(coroutine.wrap(function() error(12.5, 0) end)))
note(pcall(function() local f = coroutine.wrap(function() error(7, 0) end); f() end))
note(pcall(coroutine.wrap(function() error(true) end)))
local e = {}
local ok, got = pcall(coroutine.wrap(function() error(e) end))
note(ok, got == e)
note(pcall(function() local f = coroutine.wrap(function() error("lvl", 2) end); f() end))
note(select("#", coroutine.wrap(function() return nil, nil end)()))
return table.concat(out, "\n")
"##;

#[test]
fn replaced_coroutine_wrap_propagates_error_values_exactly_as_luau() {
    let (native, spindle) = native_and_spindle(WRAP_PROBE);
    assert_eq!(spindle, native);
}

#[test]
fn replaced_coroutine_resume_keeps_error_values_and_messages_as_luau() {
    let (native, spindle) = native_and_spindle(
        r##"
        local out = {}
        local e = {}
        local co = coroutine.create(function() error(e) end)
        local ok, got = coroutine.resume(co)
        table.insert(out, tostring(ok) .. " " .. tostring(got == e))
        table.insert(out, table.concat({tostring(select(2, pcall(coroutine.resume, nil)))}, ""))
        table.insert(out, tostring(select("#", coroutine.resume(coroutine.create(function() return nil, nil end)))))
        table.insert(out, tostring(select(2, coroutine.resume(coroutine.running()))))
        return table.concat(out, "\n")
        "##,
    );
    assert_eq!(spindle, native);
}

#[test]
fn nested_task_spawn_beyond_luaus_c_stack_limit_fails_one_task_cleanly() {
    // Luau allows 200 nested resumptions; deeper nesting must be an ordinary task error, not a
    // crash. (Debug builds need more than the 2 MiB default test-thread stack for 200 levels.)
    std::thread::Builder::new()
        .stack_size(16 * 1024 * 1024)
        .spawn(|| {
            let h = harness();
            h.run(
                r##"
                local depth = 0
                local function go(k) depth = k; if k < 1000 then task.spawn(go, k + 1) end end
                print(pcall(go, 1))
                print("depth", depth)
                print("still schedules", task.wait(1))
                "##,
            );
            let log = h.log();
            assert_eq!(log.len(), 4, "{log:?}");
            assert!(
                log[0].starts_with("error: ") && log[0].contains("stack overflow"),
                "{log:?}"
            );
            assert_eq!(
                &log[1..],
                &lines(&["true", "depth 200", "still schedules 1"])[..]
            );
            assert_eq!(h.sched.task_count(), 0);
        })
        .unwrap()
        .join()
        .unwrap();
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

#[test]
fn host_spawn_of_a_dead_thread_leaves_no_scheduled_task() {
    let h = harness();
    let thread = h.lua.create_thread(h.func("return 1")).unwrap();
    thread.resume::<()>(()).unwrap();
    let refused = h.sched.spawn(thread, ());
    assert!(
        matches!(refused, Err(Error::NotResumable(_))),
        "{refused:?}"
    );
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
}

#[test]
fn coroutine_wrap_around_mlua_async_returns_at_once_and_the_scheduler_finishes_it() {
    let h = harness();
    let gates = install_gates(&h);
    h.spawn(
        r##"
        local f = coroutine.wrap(function() print("wrapped got", mlua_wait("g")); return "r" end)
        print("wrap returned", select("#", f()))
        "##,
    );
    assert_eq!(h.take_log(), lines(&["wrap returned 0"]));
    assert!(h.sched.has_work());
    h.sched.cycle().unwrap();
    gates.open("g");
    h.sched.run_blocking().unwrap();
    assert_eq!(h.log(), lines(&["wrapped got g"]));
    assert!(!h.sched.has_work());
}

// ---------------------------------------------------------------------------------------------
// Found in review: re-entrancy through the collector, futures completed by hand, a scheduler
// attached after another, and the host API's edges.
// ---------------------------------------------------------------------------------------------

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

/// A future that checks readiness when polled and deregisters its waker when dropped (as
/// async-io's Timer does) completes on a hand resume without ever waking: the task must stop
/// counting as blocked, or the run would never end.
#[test]
fn a_hand_resume_that_completes_an_mlua_future_without_a_wakeup_ends_the_blocked_state() {
    let h = harness();
    let clock = h.clock.clone();
    let sleep = h
        .lua
        .create_async_function(move |_, secs: f64| {
            let clock = clock.clone();
            let at = clock.now() + Duration::from_secs_f64(secs);
            std::future::poll_fn(move |cx| {
                if clock.now() >= at {
                    Poll::Ready(Ok(()))
                } else {
                    let _registered = cx.waker().clone();
                    Poll::Pending
                }
            })
        })
        .unwrap();
    h.lua.globals().set("sleep", sleep).unwrap();
    let _task = h.spawn(
        r#"
        local t = task.spawn(function() sleep(1); print("t done") end)
        task.wait(2)
        print("main resumes t", coroutine.resume(t))
        "#,
    );
    h.step(2.0);
    assert_eq!(h.log(), lines(&["t done", "main resumes t true"]));
    assert!(!h.sched.has_work(), "no task can run again");
    h.sched.run_blocking().unwrap();
}

#[test]
fn a_host_deferral_past_the_depth_limit_is_an_error() {
    let h = harness_with(|b| b.max_defer_depth(0));
    let refused = h.sched.defer(h.func("return 1"), ());
    assert!(
        matches!(refused, Err(Error::DeferDepthExceeded(0))),
        "{refused:?}"
    );
    assert_eq!(h.sched.task_count(), 0);
    assert!(!h.sched.has_work());
}

#[test]
fn an_outcome_that_does_not_convert_stays_for_another_read() {
    let h = harness();
    let task = h.run("return 'not a number'");
    let refused = h.sched.take_result::<i64>(&task);
    assert!(
        matches!(
            refused,
            Err(Error::Lua(
                spindle::mlua::Error::FromLuaConversionError { .. }
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(h.sched.status(&task), TaskStatus::Done);
    assert_eq!(h.result::<String>(&task), "not a number");
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

/// Each `task.delay` of an existing thread is a request of its own, even when an earlier entry
/// of the same timer batch resumes that thread first.
#[test]
fn a_delay_of_an_existing_thread_survives_an_earlier_resume_in_the_same_batch() {
    let h = harness();
    let _task = h.spawn(
        r##"
        local B = coroutine.create(function(...)
            print("B", ...)
            while true do print("B got", coroutine.yield()) end
        end)
        coroutine.resume(B, "start")
        task.delay(1, function() task.spawn(B, "spawned") end)
        task.delay(1, B, "delayed")
        "##,
    );
    h.step(1.0);
    h.step(1.0);
    assert_eq!(
        h.log(),
        lines(&["B start", "B got spawned", "B got delayed"])
    );
    assert!(!h.sched.has_work());
}

#[test]
fn two_handles_to_one_task_share_its_outcome() {
    let h = harness();
    let thread: mlua::Thread = h
        .lua
        .create_thread(h.func("task.wait(1) return 42"))
        .unwrap();
    let first = h.sched.spawn(&thread, ()).unwrap();
    let second = h.sched.defer(&thread, ()).unwrap();
    assert_eq!(first.id(), second.id());
    drop(first);
    h.step(2.0);
    h.step(2.0);
    assert_eq!(h.sched.status(&second), TaskStatus::Done);
    assert_eq!(h.result::<i64>(&second), 42);
}

#[test]
fn a_panic_caught_by_the_host_leaves_the_scheduler_usable() {
    let h = harness();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    let _task = h.spawn("task.wait(1) boom()");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.step(1.0)));
    assert!(caught.is_err());
    let _task = h.spawn("task.wait(1) print('after the panic')");
    h.step(1.0);
    assert_eq!(h.log(), lines(&["after the panic"]));
}

#[test]
fn a_task_blocked_in_a_spindle_future_can_be_poked_any_number_of_times() {
    let h = harness();
    let gates = install_gates(&h);
    let _task = h.spawn(
        r##"
        t = task.spawn(function() print("got", owned_wait("g")) end)
        for i = 1, 25000 do
            local ok, err = coroutine.resume(t)
            if not ok then print("resume", i, err) break end
        end
        "##,
    );
    gates.open("g");
    h.step(0.1);
    assert_eq!(h.log(), lines(&["got g"]));
}

#[test]
fn a_task_handle_from_another_scheduler_is_refused() {
    let (a, b) = (harness(), harness());
    let from_a = a.run("return 1");
    assert!(matches!(
        b.sched.take_result::<i64>(&from_a),
        Err(Error::ForeignTask(_))
    ));
    assert_eq!(a.result::<i64>(&from_a), 1);
}
