//! `require("@spindle/net")` under `spindle run`: a script that serves requests over loopback
//! and stops itself, and a handler error reported as any task error.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::{Duration, Instant};

use support::{output_within, script, start_spindle, text};

/// A port that was free a moment ago, for the script to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects once the script listens (it starts in a child process), within ten seconds.
fn connect(port: u16) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                return stream;
            }
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One request on its own connection; the whole response as text.
fn get(port: u16, path: &str) -> String {
    let mut stream = connect(port);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Runs `source` with `port` as its argument while `client` talks to it; the run must end
/// within ten seconds of the client's last request.
fn serve(name: &str, source: &str, port: u16, client: impl FnOnce()) -> Output {
    serve_with(&[], name, source, port, client)
}

/// [`serve`] with options for `spindle run`.
fn serve_with(
    options: &[&str],
    name: &str,
    source: &str,
    port: u16,
    client: impl FnOnce(),
) -> Output {
    let path = script(name, source);
    let port = port.to_string();
    let args: Vec<&str> = ["run"]
        .iter()
        .copied()
        .chain(options.iter().copied())
        .chain([path.file_name().unwrap().to_str().unwrap(), &port])
        .collect();
    let child = start_spindle(&args, path.parent().unwrap());
    client();
    output_within(child, Duration::from_secs(10))
        .expect("the script did not end after its server stopped")
}

#[test]
fn a_script_serves_requests_then_stops_its_server_and_the_run_ends() {
    let port = free_port();
    let mut responses = Vec::new();
    let output = serve(
        "serve_five.luau",
        r#"
        local net = require("@spindle/net")
        local served = 0
        local server
        server = net.serve(tonumber((...)), function(request)
            served += 1
            task.wait(0.01)
            if served == 5 then
                server.stop()
            end
            return { status = 200, body = `request {served} for {request.path}` }
        end)
        "#,
        port,
        || responses = (1..=5).map(|i| get(port, &format!("/{i}"))).collect(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for (i, response) in (1..).zip(&responses) {
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.ends_with(&format!("request {i} for /{i}")),
            "{response}"
        );
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_handler_error_answers_500_and_is_reported_with_exit_status_1() {
    let port = free_port();
    let mut responses = Vec::new();
    let output = serve(
        "serve_error.luau",
        r#"
        local net = require("@spindle/net")
        local server
        server = net.serve(tonumber((...)), function(request)
            if request.path == "/boom" then
                error("boom")
            end
            server.stop()
            return "bye"
        end)
        "#,
        port,
        || responses = vec![get(port, "/boom"), get(port, "/bye")],
    );
    assert!(responses[0].starts_with("HTTP/1.1 500"), "{}", responses[0]);
    assert!(responses[1].ends_with("bye"), "{}", responses[1]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("serve_error.luau:6: boom"), "{stderr}");
    assert!(stderr.contains("stack traceback"), "{stderr}");
}

#[test]
fn handlers_stopped_by_the_timeout_or_the_memory_limit_answer_500_and_the_server_goes_on() {
    let port = free_port();
    let mut responses = Vec::new();
    let output = serve_with(
        &["--virtual-time", "--timeout", "1", "--memory-limit", "8M"],
        "serve_limits.luau",
        r#"
        local net = require("@spindle/net")
        local server
        server = net.serve(tonumber((...)), function(request)
            if request.path == "/loop" then
                while true do end
            elseif request.path == "/hog" then
                local hog = {}
                while true do hog[#hog + 1] = { #hog } end
            end
            task.wait(60) -- virtual time: no wait at all
            server.stop()
            return "still serving"
        end)
        "#,
        port,
        || responses = vec![get(port, "/loop"), get(port, "/hog"), get(port, "/")],
    );
    assert!(responses[0].starts_with("HTTP/1.1 500"), "{}", responses[0]);
    assert!(responses[1].starts_with("HTTP/1.1 500"), "{}", responses[1]);
    assert!(responses[2].ends_with("still serving"), "{}", responses[2]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("Script timeout: exhausted allowed execution time"),
        "{stderr}"
    );
    assert!(stderr.contains("not enough memory"), "{stderr}");
}

#[test]
fn the_chat_example_demo_broadcasts_to_both_clients_and_ends() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = support::spindle_within(
        Duration::from_secs(60),
        &["run", "examples/chat.luau", "--demo"],
        &workspace,
    )
    .expect("the demo ended within a minute");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "alice got:\t* guest1 joined
alice got:\t* guest2 joined
bob got:  \t* guest2 joined
alice got:\tguest2: hello, alice
bob got:  \tguest2: hello, alice
alice got:\t* guest2 left (close code 1000)
"
    );
}

#[test]
fn a_script_echoes_over_tcp_with_net_tcp() {
    let port = free_port();
    let out = serve(
        "tcp_echo.luau",
        r#"
        local net = require("@spindle/net")
        local process = require("@spindle/process")
        local server
        server = net.tcp.listen(tonumber(process.args[1]), function(stream)
            local line = stream:read()
            stream:write("echo: " .. line)
            stream:close()
            server.stop()
        end)
        "#,
        port,
        || {
            let mut stream = connect(port);
            stream.write_all(b"hi").unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, "echo: hi");
        },
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}
