//! Spindle's network library: HTTP servers whose requests run as Luau tasks, an HTTP client,
//! WebSockets and TCP.
//!
//! [`module`] builds the `net` table for a [`Scheduler`]; the `spindle` command exposes it as
//! `require("@spindle/net")`, and any host hands it to its scripts as it likes. Its shapes follow
//! Lune's `net` library, so a script written for Lune's `net.serve` ports by changing its
//! `require` line:
//!
//! - `net.serve(port | config, handler | config)` listens for HTTP/1.1 and runs the handler as a
//!   task of its own for each request. The handler gets the request (`method`, `path`, `query`,
//!   `headers`, `body`), may yield (`task.wait`, async functions), and returns a string (a 200
//!   response with that body) or a table `{ status, headers, body }`. `net.serve` returns at
//!   once with a handle: `port` (the bound port, for a server asked for port 0), `address` and
//!   `stop()`. See [`serve`](crate#servers) below for the options and the limits.
//!   With `handleWebSocket`, the same server accepts WebSockets, each handled by a task of its
//!   own; see [WebSockets](crate#websockets).
//! - `net.request(url | config)` sends an HTTP/1.1 request (HTTPS through rustls) and returns
//!   `{ ok, statusCode, statusMessage, headers, body }`; the calling task waits meanwhile, the
//!   others go on. See [the client](crate#the-client-netrequest) below.
//! - `net.socket(url, options?)` opens a WebSocket (a client, `ws://` or `wss://`):
//!   `socket:send`, `socket:next()` (yields; nil once closed), `socket:close(code?)`,
//!   `socket.closeCode`.
//! - `net.tcp.connect(host, port, options?)` and `net.tcp.listen(port | config, handler)`:
//!   TCP streams and servers (Lune has no TCP server); see [TCP](crate#tcp).
//! - `net.urlEncode(text, binary?)` and `net.urlDecode(text, binary?)` percent-encode and decode.
//!
//! The library is built on tokio and hyper: the scheduler must be driven inside a tokio runtime
//! (current-thread, or a `LocalSet`), with tokio's I/O and time drivers enabled. The core crate,
//! `spindle`, knows nothing of the network or of tokio.
//!
//! ```
//! use std::time::Instant;
//! use spindle::Scheduler;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let lua = mlua::Lua::new();
//! let scheduler = Scheduler::new(&lua)?;
//! scheduler.install_task_library()?;
//! lua.globals().set("net", spindle_net::module(&scheduler)?)?;
//!
//! let script = lua.load(r#"
//!     local server = net.serve({ port = 0 }, function(request)
//!         task.wait(0.01) -- a handler may yield; the others go on meanwhile
//!         return { status = 200, body = "hello " .. request.query.name }
//!     end)
//!     return server.port, server
//! "#).into_function()?;
//! let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
//! let body = runtime.block_on(async {
//!     // Inside the runtime: `net.serve` binds its socket with tokio.
//!     let main = scheduler.spawn(script, ())?;
//!     let (port, server): (u16, mlua::Table) = scheduler.take_result(&main)?.unwrap().into_result()?;
//!     // A client on another thread; the open server keeps the run going until `stop()`.
//!     let client = std::thread::spawn(move || {
//!         use std::io::{Read, Write};
//!         let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
//!         stream.write_all(b"GET /?name=net HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//!         let mut response = String::new();
//!         stream.read_to_string(&mut response).unwrap();
//!         response
//!     });
//!     let stop: mlua::Function = server.get("stop")?;
//!     let answer = scheduler.run_until(sleeper, async {
//!         while !client.is_finished() {
//!             tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//!         }
//!         client.join().unwrap()
//!     }).await?;
//!     stop.call::<()>(())?;
//!     scheduler.run(sleeper).await?; // ends once the server has closed
//!     Ok::<_, Box<dyn std::error::Error>>(answer)
//! })?;
//! assert!(body.starts_with("HTTP/1.1 200 OK"));
//! assert!(body.ends_with("hello net"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Servers
//!
//! `net.serve` takes the port and a handler, or a configuration table (as the first argument,
//! the second, or both), whose keys are:
//!
//! | Key | Default | Meaning |
//! |---|---|---|
//! | `port` | (required) | The TCP port; 0 asks the system for a free one, which the handle's `port` reports. |
//! | `address` | `"127.0.0.1"` | The address to listen on, as in Lune: `"0.0.0.0"`, `"::1"`, `"localhost"`, also with an `http://` in front. |
//! | `handleRequest` | (required) | The handler, unless a function is passed as the second argument. |
//! | `maxHeaderSize` | 65536 | Bytes of request line and headers; more gets `431 Request Header Fields Too Large`. |
//! | `maxBodySize` | 4194304 | Bytes of request body; more gets `413 Payload Too Large`. |
//! | `requestTimeout` | 30 | Seconds for the headers to arrive, and then for the body to arrive and the handler to answer: a slow client's connection is closed (`408 Request Timeout` once the headers are in), a slow handler's task is cancelled and the client gets `503 Service Unavailable`. |
//! | `idleTimeout` | 60 | Seconds a keep-alive connection may stay idle between requests before it is closed; at most `requestTimeout`, since the wait for the next request's headers starts when the last request ends. |
//! | `maxConnections` | 1024 | Connections open at once, HTTP and WebSocket alike; further clients wait in the listen queue until one closes. |
//! | `shutdownTimeout` | 5 | Seconds `stop()` gives in-flight requests to finish before their connections are closed. |
//! | `handleWebSocket` | (none) | `function(socket)`: accepts WebSocket upgrades; without `handleRequest`, other requests get `426 Upgrade Required`. |
//! | `maxMessageSize` | 4194304 | Bytes of a WebSocket message (and frame) the server's sockets accept; more closes the socket with 1009. |
//!
//! Each request runs as a task: the handler's errors are reported with their traceback through
//! the scheduler's error handler, like any task's, and the client gets `500 Internal Server
//! Error`; so does a request whose task cannot start (the Lua out of memory, the scheduler
//! refusing work), reported through the same handler as `net.serve: cannot start the handler for
//! METHOD /path: ...`. A request that is not HTTP gets `400 Bad Request`. The server goes on
//! either way. A handler whose connection closes before it answers is cancelled.
//!
//! A listening server keeps the run going: its accept loop is a future that a task of the
//! scheduler waits on, which counts as work. `stop()` (also `handle:stop()`) returns at once:
//! the listener is closed, idle connections are closed, in-flight requests are answered (within
//! `shutdownTimeout`), and then the server's task ends, which lets the run end.
//!
//! End a host's run with `stop()` or [`Scheduler::shutdown`], which drops the server's future
//! (its listener and connections) and every handler's task. Dropping the host's last
//! `Scheduler` handle ends the scheduler too, requests in flight included: the server holds it
//! only weakly while it waits (a [`Scheduler::ended`] does not keep it alive).
//!
//! The request table: `method` (`"GET"`, ...), `path` (`"/users/7"`, percent-encoded as sent),
//! `query` (decoded; a key given more than once maps to an array of its values, in order),
//! `headers` (lower-case names; a header given more than once is joined with `", "`), and
//! `body` (a string, empty when there is none).
//!
//! The handler's answer: a string is a `200` response with that body; a table may have
//! `status` (an integer from 200 to 599, default 200), `headers` (a table of names to strings,
//! or to arrays of strings for a header sent more than once) and `body` (a string or a buffer).
//! The server sets `content-length` itself; one the handler gives must match the body (an empty
//! body, as for a `HEAD`, may come with any length), and may not come with `transfer-encoding`.
//! Anything else fails the handler's task with an error that says what was wrong.
//!
//! # The client: `net.request`
//!
//! `net.request(url)` is a `GET`; `net.request(config)` takes a table, as in Lune:
//!
//! | Key | Default | Meaning |
//! |---|---|---|
//! | `url` | (required) | An absolute `http://` or `https://` URL. |
//! | `method` | `"GET"` | Any HTTP method, in any case (`"post"` is sent as `POST`). |
//! | `headers` | none | Names to strings (or numbers), or to arrays of them for a header sent more than once. |
//! | `query` | none | Keys to values, or to arrays of values for a key sent more than once, form-encoded and appended to the URL's own query. |
//! | `body` | empty | A string or a buffer. |
//! | `options` | `{ decompress = true }` | Lune's options: with `decompress`, Spindle sends `Accept-Encoding: gzip, deflate` (unless the headers have one) and decodes a `gzip` or `deflate` body, removing its `Content-Encoding` and `Content-Length`; other codings come as sent. |
//! | `timeout` | 30 | Seconds for the whole exchange: connecting, every redirect, the last body. `math.huge` for none. |
//! | `followRedirects` | `true` | Follow `301`, `302`, `303`, `307` and `308` answers that have a `Location`. |
//! | `maxRedirects` | 10 | Redirects followed before the request fails. |
//! | `maxBodySize` | 67108864 | Bytes of response body accepted (after decoding). |
//! | `caCertificates` | none | Root certificates to trust for HTTPS beside the webpki roots: PEM text (a string, or an array of strings, each holding one or more `-----BEGIN CERTIFICATE-----` blocks, at most 1 MiB in all), such as a private CA's or a test server's self-signed certificate. |
//!
//! The response: `ok` (`true` for a 2xx status), `statusCode`, `statusMessage` (the server's
//! reason phrase), `headers` (lower-case names; a header sent more than once is joined with
//! `", "`) and `body` (a string). Spindle sends its own `User-Agent` unless the headers have one.
//!
//! Every answer is returned, whatever its status: a `404` or a `500` has `ok = false` and is no
//! error, as in Lune; so is a redirect when `followRedirects` is `false`. What gets no answer
//! raises an error at the caller's line, naming the method and the URL (without its user
//! information and query, which may hold secrets): a bad argument (`net.request: option
//! 'timeout' must be a positive number of seconds, got -1`; a port past 65535, which would
//! otherwise go to the scheme's default port), a connection refused or a name that does not resolve
//! (`net.request: GET http://127.0.0.1:1/: cannot connect: tcp connect error: Connection refused
//! (os error 111)`), a TLS failure, the timeout (`... timed out after 5 s`), a connection that
//! closes before the answer is in, too many redirects, and a body larger than `maxBodySize`, or
//! than the Lua memory limit leaves room for (checked against `Content-Length` before reading,
//! and while reading).
//!
//! Redirects: `303`, and `301`/`302` after a `POST`, go on as a `GET` without the body; `307`
//! and `308` repeat the method and the body. `Authorization`, `Cookie` and an explicit `Host`
//! are not sent on to another origin.
//!
//! A module's requests share one pooled client (hyper-util's), made at the first request:
//! requests to a server reuse its idle keep-alive connections (kept for 30 seconds). HTTPS uses
//! rustls with Mozilla's root certificates (the `webpki-roots` crate), not the system's store,
//! and no OpenSSL. `caCertificates` adds roots for the request that gives it, and for no other:
//! such requests get a pooled client of their own for each set of roots (the same PEM text is
//! parsed once and its connections are reused; the module keeps the 8 sets used last). Bad PEM,
//! a text with no certificate, or an empty array is an error naming the option
//! (`net.request: option 'caCertificates' has no certificate (...)`). Cancelling the calling
//! task (`task.cancel`, a timeout of the scheduler, the end of the run) drops the request at
//! once and closes its connection if the exchange was under way. Like `net.serve`,
//! `net.request` needs the scheduler driven inside a tokio runtime.
//!
//! ```
//! # use std::time::Instant;
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # let lua = mlua::Lua::new();
//! # let scheduler = spindle::Scheduler::new(&lua)?;
//! # scheduler.install_task_library()?;
//! # lua.globals().set("net", spindle_net::module(&scheduler)?)?;
//! let script = lua.load(r#"
//!     local server = net.serve(0, function(request)
//!         return { status = 201, body = request.method .. " " .. request.query.item }
//!     end)
//!     local response = net.request({
//!         url = `http://127.0.0.1:{server.port}/items`,
//!         method = "POST",
//!         query = { item = "tea" },
//!         body = "hot",
//!     })
//!     server.stop()
//!     return response.ok, response.statusCode, response.body
//! "#).into_function()?;
//! let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
//! let (ok, status, body) = runtime.block_on(async {
//!     let main = scheduler.spawn(script, ())?;
//!     scheduler.run(sleeper).await?;
//!     let outcome = scheduler.take_result::<(bool, u16, String)>(&main)?.unwrap();
//!     Ok::<_, Box<dyn std::error::Error>>(outcome.into_result()?)
//! })?;
//! assert_eq!((ok, status, body.as_str()), (true, 201, "POST tea"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! # WebSockets
//!
//! A server with `handleWebSocket` answers an upgrade request (`Upgrade: websocket`) with `101
//! Switching Protocols` and runs `handleWebSocket(socket)` as a task of its own; a client opens
//! one with `net.socket("ws://host:port/path", { maxMessageSize?, timeout?, caCertificates? })`,
//! which yields until the handshake is done (`timeout`, default 30 s, bounds the connection and
//! the handshake). `wss://` runs over TLS (rustls on ring), trusting the webpki roots (Mozilla's
//! list, built in, not the system's store) and those of the `caCertificates` option (PEM text,
//! as for `net.request`). Both ends get the same object (`typeof(socket) == "WebSocket"`), as
//! in Lune:
//!
//! - `socket:send(message, asBinaryMessage?)`: a string goes as a text message (it must be
//!   UTF-8), a buffer as a binary one; `asBinaryMessage` decides either way. Yields until the
//!   message is written.
//! - `socket:next()`: yields until a message comes, and returns it (a string) and whether it
//!   was binary; returns nil once the connection has closed. Pings are answered on their own.
//! - `socket:close(code?)`: sends a close frame (default 1000; 1000 to 4999, not the reserved
//!   codes), waits up to a second for the peer's answer, and closes the connection. Closing a
//!   closed socket does nothing.
//! - `socket.closeCode`: nil while open; then the code of the first close frame sent or
//!   received: the peer's (1005 if it gave none), one's own, 1006 when the connection broke
//!   without one, 1009 when the peer's message was over `maxMessageSize` (the socket closes
//!   with 1009).
//!
//! `send` on a closed socket is an error (`socket:send: the socket is closed`); `next` returns
//! nil. A socket may be used by any task: one task may wait in `next()` while others `send`;
//! two readers take turns. Cancelling a task waiting in `next()` drops the wait at once (the
//! socket stays open for others). A socket nobody closes is closed when the collector frees it;
//! a server's `stop()` closes the sockets it accepted with 1001 (going away). An accepted socket
//! counts toward `maxConnections` until its connection closes (so open WebSockets cannot grow
//! past the cap), and the HTTP timeouts stop applying to it.
//!
//! # TCP
//!
//! `net.tcp.connect(host, port, { timeout?, readTimeout?, tls?, caCertificates?, serverName? })`
//! yields until connected (`timeout`, default 30 s, bounds the connection and the TLS handshake)
//! and returns a stream. With `tls = true` (or `true` in place of the table, Lune's shorthand)
//! the stream runs over TLS: rustls on ring, trusting the webpki roots and those of
//! `caCertificates` (PEM, as for `net.request`), and checking that the certificate names
//! `serverName` (default: `host`, a name or an IP address). A server no root vouches for is
//! refused (`net.tcp.connect: the TLS handshake with localhost:7000 failed: invalid peer
//! certificate: UnknownIssuer`). `caCertificates` or `serverName` without `tls = true` is an
//! error (`option 'caCertificates' is for TLS streams: set 'tls = true' as well`), not
//! ignored. `net.tcp.listen(port | { port, address?, readTimeout? },
//! handler)` returns at once with a handle (`port`, `address`, `stop()`) and runs
//! `handler(stream)` as a task of its own for each connection; like `net.serve`, an open
//! listener keeps the run going, and `stop()` closes it (accepted streams stay open). A stream
//! (`typeof(stream) == "TcpStream"`) has:
//!
//! - `stream:read(maxBytes?)`: yields until data comes and returns up to `maxBytes` (default
//!   65536, at most 16 MiB) as a string; nil at the end of the stream. With `readTimeout`, a
//!   read that waits longer fails with `stream:read: timed out after N s (readTimeout)`.
//! - `stream:write(data)`: a string or a buffer; yields until it is all written.
//! - `stream:close()`: closes the connection (a TLS stream sends close_notify first, waiting at
//!   most a second for it to go out); a read waiting in another task returns nil, and later
//!   reads and writes are errors (`stream:read: the stream is closed`).
//! - `stream.remoteAddress`, `stream.remotePort`: the peer.
//!
//! Cancelling a task blocked in `read` or `write` drops that call's future at once. A TLS
//! stream behaves as a plain one in every other way; a TLS peer that closes the connection
//! without close_notify ends the stream too (`read` returns nil), as most TLS clients treat it:
//! a protocol that must tell a cut-short stream from a finished one frames its data.
//! `net.tcp.listen` serves plain TCP only (no TLS server).

#![warn(missing_docs)]

mod config;
mod duplex;
mod headers;
mod listener;
mod request;
mod serve;
mod slots;
mod tcp;
mod tls;
mod url;
mod websocket;

use mlua::{Lua, Table};
use spindle::Scheduler;

/// Builds the `net` table for `scheduler`'s Lua: `serve`, `request`, `socket`, `tcp`, `urlEncode`
/// and `urlDecode`.
///
/// The functions reach the scheduler through [`Scheduler::from_lua`] when they are called, so the
/// table holds no handle on it; they fail with a Lua error once the scheduler has been dropped.
/// `net.serve` and `net.request` must be called while a tokio runtime is entered (inside
/// `block_on`, or with `Runtime::enter`), with its I/O and time drivers enabled.
pub fn module(scheduler: &Scheduler) -> mlua::Result<Table> {
    let lua = scheduler.lua();
    let net = lua.create_table()?;
    net.set("request", request::function(scheduler)?)?;
    let websocket = websocket::library(scheduler)?;
    net.set("serve", serve::function(lua, websocket.serving)?)?;
    net.set("socket", websocket.socket)?;
    net.set("tcp", tcp::library(scheduler)?)?;
    net.set("urlEncode", lua.create_function(url::encode)?)?;
    net.set("urlDecode", lua.create_function(url::decode)?)?;
    Ok(net)
}

/// An error raised at the script line that called the library: `file:line: message`.
fn error_at_caller(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    let place = lua.inspect_stack(1, |frame| {
        let source = frame.source();
        let line = frame.current_line();
        source.short_src.map(|file| (file.into_owned(), line))
    });
    match place.flatten() {
        Some((file, Some(line))) => mlua::Error::runtime(format!("{file}:{line}: {message}")),
        _ => mlua::Error::runtime(message.to_string()),
    }
}

/// A value's type as Luau names it (mlua says "integer" for what Luau calls a number).
fn type_name(value: &mlua::Value) -> &'static str {
    match value {
        mlua::Value::Integer(_) => "number",
        other => other.type_name(),
    }
}
