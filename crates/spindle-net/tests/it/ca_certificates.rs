//! `caCertificates`: roots a script trusts beside the webpki roots, for `wss://` sockets and
//! `https://` requests, against TLS servers on loopback that present the fixture certificate.
//! The option trusts them for the call that gives it and for no other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{loopback_listener, run, run_with, spawn_tls_server, with_pem};

#[test]
fn wss_with_the_servers_root_echoes_text_and_binary_and_closes_with_a_code() {
    let (listener, port) = loopback_listener();
    // What the server saw, in order: each socket's messages and its close code.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let script = with_pem(&format!(
        r#"
        ready(0)
        local url = "wss://localhost:{port}/echo"
        local socket = net.socket(url, {{ caCertificates = PEM_TEXT, timeout = 5 }})
        kind = typeof(socket)
        socket:send("hello")
        text, textBinary = socket:next()
        socket:send(buffer.fromstring("\0\1\2"))
        bytes, bytesBinary = socket:next()
        socket:close(4005)
        code = socket.closeCode
        -- Without the option, the same server is refused: the roots above were for that call.
        okWithout, without = pcall(function() return net.socket(url, {{ timeout = 5 }}) end)
        without = tostring(without)
        -- An array of PEM strings, by IP address (the certificate names 127.0.0.1 too).
        local again = net.socket(`wss://127.0.0.1:{port}/`, {{ caCertificates = {{ PEM_TEXT }} }})
        again:send("again")
        againText = again:next()
        again:close()
        "#
    ));
    let ran = run_with(&script, move |_| async move {
        spawn_tls_server(listener, move |tls| {
            let log = Arc::clone(&log);
            async move {
                let mut socket = tokio_tungstenite::accept_async(tls).await.unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    let echo = match message {
                        Message::Text(text) => Message::text(format!("echo {text}")),
                        Message::Binary(bytes) => {
                            Message::binary([&b"echo "[..], &bytes[..]].concat())
                        }
                        Message::Close(frame) => {
                            let code = frame.map_or(1005, |frame| u16::from(frame.code));
                            log.lock().unwrap().push(format!("closed {code}"));
                            continue;
                        }
                        _ => continue,
                    };
                    log.lock().unwrap().push(format!("{echo:?}"));
                    socket.send(echo).await.unwrap();
                }
            }
        });
    });
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(ran.global::<String>("kind"), "WebSocket");
    assert_eq!(ran.global::<String>("text"), "echo hello");
    assert!(!ran.global::<bool>("textBinary"));
    assert_eq!(
        ran.global::<mlua::LuaString>("bytes").as_bytes().as_ref(),
        b"echo \0\x01\x02"
    );
    assert!(ran.global::<bool>("bytesBinary"));
    assert_eq!(ran.global::<u16>("code"), 4005);
    assert!(!ran.global::<bool>("okWithout"));
    ran.assert_text("without", format!(
        "main.luau:13: net.socket: the TLS handshake with wss://localhost:{port}/echo failed: invalid peer certificate: UnknownIssuer"
    ));
    assert_eq!(ran.global::<String>("againText"), "echo again");
    let seen = seen.lock().unwrap();
    // The server read the first socket's close code before answering it, so before the
    // script's close() returned.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen[0].contains("echo hello"), "{seen:?}");
    assert!(seen[1].contains("Binary"), "{seen:?}");
    assert_eq!(seen[2], "closed 4005");
}

#[test]
fn https_with_the_servers_root_succeeds_and_reuses_one_connection() {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    let (listener, port) = loopback_listener();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    let script = with_pem(&format!(
        r#"
        ready(0)
        local base = "https://localhost:{port}"
        local parts = {{}}
        for i = 1, 3 do
            local response = net.request({{ url = `{{base}}/item/{{i}}`, caCertificates = PEM_TEXT }})
            table.insert(parts, `{{response.statusCode}} {{response.body}}`)
        end
        answers = table.concat(parts, ", ")
        -- The kept-alive connection above was verified against the extra root: it is not lent.
        okWithout, without = pcall(function() return net.request(base .. "/plain") end)
        without = tostring(without)
        "#
    ));
    let ran = run_with(&script, move |_| async move {
        spawn_tls_server(listener, move |tls| {
            counted.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("tls {}", request.uri().path());
                    let response = hyper::Response::new(Full::new(Bytes::from(body)));
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        });
    });
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    assert_eq!(
        ran.global::<String>("answers"),
        "200 tls /item/1, 200 tls /item/2, 200 tls /item/3"
    );
    // One client for the three requests with the same roots: one connection, kept alive.
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    assert!(!ran.global::<bool>("okWithout"));
    ran.assert_text(
        "without",
        format!("main.luau:11: net.request: GET https://localhost:{port}/plain: cannot connect:"),
    );
    ran.assert_text("without", "UnknownIssuer");
}

#[test]
fn bad_ca_certificates_are_refused_naming_the_function_and_the_option() {
    // Options are checked before anything connects: port 1 is never reached.
    let ran = run(&with_pem(
        r#"
        local function refusal(call)
            local ok, message = pcall(call)
            return if ok then "no error" else tostring(message)
        end
        local function request(roots)
            return refusal(function()
                return net.request({ url = "https://127.0.0.1:1/", caCertificates = roots })
            end)
        end
        local function socket(roots)
            return refusal(function()
                return net.socket("wss://127.0.0.1:1/", { caCertificates = roots })
            end)
        end
        number = request(5)
        empty = request({})
        notArray = request({ pem = PEM_TEXT })
        notString = request({ PEM_TEXT, true })
        noCertificate = request("not a certificate")
        secondEmpty = request({ PEM_TEXT, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" })
        noEnd = request("-----BEGIN CERTIFICATE-----\nAAAA\n")
        badBase64 = request("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
        notDer = request("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        tooLarge = request(string.rep("x", 1024 * 1024 + 1))
        sparse = request({ [1] = PEM_TEXT, [4] = PEM_TEXT, [8] = PEM_TEXT })
        socketNumber = socket(true)
        socketBad = socket({ "junk" })
        plainSocket = refusal(function()
            return net.socket("ws://127.0.0.1:1/", { caCertificates = "junk" })
        end)
        "#,
    ));
    assert!(ran.errors.is_empty(), "{:?}", ran.errors);
    let option = "option 'caCertificates'";
    let cases = [
        ("number", format!("main.luau:8: net.request: {option} must be a PEM string or an array of PEM strings, got 5")),
        ("empty", format!("net.request: {option} must be a PEM string or an array of PEM strings, got an empty table")),
        ("notArray", format!("net.request: {option} must be a PEM string or an array of PEM strings, got a table with the key \"pem\"")),
        ("notString", format!("net.request: {option} must be a PEM string or an array of PEM strings, got a boolean at [2]")),
        ("noCertificate", format!("net.request: {option} has no certificate (expected PEM text with \"-----BEGIN CERTIFICATE-----\" blocks)")),
        ("secondEmpty", format!("net.request: {option} has no certificate at [2] (expected")),
        ("noEnd", format!("net.request: {option} is not valid PEM: a block has no END line")),
        ("badBase64", format!("net.request: {option} is not valid PEM: a block is not valid base64")),
        ("notDer", format!("net.request: {option} has a certificate that cannot be read (")),
        ("tooLarge", format!("net.request: {option} is too large: 1048577 bytes of PEM (at most 1048576)")),
        ("sparse", format!("net.request: {option} must be a PEM string or an array of PEM strings, got a")),
        ("socketNumber", format!("main.luau:13: net.socket: {option} must be a PEM string or an array of PEM strings, got a boolean")),
        ("socketBad", format!("net.socket: {option} has no certificate (expected")),
        ("plainSocket", format!("net.socket: {option} has no certificate (expected")),
    ];
    for (name, expected) in cases {
        ran.assert_text(name, expected);
    }
}
