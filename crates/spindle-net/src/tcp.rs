//! `net.tcp`: TCP streams (`connect`) and servers (`listen`), for protocols of a script's own.
//!
//! A stream is a userdata (`typeof` says `"TcpStream"`) over a [`Duplex`] of the connection's
//! halves, with `read(maxBytes?)`, `write(data)`, `close()`, `remoteAddress` and `remotePort`.
//! The halves are boxed: a plain connection's own halves, or those of a TLS session over it
//! (`connect` with `tls = true`), so that one code path serves both. Its methods are Spindle
//! async functions wrapped in `tcp.luau`, which checks the arguments and raises refusals at the
//! caller's line. A task blocked in `read` or `write` holds only the future of that call:
//! cancelling the task drops it, and the half is free for the next caller.
//!
//! Invariants: `read` returns nil at the end of the stream (and on every read after it), and
//! also to a read in progress when another task closes the stream; a `read` or `write` called
//! after `close()` is an error that says so. `close()` shuts the writing half down (for TLS,
//! sends close_notify; bounded by [`CLOSE_TIMEOUT`]) and drops both halves, which closes the
//! connection (unless the closing task is cancelled meanwhile: then the collector closes it, with
//! the object); a stream nobody closed is closed when the collector frees it.

mod connect;
mod listen;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use mlua::{AnyUserData, Lua, Table, UserDataFields, Value};
use spindle::Scheduler;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::duplex::Duplex;

/// The Lua side of streams: argument checks and errors at the caller's line.
const TCP_LUAU: &str = include_str!("tcp.luau");

/// The most a single `read` returns, whatever `maxBytes` asks: a read buffer is allocated at
/// its full size, so a script's `maxBytes` must not choose the allocation freely.
const MAX_READ: usize = 16 * 1024 * 1024;

/// How long `close()` waits for the writing half to shut down (a TLS close_notify to go out)
/// before it drops the connection anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The userdata behind a stream.
pub(crate) struct Stream(Rc<State>);

/// A stream's reading half: a plain connection's, or a TLS session's. Boxed, so that the
/// methods have one code path; the indirect call costs nothing next to the system call.
type Reader = Box<dyn AsyncRead + Unpin>;
/// A stream's writing half, as [`Reader`].
type Writer = Box<dyn AsyncWrite + Unpin>;

struct State {
    duplex: Duplex<Reader, Writer>,
    read_timeout: Option<Duration>,
    remote: Option<SocketAddr>,
}

/// An open connection, before it becomes a stream.
enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the primitives hand to `tcp.luau`: `true` and a value, or `false` and the refusal.
type Answer = (bool, Value);

fn refused(lua: &Lua, message: impl AsRef<str>) -> mlua::Result<Answer> {
    Ok((false, Value::String(lua.create_string(message.as_ref())?)))
}

fn state_of(stream: &AnyUserData) -> Result<Rc<State>, String> {
    stream
        .borrow::<Stream>()
        .map(|stream| Rc::clone(&stream.0))
        .map_err(|_| "expected a TcpStream".to_string())
}

/// A stream userdata over an open connection.
fn stream_userdata(
    lua: &Lua,
    connection: Connection,
    read_timeout: Option<Duration>,
) -> mlua::Result<AnyUserData> {
    let (remote, reader, writer): (_, Reader, Writer) = match connection {
        Connection::Plain(stream) => {
            let _ = stream.set_nodelay(true);
            let remote = stream.peer_addr().ok();
            let (reader, writer) = stream.into_split();
            (remote, Box::new(reader), Box::new(writer))
        }
        Connection::Tls(stream) => {
            let remote = stream.get_ref().0.peer_addr().ok();
            // A TLS session is one state for both directions: the halves share it.
            let (reader, writer) = tokio::io::split(*stream);
            (remote, Box::new(reader), Box::new(writer))
        }
    };
    lua.create_any_userdata(Stream(Rc::new(State {
        duplex: Duplex::new(reader, writer),
        read_timeout,
        remote,
    })))
}

/// Builds `net.tcp` and registers the stream userdata's methods with `scheduler`'s Lua.
pub(crate) fn library(scheduler: &Scheduler) -> mlua::Result<Table> {
    let lua = scheduler.lua();
    let primitives = lua.create_table()?;
    primitives.raw_set(
        "read",
        scheduler.create_async_function(|lua: Lua, (stream, max): (AnyUserData, usize)| {
            let state = state_of(&stream);
            async move {
                let state = match state {
                    Ok(state) => state,
                    Err(message) => return refused(&lua, message),
                };
                if state.duplex.is_closed() {
                    return refused(&lua, "the stream is closed");
                }
                let max = max.clamp(1, MAX_READ);
                let read = state.duplex.reading(async |reader| {
                    let mut buffer = Vec::with_capacity(max);
                    reader.read_buf(&mut buffer).await.map(|_| buffer)
                });
                let read = match state.read_timeout {
                    Some(limit) => match tokio::time::timeout(limit, read).await {
                        Ok(read) => read,
                        Err(_) => {
                            let seconds = limit.as_secs_f64();
                            return refused(
                                &lua,
                                format!("timed out after {seconds} s (readTimeout)"),
                            );
                        }
                    },
                    None => read.await,
                };
                match read {
                    Some(Ok(bytes)) if !bytes.is_empty() => {
                        Ok((true, Value::String(lua.create_string(bytes)?)))
                    }
                    // The end of the stream; or closed by another task while this read waited.
                    Some(Ok(_)) | None => Ok((true, Value::Nil)),
                    // A TLS peer that closed the connection without close_notify: the end too,
                    // as for a plain stream (a protocol that must see truncation frames its data).
                    Some(Err(error)) if error.kind() == ErrorKind::UnexpectedEof => {
                        Ok((true, Value::Nil))
                    }
                    Some(Err(error)) => refused(&lua, format!("the connection failed: {error}")),
                }
            }
        })?,
    )?;
    primitives.raw_set(
        "write",
        scheduler.create_async_function(|lua: Lua, (stream, data): (AnyUserData, Value)| {
            let state = state_of(&stream);
            let bytes = match &data {
                Value::String(text) => Ok(text.as_bytes().to_vec()),
                Value::Buffer(buffer) => Ok(buffer.to_vec()),
                _ => Err("the data is not a string or a buffer"),
            };
            async move {
                let (state, bytes) = match (state, bytes) {
                    (Ok(state), Ok(bytes)) => (state, bytes),
                    (Err(message), _) => return refused(&lua, message),
                    (_, Err(message)) => return refused(&lua, message),
                };
                if state.duplex.is_closed() {
                    return refused(&lua, "the stream is closed");
                }
                match state
                    .duplex
                    .writing(async |writer| writer.write_all(&bytes).await)
                    .await
                {
                    Some(Ok(())) => Ok((true, Value::Nil)),
                    None => refused(&lua, "the stream was closed while writing"),
                    Some(Err(error)) => refused(&lua, format!("the connection failed: {error}")),
                }
            }
        })?,
    )?;
    primitives.raw_set(
        "close",
        scheduler.create_async_function(|lua: Lua, stream: AnyUserData| {
            let state = state_of(&stream);
            async move {
                match state {
                    Ok(state) => {
                        let shutdown = async |writer: &mut Writer| {
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.shutdown()).await;
                        };
                        state.duplex.close_after(shutdown).await;
                        Ok((true, Value::Nil))
                    }
                    Err(message) => refused(&lua, message),
                }
            }
        })?,
    )?;
    primitives.raw_set("connect", connect::function(scheduler)?)?;

    let built: Table = lua
        .load(TCP_LUAU)
        .set_name("=[spindle net.tcp]")
        .into_function()?
        .call(primitives)?;
    let methods: Table = built.get("methods")?;
    lua.register_userdata_type::<Stream>(|registry| {
        registry.add_field_method_get("remoteAddress", |_, stream| {
            Ok(stream.0.remote.map(|address| address.ip().to_string()))
        });
        registry.add_field_method_get("remotePort", |_, stream| {
            Ok(stream.0.remote.map(|address| address.port()))
        });
        registry.add_meta_field("__type", "TcpStream");
        registry.add_meta_field("__index", methods);
    })?;
    let tcp = lua.create_table()?;
    tcp.set("connect", built.get::<mlua::Function>("connect")?)?;
    tcp.set("listen", listen::function(lua)?)?;
    Ok(tcp)
}
