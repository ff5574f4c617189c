//! One client connection: hyper's HTTP/1.1 state machine, plus the ends hyper leaves to us:
//! the idle keep-alive timeout and the wait for a request's headers (a connection with no
//! request in flight for `idleTimeout`, or for `requestTimeout`, whichever is shorter, is
//! closed), and the server's stop (the connection finishes its in-flight request, then
//! closes). A connection keeps one timer for its whole life, reset only when it fires: a timer
//! armed for each request (hyper's header timer) cost every request its registration.

use std::cell::Cell;
use std::rc::Rc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{exchange, Shared};
use crate::listener::until_stopped;
use crate::slots::Slot;

/// What a connection's requests tell its idle timer.
pub(super) struct Activity {
    /// Requests whose response is not ready yet.
    in_flight: Cell<u32>,
    /// When the last request started or ended (the connection's start before any).
    last: Cell<Instant>,
    /// The connection's slot, until a WebSocket upgrade takes it.
    slot: Cell<Option<Slot>>,
}

impl Activity {
    /// Marks a request as in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Rc<Self>) -> InFlight {
        let now = Instant::now();
        self.in_flight.set(self.in_flight.get() + 1);
        self.last.set(now);
        InFlight {
            activity: Rc::clone(self),
            started: now,
        }
    }
}

/// A request in flight on a connection; dropping it ends the request.
pub(super) struct InFlight {
    activity: Rc<Activity>,
    started: Instant,
}

impl InFlight {
    /// When the request started: its deadline counts from here.
    pub(super) fn started(&self) -> Instant {
        self.started
    }
}

impl InFlight {
    /// The connection's slot, for the WebSocket this request upgrades it to.
    pub(super) fn take_slot(&self) -> Option<Slot> {
        self.activity.slot.take()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.in_flight.set(activity.in_flight.get() - 1);
        activity.last.set(Instant::now());
    }
}

/// Serves one connection until the client closes it, it errs, it stays idle too long, or the
/// server stops.
pub(super) async fn serve(stream: TcpStream, slot: Slot, shared: Rc<Shared>) {
    let activity = Rc::new(Activity {
        in_flight: Cell::new(0),
        last: Cell::new(Instant::now()),
        slot: Cell::new(Some(slot)),
    });
    let service = {
        let (shared, activity) = (Rc::clone(&shared), Rc::clone(&activity));
        service_fn(move |request| exchange::exchange(Rc::clone(&shared), activity.begin(), request))
    };
    // Upgrades hand the connection over to a WebSocket (`crate::websocket::accept`).
    let connection = shared
        .http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // Waiting for the next request's headers is waiting with no request in flight: hyper's
    // header timer measured it from the same point, and so closed an idle connection after
    // `requestTimeout` when that is the shorter.
    let idle_timeout = shared
        .limits
        .idle_timeout
        .min(shared.limits.request_timeout);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut stopped = shared.stopped.clone();
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            _ = connection.as_mut() => return,
            () = until_stopped(&mut stopped), if !stopping => {
                // Closes an idle connection at once; a busy one after its response.
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
            () = idle.as_mut() => {
                let since = activity.last.get();
                if activity.in_flight.get() == 0 && since.elapsed() >= idle_timeout {
                    return;
                }
                let next = if activity.in_flight.get() == 0 { since } else { Instant::now() };
                idle.as_mut().reset(next + idle_timeout);
            }
        }
    }
}
