//! `net.request`: the client against `net.serve` in the same VM, and against a raw server
//! (raw_server.rs) for what `net.serve` does not do. Each script is the main task of a run
//! bounded by BOUND; the scripts record what they saw in globals, which the tests read.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Instant;

use mlua::Lua;

use crate::raw_server::{reply, RawServer, Reply};
use crate::support::{host_with, BOUND};

/// What a run left behind.
struct Ran {
    /// The uncaught task errors, each with its traceback.
    errors: Vec<String>,
    lua: Lua,
}

impl Ran {
    fn text(&self, expression: &str) -> String {
        let value: mlua::Value = self
            .lua
            .load(format!("return {expression}"))
            .eval()
            .unwrap();
        match value {
            mlua::Value::String(text) => text.to_string_lossy(),
            other => format!("{other:?}"),
        }
    }

    /// The one error the run had.
    fn error(&self) -> &str {
        assert_eq!(self.errors.len(), 1, "{:?}", self.errors);
        &self.errors[0]
    }

    fn no_errors(&self) {
        assert!(self.errors.is_empty(), "{:?}", self.errors);
    }
}

/// Runs `script` as `main.luau` (with `PORT` replaced by `port`) to the end of its run.
fn run(script: &str, port: u16) -> Ran {
    run_with(script, port, |_| {})
}

fn run_with(script: &str, port: u16, prepare: impl FnOnce(&Lua)) -> Ran {
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&errors);
    let (runtime, lua, scheduler) =
        host_with(move |_, error| seen.borrow_mut().push(error.to_string()));
    prepare(&lua);
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    runtime.block_on(async {
        let main = lua
            .load(script.replace("PORT", &port.to_string()))
            .set_name("@main.luau")
            .into_function()
            .unwrap();
        scheduler.spawn(main, ()).unwrap();
        tokio::time::timeout(BOUND, scheduler.run(sleeper))
            .await
            .expect("the run did not end in time")
            .unwrap();
    });
    drop(scheduler);
    let errors = errors.borrow().clone();
    Ran { errors, lua }
}

/// An echo server in the script's own VM: it answers with the method, the query, the
/// `x-echo` header and the body, and sets an `x-seen` header. `server` is its handle and
/// `base` its URL; the script ends with `server.stop()`.
const ECHO_SERVER: &str = r#"
    server = net.serve(0, function(request)
        local a = request.query.a
        if type(a) == "table" then a = table.concat(a, "+") end
        return {
            status = if request.path == "/missing" then 404 else 200,
            headers = {
                ["X-Seen"] = request.method,
                ["X-Agent"] = request.headers["user-agent"],
                ["Set-Cookie"] = { "c=1", "d=2" },
            },
            body = `{request.method} a={a} b={request.query.b} h={request.headers["x-echo"]} body={request.body}`
            .. if request.query["c&d"] then " c&d=" .. request.query["c&d"] else "",
        }
    end)
    base = `http://127.0.0.1:{server.port}`
"#;

#[test]
fn each_method_sends_its_body_and_gets_the_answer() {
    let ran = run(
        &format!(
            "{ECHO_SERVER}{}",
            r#"
            seen = {}
            for _, method in { "GET", "POST", "PUT", "DELETE", "PATCH", "post" } do
                local response = net.request({ url = base .. "/", method = method, body = "data-" .. method })
                table.insert(seen, `{response.statusCode} {response.body}`)
            end
            seen = table.concat(seen, "|")
            server.stop()
            "#
        ),
        0,
    );
    ran.no_errors();
    assert_eq!(
        ran.text("seen"),
        "200 GET a=nil b=nil h=nil body=data-GET|200 POST a=nil b=nil h=nil body=data-POST|\
         200 PUT a=nil b=nil h=nil body=data-PUT|200 DELETE a=nil b=nil h=nil body=data-DELETE|\
         200 PATCH a=nil b=nil h=nil body=data-PATCH|200 POST a=nil b=nil h=nil body=data-post"
    );
}

#[test]
fn query_and_headers_go_both_ways_and_the_response_has_lune_s_shape() {
    let ran = run(
        &format!(
            "{ECHO_SERVER}{}",
            r#"
            response = net.request({
                url = base .. "/path?b=x%20y",
                query = { a = { "1", "2" }, ["c&d"] = "\255=" },
                headers = { ["X-Echo"] = "hello" },
                timeout = math.huge, -- no limit
            })
            plain = net.request(base .. "/plain")
            agent = net.request({ url = base, headers = { ["User-Agent"] = "mine/1" } })
            server.stop()
            "#
        ),
        0,
    );
    ran.no_errors();
    assert_eq!(
        ran.text("tostring(response.body == 'GET a=1+2 b=x y h=hello body= c&d=\\255=')"),
        "true"
    );
    assert_eq!(ran.text("tostring(response.ok)"), "true");
    assert_eq!(ran.text("tostring(response.statusCode)"), "200");
    assert_eq!(ran.text("response.statusMessage"), "OK");
    assert_eq!(ran.text("response.headers['x-seen']"), "GET");
    assert_eq!(ran.text("response.headers['set-cookie']"), "c=1, d=2");
    assert_eq!(ran.text("plain.body"), "GET a=nil b=nil h=nil body=");
    // Spindle names itself unless the script says otherwise.
    assert!(ran.text("plain.headers['x-agent']").starts_with("spindle/"));
    assert_eq!(ran.text("agent.headers['x-agent']"), "mine/1");
}

#[test]
fn a_non_2xx_answer_is_returned_with_ok_false_not_raised() {
    let raw = RawServer::start(|_| reply("299 Fine Thanks", "", b"odd"));
    let ran = run(
        &format!(
            "{ECHO_SERVER}{}",
            r#"
            missing = net.request(base .. "/missing")
            odd = net.request("http://127.0.0.1:PORT/")
            server.stop()
            "#
        ),
        raw.port,
    );
    ran.no_errors();
    assert_eq!(ran.text("tostring(missing.ok)"), "false");
    assert_eq!(ran.text("tostring(missing.statusCode)"), "404");
    assert_eq!(ran.text("missing.statusMessage"), "Not Found");
    assert_eq!(ran.text("missing.body"), "GET a=nil b=nil h=nil body=");
    // A status outside 2xx's named ones keeps the server's reason phrase.
    assert_eq!(ran.text("tostring(odd.ok)"), "true");
    assert_eq!(ran.text("odd.statusMessage"), "Fine Thanks");
}

#[test]
fn redirects_are_followed_a_see_other_post_becoming_a_get() {
    let raw = RawServer::start(|request| match request.target.as_str() {
        "/start" => reply("302 Found", "Location: /middle?x=1\r\n", b""),
        "/middle?x=1" => reply("303 See Other", "Location: end\r\n", b""),
        "/end" => reply(
            "200 OK",
            "",
            format!("{} {}", request.method, request.body.len()).as_bytes(),
        ),
        _ => reply("500 Internal Server Error", "", b""),
    });
    let ran = run(
        r#"
        response = net.request({ url = "http://127.0.0.1:PORT/start", method = "POST", body = "x" })
        "#,
        raw.port,
    );
    ran.no_errors();
    assert_eq!(ran.text("response.body"), "GET 0");
    let targets: Vec<_> = raw.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/start", "/middle?x=1", "/end"]);
    // One connection served the three requests.
    assert_eq!(raw.accepted(), 1);
}

#[test]
fn a_redirect_loop_fails_past_max_redirects() {
    let raw = RawServer::start(|_| reply("307 Temporary Redirect", "Location: /again\r\n", b""));
    let ran = run(
        r#"net.request({ url = "http://127.0.0.1:PORT/loop", maxRedirects = 3 })"#,
        raw.port,
    );
    let error = ran.error();
    assert!(
        error.contains(&format!(
            "main.luau:1: net.request: GET http://127.0.0.1:{}/again: too many redirects (more than 3)",
            raw.port
        )),
        "{error}"
    );
    assert_eq!(raw.requests().len(), 4);
}

#[test]
fn with_follow_redirects_off_the_redirect_is_the_answer() {
    let raw = RawServer::start(|_| reply("301 Moved Permanently", "Location: /new\r\n", b"moved"));
    let ran = run(
        r#"response = net.request({ url = "http://127.0.0.1:PORT/old", followRedirects = false })"#,
        raw.port,
    );
    ran.no_errors();
    assert_eq!(ran.text("tostring(response.ok)"), "false");
    assert_eq!(ran.text("tostring(response.statusCode)"), "301");
    assert_eq!(ran.text("response.headers.location"), "/new");
    assert_eq!(ran.text("response.body"), "moved");
    assert_eq!(raw.requests().len(), 1);
}

#[test]
fn a_server_that_does_not_answer_in_time_is_a_timeout_error() {
    let raw = RawServer::start(|_| Reply::Hold);
    let started = Instant::now();
    let ran = run(
        r#"
        local ok, message = pcall(net.request, { url = "http://127.0.0.1:PORT/slow?key=secret", timeout = 0.2 })
        caught = message
        "#,
        raw.port,
    );
    ran.no_errors();
    assert_eq!(
        ran.text("caught"),
        format!(
            "net.request: GET http://127.0.0.1:{}/slow: timed out after 0.2 s",
            raw.port
        )
    );
    assert!(started.elapsed() < BOUND / 2, "{:?}", started.elapsed());
    // The timeout dropped the request, which closed its connection (if the request got as far
    // as the server on a loaded machine).
    if !raw.requests().is_empty() {
        assert!(raw.wait_closed_while_held(1));
    }
}

#[test]
fn a_refused_connection_is_an_error_naming_the_url_at_the_caller_s_line() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ran = run("\nnet.request('http://127.0.0.1:PORT/x')", port);
    let error = ran.error();
    assert!(
        error.contains(&format!(
            "main.luau:2: net.request: GET http://127.0.0.1:{port}/x: cannot connect"
        )),
        "{error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[test]
fn a_script_that_replaces_error_after_the_library_is_made_still_gets_the_failure_raised() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // With `error` read when called, the failure came back as a return value of nil.
    let ran = run(
        r#"
        error = function() end
        ok, message = pcall(net.request, "http://127.0.0.1:PORT/")
        "#,
        port,
    );
    ran.no_errors();
    assert_eq!(ran.text("tostring(ok)"), "false");
    assert!(
        ran.text("message")
            .contains("net.request: GET http://127.0.0.1:"),
        "{}",
        ran.text("tostring(message)")
    );
}

#[test]
fn an_error_leaves_the_user_information_out_of_the_url_as_it_does_the_query() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ran = run(
        "net.request('http://user:hunter2@127.0.0.1:PORT/x?token=t0k')",
        port,
    );
    let error = ran.error();
    assert!(
        error.contains(&format!(
            "net.request: GET http://127.0.0.1:{port}/x: cannot connect"
        )),
        "{error}"
    );
    assert!(
        !error.contains("hunter2") && !error.contains("t0k"),
        "{error}"
    );
}

#[test]
fn https_goes_through_tls_which_a_plain_server_fails() {
    // A plain HTTP server answering a TLS hello: the handshake fails with rustls' error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(BOUND)).unwrap();
        let mut hello = [0u8; 512];
        let read = stream.read(&mut hello).unwrap();
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        // A TLS record starts with its type, 22 for a handshake.
        read > 0 && hello[0] == 22
    });
    let ran = run(
        r#"net.request({ url = "https://127.0.0.1:PORT/", timeout = 5 })"#,
        port,
    );
    assert!(plain.join().unwrap(), "the client sent no TLS hello");
    let error = ran.error();
    assert!(
        error.contains(&format!(
            "main.luau:1: net.request: GET https://127.0.0.1:{port}/: cannot connect"
        )),
        "{error}"
    );
}

#[test]
fn cancelling_the_task_drops_the_request_and_closes_its_connection() {
    let raw = RawServer::start(|_| Reply::Hold);
    let counter = raw.request_counter();
    let started = Instant::now();
    let ran = run_with(
        r#"
        finished = false
        local waiting = task.spawn(function()
            net.request("http://127.0.0.1:PORT/")
            finished = true
        end)
        -- Cancels once the server holds the request (the exchange is under way).
        while receivedRequests() == 0 do
            task.wait(0.01)
        end
        task.cancel(waiting)
        "#,
        raw.port,
        move |lua| {
            let received = lua.create_function(move |_, ()| Ok(counter())).unwrap();
            lua.globals().set("receivedRequests", received).unwrap();
        },
    );
    ran.no_errors();
    assert_eq!(ran.text("tostring(finished)"), "false");
    assert!(
        raw.wait_closed_while_held(1),
        "the server did not see the connection closed"
    );
    // The run ended with the cancel, not with the request's 30 s timeout.
    assert!(started.elapsed() < BOUND / 2, "{:?}", started.elapsed());
}

#[test]
fn many_tasks_request_at_once_and_each_gets_its_own_answer() {
    let ran = run(
        r#"
        local inFlight, most = 0, 0
        server = net.serve(0, function(request)
            inFlight += 1
            most = math.max(most, inFlight)
            task.wait(0.05)
            inFlight -= 1
            return "n=" .. request.query.n
        end)
        local right, done = 0, 0
        for n = 1, 40 do
            task.spawn(function()
                local response = net.request({ url = `http://127.0.0.1:{server.port}/`, query = { n = n } })
                if response.body == "n=" .. n then right += 1 end
                done += 1
                if done == 40 then
                    server.stop()
                    result = `{right} {most > 1}`
                end
            end)
        end
        "#,
        0,
    );
    ran.no_errors();
    assert_eq!(ran.text("result"), "40 true");
}

#[test]
fn sequential_requests_to_one_server_reuse_one_keep_alive_connection() {
    let raw = RawServer::start(|_| reply("200 OK", "", b"again"));
    let ran = run(
        r#"
        count = 0
        for _ = 1, 5 do
            if net.request("http://127.0.0.1:PORT/").body == "again" then count += 1 end
        end
        "#,
        raw.port,
    );
    ran.no_errors();
    assert_eq!(ran.text("tostring(count)"), "5");
    assert_eq!(raw.accepted(), 1);
}

#[test]
fn a_body_past_max_body_size_is_refused_declared_or_streamed() {
    let raw = RawServer::start(|request| {
        if request.target == "/declared" {
            // Declares far more than it sends: refused on the header alone.
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\npartial";
            return Reply::Bytes(head.as_bytes().to_vec());
        }
        let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..64 {
            bytes.extend_from_slice(b"4000\r\n");
            bytes.extend(std::iter::repeat_n(b'x', 0x4000));
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        Reply::Bytes(bytes)
    });
    let ran = run(
        r#"
        local _, declared = pcall(net.request, { url = "http://127.0.0.1:PORT/declared", maxBodySize = 100000 })
        local _, streamed = pcall(net.request, { url = "http://127.0.0.1:PORT/streamed", maxBodySize = 100000 })
        local small = net.request({ url = "http://127.0.0.1:PORT/streamed", maxBodySize = 2000000 })
        result = { declared, streamed, #small.body }
        "#,
        raw.port,
    );
    ran.no_errors();
    let expected = |path: &str| {
        format!(
            "net.request: GET http://127.0.0.1:{}/{path}: the response body is larger than maxBodySize (100000 bytes)",
            raw.port
        )
    };
    assert_eq!(ran.text("result[1]"), expected("declared"));
    assert_eq!(ran.text("result[2]"), expected("streamed"));
    assert_eq!(ran.text("tostring(result[3])"), "1048576");
}

#[test]
fn a_body_past_what_the_memory_limit_leaves_is_refused() {
    let raw = RawServer::start(|_| {
        Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n".to_vec())
    });
    let ran = run_with(
        r#"
        local ok, message = pcall(net.request, "http://127.0.0.1:PORT/")
        caught = message
        "#,
        raw.port,
        |lua| {
            lua.set_memory_limit(lua.used_memory() + 8 * 1024 * 1024)
                .unwrap();
        },
    );
    ran.no_errors();
    let caught = ran.text("caught");
    assert!(
        caught
            .contains("the response body is larger than what the Lua memory limit leaves room for"),
        "{caught}"
    );
}

#[test]
fn bad_arguments_are_errors_naming_net_request_and_the_argument() {
    let cases = [
        (
            "net.request(42)",
            "net.request: invalid argument #1 (URL string or config table expected, got number)",
        ),
        (
            "net.request('not a url')",
            "net.request: invalid URL \"not a url\"",
        ),
        (
            "net.request('ftp://x.test/')",
            "scheme 'ftp' is not http or https",
        ),
        (
            "net.request({})",
            "net.request: the config table has no 'url'",
        ),
        (
            "net.request({ url = 'http://x.test', method = 5 })",
            "net.request: option 'method' must be a string such as \"POST\", got 5",
        ),
        (
            "net.request({ url = 'http://x.test', method = 'BAD METHOD' })",
            "option 'method' is not an HTTP method: \"BAD METHOD\"",
        ),
        (
            "net.request({ url = 'http://x.test', headers = { ['bad name'] = 'x' } })",
            "option 'headers' has an invalid header name \"bad name\"",
        ),
        (
            "net.request({ url = 'http://x.test', headers = { a = true } })",
            "option 'headers' has \"a\" as a boolean, not a string or a number",
        ),
        (
            "net.request({ url = 'http://x.test', query = 'a=1' })",
            "option 'query' must be a table, got \"a=1\"",
        ),
        (
            "net.request({ url = 'http://x.test', body = {} })",
            "option 'body' must be a string or a buffer, got a table",
        ),
        (
            "net.request({ url = 'http://x.test', timeout = -1 })",
            "option 'timeout' must be a positive number of seconds, got -1",
        ),
        (
            "net.request({ url = 'http://x.test', maxRedirects = 1.5 })",
            "option 'maxRedirects' must be an integer from 0 to 1000, got 1.5",
        ),
        (
            "net.request({ url = 'http://x.test', options = { gzip = true } })",
            "option 'options' has an unknown key \"gzip\" (known: decompress)",
        ),
        (
            "net.request({ url = 'http://x.test', retries = 3 })",
            "net.request: unknown option 'retries' (known: url, method",
        ),
        (
            "net.request({ 'x', url = 'http://x.test' })",
            "net.request: option keys are strings, got a number",
        ),
        // `http` parses the port and then reports none, which would send this to port 80.
        (
            "net.request('http://127.0.0.1:99999/')",
            "net.request: invalid URL \"http://127.0.0.1:99999/\" (port 99999 is not from 0 to 65535)",
        ),
    ];
    for (call, expected) in cases {
        let ran = run(call, 0);
        let error = ran.error();
        assert!(
            error.contains("main.luau:1: net.request: "),
            "{call}: {error}"
        );
        assert!(error.contains(expected), "{call}: {error}");
    }
}

/// `text` gzipped.
fn gzipped(text: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_gzipped_body_is_asked_for_and_decoded_unless_decompress_is_off() {
    let raw = RawServer::start(|request| {
        // Gzipped whatever the client asked for; the answer says what it asked for.
        let asked = request.accept_encoding.clone().unwrap_or("none".into());
        reply(
            "200 OK",
            "Content-Encoding: gzip\r\n",
            &gzipped(asked.as_bytes()),
        )
    });
    let ran = run(
        r#"
        decoded = net.request("http://127.0.0.1:PORT/")
        raw = net.request({ url = "http://127.0.0.1:PORT/", options = { decompress = false } })
        "#,
        raw.port,
    );
    ran.no_errors();
    assert_eq!(ran.text("decoded.body"), "gzip, deflate");
    assert_eq!(
        ran.text("tostring(decoded.headers['content-encoding'])"),
        "nil"
    );
    assert_eq!(ran.text("raw.headers['content-encoding']"), "gzip");
    let raw_body: mlua::LuaString = ran.lua.load("return raw.body").eval().unwrap();
    assert_eq!(&raw_body.as_bytes()[..], &gzipped(b"none")[..]);
}

#[test]
fn a_body_that_inflates_past_max_body_size_is_refused() {
    // 8 MB of zeros, about 8 KB gzipped.
    let bomb = gzipped(&vec![0u8; 8 * 1024 * 1024]);
    let raw = RawServer::start(move |_| reply("200 OK", "Content-Encoding: gzip\r\n", &bomb));
    let ran = run(
        r#"net.request({ url = "http://127.0.0.1:PORT/", maxBodySize = 1000000 })"#,
        raw.port,
    );
    let error = ran.error();
    assert!(
        error.contains(&format!(
            "main.luau:1: net.request: GET http://127.0.0.1:{}/: the response body is larger than maxBodySize (1000000 bytes) once decompressed",
            raw.port
        )),
        "{error}"
    );
}

#[test]
fn a_request_where_the_caller_cannot_wait_or_outside_tokio_is_a_clear_error() {
    let (runtime, lua, scheduler) = host_with(|_, e| panic!("{e}"));
    // A host's main chunk, which is no task: it could not wait for the response.
    let entered = runtime.enter();
    let error = lua
        .load("\nnet.request('http://127.0.0.1:1/')")
        .set_name("@main.luau")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("main.luau:2: net.request: cannot wait for a response here"),
        "{error}"
    );
    drop(entered);
    // A task, but a run driven outside tokio.
    let main = lua
        .load("local ok, message = pcall(net.request, 'http://127.0.0.1:1/') caught = message")
        .into_function()
        .unwrap();
    scheduler.spawn(main, ()).unwrap();
    scheduler.run_blocking().unwrap();
    let caught: String = lua.globals().get("caught").unwrap();
    assert!(
        caught.starts_with("net.request: no tokio runtime"),
        "{caught}"
    );
}

#[test]
fn dropping_the_scheduler_with_a_request_in_flight_drops_the_request() {
    let raw = RawServer::start(|_| Reply::Hold);
    let (runtime, lua, scheduler) = host_with(|_, e| panic!("{e}"));
    let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
    runtime.block_on(async {
        let main = lua
            .load(format!("net.request('http://127.0.0.1:{}/')", raw.port))
            .into_function()
            .unwrap();
        scheduler.spawn(main, ()).unwrap();
        let held = async {
            while raw.requests().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(BOUND, scheduler.run_until(sleeper, held))
            .await
            .expect("the request never reached the server")
            .unwrap();
        let weak = scheduler.downgrade();
        drop(scheduler);
        assert!(
            weak.upgrade().is_none(),
            "the scheduler outlived its last handle"
        );
        // The connection task runs on the runtime: let it see its request dropped.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    });
    assert!(raw.wait_closed_while_held(1));
}
