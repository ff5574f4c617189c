//! `net.serve`: a listener, its connections and the handle that stops them.
//!
//! A server is one future, [`Server::run`], that a task of the scheduler waits on (the task is
//! started by `net.serve` and has no Lua code of its own). The future owns the listener and every
//! connection, each a hyper connection future polled from inside it, so all of a server's I/O is
//! polled by the scheduler on the Lua thread, and a listening server counts as the scheduler's
//! work: a run does not end while it listens. Each request's handler runs as a task of its own
//! ([`exchange`]). Once `stop()` is called the future stops accepting, drops the listener, asks
//! every connection to close after its in-flight request, waits for them up to the shutdown
//! timeout, drops the rest, and completes: the server's task ends.

mod connection;
mod exchange;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use mlua::{Function, Lua, MultiValue, Table, Value};
use spindle::{Scheduler, WeakScheduler};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Limits, ServeConfig};
use crate::error_at_caller;

/// The function `net.serve`.
pub(crate) fn function(lua: &Lua) -> mlua::Result<Function> {
    let respond = lua.create_function(exchange::respond)?;
    // Each request's task runs the closure this returns: the handler, then the check of its
    // answer, both in the task, so that a bad answer fails the task with a traceback as a handler
    // error does. The request table is built here in Lua from the parts `exchange` passes as
    // arguments: a table built through mlua cost 10,600 instructions a request, most of a hello
    // request's difference from raw hyper; built here, 2,800 (callgrind). `type` is bound when the
    // library is made, before a script could replace the global.
    let make_task: Function = lua
        .load(
            "local type = type\n\
             return function(handler, respond)\n\
                 return function(method, path, body, pairsInQuery, ...)\n\
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
                         headers[parts[i]] = parts[i + 1]\n\
                     end\n\
                     local request = { method = method, path = path, query = query,\n\
                         headers = headers, body = body }\n\
                     return respond(handler(request))\n\
                 end\n\
             end",
        )
        .set_name("=net.serve")
        .call(())?;
    lua.create_function(move |lua, (first, second): (Value, Value)| {
        let config = ServeConfig::from_args(lua, first, second)?;
        let task_function: Function = make_task.call((config.handler.clone(), respond.clone()))?;
        serve(lua, config, task_function)
    })
}

/// Binds the listener, starts the server's task and returns the handle.
fn serve(lua: &Lua, config: ServeConfig, task_function: Function) -> mlua::Result<Table> {
    let fail = |message: String| error_at_caller(lua, format!("net.serve: {message}"));
    let scheduler = Scheduler::from_lua(lua)
        .ok_or_else(|| fail("the task scheduler of this Lua state was dropped".into()))?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(fail(
            "no tokio runtime: drive the scheduler inside one (see spindle-net's docs)".into(),
        ));
    }
    let address = std::net::SocketAddr::new(config.address, config.port);
    let listener = std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(|e| fail(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;

    let (stop, stopped) = watch::channel(false);
    let server = Server {
        listener,
        shared: Rc::new(Shared::new(
            config.limits,
            task_function,
            scheduler.downgrade(),
            stopped,
        )),
    };
    // The server's task: a Spindle async function whose future is the server itself.
    let slot = RefCell::new(Some(server));
    let run = scheduler.create_async_function(move |_lua, ()| {
        let server = slot.borrow_mut().take();
        async move {
            if let Some(server) = server {
                server.run().await;
            }
            Ok(())
        }
    })?;
    scheduler.spawn(run, ())?;

    let handle = lua.create_table()?;
    handle.set("address", bound.ip().to_string())?;
    handle.set("port", bound.port())?;
    // `handle.stop()` as in Lune, and `handle:stop()`: the arguments are ignored.
    let stop = lua.create_function(move |_, _: MultiValue| {
        stop.send_replace(true);
        Ok(())
    })?;
    handle.set("stop", stop)?;
    Ok(handle)
}

/// What a server's connections and requests share.
struct Shared {
    limits: Limits,
    http: http1::Builder,
    /// The function each request's task runs, with the request's parts as its arguments
    /// ([`exchange::request_args`]).
    task_function: Function,
    scheduler: WeakScheduler,
    /// Becomes `true` once `stop()` was called.
    stopped: watch::Receiver<bool>,
}

impl Shared {
    fn new(
        limits: Limits,
        task_function: Function,
        scheduler: WeakScheduler,
        stopped: watch::Receiver<bool>,
    ) -> Shared {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.request_timeout)
            .max_header_size(limits.max_header_size);
        Shared {
            limits,
            http,
            task_function,
            scheduler,
            stopped,
        }
    }
}

/// A listening server.
struct Server {
    listener: TcpListener,
    shared: Rc<Shared>,
}

impl Server {
    /// Serves until `stop()`, then drains. Connections beyond `maxConnections` wait in the
    /// listen queue: the listener is not polled while that many are open.
    async fn run(self) {
        let Server { listener, shared } = self;
        let mut connections = FuturesUnordered::new();
        let mut stopped = shared.stopped.clone();
        loop {
            tokio::select! {
                biased;
                () = until_stopped(&mut stopped) => break,
                Some(()) = connections.next(), if !connections.is_empty() => {}
                accepted = listener.accept(), if connections.len() < shared.limits.max_connections => {
                    match accepted {
                        Ok((stream, _)) => {
                            // Small responses go out at once rather than waiting for more.
                            let _ = stream.set_nodelay(true);
                            connections.push(connection::serve(stream, Rc::clone(&shared)));
                        }
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: the server goes on, after a pause if the system is short.
                        Err(error) => {
                            if !matches!(
                                error.kind(),
                                std::io::ErrorKind::ConnectionAborted
                                    | std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::Interrupted
                            ) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }
        }
        drop(listener);
        let deadline = tokio::time::sleep(shared.limits.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                next = connections.next() => if next.is_none() { break },
            }
        }
        // Connections still open past the deadline are dropped here, and their handlers'
        // tasks cancelled.
    }
}

/// Completes once `stop()` was called; never, if the handle (the sender) is gone without it.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
