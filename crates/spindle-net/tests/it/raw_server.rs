//! A hand-written HTTP/1.1 server on a thread of its own, for the client's odd cases that
//! `net.serve` would not make: redirect loops, slow or missing answers, huge bodies, odd reason
//! phrases. It counts the connections it accepts and the ones a client closed while it held
//! their request unanswered. Every read is bounded (support::BOUND), and the accept loop ends
//! when the server is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::BOUND;

/// A request as the raw server read it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub accept_encoding: Option<String>,
    pub body: Vec<u8>,
}

/// What the server does with a request.
pub enum Reply {
    /// Writes these bytes (a whole response, or a part of one) and reads the next request.
    Bytes(Vec<u8>),
    /// Answers nothing and waits for the client to close the connection.
    Hold,
}

/// A response with a body and `Content-Length`.
pub fn reply(status_line: &str, headers: &str, body: &[u8]) -> Reply {
    let mut bytes = format!(
        "HTTP/1.1 {status_line}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Reply::Bytes(bytes)
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    /// Connections a client closed while the server held its request unanswered.
    closed_while_held: AtomicUsize,
    requests: Mutex<Vec<RawRequest>>,
}

pub struct RawServer {
    pub port: u16,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    accept_loop: Option<JoinHandle<()>>,
}

type Respond = dyn Fn(&RawRequest) -> Reply + Send + Sync;

impl RawServer {
    pub fn start(respond: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Respond> = Arc::new(respond);
        let accept_loop = {
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            counts.accepted.fetch_add(1, Ordering::SeqCst);
                            let (counts, respond) = (Arc::clone(&counts), Arc::clone(&respond));
                            std::thread::spawn(move || serve(stream, &counts, &*respond));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        RawServer {
            port,
            counts,
            stop,
            accept_loop: Some(accept_loop),
        }
    }

    /// A function that tells how many requests the server has read, for a script to wait on.
    pub fn request_counter(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let counts = Arc::clone(&self.counts);
        move || counts.requests.lock().unwrap().len()
    }

    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.counts.requests.lock().unwrap().clone()
    }

    /// Waits (up to BOUND) until `count` held connections were closed by their client.
    pub fn wait_closed_while_held(&self, count: usize) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < BOUND {
            if self.counts.closed_while_held.load(Ordering::SeqCst) >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept_loop) = self.accept_loop.take() {
            let _ = accept_loop.join();
        }
    }
}

/// Serves one connection's requests until the client closes it.
fn serve(mut stream: TcpStream, counts: &Counts, respond: &Respond) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut buffered = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffered) {
        counts.requests.lock().unwrap().push(request.clone());
        match respond(&request) {
            Reply::Bytes(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Hold => {
                let mut rest = [0u8; 1024];
                // The end of the stream (or a reset) is the client closing.
                loop {
                    match stream.read(&mut rest) {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                        Err(_) => return,
                    }
                }
                counts.closed_while_held.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn read_request(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<RawRequest> {
    let head_end = loop {
        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        fill(stream, buffered)?;
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    buffered.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(&str, &str)> = lines.filter_map(|line| line.split_once(':')).collect();
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim().to_string())
    };
    let length = header("content-length").map_or(0, |value| value.parse::<usize>().unwrap());
    let accept_encoding = header("accept-encoding");
    while buffered.len() < length {
        fill(stream, buffered)?;
    }
    let body = buffered.drain(..length).collect();
    Some(RawRequest {
        method,
        target,
        accept_encoding,
        body,
    })
}

fn fill(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffered.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
