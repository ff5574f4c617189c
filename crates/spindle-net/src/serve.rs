//! `net.serve`: a listener, its connections and the handle that stops them.
//!
//! A server is one future, [`Server::run`], that a task of the scheduler waits on (the task is
//! started by `net.serve` and has no Lua code of its own). The future owns the listener and every
//! connection, each a hyper connection future polled from inside it, so all of a server's I/O is
//! polled by the scheduler on the Lua thread, and a listening server counts as the scheduler's
//! work: a run does not end while it listens. Each request's handler runs as a task of its own
//! ([`exchange`]). Once `stop()` is called the future stops accepting, drops the listener, asks
//! every connection to close after its in-flight request and every WebSocket it accepted to
//! close (with 1001, going away), waits for them up to the shutdown timeout, drops the rest, and
//! completes: the server's task ends.

mod connection;
mod exchange;
mod reply;

use std::rc::Rc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::server::conn::http1;
use mlua::{Function, Lua, Table, Value};
use spindle::WeakScheduler;
use tokio::net::TcpListener;

use crate::config::{Limits, ServeConfig};
use crate::listener::{self, accept_failed, until_stopped, Stopped};
use crate::slots::Slots;
use crate::websocket::accept::Upgrades;
use reply::Replies;

/// The function `net.serve`.
/// `serving` makes the task function of a `handleWebSocket` handler (see [`crate::websocket`]).
pub(crate) fn function(lua: &Lua, serving: Function) -> mlua::Result<Function> {
    // Each request's task runs the closure this returns: the handler, then the check of its
    // answer, both in the task, so that a bad answer fails the task with a traceback as a handler
    // error does; `respond` leaves the answer in the exchange's reply slot (`reply`), and the
    // task returns nothing. The request table is built here in Lua from the parts `exchange`
    // passes as arguments: the table built through mlua cost 10,600 instructions a request;
    // passing the parts costs 2,800, and the whole hello request went from 39,900 to 31,700
    // (callgrind). A common method or header name comes as its index in `methods` or `names`
    // (`exchange::COMMON_METHODS`, `COMMON_NAMES`) and an empty body as nil: a string made
    // through mlua costs a few hundred instructions to make, pass and let go. `type` is bound
    // when the library is made, before a script could replace the global.
    let make_task: Function = lua
        .load(
            "local type, methods, names = type, ...\n\
             return function(handler, respond)\n\
                 return function(slot, method, path, body, pairsInQuery, ...)\n\
                     local query, headers = {}, {}\n\
                     local parts = { ... }\n\
                     local split = 2 * pairsInQuery\n\
                     for i = 1, split, 2 do\n\
                         local key, value = parts[i], parts[i + 1]\n\
                         local seen = query[key]\n\
                         if seen == nil then\n\
                             query[key] = value\n\
                         elseif type(seen) == 'table' then\n\
                             seen[#seen + 1] = value\n\
                         else\n\
                             query[key] = { seen, value }\n\
                         end\n\
                     end\n\
                     for i = split + 1, #parts, 2 do\n\
                         local name = parts[i]\n\
                         if type(name) == 'number' then name = names[name] end\n\
                         headers[name] = parts[i + 1]\n\
                     end\n\
                     if type(method) == 'number' then method = methods[method] end\n\
                     local request = { method = method, path = path, query = query,\n\
                         headers = headers, body = body or '' }\n\
                     respond(slot, handler(request))\n\
                 end\n\
             end",
        )
        .set_name("=net.serve")
        .call((
            lua.create_sequence_from(exchange::COMMON_METHODS.iter().map(|m| m.as_str()))?,
            lua.create_sequence_from(exchange::COMMON_NAMES.iter().map(|n| n.as_str()))?,
        ))?;
    lua.create_function(move |lua, (first, second): (Value, Value)| {
        let config = ServeConfig::from_args(lua, first, second)?;
        let replies = Rc::new(Replies::default());
        let task_function: Option<Function> = match &config.handler {
            Some(handler) => {
                let replies = Rc::clone(&replies);
                let respond = lua.create_function(move |_, (slot, answer): (i64, Value)| {
                    replies.put(slot, exchange::respond(answer)?);
                    Ok(())
                })?;
                Some(make_task.call((handler, respond))?)
            }
            None => None,
        };
        let websocket = match &config.websocket {
            Some((handler, max_message_size)) => {
                Some(Upgrades::new(serving.call(handler)?, *max_message_size))
            }
            None => None,
        };
        serve(lua, config, task_function, replies, websocket)
    })
}

/// Binds the listener, starts the server's task and returns the handle.
fn serve(
    lua: &Lua,
    config: ServeConfig,
    task_function: Option<Function>,
    replies: Rc<Replies>,
    websocket: Option<Upgrades>,
) -> mlua::Result<Table> {
    let address = std::net::SocketAddr::new(config.address, config.port);
    listener::listen(
        lua,
        "net.serve",
        address,
        move |listener, scheduler, stopped| {
            let shared = Shared::new(
                config.limits,
                task_function,
                replies,
                websocket,
                scheduler.downgrade(),
                stopped,
            );
            Server {
                listener,
                shared: Rc::new(shared),
            }
            .run()
        },
    )
}

/// What a server's connections and requests share.
struct Shared {
    limits: Limits,
    http: http1::Builder,
    /// The function each request's task runs, with its reply slot's key and the request's
    /// parts as its arguments ([`exchange::request_args`]); `None` for a
    /// server of WebSockets only, which answers other requests `426 Upgrade Required`.
    task_function: Option<Function>,
    /// Where the tasks leave their answers.
    replies: Rc<Replies>,
    /// Set when the server has a `handleWebSocket`.
    websocket: Option<Upgrades>,
    scheduler: WeakScheduler,
    /// Becomes `true` once `stop()` was called.
    stopped: Stopped,
    /// The connections open, HTTP or upgraded, against `maxConnections`.
    slots: Rc<Slots>,
}

impl Shared {
    fn new(
        limits: Limits,
        task_function: Option<Function>,
        replies: Rc<Replies>,
        websocket: Option<Upgrades>,
        scheduler: WeakScheduler,
        stopped: Stopped,
    ) -> Shared {
        let mut http = http1::Builder::new();
        // Not hyper's header timer, which armed a timer each time a connection began to wait
        // for a request's headers, and dropped it once they came: every request. The
        // connection's own timer keeps the same rule ([`connection`]).
        http.header_read_timeout(None)
            .max_header_size(limits.max_header_size);
        Shared {
            limits,
            http,
            task_function,
            replies,
            websocket,
            scheduler,
            stopped,
            slots: Rc::default(),
        }
    }
}

/// A listening server.
struct Server {
    listener: TcpListener,
    shared: Rc<Shared>,
}

impl Server {
    /// Serves until `stop()`, then drains. Connections beyond `maxConnections` (HTTP
    /// connections and WebSockets alike, [`Slots`]) wait in the listen queue: the listener is
    /// not polled while that many are open.
    async fn run(self) {
        let Server { listener, shared } = self;
        let mut connections = FuturesUnordered::new();
        let mut stopped = shared.stopped.clone();
        loop {
            tokio::select! {
                biased;
                () = until_stopped(&mut stopped) => break,
                Some(()) = connections.next(), if !connections.is_empty() => {}
                () = shared.slots.freed(), if shared.slots.taken() >= shared.limits.max_connections => {}
                accepted = listener.accept(), if shared.slots.taken() < shared.limits.max_connections => {
                    match accepted {
                        Ok((stream, _)) => {
                            // Small responses go out at once rather than waiting for more.
                            let _ = stream.set_nodelay(true);
                            let slot = shared.slots.take();
                            connections.push(connection::serve(stream, slot, Rc::clone(&shared)));
                        }
                        Err(error) => accept_failed(error).await,
                    }
                }
            }
        }
        drop(listener);
        let connections_end = async { while connections.next().await.is_some() {} };
        let sockets_close = async {
            if let Some(websocket) = &shared.websocket {
                websocket.close_all().await;
            }
        };
        let drain = async { tokio::join!(connections_end, sockets_close) };
        let _ = tokio::time::timeout(shared.limits.shutdown_timeout, drain).await;
        // Connections still open past the deadline are dropped here, and their handlers'
        // tasks cancelled.
    }
}
