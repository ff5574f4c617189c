//! What a server refuses, and how it stays up: oversize and malformed requests, slow clients
//! and slow handlers, idle connections, and the connection cap.

use std::time::{Duration, Instant};

use crate::support::{get, request, serve, serve_with, Client};

const ECHO_LENGTH: &str = r#"
    server = net.serve({ port = 0, maxBodySize = 1000, maxHeaderSize = 8192 }, function(request)
        return tostring(#request.body)
    end)
"#;

#[test]
fn a_body_over_the_limit_gets_413_and_the_server_goes_on() {
    let served = serve(ECHO_LENGTH, |port| {
        let declared = request(port, "POST", "/", "", &[b'x'; 1001]);
        // Chunked, with no length declared: refused once the limit is passed.
        let mut client = Client::connect(port);
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..3 {
            client.send(b"190\r\n");
            client.send(&[b'y'; 400]);
            client.send(b"\r\n");
        }
        client.send(b"0\r\n\r\n");
        let chunked = client.response().unwrap();
        let within = request(port, "POST", "/", "", &[b'x'; 1000]);
        (declared, chunked, within)
    });
    let (declared, chunked, within) = served.client;
    assert_eq!(declared.status, 413);
    assert_eq!(chunked.status, 413);
    assert_eq!((within.status, within.text().as_str()), (200, "1000"));
    assert!(served.errors.is_empty());
}

#[test]
fn headers_over_the_limit_get_431() {
    let served = serve(ECHO_LENGTH, |port| {
        let big = format!("X-Big: {}\r\n", "z".repeat(9000));
        (request(port, "GET", "/", &big, b""), get(port, "/"))
    });
    assert_eq!(served.client.0.status, 431);
    assert_eq!(served.client.1.status, 200);
}

#[test]
fn a_malformed_request_gets_400_and_the_server_goes_on() {
    let served = serve(ECHO_LENGTH, |port| {
        let mut client = Client::connect(port);
        client.send(b"THIS IS NOT HTTP\r\n\r\n");
        let bad = client.response().unwrap();
        let mut client = Client::connect(port);
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n");
        let bad_header = client.response().unwrap();
        (bad, bad_header, get(port, "/"))
    });
    assert_eq!(served.client.0.status, 400);
    assert_eq!(served.client.1.status, 400);
    assert_eq!(served.client.2.status, 200);
}

#[test]
fn a_handler_slower_than_the_request_timeout_is_cancelled_and_the_client_gets_503() {
    let served = serve(
        r#"
        finished = false
        server = net.serve({ port = 0, requestTimeout = 0.2 }, function(request)
            if request.path == "/slow" then
                task.wait(3)
                finished = true
            end
            return "quick"
        end)
        "#,
        |port| {
            let started = Instant::now();
            let slow = get(port, "/slow");
            (slow, started.elapsed(), get(port, "/"))
        },
    );
    let (slow, elapsed, quick) = served.client;
    assert_eq!(slow.status, 503);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(quick.status, 200);
    assert!(!served.lua.globals().get::<bool>("finished").unwrap());
}

#[test]
fn a_client_slower_than_the_request_timeout_gets_408_for_its_body_and_a_close_for_its_headers() {
    let served = serve(
        r#"server = net.serve({ port = 0, requestTimeout = 0.2 }, function() return "ok" end)"#,
        |port| {
            let mut body_late = Client::connect(port);
            body_late.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
            let body_response = body_late.response().unwrap();
            let mut headers_late = Client::connect(port);
            headers_late.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
            let started = Instant::now();
            let closed = headers_late.response().is_none_or(|r| r.status == 408);
            (body_response, closed, started.elapsed())
        },
    );
    let (body_response, closed, elapsed) = served.client;
    assert_eq!(body_response.status, 408);
    assert!(closed);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let served = serve(
        r#"server = net.serve({ port = 0, idleTimeout = 0.2 }, function() return "ok" end)"#,
        |port| {
            let mut client = Client::connect(port);
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let first = client.response().unwrap();
            // Within the timeout the connection serves again...
            std::thread::sleep(Duration::from_millis(50));
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let second = client.response().unwrap();
            // ...and past it the server closes it.
            let started = Instant::now();
            let closed = client.is_closed_by_server();
            (first.status, second.status, closed, started.elapsed())
        },
    );
    let (first, second, closed, elapsed) = served.client;
    assert_eq!((first, second), (200, 200));
    assert!(closed);
    assert!(
        elapsed >= Duration::from_millis(100),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "closed after {elapsed:?}");
}

#[test]
fn connections_past_max_connections_wait_until_one_closes() {
    let served = serve(
        r#"server = net.serve({ port = 0, maxConnections = 1 }, function() return "ok" end)"#,
        |port| {
            let mut first = Client::connect(port);
            first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(first.response().unwrap().status, 200);
            // The second connects (the listen queue takes it) but is not served...
            let mut second = Client::connect(port);
            second.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let response = second.response();
                tx.send(()).unwrap();
                response
            });
            let served_early = rx.recv_timeout(Duration::from_millis(300)).is_ok();
            // ...until the first closes.
            drop(first);
            let response = reader.join().unwrap().unwrap();
            (served_early, response.status)
        },
    );
    assert_eq!(served.client, (false, 200));
}

#[test]
fn open_websockets_count_toward_max_connections() {
    let served = serve(
        r#"server = net.serve({
            port = 0,
            maxConnections = 1,
            handleRequest = function() return "ok" end,
            handleWebSocket = function(socket)
                while socket:next() do end
            end,
        })"#,
        |port| {
            let mut socket = Client::connect(port);
            socket.send(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            );
            let upgraded = socket.head_status();
            // The socket holds the only slot: a plain request waits in the listen queue...
            let mut second = Client::connect(port);
            second.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let response = second.response();
                tx.send(()).unwrap();
                response
            });
            let served_early = rx.recv_timeout(Duration::from_millis(300)).is_ok();
            // ...until the socket's connection closes.
            drop(socket);
            let response = reader.join().unwrap().unwrap();
            (upgraded, served_early, response.status)
        },
    );
    assert_eq!(served.client, (101, false, 200));
}

#[test]
fn a_client_that_disconnects_cancels_its_handler() {
    let served = serve(
        r#"
        finished = false
        started = false
        server = net.serve(0, function()
            started = true
            task.wait(0.5)
            finished = true
            return "late"
        end)
        "#,
        |port| {
            let mut client = Client::connect(port);
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            std::thread::sleep(Duration::from_millis(100));
            drop(client);
            std::thread::sleep(Duration::from_millis(700));
        },
    );
    let globals = served.lua.globals();
    assert!(globals.get::<bool>("started").unwrap());
    assert!(!globals.get::<bool>("finished").unwrap());
}

#[test]
fn a_request_whose_task_cannot_start_gets_500_and_is_reported() {
    // The body becomes a Lua string before the handler's task starts: past what the memory
    // limit leaves, the task cannot start, and no task is there to report it.
    let served = serve_with(
        r#"
        calls = 0
        server = net.serve({ port = 0, maxBodySize = 8 * 1024 * 1024 }, function(request)
            calls += 1
            return "handled"
        end)
        "#,
        |lua| {
            lua.set_memory_limit(lua.used_memory() + 1024 * 1024)
                .unwrap();
        },
        |port| {
            let big = request(
                port,
                "POST",
                "/upload?token=secret",
                "",
                &vec![b'x'; 4 * 1024 * 1024],
            );
            (big, get(port, "/after"))
        },
    );
    let (big, after) = served.client;
    assert_eq!(big.status, 500);
    assert_eq!((after.status, after.text().as_str()), (200, "handled"));
    assert_eq!(served.lua.globals().get::<u32>("calls").unwrap(), 1);
    // No traceback: no task was running.
    assert_eq!(
        served.errors,
        ["net.serve: cannot start the handler for POST /upload: memory error: not enough memory"]
    );
}
