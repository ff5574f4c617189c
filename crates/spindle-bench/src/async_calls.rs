//! The async_calls workloads, in-process: a Lua loop makes COUNT calls of a Rust async function
//! that is ready at once, or that pends once (it wakes its own waker and returns `Pending`, so
//! the caller must be resumed once more) before it completes.
//!
//! Three hosts run the same loop: Spindle with its own async function
//! ([`spindle::Scheduler::create_async_function`], the scheduler owns the future), Spindle with
//! mlua's `Lua::create_async_function` (the future lives in the Lua thread), and the baseline:
//! mlua alone, the whole loop as one `Function::call_async` future. All three are driven by
//! `futures_lite::future::block_on`, and each run has a fresh `Lua`; only the loop is timed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{Function, Lua};
use spindle::{Outcome, Scheduler};

use crate::child::cpu_time;
use crate::error::{Error, Result};
use crate::suite::Timing;

/// When the async function's future completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// At its first poll.
    Ready,
    /// At its second poll: the first wakes the waker and returns `Pending`.
    PendOnce,
}

/// Who runs the loop, and whose async function it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// A Spindle task calling a `Scheduler::create_async_function` function.
    SpindleOwned,
    /// A Spindle task calling an mlua `Lua::create_async_function` function.
    SpindleWithMluaFunction,
    /// mlua's `Function::call_async` of the loop, calling an mlua async function: the baseline.
    MluaCallAsync,
}

impl Completion {
    /// Both, in table order.
    pub const ALL: [Completion; 2] = [Completion::Ready, Completion::PendOnce];

    /// How the table names it.
    pub fn name(self) -> &'static str {
        match self {
            Completion::Ready => "ready",
            Completion::PendOnce => "pend-once",
        }
    }
}

impl Host {
    /// All three, in the order each round runs them.
    pub const ALL: [Host; 3] = [
        Host::SpindleOwned,
        Host::SpindleWithMluaFunction,
        Host::MluaCallAsync,
    ];

    /// How the table names it.
    pub fn name(self) -> &'static str {
        match self {
            Host::SpindleOwned => "Spindle's create_async_function",
            Host::SpindleWithMluaFunction => "mlua's create_async_function under Spindle",
            Host::MluaCallAsync => "mlua call_async",
        }
    }

    /// How the table's workload column names it.
    pub fn short_name(self) -> &'static str {
        match self {
            Host::SpindleOwned => "Spindle fn",
            Host::SpindleWithMluaFunction => "mlua fn",
            Host::MluaCallAsync => "call_async",
        }
    }
}

/// The future of one call: completes with `value`, after one `Pending` if asked.
struct Echo {
    value: i64,
    pend: bool,
}

impl Future for Echo {
    type Output = mlua::Result<i64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pend {
            self.pend = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.value))
    }
}

fn echo(value: i64, completion: Completion) -> Echo {
    Echo {
        value,
        pend: completion == Completion::PendOnce,
    }
}

const LOOP: &str = r#"
local call, count = ...
local sum = 0
for i = 1, count do
	sum += call(i)
end
return sum
"#;

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the out-pointer points to a live local.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    cpu_time(&usage)
}

/// A wall-clock or CPU-time stopwatch, started at once.
struct Stopwatch(Timing, Instant, Duration);

impl Stopwatch {
    fn start(timing: Timing) -> Self {
        Stopwatch(timing, Instant::now(), thread_cpu())
    }
    fn elapsed(&self) -> Duration {
        match self.0 {
            Timing::Wall => self.1.elapsed(),
            Timing::Cpu => thread_cpu().saturating_sub(self.2),
        }
    }
}

/// Runs `count` calls on `host` and returns the time the loop took; the loop's sum is checked.
pub fn measure(host: Host, completion: Completion, count: u64, timing: Timing) -> Result<Duration> {
    let lua = Lua::new();
    let main = lua.load(LOOP).set_name("=async_calls").into_function()?;
    let (sum, elapsed) = match host {
        Host::MluaCallAsync => {
            let call = mlua_function(&lua, completion)?;
            let started = Stopwatch::start(timing);
            let sum: i64 = futures_lite::future::block_on(main.call_async((call, count)))?;
            (sum, started.elapsed())
        }
        Host::SpindleOwned | Host::SpindleWithMluaFunction => {
            let scheduler = Scheduler::new(&lua)?;
            scheduler.install_task_library()?;
            let call = if host == Host::SpindleOwned {
                scheduler.create_async_function(move |_, value: i64| echo(value, completion))?
            } else {
                mlua_function(&lua, completion)?
            };
            let started = Stopwatch::start(timing);
            let task = scheduler.spawn(main, (call, count))?;
            futures_lite::future::block_on(scheduler.run(async_io::Timer::at))?;
            let elapsed = started.elapsed();
            let sum = match scheduler.take_result::<i64>(&task)? {
                Some(Outcome::Finished(sum)) => sum,
                Some(Outcome::Failed(error)) => {
                    return Err(Error::new(format!("async_calls: {error}")))
                }
                _ => return Err(Error::new("async_calls: the loop's task did not finish")),
            };
            (sum, elapsed)
        }
    };
    let expected = count * (count + 1) / 2;
    if u64::try_from(sum) != Ok(expected) {
        return Err(Error::new(format!(
            "async_calls ({}, {}) summed {sum}, expected {expected}: not every call completed",
            host.name(),
            completion.name()
        )));
    }
    Ok(elapsed)
}

fn mlua_function(lua: &Lua, completion: Completion) -> Result<Function> {
    Ok(lua.create_async_function(move |_, value: i64| echo(value, completion))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_completes_every_call_either_way() {
        for host in Host::ALL {
            for completion in Completion::ALL {
                measure(host, completion, 1_000, Timing::Wall)
                    .unwrap_or_else(|e| panic!("{host:?} {completion:?}: {e}"));
            }
        }
    }
}
