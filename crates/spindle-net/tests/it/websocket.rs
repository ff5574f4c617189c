//! WebSockets: `net.serve`'s `handleWebSocket` and `net.socket`, against each other and
//! against a raw tokio-tungstenite peer, on loopback.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{loopback_listener, run, run_with, tls_acceptor};

#[test]
fn echo_from_a_served_socket_to_a_net_socket_client_with_close_codes_both_ways() {
    let ran = run(r#"
        local server
        server = net.serve({
            port = 0,
            handleRequest = function() return "plain" end,
            handleWebSocket = function(socket)
                serverKind = typeof(socket)
                while true do
                    local message, binary = socket:next()
                    if message == nil then break end
                    socket:send("echo " .. message, binary)
                end
                serverSawCode = socket.closeCode
            end,
        })
        local socket = net.socket(`ws://127.0.0.1:{server.port}/chat`)
        socket:send("hello")
        text, textBinary = socket:next()
        socket:send(buffer.fromstring("\0\1\2"))
        bytes, bytesBinary = socket:next()
        openCode = socket.closeCode
        socket:close(4001)
        clientCode = socket.closeCode
        afterClose = socket:next()
        _, sendError = pcall(function() socket:send("late") end)
        task.wait(0.05)
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("serverKind"), "WebSocket");
    assert_eq!(ran.global::<String>("text"), "echo hello");
    assert!(!ran.global::<bool>("textBinary"));
    assert_eq!(
        ran.global::<mlua::LuaString>("bytes").as_bytes().as_ref(),
        b"echo \0\x01\x02"
    );
    assert!(ran.global::<bool>("bytesBinary"));
    assert_eq!(ran.global::<Option<u16>>("openCode"), None);
    assert_eq!(ran.global::<u16>("clientCode"), 4001);
    assert_eq!(ran.global::<u16>("serverSawCode"), 4001);
    assert_eq!(ran.global::<Option<String>>("afterClose"), None);
    ran.assert_text(
        "sendError",
        "main.luau:25: socket:send: the socket is closed",
    );
}

#[test]
fn a_server_close_code_reaches_the_client_and_next_returns_nil() {
    let ran = run(r#"
        local server
        server = net.serve({
            port = 0,
            handleWebSocket = function(socket)
                socket:send("bye")
                socket:close(4002)
            end,
        })
        local socket = net.socket(`ws://localhost:{server.port}`)
        first = socket:next()
        second = socket:next()
        clientSawCode = socket.closeCode
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("first"), "bye");
    assert_eq!(ran.global::<Option<String>>("second"), None);
    assert_eq!(ran.global::<u16>("clientSawCode"), 4002);
}

#[test]
fn a_raw_tungstenite_client_talks_to_a_served_socket() {
    let ran = run_with(
        r#"
        server = net.serve({
            port = 0,
            handleWebSocket = function(socket)
                local message, binary = socket:next()
                socket:send(string.reverse(message), binary)
                message, binary = socket:next()
                socket:send(message .. "!", true)
                gotNil = socket:next() == nil
                code = socket.closeCode
                server.stop()
            end,
        })
        ready(server.port)
        "#,
        |port| async move {
            let url = format!("ws://127.0.0.1:{port}/");
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            socket.send(Message::text("abc")).await.unwrap();
            assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("cba"));
            socket.send(Message::binary(vec![0, 255])).await.unwrap();
            assert_eq!(
                socket.next().await.unwrap().unwrap(),
                Message::binary(vec![0, 255, b'!'])
            );
            socket
                .close(Some(CloseFrame {
                    code: CloseCode::Library(4003),
                    reason: "done".into(),
                }))
                .await
                .unwrap();
            // The server answers the close; then the stream ends.
            while let Some(Ok(_)) = socket.next().await {}
        },
    );
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(ran.global::<bool>("gotNil"));
    assert_eq!(ran.global::<u16>("code"), 4003);
}

#[test]
fn a_net_socket_client_talks_to_a_raw_tungstenite_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let ran = run_with(
        &format!(
            r#"
            ready(0)
            local socket = net.socket("ws://127.0.0.1:{port}/")
            socket:send("ping")
            reply, replyBinary = socket:next()
            ended = socket:next()
            code = socket.closeCode
            "#
        ),
        move |_| async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let message = socket.next().await.unwrap().unwrap();
            assert_eq!(message, Message::text("ping"));
            socket
                .send(Message::binary(b"pong".to_vec()))
                .await
                .unwrap();
            socket
                .close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "".into(),
                }))
                .await
                .unwrap();
            while let Some(Ok(_)) = socket.next().await {}
        },
    );
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("reply"), "pong");
    assert!(ran.global::<bool>("replyBinary"));
    assert_eq!(ran.global::<Option<String>>("ended"), None);
    assert_eq!(ran.global::<u16>("code"), 1001);
}

#[test]
fn an_oversize_message_closes_the_socket_with_1009() {
    let ran = run(r#"
        local server
        server = net.serve({
            port = 0,
            maxMessageSize = 1024,
            handleWebSocket = function(socket)
                small = socket:next()
                big = socket:next()
                serverCode = socket.closeCode
            end,
        })
        local socket = net.socket(`ws://127.0.0.1:{server.port}`)
        socket:send(string.rep("a", 1000))
        socket:send(string.rep("b", 2000))
        clientGot = socket:next()
        clientCode = socket.closeCode
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("small").len(), 1000);
    assert_eq!(ran.global::<Option<String>>("big"), None);
    assert_eq!(ran.global::<u16>("serverCode"), 1009);
    assert_eq!(ran.global::<Option<String>>("clientGot"), None);
    assert_eq!(ran.global::<u16>("clientCode"), 1009);
}

#[test]
fn cancelling_a_task_blocked_in_next_drops_the_wait_and_frees_the_socket() {
    let ran = run(r#"
        local server
        server = net.serve({
            port = 0,
            handleWebSocket = function(socket)
                socket:next() -- "go"
                socket:send("for the second reader")
                socket:next()
            end,
        })
        local socket = net.socket(`ws://127.0.0.1:{server.port}`)
        local first = task.spawn(function()
            firstGot = socket:next()
        end)
        task.wait(0.02)
        task.cancel(first)
        socket:send("go")
        secondGot = socket:next()
        socket:close()
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<Option<String>>("firstGot"), None);
    assert_eq!(ran.global::<String>("secondGot"), "for the second reader");
}

#[test]
fn stop_closes_the_served_sockets_with_1001_and_ends_the_run() {
    let ran = run(r#"
        local server
        server = net.serve({
            port = 0,
            handleWebSocket = function(socket)
                started = true
                serverGot = socket:next()
                serverCode = socket.closeCode
            end,
        })
        local socket = net.socket(`ws://127.0.0.1:{server.port}`)
        task.spawn(function()
            while not started do task.wait() end
            server.stop()
        end)
        clientGot = socket:next()
        clientCode = socket.closeCode
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<Option<String>>("serverGot"), None);
    assert_eq!(ran.global::<u16>("serverCode"), 1001);
    assert_eq!(ran.global::<Option<String>>("clientGot"), None);
    assert_eq!(ran.global::<u16>("clientCode"), 1001);
}

#[test]
fn plain_requests_to_a_websocket_only_server_get_426() {
    let ran = run_with(
        r#"
        server = net.serve({ port = 0, handleWebSocket = function(socket) end })
        ready(server.port)
        task.delay(0.5, server.stop)
        "#,
        |port| async move {
            let status = tokio::task::spawn_blocking(move || crate::support::get(port, "/").status)
                .await
                .unwrap();
            assert_eq!(status, 426);
        },
    );
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
}

#[test]
fn bad_socket_calls_name_the_function_and_the_argument() {
    let ran = run(r#"
        local server
        server = net.serve({ port = 0, handleWebSocket = function(socket) socket:next() end })
        local socket = net.socket(`ws://127.0.0.1:{server.port}`)
        _, badMessage = pcall(function() socket:send(5 :: any) end)
        _, badText = pcall(socket.send, socket, "\255", false)
        _, badCode = pcall(socket.close, socket, 1005)
        _, dotCall = pcall(socket.next)
        _, badUrl = pcall(net.socket, "http://127.0.0.1/")
        _, badOption = pcall(net.socket, "ws://127.0.0.1/", { size = 1 })
        _, badPort = pcall(net.socket, "ws://127.0.0.1:65536/")
        socket:close()
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let cases = [
        (
            "badMessage",
            "main.luau:5: socket:send: invalid argument #1 (string or buffer expected, got number)",
        ),
        ("badText", "socket:send: the message is not valid UTF-8"),
        ("badCode", "socket:close: invalid argument #1"),
        ("dotCall", "socket:next: call it as a method"),
        (
            "badUrl",
            "net.socket: invalid URL \"http://127.0.0.1/\": expected ws:// or wss://",
        ),
        ("badOption", "net.socket: unknown option 'size'"),
        (
            "badPort",
            "net.socket: invalid URL \"ws://127.0.0.1:65536/\": port 65536 is not from 0 to 65535",
        ),
    ];
    for (name, expected) in cases {
        ran.assert_text(name, expected);
    }
}

#[test]
fn wss_runs_tls_and_refuses_a_certificate_outside_the_webpki_roots() {
    // A real TLS server, whose certificate no webpki root vouches for.
    let acceptor = tls_acceptor();
    let (listener, port) = loopback_listener();
    let ran = run_with(
        &format!(
            r#"
            ready(0)
            ok, message = pcall(function() return net.socket("wss://localhost:{port}/") end)
            message = tostring(message)
            "#
        ),
        move |_| async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            // The client gives up on the certificate, so the server's side of the handshake fails.
            assert!(acceptor.accept(stream).await.is_err());
        },
    );
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text("message", format!(
            "main.luau:3: net.socket: the TLS handshake with wss://localhost:{port}/ failed: invalid peer certificate: UnknownIssuer"
        ));
}

#[test]
fn a_server_without_handle_web_socket_refuses_the_handshake_clearly() {
    let ran = run(r#"
        local server = net.serve(0, function() return "no sockets here" end)
        ok, message = pcall(function() return net.socket(`ws://127.0.0.1:{server.port}/`) end)
        message = tostring(message)
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text("message", "refused the WebSocket handshake: HTTP 200 OK");
}

#[test]
fn waiting_in_next_where_no_yield_is_possible_is_an_error_not_a_crash() {
    let ran = run(r#"
        local server
        server = net.serve({ port = 0, handleWebSocket = function(socket) socket:next() end })
        local socket = net.socket(`ws://127.0.0.1:{server.port}`)
        local trap = setmetatable({}, { __index = function() return socket:next() end })
        ok, message = pcall(function() return trap.x end)
        message = tostring(message)
        socket:close()
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text(
        "message",
        "main.luau:5: socket:next: attempt to yield across metamethod/C-call boundary",
    );
}
