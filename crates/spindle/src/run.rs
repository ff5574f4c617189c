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

/// How the async drivers ([`Scheduler::run`], [`Scheduler::run_until`],
/// [`Scheduler::run_forever`]) sleep until the next timer: any function from a deadline to a future,
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
        let no_end: Option<Pin<&mut std::future::Pending<()>>> = None;
        self.drive("Scheduler::run", sleeper, no_end)
            .await
            .map(|_| ())
    }

    /// Serves: runs cycles as [`run`](Self::run) does, but goes on when no work is left,
    /// sleeping until the host or a future gives the scheduler some (a [`spawn`](Self::spawn),
    /// `defer` or `delay` from the host, a signal fired from Rust, a Rust future's wake-up, or
    /// Lua run outside any task that calls `task.defer`), and returns when `until` completes,
    /// with its output. Tasks still scheduled then stay so: run again, or
    /// [`shutdown`](Self::shutdown).
    ///
    /// `until` is polled before each cycle and while the scheduler sleeps: a server's shutdown
    /// signal, a `tokio::sync::oneshot`, or a [`join`](Self::join) of its main task.
    ///
    /// Under a virtual clock, time jumps to the next timer whenever no task is ready, whatever
    /// `until` or the tasks' Rust futures are waiting for (as tokio's paused clock
    /// auto-advances): virtual time measures the script's waits, not the world's. A task that
    /// races a Rust future against `task.delay` sees the delay win at once; run such work on
    /// the real clock.
    ///
    /// ```
    /// # let lua = mlua::Lua::new();
    /// # let scheduler = spindle::Scheduler::new(&lua)?;
    /// # scheduler.install_task_library()?;
    /// // The driver starts with nothing to do; the host spawns the work later.
    /// let started = std::cell::Cell::new(false);
    /// let host = async {
    ///     let task = scheduler.spawn(lua.load("task.wait(0.01) return 42").into_function()?, ())?;
    ///     started.set(true);
    ///     scheduler.join::<i64>(&task).await
    /// };
    /// let answer = async_io::block_on(scheduler.run_until(async_io::Timer::at, host))??;
    /// assert!(started.get());
    /// assert_eq!(answer.into_result()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn run_until<F: Future>(&self, sleeper: impl Sleeper, until: F) -> Result<F::Output> {
        self.serve("Scheduler::run_until", sleeper, until).await
    }

    /// Serves for ever: [`run_until`](Self::run_until) an end that never comes. Returns only
    /// on an error, such as a re-entrant call.
    pub async fn run_forever(&self, sleeper: impl Sleeper) -> Result<std::convert::Infallible> {
        let never = std::future::pending();
        self.serve("Scheduler::run_forever", sleeper, never).await
    }

    async fn serve<F: Future>(
        &self,
        name: &'static str,
        sleeper: impl Sleeper,
        until: F,
    ) -> Result<F::Output> {
        let mut until = std::pin::pin!(until);
        match self.drive(name, sleeper, Some(until.as_mut())).await? {
            Some(output) => Ok(output),
            None => unreachable!("a driver with an end runs until the end"),
        }
    }

    /// The drivers' loop. With no `until`, returns `None` when no work is left; with one,
    /// sleeps when no work is left, and returns its output once it completes.
    async fn drive<F: Future>(
        &self,
        name: &'static str,
        sleeper: impl Sleeper,
        mut until: Option<Pin<&mut F>>,
    ) -> Result<Option<F::Output>> {
        self.inner().check_not_running(name)?;
        // Resumptions run since the loop last let the executor's other futures run.
        let mut since_yield = 0;
        loop {
            if let Some(until) = until.as_mut() {
                if let Poll::Ready(output) = poll_once(until.as_mut()).await {
                    return Ok(Some(output));
                }
            }
            let report = self.cycle()?;
            // A cooperative budget, as tokio's: yielding after every short cycle (one resumed
            // task) cost 4% of the time of pend-once async calls (perf).
            since_yield += 1 + report.timers + report.wakeups + report.deferred;
            // `Some(deadline)` to sleep until the deadline (`None`: until woken); `None` when
            // work is ready.
            let sleep = match self.inner().next_step() {
                Next::Done if until.is_none() => return Ok(None),
                Next::Done => Some(None),
                Next::Busy => None,
                Next::Sleep(deadline) => Some(deadline),
            };
            if let Some(deadline) = sleep {
                let idle = Idle {
                    wakes: self.inner().wakes(),
                    sleep: deadline.map(|d| Box::pin(sleeper.sleep_until(d))),
                    until: until.as_mut().map(|until| until.as_mut()),
                    waited: false,
                };
                let (waited, end) = idle.await;
                // Awake, whatever woke it: the work of the coming cycles must not wake it again.
                self.inner().wakes().driver_awake();
                if let Some(output) = end {
                    return Ok(Some(output));
                }
                // Only a sleep that really waited gave the executor a turn: one over at once
                // (its deadline passed, or a wake-up came first) counts as a busy cycle.
                if waited {
                    since_yield = 0;
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
        self.inner().check_not_running("Scheduler::run_blocking")?;
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            self.cycle()?;
            match self.inner().next_step() {
                Next::Done => return Ok(()),
                Next::Busy => {}
                Next::Sleep(deadline) => {
                    if self.inner().wakes().park_driver(&waker) {
                        match deadline {
                            Some(at) => std::thread::park_timeout(
                                at.saturating_duration_since(Instant::now()),
                            ),
                            None => std::thread::park(),
                        }
                        self.inner().wakes().driver_awake();
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

/// Polls a future once, in the caller's context.
fn poll_once<F: Future>(mut future: Pin<&mut F>) -> impl Future<Output = Poll<F::Output>> + '_ {
    std::future::poll_fn(move |cx| Poll::Ready(future.as_mut().poll(cx)))
}

/// Waits for a wake-up from a task's future or a nudge from the host, for the sleep to end,
/// or for the driver's end. Tells whether it waited (returned `Pending` at least once, letting
/// the executor's other futures run), and the end's output if the end came.
struct Idle<'a, 'u, S, U: Future> {
    wakes: &'a WakeQueue,
    sleep: Option<Pin<Box<S>>>,
    until: Option<Pin<&'u mut U>>,
    waited: bool,
}

impl<S: Future, U: Future> Future for Idle<'_, '_, S, U> {
    type Output = (bool, Option<U::Output>);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin: the sleep is boxed, the end is a pinned reference.
        let this = &mut *self;
        if !this.wakes.park_driver(cx.waker()) {
            return Poll::Ready((this.waited, None));
        }
        // Polled with the driver parked, so that work the end gives the scheduler (a host
        // `defer`, a task that starts waiting, a future woken in its first poll) nudges it:
        // polled before, that work went unseen, and the driver slept on it for ever.
        if let Some(until) = &mut this.until {
            if let Poll::Ready(output) = until.as_mut().poll(cx) {
                return Poll::Ready((this.waited, Some(output)));
            }
            if !this.wakes.park_driver(cx.waker()) {
                return Poll::Ready((this.waited, None));
            }
        }
        let over = match &mut this.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if over {
            return Poll::Ready((this.waited, None));
        }
        this.waited = true;
        Poll::Pending
    }
}
