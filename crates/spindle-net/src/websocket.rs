//! WebSockets: the socket object that `net.socket` returns (a client) and that a server's
//! `handleWebSocket` receives, with `send`, `next`, `close` and `closeCode`.
//!
//! A socket is a userdata (`typeof` says `"WebSocket"`) over a [`Duplex`] of the stream's two
//! halves, so that one task may wait in `next()` while others `send`. Its methods are Spindle
//! async functions, wrapped in `websocket.luau`, which checks the arguments and raises the Rust
//! side's refusals at the caller's line.
//!
//! Invariants: `closeCode` is set once, by the first close frame sent or received (1005 when the
//! peer's carried no code, 1006 when the connection broke with none, 1009 when the peer's message
//! was over the limit); once it is set no message is sent and `next()` returns nil; and the
//! connection is closed (both halves dropped) within twice [`CLOSE_TIMEOUT`] of it being set,
//! whether or not the peer answers, without waiting for the collector (unless the task that is
//! closing it is cancelled meanwhile: then the collector closes it, with the object).

pub(crate) mod accept;
mod connect;

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use mlua::{AnyUserData, Function, Lua, Table, UserDataFields, Value};
use spindle::Scheduler;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::duplex::Duplex;

/// The Lua side of sockets: argument checks and errors at the caller's line.
const WEBSOCKET_LUAU: &str = include_str!("websocket.luau");

/// How long a close waits for its frame to go out and for the peer's answer.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) use crate::config::DEFAULT_MAX_MESSAGE_SIZE;

/// The byte streams a socket runs on: a TCP connection, or a server's upgraded HTTP connection.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// The userdata behind a socket.
pub(crate) struct Socket(Rc<State>);

pub(crate) struct State {
    duplex: Duplex<SplitStream<Ws>, SplitSink<Ws, Message>>,
    close_code: Cell<Option<u16>>,
}

/// The limits a socket applies to what it receives.
pub(crate) fn config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// What `next()` found.
enum Incoming {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary(hyper::body::Bytes),
    /// The connection ended with this close code.
    End(u16),
}

impl State {
    fn new(stream: Ws) -> Rc<State> {
        let (writer, reader) = stream.split();
        Rc::new(State {
            duplex: Duplex::new(reader, writer),
            close_code: Cell::new(None),
        })
    }

    fn is_closed(&self) -> bool {
        self.close_code.get().is_some() || self.duplex.is_closed()
    }

    /// Sets `closeCode` unless a close came first.
    fn record(&self, code: u16) {
        if self.close_code.get().is_none() {
            self.close_code.set(Some(code));
        }
    }

    /// The next text or binary message; `None` once the connection has ended.
    async fn next(&self) -> Option<Incoming> {
        if self.is_closed() {
            return None;
        }
        let read = self
            .duplex
            .reading(async |reader| loop {
                match reader.next().await {
                    Some(Ok(Message::Text(text))) => break Incoming::Text(text),
                    Some(Ok(Message::Binary(bytes))) => break Incoming::Binary(bytes),
                    Some(Ok(Message::Close(frame))) => {
                        break Incoming::End(frame.map_or(1005, |frame| frame.code.into()))
                    }
                    // Pings are answered by tungstenite; pongs and raw frames are not messages.
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::Capacity(_))) => break Incoming::End(1009),
                    Some(Err(_)) | None => break Incoming::End(1006),
                }
            })
            .await?;
        match read {
            Incoming::End(code) => {
                self.record(code);
                if code == 1009 {
                    self.send_close(code).await;
                } else {
                    // Sends the answer to the peer's close frame that tungstenite queued.
                    let flush = self.duplex.writing(async |writer| writer.flush().await);
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, flush).await;
                }
                self.duplex.close().await;
                None
            }
            message => Some(message),
        }
    }

    async fn send(&self, message: Message) -> Result<(), String> {
        if self.is_closed() {
            return Err("the socket is closed".into());
        }
        match self
            .duplex
            .writing(async |writer| writer.send(message).await)
            .await
        {
            Some(Ok(())) => Ok(()),
            None => Err("the socket was closed while sending".into()),
            Some(Err(error)) => {
                self.record(1006);
                self.duplex.close().await;
                Err(format!("the connection failed: {error}"))
            }
        }
    }

    /// Sends a close frame with `code`, waits (within [`CLOSE_TIMEOUT`]) for the peer's answer,
    /// and closes the connection. Does nothing on a socket that is closed already.
    async fn close(&self, code: u16) {
        if self.is_closed() {
            return;
        }
        self.record(code);
        self.send_close(code).await;
        // The peer's answer; a task waiting in `next()` may get it first, which is as good.
        let answer = self.duplex.reading(async |reader| {
            while let Some(Ok(message)) = reader.next().await {
                if let Message::Close(_) = message {
                    break;
                }
            }
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, answer).await;
        self.duplex.close().await;
    }

    async fn send_close(&self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        let send = self
            .duplex
            .writing(async |writer| writer.send(Message::Close(Some(frame))).await);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
    }
}

/// What the socket primitives hand to `websocket.luau`: `true` and the values, or `false` and
/// the refusal, which it raises at the caller's line.
type Answer = (bool, Value, Value);

fn refused(lua: &Lua, message: impl AsRef<str>) -> mlua::Result<Answer> {
    Ok((
        false,
        Value::String(lua.create_string(message.as_ref())?),
        Value::Nil,
    ))
}

fn state_of(socket: &AnyUserData) -> Result<Rc<State>, String> {
    socket
        .borrow::<Socket>()
        .map(|socket| Rc::clone(&socket.0))
        .map_err(|_| "expected a WebSocket".to_string())
}

/// The socket library, built once per `net` table: the methods' table, `net.socket`, and the
/// maker of a server's task function for `handleWebSocket`.
pub(crate) struct Library {
    pub(crate) socket: Function,
    /// `serving(handler)` gives the function a server's upgrade task runs.
    pub(crate) serving: Function,
}

/// Builds the socket library and registers the socket userdata's methods with `scheduler`'s Lua.
pub(crate) fn library(scheduler: &Scheduler) -> mlua::Result<Library> {
    let lua = scheduler.lua();
    let primitives = lua.create_table()?;
    primitives.raw_set(
        "send",
        scheduler.create_async_function(
            |lua: Lua, (socket, message, binary): (AnyUserData, Value, bool)| {
                let state = state_of(&socket);
                async move {
                    let state = match state {
                        Ok(state) => state,
                        Err(message) => return refused(&lua, message),
                    };
                    let bytes = match &message {
                        Value::String(text) => text.as_bytes().to_vec(),
                        Value::Buffer(buffer) => buffer.to_vec(),
                        _ => return refused(&lua, "the message is not a string or a buffer"),
                    };
                    let message = if binary {
                        Message::Binary(bytes.into())
                    } else {
                        match String::from_utf8(bytes) {
                            Ok(text) => Message::Text(text.into()),
                            Err(_) => return refused(
                                &lua,
                                "the message is not valid UTF-8 text (pass true as argument #2 to send it as a binary message)",
                            ),
                        }
                    };
                    match state.send(message).await {
                        Ok(()) => Ok((true, Value::Nil, Value::Nil)),
                        Err(message) => refused(&lua, message),
                    }
                }
            },
        )?,
    )?;
    primitives.raw_set(
        "next",
        scheduler.create_async_function(|lua: Lua, socket: AnyUserData| {
            let state = state_of(&socket);
            async move {
                let state = match state {
                    Ok(state) => state,
                    Err(message) => return refused(&lua, message),
                };
                let (message, binary) = match state.next().await {
                    Some(Incoming::Text(text)) => (lua.create_string(text.as_bytes())?, false),
                    Some(Incoming::Binary(bytes)) => (lua.create_string(&bytes)?, true),
                    Some(Incoming::End(_)) | None => return Ok((true, Value::Nil, Value::Nil)),
                };
                Ok((true, Value::String(message), Value::Boolean(binary)))
            }
        })?,
    )?;
    primitives.raw_set(
        "close",
        scheduler.create_async_function(|lua: Lua, (socket, code): (AnyUserData, u16)| {
            let state = state_of(&socket);
            async move {
                match state {
                    Ok(state) => {
                        state.close(code).await;
                        Ok((true, Value::Nil, Value::Nil))
                    }
                    Err(message) => refused(&lua, message),
                }
            }
        })?,
    )?;
    primitives.raw_set(
        "isAllowedCode",
        lua.create_function(|_, code: u16| Ok(CloseCode::from(code).is_allowed()))?,
    )?;
    primitives.raw_set("connect", connect::function(scheduler)?)?;
    primitives.raw_set("upgrade", accept::upgrade_function(scheduler)?)?;

    let built: Table = lua
        .load(WEBSOCKET_LUAU)
        .set_name("=[spindle net.socket]")
        .into_function()?
        .call(primitives)?;
    let methods: Table = built.get("methods")?;
    lua.register_userdata_type::<Socket>(|registry| {
        registry.add_field_method_get("closeCode", |_, socket| Ok(socket.0.close_code.get()));
        registry.add_meta_field("__type", "WebSocket");
        registry.add_meta_field("__index", methods);
    })?;
    Ok(Library {
        socket: built.get("socket")?,
        serving: built.get("serving")?,
    })
}

/// A socket userdata over an open stream.
fn socket_userdata(lua: &Lua, stream: Ws) -> mlua::Result<AnyUserData> {
    lua.create_any_userdata(Socket(State::new(stream)))
}

/// Closes the sockets still open among `sockets` with `code`, all at once.
pub(crate) async fn close_all(sockets: Vec<Weak<State>>, code: u16) {
    let closing = sockets
        .into_iter()
        .filter_map(|socket| socket.upgrade())
        .map(|socket| async move { socket.close(code).await });
    futures_util::future::join_all(closing).await;
}
