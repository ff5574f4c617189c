//! The test host: a scheduler with `net` on a current-thread tokio runtime, a script that starts
//! a server and leaves its handle in the global `server`, and a client on another thread that
//! talks to it over loopback with plain sockets. Every wait is bounded: the client's reads time
//! out, and the host gives up on a run that takes too long, so no test can hang. TLS servers use
//! the fixture certificate ([`LOCALHOST_PEM`], [`tls_acceptor`]).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, Table};
use spindle::Scheduler;

/// How long a run or a read may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(10);

/// The fixture certificate, as PEM: self-signed, for `localhost` and `127.0.0.1`, valid until
/// 2126 (tests/it/fixtures, made with openssl). No webpki root vouches for it.
pub const LOCALHOST_PEM: &str = include_str!("fixtures/localhost.crt");

/// `script` with `PEM_TEXT` standing for the fixture certificate, as a one-line Luau string
/// (so that the script's line numbers stay as written).
pub fn with_pem(script: &str) -> String {
    let pem = LOCALHOST_PEM.replace('\n', "\\n");
    script.replace("PEM_TEXT", &format!("\"{pem}\""))
}

/// A TLS acceptor presenting the fixture certificate.
pub fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::ServerConfig;

    let certificate = CertificateDer::from_pem_slice(LOCALHOST_PEM.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/localhost.key")).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A loopback listener bound now (so that a script may connect before its server task runs),
/// to be turned into a tokio listener on the test's runtime; and its port.
pub fn loopback_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Serves every connection to `listener` that completes a TLS handshake (with the fixture
/// certificate) with `serve`, each as a tokio task; a connection whose client refuses the
/// certificate is dropped. The tasks live until the test's runtime ends: call it on that runtime.
pub fn spawn_tls_server<F, Fut>(listener: std::net::TcpListener, serve: F)
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tls_acceptor();
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, serve) = (acceptor.clone(), std::sync::Arc::clone(&serve));
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve(tls).await;
                }
            });
        }
    });
}

/// What a served run left behind.
pub struct Served<T> {
    /// What the client returned.
    pub client: T,
    /// The uncaught task errors, each message with its traceback.
    pub errors: Vec<String>,
    /// The Lua state, to read globals the script set.
    pub lua: Lua,
}

/// Runs `script`, which must set the global `server` to `net.serve`'s handle, and `client` on
/// another thread with the server's port. Once the client returns, the host stops the server
/// (if the script has not) and drives the run to its end.
pub fn serve<T: Send + 'static>(
    script: &str,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> Served<T> {
    serve_with(script, |_| {}, client)
}

/// [`serve`], with `prepare` called on the Lua state once the server is made and before the
/// client starts (to set a memory limit, for one).
pub fn serve_with<T: Send + 'static>(
    script: &str,
    prepare: impl FnOnce(&Lua),
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> Served<T> {
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = errors.clone();
    let (runtime, lua, scheduler) =
        host_with(move |_, error| seen.borrow_mut().push(error.to_string()));
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    let client = runtime.block_on(async {
        let main = lua
            .load(script)
            .set_name("@server.luau")
            .into_function()
            .unwrap();
        scheduler.spawn(main, ()).unwrap();
        let server: Table = lua.globals().get("server").unwrap_or_else(|e| {
            panic!(
                "the script set no server: {e}; errors: {:?}",
                errors.borrow()
            )
        });
        let port: u16 = server.get("port").unwrap();
        prepare(&lua);
        let client = std::thread::spawn(move || client(port));
        let finished = async {
            while !client.is_finished() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client.join()
        };
        let outcome = tokio::time::timeout(BOUND, scheduler.run_until(sleeper, finished))
            .await
            .expect("the client did not finish in time")
            .unwrap();
        let stop: mlua::Function = server.get("stop").unwrap();
        stop.call::<()>(()).unwrap();
        tokio::time::timeout(BOUND, scheduler.run(sleeper))
            .await
            .expect("the run did not end after stop()")
            .unwrap();
        match outcome {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let errors = errors.borrow().clone();
    Served {
        client,
        errors,
        lua,
    }
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection with bounded reads.
pub struct Client {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(BOUND)).unwrap();
        stream.set_write_timeout(Some(BOUND)).unwrap();
        Client {
            stream,
            buffered: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response (a body of `content-length` bytes, or up to the end of the stream).
    /// `None` when the server closed the connection before a response began.
    pub fn response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at;
            }
            if !self.fill() {
                assert!(
                    self.buffered.is_empty(),
                    "a partial response: {:?}",
                    self.buffered
                );
                return None;
            }
        };
        let head = String::from_utf8(self.buffered[..head_end].to_vec()).unwrap();
        self.buffered.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        match length {
            Some(length) => {
                while self.buffered.len() < length {
                    assert!(self.fill(), "the body ended early");
                }
            }
            None => while self.fill() {},
        }
        let length = length.unwrap_or(self.buffered.len());
        let body = self.buffered.drain(..length).collect();
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads the head of a response that has no body to read (a `101 Switching Protocols`) and
    /// returns its status.
    pub fn head_status(&mut self) -> u16 {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at;
            }
            assert!(self.fill(), "the connection ended before a response");
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end + 4);
        head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// Whether the server closed the connection (a read returns the end of the stream).
    pub fn is_closed_by_server(&mut self) -> bool {
        !self.fill() && self.buffered.is_empty()
    }

    /// Reads more; false at the end of the stream. Panics on a timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection, which the request asks to close.
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    extra_headers: &str,
    body: &[u8],
) -> Response {
    let mut client = Client::connect(port);
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    client.send(body);
    client.response().expect("no response")
}

/// `GET target` on a fresh connection.
pub fn get(port: u16, target: &str) -> Response {
    request(port, "GET", target, "", b"")
}

/// A current-thread tokio runtime, and a Lua with a scheduler whose errors go to `on_error`,
/// the task library and `net` as a global.
pub fn host_with(
    on_error: impl Fn(&Scheduler, &spindle::TaskError) + 'static,
) -> (tokio::runtime::Runtime, Lua, Scheduler) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lua = Lua::new();
    let scheduler = Scheduler::builder().on_error(on_error).build(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    lua.globals()
        .set("net", spindle_net::module(&scheduler).unwrap())
        .unwrap();
    (runtime, lua, scheduler)
}

/// What a script's run left behind.
pub struct Ran {
    /// The uncaught task errors, each message with its traceback.
    pub errors: Vec<String>,
    /// The Lua state, to read globals the script set.
    pub lua: Lua,
}

impl Ran {
    /// The global `name`, which the script set.
    pub fn global<T: mlua::FromLua>(&self, name: &str) -> T {
        self.lua
            .globals()
            .get(name)
            .unwrap_or_else(|e| panic!("global {name}: {e}; errors: {:?}", self.errors))
    }

    /// Asserts that the global `name` is a string that contains `expected`.
    #[track_caller]
    pub fn assert_text(&self, name: &str, expected: impl AsRef<str>) {
        let text: String = self.global(name);
        let expected = expected.as_ref();
        assert!(
            text.contains(expected),
            "{name}: {text:?} lacks {expected:?}"
        );
    }
}

/// Runs `script` (as `@main.luau`) to the end of its run, beside `beside` (a future on the same
/// tokio runtime, such as a raw peer), with the port the script's `ready(port)` call gives it.
/// The run must end within [`BOUND`].
pub fn run_with<F, Fut>(script: &str, beside: F) -> Ran
where
    F: FnOnce(u16) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = errors.clone();
    let (runtime, lua, scheduler) =
        host_with(move |_, error| seen.borrow_mut().push(error.to_string()));
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    let (port_sender, port) = tokio::sync::oneshot::channel::<u16>();
    let port_sender = Rc::new(RefCell::new(Some(port_sender)));
    let sender = port_sender.clone();
    let ready = lua
        .create_function(move |_, port: u16| {
            if let Some(sender) = sender.borrow_mut().take() {
                let _ = sender.send(port);
            }
            Ok(())
        })
        .unwrap();
    lua.globals().set("ready", ready).unwrap();
    runtime.block_on(async {
        let main = lua
            .load(script)
            .set_name("@main.luau")
            .into_function()
            .unwrap();
        scheduler.spawn(main, ()).unwrap();
        let peer = async {
            if let Ok(port) = port.await {
                beside(port).await;
            }
        };
        let script = async {
            let ended = scheduler.run(sleeper).await;
            // A script that never called `ready` has no peer.
            port_sender.borrow_mut().take();
            ended
        };
        let both = async { tokio::join!(script, peer).0 };
        tokio::time::timeout(BOUND, both)
            .await
            .unwrap_or_else(|_| {
                panic!("the run did not end in time; errors: {:?}", errors.borrow())
            })
            .unwrap();
    });
    let errors = errors.borrow().clone();
    Ran { errors, lua }
}

/// Runs `script` to the end of its run, within [`BOUND`].
pub fn run(script: &str) -> Ran {
    run_with(script, |_| async {})
}
