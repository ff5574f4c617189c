//! `net.tcp.connect(host, port, options?)`: a TCP client stream, plain or over TLS. The third
//! argument is an options table, or a boolean that stands for `{ tls = it }` (Lune's shorthand).
//! `timeout` bounds the connection and the TLS handshake together.
//!
//! With `tls = true` the stream runs over TLS (rustls with the ring provider, the configuration
//! `net.request` and `net.socket` use): the server's certificate must chain to a webpki root or to
//! one of `caCertificates`, and name `serverName` (by default, the host connected to). Those two
//! options are refused without `tls = true`, rather than ignored: a script that passes roots
//! expects them to be checked. Options are read, and extra roots parsed (or found in the cache),
//! before anything connects.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaString, Value};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use spindle::Scheduler;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{refused, stream_userdata, Connection};
use crate::config::{describe, read_options, seconds_from, UNREAD};
use crate::tls::{self, ExtraRoots};

/// Where to connect, and how.
struct Target {
    host: String,
    port: u16,
    timeout: Duration,
    read_timeout: Option<Duration>,
    tls: Option<Tls>,
}

/// How a TLS stream checks its server.
struct Tls {
    /// The default configuration, or one that trusts extra roots too.
    config: Arc<ClientConfig>,
    /// The name the certificate must carry, also sent in the handshake (SNI) unless an address.
    name: ServerName<'static>,
}

impl Target {
    /// `host:port`, as errors show it.
    fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The primitive behind `net.tcp.connect`: `(host, port, options)` to `(true, stream)` or
/// `(false, why)`.
pub(super) fn function(scheduler: &Scheduler) -> mlua::Result<Function> {
    let configs: Rc<tls::Cache<Arc<ClientConfig>>> = Rc::default();
    Ok(scheduler.create_async_function(
        move |lua: Lua, (host, port, options): (LuaString, u16, Value)| {
            let target = target(host.to_string_lossy(), port, &options, &configs);
            async move {
                let target = match target {
                    Ok(target) => target,
                    Err(message) => return refused(&lua, message),
                };
                match tokio::time::timeout(target.timeout, open(&target)).await {
                    Ok(Ok(connection)) => {
                        let stream = stream_userdata(&lua, connection, target.read_timeout)?;
                        Ok((true, Value::UserData(stream)))
                    }
                    Ok(Err(message)) => refused(&lua, message),
                    Err(_) => refused(
                        &lua,
                        format!(
                            "cannot connect to {}: timed out after {} s",
                            target.shown(),
                            target.timeout.as_secs_f64()
                        ),
                    ),
                }
            }
        },
    )?)
}

/// Reads the options; a refusal names the option.
fn target(
    host: String,
    port: u16,
    options: &Value,
    configs: &tls::Cache<Arc<ClientConfig>>,
) -> Result<Target, String> {
    let mut target = Target {
        host,
        port,
        timeout: Duration::from_secs(30),
        read_timeout: None,
        tls: None,
    };
    let mut secure = false;
    let mut extra_roots = None;
    let mut server_name = None;
    match options {
        Value::Nil => {}
        Value::Boolean(on) => secure = *on,
        Value::Table(table) => read_options(
            Some(table.clone()),
            &["timeout", "readTimeout", "tls", tls::OPTION, "serverName"],
            |name, value| {
                match name {
                    "timeout" => target.timeout = seconds_from(value)?,
                    "readTimeout" => target.read_timeout = Some(seconds_from(value)?),
                    "tls" => match value {
                        Value::Boolean(on) => secure = *on,
                        other => return Err(format!("must be a boolean, got {}", describe(other))),
                    },
                    tls::OPTION => extra_roots = ExtraRoots::from_value(value)?,
                    "serverName" => server_name = server_name_from(value)?,
                    _ => return Err(UNREAD.into()),
                }
                Ok(())
            },
        )?,
        other => {
            return Err(format!(
                "invalid argument #3 (options table or boolean expected, got {})",
                crate::type_name(other)
            ))
        }
    }
    if !secure {
        let only_for_tls = [
            (tls::OPTION, extra_roots.is_some()),
            ("serverName", server_name.is_some()),
        ];
        if let Some((name, _)) = only_for_tls.iter().find(|(_, given)| *given) {
            return Err(format!(
                "option '{name}' is for TLS streams: set 'tls = true' as well"
            ));
        }
        return Ok(target);
    }
    let name = match server_name {
        Some(name) => name,
        None => ServerName::try_from(target.host.clone()).map_err(|_| {
            format!(
                "\"{}\" is not a server name for TLS (give one with option 'serverName')",
                target.host
            )
        })?,
    };
    let config = match extra_roots {
        Some(roots) => configs
            .get(&roots, Arc::new)
            .map_err(|message| format!("option '{}' {message}", tls::OPTION))?,
        None => tls::default_config(),
    };
    target.tls = Some(Tls { config, name });
    Ok(target)
}

/// `serverName`: a DNS name or an IP address (nil is none).
fn server_name_from(value: &Value) -> Result<Option<ServerName<'static>>, String> {
    let expected = "must be a host name or an IP address";
    match value {
        Value::Nil => Ok(None),
        Value::String(text) => {
            let text = text.to_string_lossy();
            ServerName::try_from(text.clone())
                .map(Some)
                .map_err(|_| format!("{expected}, got \"{text}\""))
        }
        other => Err(format!("{expected}, got {}", describe(other))),
    }
}

/// Connects, and for TLS performs the handshake.
async fn open(target: &Target) -> Result<Connection, String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.shown()))?;
    let Some(tls) = &target.tls else {
        return Ok(Connection::Plain(stream));
    };
    let _ = stream.set_nodelay(true);
    let session = TlsConnector::from(Arc::clone(&tls.config))
        .connect(tls.name.clone(), stream)
        .await
        .map_err(|e| format!("the TLS handshake with {} failed: {e}", target.shown()))?;
    Ok(Connection::Tls(Box::new(session)))
}
