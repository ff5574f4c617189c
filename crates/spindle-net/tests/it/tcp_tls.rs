//! `net.tcp.connect` with `tls = true`: streams over TLS to servers on loopback that present the
//! fixture certificate. They read, write, close, time out and are cancelled as plain streams
//! are; the server must be vouched for by a webpki root or by `caCertificates`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{loopback_listener, run, run_with, spawn_tls_server, with_pem, BOUND};

/// What a server task saw, in order, shared with the test.
type Log = Arc<Mutex<Vec<String>>>;

/// Reads everything the client sends, answering each chunk with `echo ` and the chunk, and logs
/// how the stream ended: `"close_notify"` for a clean TLS end, else the error. Sends on `ended`
/// once the client is gone.
async fn echo_until_the_end(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    log: Log,
    ended: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk).await {
            Ok(0) => {
                log.lock().unwrap().push("close_notify".into());
                break;
            }
            Ok(n) => {
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&chunk[..n]).into());
                let echo = [&b"echo "[..], &chunk[..n]].concat();
                if tls.write_all(&echo).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                log.lock().unwrap().push(format!("error: {error}"));
                break;
            }
        }
    }
    let _ = ended.send(());
}

/// Runs `script` beside an echo server on `listener` that serves `connections` streams; the
/// run ends once the script has and the server has seen each stream end (within [`BOUND`]).
fn run_beside_echo_server(
    script: &str,
    listener: std::net::TcpListener,
    connections: usize,
) -> (crate::support::Ran, Vec<String>) {
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let ran = run_with(script, move |_| async move {
        let (ended, mut endings) = tokio::sync::mpsc::unbounded_channel();
        spawn_tls_server(listener, move |tls| {
            echo_until_the_end(tls, Arc::clone(&log), ended.clone())
        });
        for _ in 0..connections {
            tokio::time::timeout(BOUND, endings.recv())
                .await
                .expect("a stream did not end in time");
        }
    });
    let seen = seen.lock().unwrap().clone();
    (ran, seen)
}

#[test]
fn a_tls_stream_trusting_ca_certificates_echoes_and_closes_with_close_notify() {
    let (listener, port) = loopback_listener();
    let script = with_pem(&format!(
        r#"
        ready(0)
        local stream = net.tcp.connect("localhost", {port}, {{ tls = true, caCertificates = PEM_TEXT }})
        kind = typeof(stream)
        address = stream.remoteAddress
        samePort = stream.remotePort == {port}
        stream:write("hello")
        first = stream:read()
        stream:write(buffer.fromstring("again"))
        second = stream:read()
        stream:close()
        _, afterClose = pcall(function() return stream:read() end)
        "#
    ));
    let (ran, seen) = run_beside_echo_server(&script, listener, 1);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("kind"), "TcpStream");
    assert_eq!(ran.global::<String>("address"), "127.0.0.1");
    assert!(ran.global::<bool>("samePort"));
    assert_eq!(ran.global::<String>("first"), "echo hello");
    assert_eq!(ran.global::<String>("second"), "echo again");
    ran.assert_text("afterClose", "stream:read: the stream is closed");
    // The server read a clean TLS end, not a connection cut short.
    assert_eq!(seen, ["hello", "again", "close_notify"]);
}

#[test]
fn server_name_picks_the_name_the_certificate_must_carry() {
    let (listener, port) = loopback_listener();
    let script = with_pem(&format!(
        r#"
        ready(0)
        -- By address: the certificate names 127.0.0.1 too.
        local byAddress = net.tcp.connect("127.0.0.1", {port}, {{ tls = true, caCertificates = PEM_TEXT }})
        byAddress:write("by address")
        first = byAddress:read()
        byAddress:close()
        -- By address, checked against a host name.
        local named = net.tcp.connect("127.0.0.1", {port}, {{
            tls = true, caCertificates = PEM_TEXT, serverName = "localhost",
        }})
        named:write("named")
        second = named:read()
        named:close()
        okOther, other = pcall(net.tcp.connect, "127.0.0.1", {port}, {{
            tls = true, caCertificates = PEM_TEXT, serverName = "example.com",
        }})
        other = tostring(other)
        "#
    ));
    // The refused handshake never reaches the echo: two streams end.
    let (ran, _) = run_beside_echo_server(&script, listener, 2);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("first"), "echo by address");
    assert_eq!(ran.global::<String>("second"), "echo named");
    assert!(!ran.global::<bool>("okOther"));
    ran.assert_text(
        "other",
        format!("net.tcp.connect: the TLS handshake with 127.0.0.1:{port} failed: invalid peer certificate: certificate not valid for name \"example.com\""),
    );
}

#[test]
fn a_server_no_root_vouches_for_is_refused_naming_net_tcp_connect() {
    let (listener, port) = loopback_listener();
    let script = format!(
        r#"
        ready(0)
        _, shorthand = pcall(function() return net.tcp.connect("localhost", {port}, true) end)
        _, options = pcall(function()
            return net.tcp.connect("localhost", {port}, {{ tls = true, timeout = 5 }})
        end)
        "#
    );
    let ran = run_with(&script, move |_| async move {
        spawn_tls_server(listener, |_| async {});
    });
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let expected = format!(
        "net.tcp.connect: the TLS handshake with localhost:{port} failed: invalid peer certificate: UnknownIssuer"
    );
    ran.assert_text("shorthand", format!("main.luau:3: {expected}"));
    ran.assert_text("options", format!("main.luau:5: {expected}"));
}

#[test]
fn cancelling_a_task_blocked_in_a_tls_read_frees_the_stream_for_the_next_reader() {
    let (listener, port) = loopback_listener();
    let script = with_pem(&format!(
        r#"
        ready(0)
        local stream = net.tcp.connect("localhost", {port}, {{ tls = true, caCertificates = PEM_TEXT }})
        local first = task.spawn(function()
            firstGot = stream:read()
        end)
        task.cancel(first)
        -- Only now does the server answer: a read still alive in the cancelled task would take it.
        stream:write("go")
        secondGot = stream:read()
        -- A read waiting when another task closes the stream returns nil.
        task.spawn(function()
            thirdGot = stream:read()
            thirdDone = true
        end)
        stream:close()
        "#
    ));
    let (ran, seen) = run_beside_echo_server(&script, listener, 1);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<Option<String>>("firstGot"), None);
    assert_eq!(ran.global::<String>("secondGot"), "echo go");
    assert!(ran.global::<bool>("thirdDone"));
    assert_eq!(ran.global::<Option<String>>("thirdGot"), None);
    assert_eq!(seen, ["go", "close_notify"]);
}

#[test]
fn a_tls_read_timeout_fails_the_read_and_an_end_without_close_notify_is_the_end() {
    let (listener, port) = loopback_listener();
    let script = with_pem(&format!(
        r#"
        ready(0)
        local stream = net.tcp.connect("localhost", {port}, {{
            tls = true, caCertificates = PEM_TEXT, readTimeout = 0.05,
        }})
        okEarly, early = pcall(stream.read, stream)
        stream:write("go")
        got = stream:read()
        ended = stream:read() == nil
        "#
    ));
    let ran = run_with(&script, move |_| async move {
        spawn_tls_server(listener, |mut tls| async move {
            let mut go = [0u8; 2];
            if tls.read_exact(&mut go).await.is_err() {
                return;
            }
            let _ = tls.write_all(b"bye").await;
            let _ = tls.flush().await;
            // The connection is cut without close_notify.
            let (tcp, _session) = tls.into_inner();
            drop(tcp);
        });
    });
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("okEarly"));
    ran.assert_text("early", "stream:read: timed out after 0.05 s (readTimeout)");
    assert_eq!(ran.global::<String>("got"), "bye");
    assert!(ran.global::<bool>("ended"));
}

#[test]
fn tls_options_of_the_wrong_type_or_without_tls_are_refused_before_connecting() {
    // A free port: a call that got as far as connecting would fail otherwise ("cannot connect").
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let script = with_pem(&format!(
        r#"
        local function message(options, host)
            local _, error = pcall(net.tcp.connect, host or "localhost", {port}, options)
            return tostring(error)
        end
        badArgument = message("tls")
        badTls = message({{ tls = "yes" }})
        rootsWithoutTls = message({{ caCertificates = PEM_TEXT }})
        rootsWithTlsOff = message({{ tls = false, caCertificates = PEM_TEXT }})
        nameWithoutTls = message({{ serverName = "localhost" }})
        badRoots = message({{ tls = true, caCertificates = 5 }})
        noCertificate = message({{ tls = true, caCertificates = "not PEM" }})
        badName = message({{ tls = true, serverName = 5 }})
        badNameText = message({{ tls = true, serverName = "not a name" }})
        hostNotAName = message(true, "not a name")
        unknown = message({{ tls = true, ttl = 64 }})
        "#
    ));
    let ran = run(&script);
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let cases = [
        (
            "badArgument",
            "net.tcp.connect: invalid argument #3 (options table or boolean expected, got string)",
        ),
        (
            "badTls",
            "net.tcp.connect: option 'tls' must be a boolean, got \"yes\"",
        ),
        (
            "rootsWithoutTls",
            "net.tcp.connect: option 'caCertificates' is for TLS streams: set 'tls = true' as well",
        ),
        (
            "rootsWithTlsOff",
            "net.tcp.connect: option 'caCertificates' is for TLS streams",
        ),
        (
            "nameWithoutTls",
            "net.tcp.connect: option 'serverName' is for TLS streams",
        ),
        (
            "badRoots",
            "net.tcp.connect: option 'caCertificates' must be a PEM string or an array of PEM strings, got 5",
        ),
        (
            "noCertificate",
            "net.tcp.connect: option 'caCertificates' has no certificate",
        ),
        (
            "badName",
            "net.tcp.connect: option 'serverName' must be a host name or an IP address, got 5",
        ),
        (
            "badNameText",
            "net.tcp.connect: option 'serverName' must be a host name or an IP address, got \"not a name\"",
        ),
        (
            "hostNotAName",
            "net.tcp.connect: \"not a name\" is not a server name for TLS (give one with option 'serverName')",
        ),
        ("unknown", "net.tcp.connect: unknown option 'ttl'"),
    ];
    for (name, expected) in cases {
        ran.assert_text(name, expected);
    }
}

#[test]
fn a_peer_that_never_finishes_the_handshake_is_bounded_by_the_timeout() {
    let (listener, port) = loopback_listener();
    let script = format!(
        r#"
        ready(0)
        ok, message = pcall(net.tcp.connect, "localhost", {port}, {{ tls = true, timeout = 0.1 }})
        "#
    );
    let ran = run_with(&script, move |_| async move {
        // Accepts, then says nothing: the client waits for a ServerHello that never comes.
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (silent, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(silent);
    });
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert!(!ran.global::<bool>("ok"));
    ran.assert_text(
        "message",
        format!("net.tcp.connect: cannot connect to localhost:{port}: timed out after 0.1 s"),
    );
}
