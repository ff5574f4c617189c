//! Rule 7 of the task contract: `math.huge`, or any duration too large for the clock, means a
//! timer that never fires, costs no CPU and keeps no run alive; on both clocks alike, for
//! `task.wait`, `task.delay` and the host's `delay`. A duration of `Clock::MAX_DELAY` (2^62 s)
//! or more is such a duration, whatever the clock reads.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::Host;
use spindle::Clock;

/// Durations around the limit that never fire, as Lua writes them.
const NEVER: [&str; 6] = ["4.62e18", "9.2e18", "1e19", "2e19", "1e300", "math.huge"];

fn host(virtual_time: bool) -> Host {
    let builder = Host::builder();
    if virtual_time {
        builder.build()
    } else {
        builder.real_time().build()
    }
}

/// Runs `body` on a thread of its own and fails if it takes more than `limit`: a driver that
/// spins instead of ending would otherwise hang the test.
fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(body());
    });
    result
        .recv_timeout(limit)
        .expect("the run ended in time rather than spinning")
}

#[test]
fn rule07_a_wait_too_long_for_the_clock_never_fires_and_keeps_no_run_alive_on_either_clock() {
    for virtual_time in [false, true] {
        for duration in NEVER {
            let log = within(Duration::from_secs(10), move || {
                let run = host(virtual_time);
                let started = Instant::now();
                run.script(&format!(
                    r#"
                    waiter = task.spawn(function()
                        print("woken with", task.wait({duration}))
                    end)
                    task.delay({duration}, print, "the delay fired")
                    print("main done")
                    "#
                ));
                assert!(!run.scheduler.has_work());
                assert_eq!(run.scheduler.next_deadline(), None);
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "task.wait({duration}) ended the run at once"
                );
                // Still waiting, as a `task.wait(math.huge)` does: a hand resume ends it.
                run.exec("print(coroutine.status(waiter))");
                run.log()
            });
            assert_eq!(
                log,
                ["main done", "suspended"],
                "task.wait({duration}), virtual time {virtual_time}"
            );
        }
    }
}

#[test]
fn rule07_a_wait_just_short_of_the_limit_is_a_timer_on_either_clock() {
    // The real clock sleeps towards it (the host sees the deadline and the instant to sleep
    // until); the virtual clock jumps to it, and the wait returns exactly what it asked for.
    let real = host(false);
    real.spawn("task.wait(1e18)");
    assert!(real.scheduler.has_work());
    let deadline = real.scheduler.next_deadline().expect("a timer");
    assert!(deadline >= Duration::from_secs(1_000_000_000_000_000_000));
    assert!(real.scheduler.clock().instant_at(deadline).is_some());
    real.scheduler.shutdown().unwrap();

    let run = host(true);
    run.script("print(task.wait(1e18)) print(task.wait(4.6e18))");
    assert_eq!(run.log(), ["1000000000000000000", "4600000000000000000"]);
}

#[test]
fn rule07_the_virtual_clock_never_overflows_however_many_long_waits_follow_each_other() {
    // Each wait is under the limit, but their sum runs past what the clock can hold: the wait
    // whose deadline the clock cannot reach never fires, and the run ends.
    let run = host(true);
    run.script(
        r#"
        for i = 1, 10 do
            local waited = task.wait(4e18)
            print(i, waited)
        end
        print("never")
        "#,
    );
    assert_eq!(
        run.log(),
        [
            "1 4000000000000000000",
            "2 4000000000000000000",
            "3 4000000000000000000",
            "4 4000000000000000000",
        ]
    );
    assert!(!run.scheduler.has_work());
    assert!(run.messages().is_empty(), "{:?}", run.messages());
}

#[test]
fn rule07_the_hosts_delay_too_long_for_the_clock_never_fires_on_either_clock() {
    for virtual_time in [false, true] {
        let run = host(virtual_time);
        let print = run
            .lua
            .globals()
            .get::<spindle::mlua::Function>("print")
            .unwrap();
        for delay in [Clock::MAX_DELAY, Duration::MAX] {
            drop(run.scheduler.delay(delay, print.clone(), "fired").unwrap());
        }
        assert!(!run.scheduler.has_work());
        run.scheduler.run_blocking().unwrap();
        assert!(run.log().is_empty(), "{:?}", run.log());
    }
}
