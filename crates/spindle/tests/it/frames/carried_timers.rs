//! Due timers moved straight onto the carried queue: frames and cycles mixed, under a frame
//! budget, with cancels, hand resumes, panics and shutdown. Virtual time.

use std::time::Duration;

use crate::support::{lines, Host};
use spindle::mlua;

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
