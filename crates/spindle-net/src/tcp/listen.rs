//! `net.tcp.listen(port | config, handler)`: a TCP server that runs `handler(stream)` as a task
//! of its own for each connection it accepts, and returns at once with a handle (`port`,
//! `address`, `stop()`). Until `stop()` the listener keeps the run going; `stop()` closes it.
//! Streams already accepted belong to their handlers and stay open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mlua::{Function, Lua, Value};
use spindle::WeakScheduler;
use tokio::net::TcpListener;

use super::{stream_userdata, Connection};
use crate::config::{address_from, port_from, read_options, seconds_from};
use crate::error_at_caller;
use crate::listener::{self, accept_failed, until_stopped, Stopped};

/// The function `net.tcp.listen`.
pub(super) fn function(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|lua, (first, handler): (Value, Value)| {
        let fail = |message: String| error_at_caller(lua, format!("net.tcp.listen: {message}"));
        let mut address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut read_timeout = None;
        let port = match first {
            Value::Table(config) => {
                let mut port = None;
                read_options(
                    Some(config),
                    &["port", "address", "readTimeout"],
                    |name, value| {
                        match name {
                            "port" => port = Some(port_from(value)?),
                            "address" => address = address_from(value)?,
                            _ => read_timeout = Some(seconds_from(value)?),
                        }
                        Ok(())
                    },
                )
                .map_err(fail)?;
                port.ok_or_else(|| fail("no port given (set 'port', or 0 for any)".into()))?
            }
            Value::Nil => {
                return Err(fail(
                    "invalid argument #1 (port or config table expected, got nil)".into(),
                ))
            }
            other => port_from(&other).map_err(|m| fail(format!("invalid argument #1 ({m})")))?,
        };
        let Value::Function(handler) = handler else {
            return Err(fail(format!(
                "invalid argument #2 (function expected, got {})",
                crate::type_name(&handler)
            )));
        };
        let address = SocketAddr::new(address, port);
        listener::listen(
            lua,
            "net.tcp.listen",
            address,
            move |listener, scheduler, stopped| {
                accept(
                    listener,
                    handler,
                    read_timeout,
                    scheduler.downgrade(),
                    stopped,
                )
            },
        )
    })
}

/// Accepts connections until `stop()`, each handed to a new task running `handler`.
async fn accept(
    listener: TcpListener,
    handler: Function,
    read_timeout: Option<Duration>,
    scheduler: WeakScheduler,
    mut stopped: Stopped,
) {
    loop {
        tokio::select! {
            biased;
            () = until_stopped(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(scheduler) = scheduler.upgrade() else { break };
                    // Out of memory, or the scheduler refuses work: this connection is dropped,
                    // and the failure reported as a task's error would be.
                    let started = stream_userdata(scheduler.lua(), Connection::Plain(stream), read_timeout)
                        .map_err(spindle::Error::from)
                        .and_then(|stream| scheduler.spawn(&handler, stream));
                    if let Err(error) = started {
                        scheduler.report_error(spindle::TaskError::new(
                            None,
                            format!("net.tcp.listen: cannot start the handler for a connection: {error}"),
                            "",
                        ));
                    }
                }
                Err(error) => accept_failed(error).await,
            }
        }
    }
}
