//! Rust async functions called from Lua: who owns a suspended task, who wakes it, and what
//! happens to the future when its task ends early (contract rules 6, 10, 11).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::support::on_tokio_local_set;
use crate::support::{harness, install_gates, lines};
use spindle::mlua::{self, Lua};
use spindle::{Clock, Outcome, Scheduler, VirtualClock};

/// Sets its flag when dropped: proves a future was dropped, and when.
struct DropGuard(Rc<Cell<bool>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Counts how often the wrapped future is polled.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Rc<Cell<u32>>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

fn scheduler(lua: &Lua) -> Scheduler {
    let scheduler = Scheduler::new(lua).unwrap();
    scheduler.install_task_library().unwrap();
    scheduler
}

fn run(scheduler: &Scheduler) {
    async_io::block_on(scheduler.run(async_io::Timer::at)).unwrap();
}

fn result<R: mlua::FromLuaMulti>(scheduler: &Scheduler, id: &spindle::Task) -> R {
    match scheduler.take_result::<R>(id).unwrap() {
        Some(Outcome::Finished(values)) => values,
        Some(Outcome::Failed(error)) => panic!("task failed: {error}"),
        other => panic!("task did not finish: {:?}", other.map(|_| ())),
    }
}

/// An mlua async function that sleeps on async-io's timer and counts its polls.
fn mlua_sleep(lua: &Lua, polls: Rc<Cell<u32>>) -> mlua::Function {
    lua.create_async_function(move |_, ms: u64| {
        let polls = Rc::clone(&polls);
        async move {
            let timer = async_io::Timer::after(Duration::from_millis(ms));
            CountPolls {
                inner: Box::pin(timer),
                polls,
            }
            .await;
            Ok(ms)
        }
    })
    .unwrap()
}

#[test]
fn mlua_async_function_suspends_only_its_task_until_the_waker_fires() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let polls = Rc::new(Cell::new(0));
    lua.globals()
        .set("sleep_ms", mlua_sleep(&lua, Rc::clone(&polls)))
        .unwrap();
    let main = lua
        .load(
            r#"
            local log = {}
            task.spawn(function()
                table.insert(log, "slept " .. sleep_ms(30))
            end)
            table.insert(log, "spawner went on")
            task.wait(0.06)
            return table.concat(log, ", ")
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    assert_eq!(
        result::<String>(&scheduler, &id),
        "spawner went on, slept 30"
    );
    assert!(
        scheduler.cycle_count() <= 6,
        "{} cycles",
        scheduler.cycle_count()
    );
    // One poll when called, one when the timer fired: the scheduler never polls blindly.
    assert!(
        polls.get() <= 3,
        "the future was polled {} times",
        polls.get()
    );
}

#[test]
fn idle_scheduler_sleeps_until_the_deadline_instead_of_polling() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let sleeps = Rc::new(Cell::new(0u32));
    let counted = Rc::clone(&sleeps);
    let sleeper = move |deadline: Instant| {
        counted.set(counted.get() + 1);
        async_io::Timer::at(deadline)
    };
    let main = lua
        .load("task.wait(0.05); task.wait(0.05)")
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    let started = Instant::now();
    async_io::block_on(scheduler.run(sleeper)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Two waits: about one sleep and one cycle each. Busy polling would show thousands.
    assert!(
        sleeps.get() <= 4,
        "slept {} times for two waits",
        sleeps.get()
    );
    assert!(
        scheduler.cycle_count() <= 6,
        "{} cycles for two waits",
        scheduler.cycle_count()
    );
}

#[test]
fn spindle_async_function_returns_at_once_when_ready_and_suspends_when_pending() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let add = scheduler
        .create_async_function(|_, (a, b): (i64, i64)| async move { Ok(a + b) })
        .unwrap();
    let polls = Rc::new(Cell::new(0));
    let counted = Rc::clone(&polls);
    let slow_echo = scheduler
        .create_async_function(move |_, text: String| {
            let polls = Rc::clone(&counted);
            async move {
                let timer = async_io::Timer::after(Duration::from_millis(20));
                CountPolls {
                    inner: Box::pin(timer),
                    polls,
                }
                .await;
                Ok((text, "second value"))
            }
        })
        .unwrap();
    lua.globals().set("add", add).unwrap();
    lua.globals().set("slow_echo", slow_echo).unwrap();
    let main = lua
        .load(
            r#"
            local order = {}
            task.defer(function() table.insert(order, "deferred") end)
            table.insert(order, "add " .. add(2, 3))
            local a, b = slow_echo("hi")
            table.insert(order, a .. "/" .. b)
            return table.concat(order, ", ")
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    // `add` did not yield (the deferred task ran only when slow_echo suspended the task).
    assert_eq!(
        result::<String>(&scheduler, &id),
        "add 5, deferred, hi/second value"
    );
    assert!(polls.get() <= 3, "polled {} times", polls.get());
}

/// Completes with `value` at its second poll, having woken its waker at the first.
struct PendOnce<T>(Option<T>, bool);

impl<T: Unpin> Future for PendOnce<T> {
    type Output = mlua::Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.0.take().expect("polled after completion")))
    }
}

#[test]
fn spindle_async_results_keep_their_count_and_nils_whether_ready_or_pending() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let nothing = scheduler
        .create_async_function(|_, pend: bool| PendOnce(Some(()), !pend))
        .unwrap();
    let nils = scheduler
        .create_async_function(|_, pend: bool| {
            PendOnce(Some((mlua::Value::Nil, 2, mlua::Value::Nil)), !pend)
        })
        .unwrap();
    lua.globals().set("nothing", nothing).unwrap();
    lua.globals().set("nils", nils).unwrap();
    let main = lua
        .load(
            r##"
            local counts = {}
            for _, pend in { false, true } do
                table.insert(counts, select("#", nothing(pend)))
                local a, b, c = nils(pend)
                table.insert(counts, select("#", nils(pend)))
                table.insert(counts, tostring(a) .. tostring(b) .. tostring(c))
            end
            -- From a coroutine that is no task: it becomes one for the call, and is let go after.
            local co = coroutine.create(function() return select("#", nils(false)) end)
            local _, plain = coroutine.resume(co)
            table.insert(counts, plain)
            return table.concat(counts, " ")
            "##,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    assert_eq!(
        result::<String>(&scheduler, &id),
        "0 3 nil2nil 0 3 nil2nil 3"
    );
    assert_eq!(scheduler.task_count(), 0, "every task was let go");
}

#[test]
fn a_task_resumed_by_its_settled_future_ends_with_its_results_kept_or_its_error_reported() {
    let lua = Lua::new();
    let reports = Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = Rc::clone(&reports);
    let scheduler = Scheduler::builder()
        .on_error(move |_, e| seen.borrow_mut().push(e.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let echo = scheduler
        .create_async_function(|_, text: String| PendOnce(Some((text, mlua::Value::Nil)), false))
        .unwrap();
    // An mlua async function that pends once: the task blocks in it right after the resumption.
    let mlua_pend = lua
        .create_async_function(|_, n: i64| PendOnce(Some(n + 1), false))
        .unwrap();
    lua.globals().set("echo", echo).unwrap();
    lua.globals().set("mlua_pend", mlua_pend).unwrap();
    // The host claims this one's results: they are read off the thread it returned on.
    let kept = lua.load(r#"return echo("kept")"#).into_function().unwrap();
    let kept = scheduler.spawn(kept, ()).unwrap();
    // This one blocks in mlua's future after the settled resumption, then fails.
    let failing = lua
        .load(
            r#"
            local function after_settle()
                local text = echo("x")
                error(text .. mlua_pend(41), 0)
            end
            task.spawn(after_settle)
            "#,
        )
        .set_name("@after_settle.luau")
        .into_function()
        .unwrap();
    scheduler.spawn(failing, ()).unwrap();
    run(&scheduler);
    let (text, nil, count): (String, mlua::Value, usize) =
        match scheduler.take_result::<mlua::MultiValue>(&kept).unwrap() {
            Some(Outcome::Finished(values)) => {
                let count = values.len();
                let mut values = values.into_iter();
                let text = values.next().unwrap();
                (lua.unpack(text).unwrap(), values.next().unwrap(), count)
            }
            other => panic!("task did not finish: {:?}", other.map(|_| ())),
        };
    assert_eq!((text.as_str(), nil.is_nil(), count), ("kept", true, 2));
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].message, "x42");
    assert_eq!(scheduler.task_count(), 0);
}

/// Whether the gate is open, the last future id handed out, and the pending futures' wakers.
#[derive(Default)]
struct OrderedGateState {
    open: bool,
    made: u64,
    wakers: std::collections::BTreeMap<u64, std::task::Waker>,
}

/// A gate that wakes its waiters in the order their futures were made, as the reference
/// model's gates do.
#[derive(Clone, Default)]
struct OrderedGate(Rc<std::cell::RefCell<OrderedGateState>>);

impl OrderedGate {
    fn wait(&self) -> impl Future<Output = mlua::Result<()>> {
        let gate = self.clone();
        let id = {
            let mut state = gate.0.borrow_mut();
            state.made += 1;
            state.made
        };
        std::future::poll_fn(move |cx| {
            let mut state = gate.0.borrow_mut();
            if state.open {
                return Poll::Ready(Ok(()));
            }
            state.wakers.insert(id, cx.waker().clone());
            Poll::Pending
        })
    }

    fn open(&self) {
        let wakers: Vec<std::task::Waker> = {
            let mut state = self.0.borrow_mut();
            state.open = true;
            std::mem::take(&mut state.wakers).into_values().collect()
        };
        wakers.into_iter().for_each(std::task::Waker::wake);
    }
}

#[test]
fn a_task_that_blocks_in_an_mlua_future_after_its_spindle_future_settled_keeps_its_place() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let (owned_gate, mlua_gate) = (OrderedGate::default(), OrderedGate::default());
    let g = owned_gate.clone();
    let owned_wait = scheduler
        .create_async_function(move |_, ()| g.wait())
        .unwrap();
    let g = mlua_gate.clone();
    let mlua_wait = lua.create_async_function(move |_, ()| g.wait()).unwrap();
    lua.globals().set("owned_wait", owned_wait).unwrap();
    lua.globals().set("mlua_wait", mlua_wait).unwrap();
    let log: Rc<std::cell::RefCell<Vec<String>>> = Rc::default();
    let l = Rc::clone(&log);
    let log_fn = lua
        .create_function(move |_, line: String| {
            l.borrow_mut().push(line);
            Ok(())
        })
        .unwrap();
    lua.globals().set("log", log_fn).unwrap();
    lua.load(
        r#"
        task.spawn(function() mlua_wait() log("made first") end)
        task.spawn(function() owned_wait() mlua_wait() log("made second") end)
        "#,
    )
    .exec()
    .unwrap();
    owned_gate.open();
    scheduler.cycle().unwrap();
    mlua_gate.open();
    scheduler.cycle().unwrap();
    scheduler.cycle().unwrap();
    assert_eq!(*log.borrow(), ["made first", "made second"]);
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn many_tasks_in_self_waking_mlua_futures_all_finish_and_a_cancelled_one_never_resumes() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let pend = lua
        .create_async_function(|_, n: i64| PendOnce(Some(n), false))
        .unwrap();
    lua.globals().set("pend", pend).unwrap();
    // More tasks than the scheduler keeps threads at hand for, each woken during its polls.
    let main = lua
        .load(
            r#"
            local done, resumed_after_cancel = 0, false
            for i = 1, 1000 do
                task.spawn(function()
                    local sum = 0
                    for round = 1, 3 do sum += pend(round) end
                    assert(sum == 6)
                    done += 1
                end)
            end
            local cancelled = task.spawn(function()
                pend(0)
                resumed_after_cancel = true
            end)
            task.cancel(cancelled)
            task.wait()
            while done < 1000 do task.wait() end
            return done, resumed_after_cancel
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    let (done, resumed): (i64, bool) = result(&scheduler, &id);
    assert_eq!((done, resumed), (1000, false));
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn rust_errors_surface_in_the_awaiting_task_as_catchable_lua_errors() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let owned = scheduler
        .create_async_function(|_, ()| async move {
            async_io::Timer::after(Duration::from_millis(5)).await;
            Err::<(), _>(mlua::Error::runtime("disk on fire"))
        })
        .unwrap();
    let at_once = scheduler
        .create_async_function(|_, ()| async move {
            Err::<(), _>(mlua::Error::runtime("refused at once"))
        })
        .unwrap();
    let borrowed = lua
        .create_async_function(|_, ()| async move {
            async_io::Timer::after(Duration::from_millis(5)).await;
            Err::<(), _>(mlua::Error::runtime("network unreachable"))
        })
        .unwrap();
    lua.globals().set("owned", owned).unwrap();
    lua.globals().set("at_once", at_once).unwrap();
    lua.globals().set("borrowed", borrowed).unwrap();
    let main = lua
        .load(
            r#"
            local messages = {}
            for _, f in { owned, at_once, borrowed } do
                local ok, err = pcall(f)
                assert(not ok)
                table.insert(messages, tostring(err))
            end
            return messages
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    let messages: Vec<String> = result(&scheduler, &id);
    assert_eq!(messages.len(), 3);
    assert!(messages[0].contains("disk on fire"), "{messages:?}");
    assert!(messages[1].contains("refused at once"), "{messages:?}");
    assert!(messages[2].contains("network unreachable"), "{messages:?}");
    assert_eq!(scheduler.error_count(), 0);
}

#[test]
fn uncaught_rust_error_is_reported_with_its_message_and_a_traceback() {
    let lua = Lua::new();
    let reports = Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = Rc::clone(&reports);
    let scheduler = Scheduler::builder()
        .on_error(move |_, e| seen.borrow_mut().push(e.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let fail = scheduler
        .create_async_function(|_, ()| async move {
            async_io::Timer::after(Duration::from_millis(5)).await;
            Err::<(), _>(mlua::Error::runtime("backend timed out"))
        })
        .unwrap();
    lua.globals().set("fail", fail).unwrap();
    let main = lua
        .load("local function caller() fail() end\ncaller()")
        .set_name("@caller.luau")
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].message.contains("backend timed out"),
        "{:?}",
        reports[0]
    );
    assert!(
        reports[0].traceback.contains("caller.luau:1"),
        "{:?}",
        reports[0]
    );
}

#[test]
fn cancelling_a_task_drops_its_spindle_future_before_cancel_returns() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let forever = scheduler
        .create_async_function(move |_, ()| {
            let guard = DropGuard(Rc::clone(&flag));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("forever", forever).unwrap();
    lua.globals()
        .set(
            "was_dropped",
            lua.create_function({
                let dropped = Rc::clone(&dropped);
                move |_, ()| Ok(dropped.get())
            })
            .unwrap(),
        )
        .unwrap();
    let main = lua
        .load(
            r#"
            local t = task.spawn(forever)
            local before = was_dropped()
            task.cancel(t)
            return before, was_dropped(), coroutine.status(t)
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    assert!(
        !scheduler.has_work(),
        "nothing is left once the blocked task is cancelled"
    );
    run(&scheduler);
    let (before, after, status): (bool, bool, String) = result(&scheduler, &id);
    assert!(!before);
    assert!(after, "the future must be dropped inside task.cancel");
    assert_eq!(status, "dead");
}

#[test]
fn cancelling_a_task_in_an_mlua_future_closes_the_thread_and_the_collector_drops_the_future() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let forever = lua
        .create_async_function(move |_, ()| {
            let guard = DropGuard(Rc::clone(&flag));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .unwrap();
    lua.globals().set("forever", forever).unwrap();
    let main = lua
        .load(
            r#"
            local t = task.spawn(forever)
            task.cancel(t)
            return coroutine.status(t), coroutine.resume(t)
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    assert!(!scheduler.has_work());
    let (status, resumed): (String, bool) = result(&scheduler, &id);
    assert_eq!(status, "dead");
    assert!(!resumed, "a cancelled thread cannot be resumed by hand");
    lua.gc_collect().unwrap();
    lua.gc_collect().unwrap();
    assert!(
        dropped.get(),
        "the collector frees the closed thread's future"
    );
}

#[test]
fn hand_resuming_a_task_blocked_in_a_spindle_future_keeps_it_blocked() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let slow = scheduler
        .create_async_function(|_, ()| async move {
            async_io::Timer::after(Duration::from_millis(20)).await;
            Ok("finished")
        })
        .unwrap();
    lua.globals().set("slow", slow).unwrap();
    let main = lua
        .load(
            r#"
            local got
            local t = task.spawn(function() got = slow() end)
            coroutine.resume(t, "poke")
            task.spawn(t, "poke again")
            local still = got
            task.wait(0.05)
            return tostring(still), got
            "#,
        )
        .into_function()
        .unwrap();
    let id = scheduler.spawn(main, ()).unwrap();
    run(&scheduler);
    let (before, after): (String, String) = result(&scheduler, &id);
    assert_eq!(before, "nil");
    assert_eq!(after, "finished");
}

#[test]
fn async_function_called_where_the_thread_cannot_yield_is_an_error() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    // Pending for ever, with no reactor that could wake it late: a timer here made the test
    // flaky, when the reactor fired it between the error and `has_work`.
    let slow = scheduler
        .create_async_function(|_, ()| std::future::pending::<mlua::Result<()>>())
        .unwrap();
    let quick = scheduler
        .create_async_function(|_, ()| async move { Ok(7) })
        .unwrap();
    lua.globals().set("slow", slow).unwrap();
    lua.globals().set("quick", quick).unwrap();
    // On the main thread, outside any task: a ready future still works, a pending one cannot.
    assert_eq!(lua.load("return quick()").eval::<i64>().unwrap(), 7);
    let error = lua.load("slow()").exec().unwrap_err().to_string();
    assert!(
        error.contains("async function: attempt to yield across metamethod/C-call boundary"),
        "{error}"
    );
    assert!(!scheduler.has_work());
}

#[test]
fn async_function_refusals_are_plain_strings_at_the_callers_line() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let double = scheduler
        .create_async_function(|_, n: i64| async move { Ok(n * 2) })
        .unwrap();
    lua.globals().set("double", double).unwrap();
    let shown: String = lua
        .load(
            r#"
            local function try(f)
                local ok, err = pcall(f)
                return tostring(ok) .. " " .. typeof(err) .. " " .. tostring(err)
            end
            return table.concat({
                try(function() return double({}) end),
                try(function() return setmetatable({}, { __index = function() return double(1) end }).x end),
            }, "\n")
            "#,
        )
        .set_name("=refusals")
        .eval()
        .unwrap();
    assert_eq!(
        shown,
        "false string refusals:7: async function: invalid argument #1 (error converting Lua table to i64 (expected number or string coercible to number))\n\
         true number 2"
    );
}

#[test]
fn scheduler_runs_inside_tokio_and_awaits_tokio_futures() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let lua = Lua::new();
        let scheduler = scheduler(&lua);
        let sleep = lua
            .create_async_function(|_, seconds: f64| async move {
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                Ok("tokio slept")
            })
            .unwrap();
        let owned_sleep = scheduler
            .create_async_function(|_, seconds: f64| async move {
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                Ok("owned slept")
            })
            .unwrap();
        lua.globals().set("sleep", sleep).unwrap();
        lua.globals().set("owned_sleep", owned_sleep).unwrap();
        let main = lua
            .load(
                r#"
                local a = sleep(0.02)
                local b = owned_sleep(0.02)
                local waited = task.wait(0.01)
                return a .. ", " .. b .. ", " .. tostring(waited >= 0.01)
                "#,
            )
            .into_function()
            .unwrap();
        let id = scheduler.spawn(main, ()).unwrap();
        scheduler
            .run(|deadline: Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        assert_eq!(
            result::<String>(&scheduler, &id),
            "tokio slept, owned slept, true"
        );
    });
}

#[test]
fn futures_woken_from_another_thread_resume_their_task() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let from_thread = scheduler
        .create_async_function(|_, value: i64| async move {
            let (sender, receiver) = std::sync::mpsc::channel::<()>();
            let waker_slot = std::sync::Arc::new(std::sync::Mutex::new(None::<std::task::Waker>));
            let slot = std::sync::Arc::clone(&waker_slot);
            let mut sent = false;
            let mut sender = Some(sender);
            std::future::poll_fn(move |cx| {
                if receiver.try_recv().is_ok() {
                    return Poll::Ready(());
                }
                *slot.lock().unwrap() = Some(cx.waker().clone());
                if !sent {
                    sent = true;
                    let sender = sender.take().unwrap();
                    let slot = std::sync::Arc::clone(&slot);
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(10));
                        sender.send(()).unwrap();
                        slot.lock().unwrap().take().unwrap().wake();
                    });
                }
                Poll::Pending
            })
            .await;
            drop(waker_slot);
            Ok(value * 10)
        })
        .unwrap();
    lua.globals().set("from_thread", from_thread).unwrap();
    let id = scheduler
        .spawn(
            lua.load("return from_thread(4)").into_function().unwrap(),
            (),
        )
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(result::<i64>(&scheduler, &id), 40);
}

#[test]
fn virtual_clock_timers_do_not_wait_for_real_time_while_futures_are_pending_elsewhere() {
    let lua = Lua::new();
    let clock = VirtualClock::new();
    let scheduler = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let id = scheduler
        .spawn(
            lua.load("return task.wait(3600)").into_function().unwrap(),
            (),
        )
        .unwrap();
    scheduler.run_blocking().unwrap();
    assert_eq!(result::<f64>(&scheduler, &id), 3600.0);
    assert_eq!(clock.now(), Duration::from_secs(3600));
}

#[test]
fn a_future_woken_by_host_code_while_the_driver_is_parked_wakes_the_driver() {
    on_tokio_local_set(async {
        let lua = Lua::new();
        let scheduler = Rc::new(scheduler(&lua));
        // Keeps the run going, parked, until the end of the test.
        let keep_alive = OrderedGate::default();
        let g = keep_alive.clone();
        let hold = scheduler
            .create_async_function(move |_, ()| g.wait())
            .unwrap();
        let pend = lua
            .create_async_function(|_, n: i64| PendOnce(Some(n), false))
            .unwrap();
        lua.globals().set("hold", hold).unwrap();
        lua.globals().set("pend", pend).unwrap();
        scheduler
            .spawn(lua.load("hold()").into_function().unwrap(), ())
            .unwrap();
        let driver = Rc::clone(&scheduler);
        let run = tokio::task::spawn_local(async move {
            driver
                .run(|deadline: Instant| tokio::time::sleep_until(deadline.into()))
                .await
        });
        // The driver runs its cycle and parks: only the held task is left.
        tokio::task::yield_now().await;
        // Host code blocks a new task in a future that wakes during its first poll: that
        // wake-up must reach the parked driver.
        let id = scheduler
            .spawn(lua.load("return pend(41) + 1").into_function().unwrap(), ())
            .unwrap();
        let mut finished = None;
        for _ in 0..100 {
            if let Some(outcome) = scheduler.take_result::<i64>(&id).unwrap() {
                finished = Some(outcome);
                break;
            }
            tokio::task::yield_now().await;
        }
        keep_alive.open();
        run.await.unwrap().unwrap();
        assert!(
            matches!(finished, Some(Outcome::Finished(42))),
            "the parked driver was not woken"
        );
    });
}

#[test]
fn wake_ups_raised_during_a_resumption_keep_their_order_with_other_wake_ups() {
    let lua = Lua::new();
    let scheduler = scheduler(&lua);
    let gate = OrderedGate::default();
    let g = gate.clone();
    let gate_wait = lua.create_async_function(move |_, ()| g.wait()).unwrap();
    let open_gate = lua
        .create_function(move |_, ()| {
            gate.open();
            Ok(())
        })
        .unwrap();
    let pend = lua
        .create_async_function(|_, n: i64| PendOnce(Some(n), false))
        .unwrap();
    let log: Rc<std::cell::RefCell<Vec<String>>> = Rc::default();
    let l = Rc::clone(&log);
    let log_fn = lua
        .create_function(move |_, line: String| {
            l.borrow_mut().push(line);
            Ok(())
        })
        .unwrap();
    for (name, f) in [
        ("gate_wait", gate_wait),
        ("open_gate", open_gate),
        ("pend", pend),
        ("log", log_fn),
    ] {
        lua.globals().set(name, f).unwrap();
    }
    // The gate's wake-up of the first task comes before the second task's own wake-up (its
    // future woke while it was polled): the first task resumes first.
    lua.load(
        r#"
        task.spawn(function() gate_wait() log("woken by the gate") end)
        task.spawn(function() open_gate() pend(1) log("woke itself") end)
        "#,
    )
    .exec()
    .unwrap();
    scheduler.cycle().unwrap();
    assert_eq!(*log.borrow(), ["woken by the gate", "woke itself"]);
    // And with nothing queued before it, a task's own wake-up comes before later ones.
    log.borrow_mut().clear();
    let gate = OrderedGate::default();
    let g = gate.clone();
    let gate_wait = lua.create_async_function(move |_, ()| g.wait()).unwrap();
    lua.globals().set("gate_wait", gate_wait).unwrap();
    lua.load(
        r#"
        task.spawn(function() gate_wait() log("woken by the gate") end)
        task.spawn(function() pend(1) log("woke itself") end)
        "#,
    )
    .exec()
    .unwrap();
    gate.open();
    scheduler.cycle().unwrap();
    assert_eq!(*log.borrow(), ["woke itself", "woken by the gate"]);
    assert_eq!(scheduler.task_count(), 0);
}

#[test]
fn a_busy_run_still_lets_the_executors_other_futures_run() {
    on_tokio_local_set(async {
        let lua = Lua::new();
        let scheduler = scheduler(&lua);
        // Each wait is due at the next cycle, so the run stays busy for 5,000 cycles.
        let waits = 5_000;
        scheduler
            .spawn(
                lua.load("for _ = 1, ... do task.wait() end")
                    .into_function()
                    .unwrap(),
                waits,
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
        scheduler
            .run(|deadline: Instant| tokio::time::sleep_until(deadline.into()))
            .await
            .unwrap();
        let turns_during_the_run = turns.get();
        done.set(true);
        neighbour.await.unwrap();
        assert!(
            turns_during_the_run >= 20,
            "the neighbouring future ran {turns_during_the_run} times during 5,000 busy cycles"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Corners of the contract, on the shared corner-case host (`support::H`)
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

// ---------------------------------------------------------------------------------------------
// `Scheduler::run` beside other futures: its cooperative budget lets the executor run
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
        let scheduler = scheduler(&lua);
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
        let scheduler = scheduler(&lua);
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
    let scheduler = scheduler(&lua);
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
        let scheduler = scheduler(&lua);
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
