//! Review of the wait lane (`task.wait` as a C function with a continuation, timer wake-ups
//! through `lua_resume`): failing tests for what the review found. Everything runs under a
//! virtual clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use spindle::mlua::{self, Function, Lua, MultiValue};
use spindle::{Clock, Scheduler, VirtualClock};

struct H {
    lua: Lua,
    clock: VirtualClock,
    sched: Scheduler,
    log: Rc<RefCell<Vec<String>>>,
}

fn harness() -> H {
    let lua = Lua::new();
    let clock = VirtualClock::new();
    let sched = Scheduler::builder()
        .clock(Clock::from(clock.clone()))
        .on_error(|_| {})
        .build(&lua)
        .unwrap();
    sched.install_task_library().unwrap();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let printed = Rc::clone(&log);
    let tostring: Function = lua.globals().get("tostring").unwrap();
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
    H {
        lua,
        clock,
        sched,
        log,
    }
}

impl H {
    fn run_chunk(&self, src: &str) {
        self.lua.load(src).set_name("=test").exec().unwrap();
    }
    fn step(&self, seconds: f64) {
        self.clock.advance(Duration::from_secs_f64(seconds));
        self.sched.cycle().unwrap();
    }
    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

/// Finding 1. A signal keeps its waiters as (thread, token), and `is_signal_waiting` takes any
/// untimed `Suspension::Wait` of the thread's *current* slot with that token for a signal wait.
/// Tokens count per slot, so a thread that left a `Signal:Wait` by a hand resume (its slot freed)
/// and waits again in another slot can be handed the same token: the stale fire then wakes a
/// `task.wait(math.huge)` (or a wait on another signal), and `wait_continue`, seeing one value,
/// returns the scheduler's private mark to the script.
#[test]
fn a_stale_signal_fire_does_not_wake_a_task_wait_forever() {
    let h = harness();
    h.run_chunk(
        r#"
        local sig = Signal.new()
        local co = coroutine.create(function()
            sig:Wait()
            -- Takes the slot the hand resume just freed, so the next wait lands in a new slot.
            task.spawn(function() task.wait(100) end)
            local got = table.pack(task.wait(math.huge))
            print("task.wait(math.huge) returned", got.n, type(got[1]))
        end)
        coroutine.resume(co)
        coroutine.resume(co) -- by hand: the signal wait is abandoned (rule 12)
        sig:Fire()
        "#,
    );
    h.step(1.0);
    assert_eq!(
        h.log(),
        Vec::<String>::new(),
        "a fire for an abandoned Signal:Wait must not end a later task.wait(math.huge)"
    );
}

#[test]
fn a_stale_signal_fire_does_not_wake_a_wait_on_another_signal() {
    let h = harness();
    h.run_chunk(
        r#"
        local first, second = Signal.new(), Signal.new()
        local co = coroutine.create(function()
            first:Wait()
            task.spawn(function() task.wait(100) end)
            print("second:Wait returned", second:Wait())
        end)
        coroutine.resume(co)
        coroutine.resume(co)
        first:Fire("meant for the first signal")
        "#,
    );
    h.step(1.0);
    assert_eq!(h.log(), Vec::<String>::new());
}

/// Finding 1, consequence: once the mark has leaked, `coroutine.resume(t, mark, x)` passes for
/// the timer's wake-up in `wait_continue` (vm.rs), the wait is not abandoned, and the timer
/// later resumes the task a second time for one suspension, at an unrelated
/// `coroutine.yield`, with the raw (mark, elapsed) pair (rule 12).
#[test]
fn a_script_never_holds_the_wake_mark_and_cannot_forge_a_timer_wake_up() {
    let h = harness();
    h.run_chunk(
        r#"
        local sig = Signal.new()
        local co = coroutine.create(function()
            sig:Wait()
            task.spawn(function() task.wait(100) end)
            leaked = (task.wait(math.huge))
        end)
        coroutine.resume(co)
        coroutine.resume(co)
        sig:Fire()
        "#,
    );
    h.step(0.0);
    h.run_chunk(
        r#"
        victim = task.spawn(function()
            print("wait returned", task.wait(10))
            print("yield returned", coroutine.yield())
        end)
        coroutine.resume(victim, leaked, 99)
        "#,
    );
    h.step(10.0);
    assert_eq!(
        h.log(),
        ["wait returned nil 99"],
        "the hand resume's values come back exactly, and the dropped timer never resumes the \
         task at its next yield"
    );
}

/// Finding 2 (not specific to the lane: the mlua path does the same). A panic from a Rust
/// callback after a wait reaches the host, but the task's slot is never freed: the dead thread
/// stays in the thread store and `task_count` stays 1 for good (rule 16). In the lane the panic
/// resumes in `take_resume_error` (resume.rs, `RawResumed::Failed`), so `complete` never runs.
#[test]
fn a_task_whose_rust_callback_panicked_after_a_wait_is_freed() {
    let h = harness();
    let boom = h
        .lua
        .create_function(|_, ()| -> mlua::Result<()> { panic!("boom") })
        .unwrap();
    h.lua.globals().set("boom", boom).unwrap();
    h.run_chunk("task.spawn(function() task.wait(1) boom() end)");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.step(1.0)));
    assert!(caught.is_err(), "the panic reaches the host");
    assert!(!h.sched.has_work());
    assert_eq!(
        h.sched.task_count(),
        0,
        "the task has ended: nothing holds it"
    );
}
