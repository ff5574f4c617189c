//! Driving a scheduler to the end of its work, on any async runtime or on a plain thread.
//!
//! Both drivers run cycles while there is work, and sleep while there is none ready: until the
//! next deadline or until a future's waker fires, whichever comes first. They never poll blindly,
//! so an idle scheduler uses no CPU.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::engine::Next;
use crate::error::Result;
use crate::scheduler::Scheduler;
use crate::waker::WakeQueue;

/// How [`Scheduler::run`] sleeps until the next timer: any function from a deadline to a future,
/// such as `async_io::Timer::at` or `|d: Instant| tokio::time::sleep_until(d.into())`.
pub trait Sleeper {
    /// The future that completes at the deadline.
    type Sleep: Future;
    /// Returns a future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
}

impl<F, S> Sleeper for F
where
    F: Fn(Instant) -> S,
    S: Future,
{
    type Sleep = S;
    fn sleep_until(&self, deadline: Instant) -> S {
        self(deadline)
    }
}

impl Scheduler {
    /// Runs cycles until no work is left, sleeping with `sleeper` until the next timer and on the
    /// futures' wakers otherwise: an idle scheduler uses no CPU. Works on any async runtime.
    /// While work is ready it lets the executor's other futures run after every 64 resumptions
    /// or so (at the end of the cycle that reaches them).
    /// Under a virtual clock, when nothing is ready the clock jumps to the next deadline.
    ///
    /// ```
    /// # let lua = mlua::Lua::new();
    /// # let scheduler = spindle::Scheduler::new(&lua)?;
    /// # scheduler.install_task_library()?;
    /// # scheduler.spawn(lua.load("task.wait(0.01)").into_function()?, ())?;
    /// // With the smol family: async_io::Timer::at as the sleeper.
    /// async_io::block_on(scheduler.run(async_io::Timer::at))?;
    /// # Ok::<(), spindle::Error>(())
    /// ```
    pub async fn run(&self, sleeper: impl Sleeper) -> Result<()> {
        // Resumptions run since the loop last let the executor's other futures run.
        let mut since_yield = 0;
        loop {
            let report = self.cycle()?;
            // A cooperative budget, as tokio's: yielding after every short cycle (one resumed
            // task) cost 4% of the time of pend-once async calls (perf).
            since_yield += 1 + report.timers + report.wakeups + report.deferred;
            match self.inner.next_step() {
                Next::Done => return Ok(()),
                Next::Busy => {}
                Next::Sleep(deadline) => {
                    let sleep = deadline.map(|d| Box::pin(sleeper.sleep_until(d)));
                    let idle = Idle {
                        wakes: self.inner.wakes(),
                        sleep,
                        waited: false,
                    };
                    // Only a sleep that really waited gave the executor a turn: one over at once
                    // (its deadline passed, or a wake-up came first) counts as a busy cycle.
                    if idle.await {
                        since_yield = 0;
                        continue;
                    }
                }
            }
            if since_yield >= YIELD_BUDGET {
                since_yield = 0;
                YieldNow(false).await;
            }
        }
    }

    /// Runs cycles on this thread until no work is left, parking the thread while idle.
    /// Under a virtual clock, when nothing is ready the clock jumps to the next deadline.
    /// Rust futures that tasks wait on must be driven by something other than this thread's
    /// executor (a reactor thread, as `async-io` has, or a runtime on other threads).
    pub fn run_blocking(&self) -> Result<()> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            self.cycle()?;
            match self.inner.next_step() {
                Next::Done => return Ok(()),
                Next::Busy => {}
                Next::Sleep(deadline) => {
                    if self.inner.wakes().park_driver(&waker) {
                        match deadline {
                            Some(at) => std::thread::park_timeout(
                                at.saturating_duration_since(Instant::now()),
                            ),
                            None => std::thread::park(),
                        }
                    }
                }
            }
        }
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// How many resumptions (and cycles) [`Scheduler::run`] runs, while work is ready, before it
/// lets the executor's other futures run.
const YIELD_BUDGET: usize = 64;

/// Returns `Pending` once, waking itself: lets other futures of the executor run between cycles.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Waits for a wake-up from a task's future, or for the sleep to end. Tells whether it waited:
/// returned `Pending` at least once, letting the executor's other futures run.
struct Idle<'a, S> {
    wakes: &'a WakeQueue,
    sleep: Option<Pin<Box<S>>>,
    waited: bool,
}

impl<S: Future> Future for Idle<'_, S> {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.wakes.park_driver(cx.waker()) {
            return Poll::Ready(self.waited);
        }
        let over = match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if over {
            return Poll::Ready(self.waited);
        }
        self.waited = true;
        Poll::Pending
    }
}
