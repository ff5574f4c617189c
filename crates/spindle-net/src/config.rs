//! `net.serve`'s arguments: the port, the handler and the options, read and checked once, before
//! anything is bound. Every refusal names the option and what was wrong with it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mlua::{Function, Lua, Value};

use crate::error_at_caller;

/// A server's settings, as `net.serve` was given them.
pub(crate) struct ServeConfig {
    pub(crate) address: IpAddr,
    pub(crate) port: u16,
    /// `handleRequest`; `None` when only `handleWebSocket` was given.
    pub(crate) handler: Option<Function>,
    /// `handleWebSocket`, and the largest message its sockets accept.
    pub(crate) websocket: Option<(Function, usize)>,
    pub(crate) limits: Limits,
}

/// What a server allows its clients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_header_size: usize,
    pub(crate) max_body_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// The option names `net.serve` knows, for the error that names an unknown one.
/// The default limit on a WebSocket message's size (and on a frame's): 4 MiB, as
/// `maxBodySize`. Here, with the other options' defaults, so that reading options needs
/// nothing of the modules that use them.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

const KEYS: [&str; 11] = [
    "port",
    "address",
    "handleRequest",
    "handleWebSocket",
    "maxMessageSize",
    "maxHeaderSize",
    "maxBodySize",
    "requestTimeout",
    "idleTimeout",
    "maxConnections",
    "shutdownTimeout",
];

impl ServeConfig {
    /// Reads `net.serve(first, second)`: `(port, handler)`, `(port, config)`, `(config)` or
    /// `(config, handler)`.
    pub(crate) fn from_args(lua: &Lua, first: Value, second: Value) -> mlua::Result<Self> {
        let fail = |message: String| error_at_caller(lua, format!("net.serve: {message}"));
        let mut port = None;
        let mut handler = None;
        let mut websocket = None;
        let mut max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
        let mut tables = Vec::new();
        match first {
            Value::Integer(_) | Value::Number(_) => port = Some(port_from(&first).map_err(fail)?),
            Value::Table(table) => tables.push(table),
            other => {
                return Err(fail(format!(
                    "invalid argument #1 (port or config table expected, got {})",
                    crate::type_name(&other)
                )))
            }
        }
        match second {
            Value::Function(function) => handler = Some(function),
            Value::Table(table) => tables.push(table),
            Value::Nil => {}
            other => {
                return Err(fail(format!(
                    "invalid argument #2 (handler function or config table expected, got {})",
                    crate::type_name(&other)
                )))
            }
        }
        let mut address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut config = Limits {
            max_header_size: 64 * 1024,
            max_body_size: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(5),
        };
        for table in tables {
            read_options(Some(table), &KEYS, |name, value| {
                match name {
                    "port" => port = Some(port_from(value)?),
                    "address" => address = address_from(value)?,
                    "handleRequest" => handler = Some(function_from(value)?),
                    "handleWebSocket" => websocket = Some(function_from(value)?),
                    "maxMessageSize" => max_message_size = size_from(value)?,
                    "maxHeaderSize" => config.max_header_size = size_from(value)?,
                    "maxBodySize" => config.max_body_size = size_from(value)?,
                    "maxConnections" => config.max_connections = size_from(value)?,
                    "requestTimeout" => config.request_timeout = seconds_from(value)?,
                    "idleTimeout" => config.idle_timeout = seconds_from(value)?,
                    "shutdownTimeout" => config.shutdown_timeout = seconds_from(value)?,
                    _ => return Err(UNREAD.into()),
                }
                Ok(())
            })
            .map_err(fail)?;
        }
        let port =
            port.ok_or_else(|| fail("no port given (pass one, or set 'port' = 0 for any)".into()))?;
        if handler.is_none() && websocket.is_none() {
            return Err(fail(
                "no handler given (pass a function, or set 'handleRequest' or 'handleWebSocket')"
                    .into(),
            ));
        }
        Ok(ServeConfig {
            address,
            port,
            handler,
            websocket: websocket.map(|function| (function, max_message_size)),
            limits: config,
        })
    }
}

/// A handler: `handleRequest` or `handleWebSocket`.
fn function_from(value: &Value) -> Result<Function, String> {
    match value {
        Value::Function(function) => Ok(function.clone()),
        other => Err(format!(
            "must be a function, got {}",
            crate::type_name(other)
        )),
    }
}

pub(crate) fn port_from(value: &Value) -> Result<u16, String> {
    match value_integer(value) {
        Some(n) if (0..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!(
            "port must be an integer from 0 to 65535, got {}",
            describe(value)
        )),
    }
}

pub(crate) fn size_from(value: &Value) -> Result<usize, String> {
    match value_integer(value) {
        Some(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("is too large: {n}")),
        _ => Err(format!(
            "must be a positive integer, got {}",
            describe(value)
        )),
    }
}

pub(crate) fn seconds_from(value: &Value) -> Result<Duration, String> {
    let seconds = match value {
        Value::Integer(n) => *n as f64,
        Value::Number(n) => *n,
        _ => f64::NAN,
    };
    // A year stands for "no limit" (math.huge): tokio's timers cannot take more.
    if seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds.min(365.0 * 86400.0)))
    } else {
        Err(format!(
            "must be a positive number of seconds, got {}",
            describe(value)
        ))
    }
}

pub(crate) fn address_from(value: &Value) -> Result<IpAddr, String> {
    let Value::String(text) = value else {
        return Err(format!("must be a string, got {}", describe(value)));
    };
    let text = text.to_string_lossy();
    let bare = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(&text)
        .trim_end_matches('/');
    let bare = bare
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(bare);
    if bare == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    bare.parse().map_err(|_| {
        format!("must be an IP address such as \"127.0.0.1\" or \"0.0.0.0\", got \"{text}\"")
    })
}

pub(crate) fn value_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) => Some(*n),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
        _ => None,
    }
}

pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
        other => format!("a {}", crate::type_name(other)),
    }
}

/// What `each` of [`read_options`] says of a name in its known list that it has no case for (a
/// name added to the list and not read): an error rather than an option silently ignored.
pub(crate) const UNREAD: &str = "is known but not read (a bug in spindle-net)";

/// Reads an options table (absent is empty): calls `each` with every key, which must be one of
/// `known`, and its value; an unknown key, or a refusal of `each`, is an error naming the option.
pub(crate) fn read_options(
    options: Option<mlua::Table>,
    known: &[&str],
    mut each: impl FnMut(&str, &Value) -> Result<(), String>,
) -> Result<(), String> {
    let Some(options) = options else {
        return Ok(());
    };
    for pair in options.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let name = match &key {
            Value::String(name) => name.to_string_lossy(),
            other => {
                return Err(format!(
                    "option keys are strings, got a {}",
                    crate::type_name(other)
                ))
            }
        };
        if !known.contains(&name.as_str()) {
            return Err(format!(
                "unknown option '{name}' (known: {})",
                known.join(", ")
            ));
        }
        each(&name, &value).map_err(|message| format!("option '{name}' {message}"))?;
    }
    Ok(())
}
