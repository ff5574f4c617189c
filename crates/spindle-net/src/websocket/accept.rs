//! The server's side of WebSockets: `net.serve`'s `handleWebSocket`. An upgrade request is
//! answered `101 Switching Protocols` by the exchange at once, and a task is started that waits
//! for hyper to hand over the connection, makes the socket, and runs the handler with it, so the
//! handler runs as a task of its own, as a request's does.
//!
//! Invariant: the server knows its sockets only weakly ([`Live`]): a socket lives as long as
//! the script holds it; `stop()` closes those still open with 1001 (going away) before the
//! server's task ends, and a socket whose upgrade completes after `stop()` is closed with 1001
//! at once, its handler not run.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mlua::{AnyUserData, Function, Lua, Value};
use spindle::Scheduler;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{close_all, config, Io, Socket, State};
use crate::slots::{Counted, Slot};

/// The sockets a server accepted, weakly, until the server stops.
#[derive(Default)]
pub(crate) struct Live {
    sockets: RefCell<Vec<Weak<State>>>,
    stopped: Cell<bool>,
}

impl Live {
    /// Adds a socket; false once the server has stopped (the socket must then close itself).
    fn add(&self, socket: Weak<State>) -> bool {
        if self.stopped.get() {
            return false;
        }
        let mut sockets = self.sockets.borrow_mut();
        sockets.retain(|socket| socket.strong_count() > 0);
        sockets.push(socket);
        true
    }
}

/// What a server with `handleWebSocket` needs to accept sockets.
pub(crate) struct Upgrades {
    /// The function each socket's task runs, with the pending upgrade as its argument.
    task_function: Function,
    max_message_size: usize,
    live: Rc<Live>,
}

/// An upgrade answered but not yet handed over by hyper: the argument of the socket's task.
struct Pending {
    upgrade: OnUpgrade,
    max_message_size: usize,
    live: Rc<Live>,
    /// The connection's slot, held by the socket's stream from then on.
    slot: Option<Slot>,
}

impl Upgrades {
    pub(crate) fn new(task_function: Function, max_message_size: usize) -> Upgrades {
        Upgrades {
            task_function,
            max_message_size,
            live: Rc::default(),
        }
    }

    /// Closes the sockets still open with 1001 (going away).
    pub(crate) async fn close_all(&self) {
        self.live.stopped.set(true);
        let sockets = std::mem::take(&mut *self.live.sockets.borrow_mut());
        close_all(sockets, 1001).await;
    }

    /// Answers an upgrade request and starts the socket's task. `take_slot` gives the
    /// connection's slot once the upgrade is accepted: the socket holds it from then on.
    pub(crate) fn accept(
        &self,
        scheduler: &Scheduler,
        mut request: Request<Incoming>,
        take_slot: impl FnOnce() -> Option<Slot>,
    ) -> Response<Full<Bytes>> {
        let headers = request.headers();
        let version_13 = headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|version| version == "13");
        let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        if request.method() != Method::GET {
            return plain(StatusCode::BAD_REQUEST, "a WebSocket upgrade must be a GET");
        }
        if !version_13 {
            let mut response = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return response;
        }
        let accept = derive_accept_key(key.as_bytes());
        let pending = Pending {
            upgrade: hyper::upgrade::on(&mut request),
            max_message_size: self.max_message_size,
            live: Rc::clone(&self.live),
            slot: take_slot(),
        };
        let started = scheduler
            .lua()
            .create_any_userdata(pending)
            .map_err(spindle::Error::from)
            .and_then(|pending| scheduler.spawn(&self.task_function, pending));
        if let Err(error) = started {
            // No task to fail: reported here, as a task's error would be.
            scheduler.report_error(spindle::TaskError::new(
                None,
                format!(
                    "net.serve: cannot start the WebSocket handler for {}: {error}",
                    request.uri().path()
                ),
                "",
            ));
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "");
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Whether `request` asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn is_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(UPGRADE)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The primitive each socket's task calls first: waits for hyper to hand the connection over,
/// and returns the socket, or nil if the client went away first.
pub(super) fn upgrade_function(scheduler: &Scheduler) -> mlua::Result<Function> {
    Ok(
        scheduler.create_async_function(|lua: Lua, pending: AnyUserData| {
            let pending = pending.take::<Pending>();
            async move {
                let pending = pending?;
                let Ok(upgraded) = pending.upgrade.await else {
                    return Ok(Value::Nil);
                };
                let io: Box<dyn Io> = Box::new(Counted::new(TokioIo::new(upgraded), pending.slot));
                let config = config(pending.max_message_size);
                let stream = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                let state = State::new(stream);
                if !pending.live.add(Rc::downgrade(&state)) {
                    // The server stopped while this upgrade was under way.
                    state.close(1001).await;
                    return Ok(Value::Nil);
                }
                Ok(Value::UserData(lua.create_any_userdata(Socket(state))?))
            }
        })?,
    )
}

fn plain(status: StatusCode, reason: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = status;
    response
}
