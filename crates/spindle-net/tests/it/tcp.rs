//! `net.tcp`: a server (`listen`) and a client (`connect`) on loopback, streams that read,
//! write and close, and tasks blocked in a read that are cancelled.

use std::io::Read;

use crate::support::{run, run_with, BOUND};

#[test]
fn echo_through_listen_and_connect_until_the_client_closes() {
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream)
            while true do
                local data = stream:read()
                if data == nil then break end
                stream:write(string.upper(data))
            end
            stream:close()
            server.stop()
        end)
        local client = net.tcp.connect("127.0.0.1", server.port)
        client:write("hello")
        first = client:read()
        client:write(buffer.fromstring("again"))
        second = client:read()
        client:close()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("first"), "HELLO");
    assert_eq!(ran.global::<String>("second"), "AGAIN");
}

#[test]
fn read_returns_nil_at_the_end_of_the_stream_and_after() {
    let ran = run(r#"
        local server
        server = net.tcp.listen({ port = 0, address = "127.0.0.1" }, function(stream)
            stream:write("bye")
            stream:close()
            server.stop()
        end)
        local client = net.tcp.connect("localhost", server.port)
        local got = {}
        while true do
            local data = client:read(2)
            if data == nil then break end
            table.insert(got, data)
        end
        text = table.concat(got)
        again = client:read()
        address = client.remoteAddress
        port = client.remotePort == server.port
        kind = typeof(client)
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("text"), "bye");
    assert_eq!(ran.global::<Option<String>>("again"), None);
    assert_eq!(ran.global::<String>("address"), "127.0.0.1");
    assert!(ran.global::<bool>("port"));
    assert_eq!(ran.global::<String>("kind"), "TcpStream");
}

#[test]
fn a_stream_used_after_close_is_a_clear_error() {
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream) stream:read() server.stop() end)
        local client = net.tcp.connect("127.0.0.1", server.port)
        client:close()
        client:close() -- a second close does nothing
        _, readError = pcall(function() return client:read() end)
        _, writeError = pcall(function() client:write("x") end)
        _, dotError = pcall(client.read)
        _, argumentError = pcall(client.read, client, -1)
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let read: String = ran.global("readError");
    assert!(
        read.starts_with("main.luau:7: stream:read: the stream is closed"),
        "{read}"
    );
    ran.assert_text("writeError", "stream:write: the stream is closed");
    ran.assert_text("dotError", "stream:read: call it as a method");
    ran.assert_text(
        "argumentError",
        "stream:read: invalid argument #1 (a positive integer expected, got -1)",
    );
}

#[test]
fn bad_arguments_name_the_function_and_the_argument() {
    let ran = run(r#"
        local function message(f, ...)
            local _, error = pcall(f, ...)
            return tostring(error)
        end
        noHandler = message(net.tcp.listen, 0)
        badPort = message(net.tcp.listen, "x", function() end)
        badOption = message(net.tcp.listen, { port = 0, colour = 1 }, function() end)
        _, badHost = pcall(net.tcp.connect, 5, 80)
        _, badTimeout = pcall(net.tcp.connect, "127.0.0.1", 80, { timeout = "soon" })
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let cases = [
        (
            "noHandler",
            "net.tcp.listen: invalid argument #2 (function expected, got nil)",
        ),
        (
            "badPort",
            "net.tcp.listen: invalid argument #1 (port must be an integer",
        ),
        ("badOption", "net.tcp.listen: unknown option 'colour'"),
        (
            "badHost",
            "net.tcp.connect: invalid argument #1 (string expected, got number)",
        ),
        (
            "badTimeout",
            "net.tcp.connect: option 'timeout' must be a positive number",
        ),
    ];
    for (name, expected) in cases {
        ran.assert_text(name, expected);
    }
}

#[test]
fn a_script_that_replaces_error_and_type_does_not_unchain_the_argument_checks() {
    // The library binds its globals when it is made: replacing them afterwards leaves its
    // checks whole (a replaced `error` that returns would let the bad call through to Rust).
    let ran = run(r#"
        error = function() end
        type = function() return "string" end
        typeof = function() return "string" end
        ok, badHost = pcall(net.tcp.connect, 5, 80)
        _, badPort = pcall(net.tcp.connect, "127.0.0.1", 70000)
    "#);
    ran.assert_text(
        "badHost",
        "net.tcp.connect: invalid argument #1 (string expected, got number)",
    );
    ran.assert_text("badPort", "net.tcp.connect: invalid argument #2");
}

#[test]
fn a_read_where_no_yield_is_possible_is_an_error_at_the_script_s_line() {
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream)
            task.wait(0.1)
            stream:close()
        end)
        local client = net.tcp.connect("127.0.0.1", server.port)
        local trap = setmetatable({}, { __index = function() return client:read() end })
        ok, message = pcall(function() return trap.x end)
        -- The stream is whole: a read from the task itself waits and gets the end.
        after = client:read()
        client:close()
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text(
        "message",
        "main.luau:8: stream:read: attempt to yield across metamethod/C-call boundary",
    );
    assert_eq!(ran.global::<Option<String>>("after"), None);
}

#[test]
fn connecting_to_a_closed_port_is_an_error_naming_the_address() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let ran = run(&format!(
        r#"ok, message = pcall(net.tcp.connect, "127.0.0.1", {port})"#
    ));
    ran.assert_text(
        "message",
        format!("net.tcp.connect: cannot connect to 127.0.0.1:{port}"),
    );
}

#[test]
fn a_read_timeout_fails_the_read_with_a_clear_error() {
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream)
            task.wait(0.5)
            stream:close()
            server.stop()
        end)
        local client = net.tcp.connect("127.0.0.1", server.port, { readTimeout = 0.05 })
        local started = os.clock()
        ok, message = pcall(client.read, client)
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text(
        "message",
        "stream:read: timed out after 0.05 s (readTimeout)",
    );
}

#[test]
fn cancelling_a_task_blocked_in_read_drops_the_read_and_frees_the_stream() {
    // If the cancelled read lived on, it would hold the reading half (and take the data).
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream)
            task.wait(0.1)
            stream:write("for the second reader")
            stream:read()
            server.stop()
        end)
        local client = net.tcp.connect("127.0.0.1", server.port)
        local first = task.spawn(function()
            firstGot = client:read()
        end)
        task.wait(0.02)
        task.cancel(first)
        secondGot = client:read()
        client:close()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<Option<String>>("firstGot"), None);
    assert_eq!(ran.global::<String>("secondGot"), "for the second reader");
}

#[test]
fn cancelling_the_only_holder_of_a_stream_closes_the_connection_for_the_peer() {
    let ran = run(r#"
        local server
        server = net.tcp.listen(0, function(stream)
            handler = coroutine.running()
            stream:read() -- blocked until cancelled
            reached = true
        end)
        local client = net.tcp.connect("127.0.0.1", server.port, { readTimeout = 5 })
        while handler == nil do task.wait() end
        task.cancel(handler)
        handler = nil
        collectgarbage("collect") -- the stream's last holder was the cancelled task
        peerSaw = client:read() -- the end of the stream, not the read timeout
        server.stop()
    "#);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<Option<String>>("peerSaw"), None);
    assert_eq!(ran.global::<Option<bool>>("reached"), None);
}

#[test]
fn an_open_listener_keeps_the_run_going_until_stop_which_closes_it() {
    let started = std::time::Instant::now();
    let ran = run_with(
        r#"
        server = net.tcp.listen(0, function(stream)
            stream:write("hi")
            stream:close()
        end)
        task.delay(0.3, server.stop)
        ready(server.port)
        "#,
        |port| async move {
            let got = tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(BOUND)).unwrap();
                let mut text = String::new();
                stream.read_to_string(&mut text).unwrap();
                text
            })
            .await
            .unwrap();
            assert_eq!(got, "hi");
        },
    );
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "the run ended before stop(): {:?}",
        started.elapsed()
    );
    let port: u16 = ran.lua.load("return server.port").eval().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_handler_error_is_reported_and_the_listener_goes_on() {
    let ran = run(r#"
        local server
        local connections = 0
        server = net.tcp.listen(0, function(stream)
            connections += 1
            if connections == 1 then
                error("the first handler fails")
            end
            stream:write("second served")
            stream:close()
            server.stop()
        end)
        local first = net.tcp.connect("127.0.0.1", server.port)
        task.wait(0.05)
        local second = net.tcp.connect("127.0.0.1", server.port)
        secondGot = second:read()
        first:close()
    "#);
    assert_eq!(ran.errors.len(), 1, "{:?}", ran.errors);
    assert!(
        ran.errors[0].contains("the first handler fails"),
        "{:?}",
        ran.errors
    );
    assert_eq!(ran.global::<String>("secondGot"), "second served");
}
