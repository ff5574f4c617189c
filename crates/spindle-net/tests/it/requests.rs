//! What a handler gets and what the client gets back: the request table, the answer's forms,
//! yielding handlers, concurrency, and errors that become 500 with the server going on.

use std::time::{Duration, Instant};

use crate::support::{get, request, serve, Client};

#[test]
fn a_handler_returning_a_string_answers_200_with_that_body() {
    let served = serve(
        r#"server = net.serve(0, function() return "hello" end)"#,
        |port| get(port, "/"),
    );
    assert_eq!(served.client.status, 200);
    assert_eq!(served.client.text(), "hello");
    assert!(served.errors.is_empty(), "{:?}", served.errors);
}

#[test]
fn the_request_has_method_path_decoded_query_headers_and_body() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            seen = request
            return "ok"
        end)
        "#,
        |port| {
            request(
                port,
                "POST",
                "/items/7%20x?a=1&b=x+y%21&a=2&flag&a=3",
                "X-Token: secret\r\nX-Many: one\r\nX-Many: two\r\n",
                b"the body\0with a zero",
            )
        },
    );
    assert_eq!(served.client.status, 200);
    let lua = &served.lua;
    let check = |expression: &str| -> mlua::Value {
        lua.load(format!("return {expression}")).eval().unwrap()
    };
    let text = |expression: &str| check(expression).as_string().unwrap().to_string_lossy();
    assert_eq!(text("seen.method"), "POST");
    assert_eq!(text("seen.path"), "/items/7%20x");
    assert_eq!(text("table.concat(seen.query.a, ',')"), "1,2,3");
    assert_eq!(text("seen.query.b"), "x y!");
    assert_eq!(text("seen.query.flag"), "");
    assert_eq!(text("seen.headers['x-token']"), "secret");
    assert_eq!(text("seen.headers['x-many']"), "one, two");
    assert_eq!(text("seen.headers.host"), "localhost");
    assert_eq!(
        check("seen.body == 'the body\\0with a zero'"),
        mlua::Value::Boolean(true)
    );
}

#[test]
fn a_table_answer_sets_status_headers_and_body() {
    let served = serve(
        r#"
        server = net.serve(0, function()
            return {
                status = 201,
                headers = { ["Content-Type"] = "text/plain", ["Set-Cookie"] = { "a=1", "b=2" } },
                body = buffer.fromstring("made"),
            }
        end)
        "#,
        |port| get(port, "/"),
    );
    let response = served.client;
    assert_eq!(response.status, 201);
    assert_eq!(response.text(), "made");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    let cookies: Vec<_> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
}

#[test]
fn handlers_that_yield_serve_concurrent_requests_at_once() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            local waited = task.wait(0.3)
            return "waited " .. request.path
        end)
        "#,
        |port| {
            let started = Instant::now();
            let clients: Vec<_> = (0..8)
                .map(|i| std::thread::spawn(move || get(port, &format!("/{i}"))))
                .collect();
            let responses: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
            (responses, started.elapsed())
        },
    );
    let (responses, elapsed) = served.client;
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), format!("waited /{i}"));
    }
    // One after another they would take 2.4 s.
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[test]
fn a_keep_alive_connection_serves_many_requests() {
    let served = serve(
        r#"
        local count = 0
        server = net.serve(0, function()
            count += 1
            if count % 2 == 0 then task.wait() end
            return tostring(count)
        end)
        "#,
        |port| {
            let mut client = Client::connect(port);
            (1..=20)
                .map(|_| {
                    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                    client.response().unwrap().text()
                })
                .collect::<Vec<_>>()
        },
    );
    let expected: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    assert_eq!(served.client, expected);
}

#[test]
fn a_handler_error_answers_500_is_reported_with_its_traceback_and_the_server_goes_on() {
    let served = serve(
        r#"
        local function lookup(path)
            error("no such thing: " .. path)
        end
        server = net.serve(0, function(request)
            if request.path == "/fail" then
                lookup(request.path)
            end
            return "fine"
        end)
        "#,
        |port| (get(port, "/fail"), get(port, "/fine")),
    );
    let (failed, fine) = served.client;
    assert_eq!(failed.status, 500);
    assert_eq!(fine.status, 200);
    assert_eq!(fine.text(), "fine");
    assert_eq!(served.errors.len(), 1, "{:?}", served.errors);
    let error = &served.errors[0];
    assert!(
        error.starts_with("server.luau:3: no such thing: /fail"),
        "{error}"
    );
    assert!(error.contains("stack traceback"), "{error}");
    assert!(error.contains("lookup"), "{error}");
}

#[test]
fn a_bad_answer_fails_the_handlers_task_with_what_was_wrong() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            if request.path == "/number" then return 42 end
            if request.path == "/status" then return { status = 1000 } end
            if request.path == "/switching" then return { status = 101 } end
            return { headers = { ["bad name"] = "x" } }
        end)
        "#,
        |port| {
            [
                get(port, "/number"),
                get(port, "/status"),
                get(port, "/switching"),
                get(port, "/header"),
            ]
        },
    );
    for response in &served.client {
        assert_eq!(response.status, 500);
    }
    let errors = served.errors.join("\n");
    assert!(
        errors.contains("net.serve: the handler returned a number; expected a string"),
        "{errors}"
    );
    assert!(
        errors.contains("returned status 1000; expected an integer from 200 to 599"),
        "{errors}"
    );
    assert!(
        errors.contains("returned status 101; expected an integer from 200 to 599"),
        "{errors}"
    );
    assert!(
        errors.contains("returned an invalid header name \"bad name\""),
        "{errors}"
    );
}

#[test]
fn a_content_length_that_disagrees_with_the_body_fails_the_handler_not_the_server() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            local length = if request.path == "/short" then "5" elseif request.path == "/bad" then "x" else "11"
            local answer = { headers = { ["content-length"] = length }, body = "eleven byte" }
            if request.method == "HEAD" then answer.body = nil end
            if request.path == "/chunked" then answer.headers["transfer-encoding"] = "chunked" end
            return answer
        end)
        "#,
        |port| {
            let responses = [
                get(port, "/short"),
                get(port, "/bad"),
                get(port, "/chunked"),
                get(port, "/right"),
            ];
            (responses, head_of_head(port))
        },
    );
    let ([short, bad, chunked, right], head) = &served.client;
    for wrong in [short, bad, chunked] {
        assert_eq!(wrong.status, 500);
    }
    assert_eq!((right.status, right.text().as_str()), (200, "eleven byte"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 11\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {head}"
    );
    let errors = served.errors.join("\n");
    assert!(
        errors.contains("net.serve: the handler returned content-length 5 for a body of 11 bytes"),
        "{errors}"
    );
    assert!(
        errors.contains("returned an invalid content-length \"x\""),
        "{errors}"
    );
    assert!(
        errors.contains("returned both content-length and transfer-encoding"),
        "{errors}"
    );
    assert_eq!(served.errors.len(), 3, "{errors}");
}

/// All that comes back for a `HEAD /head` on a connection the server closes after it.
fn head_of_head(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"HEAD /head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_handler_can_call_async_functions_and_spawn_tasks() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            local done = false
            task.spawn(function() task.wait(0.01) done = true end)
            task.wait(0.05)
            return tostring(done)
        end)
        "#,
        |port| get(port, "/"),
    );
    assert_eq!(served.client.text(), "true");
}

#[test]
fn a_handler_that_waits_and_then_fails_or_leaves_answers_500_and_the_error_is_reported() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            task.wait()
            if request.path == "/fail" then
                error("failed after waiting")
            elseif request.path == "/leave" then
                coroutine.yield("not an answer")
            end
            return "answered after waiting"
        end)
        "#,
        |port| (get(port, "/fail"), get(port, "/leave"), get(port, "/fine")),
    );
    let (failed, left, fine) = served.client;
    assert_eq!(failed.status, 500);
    assert_eq!(left.status, 500);
    assert_eq!(fine.status, 200);
    assert_eq!(fine.text(), "answered after waiting");
    assert_eq!(served.errors.len(), 1, "{:?}", served.errors);
    let error = &served.errors[0];
    assert!(
        error.starts_with("server.luau:5: failed after waiting"),
        "{error}"
    );
    assert!(error.contains("stack traceback"), "{error}");
}

#[test]
fn answers_reach_their_own_requests_whether_handlers_wait_or_not_in_any_order() {
    let served = serve(
        r#"
        server = net.serve(0, function(request)
            local n = tonumber(string.sub(request.path, 2))
            if n % 3 == 1 then
                task.wait(0.01 * (10 - n))
            elseif n % 3 == 2 then
                task.wait()
            end
            return { status = 200, headers = { ["x-n"] = tostring(n) }, body = "answer " .. n }
        end)
        "#,
        |port| {
            let clients: Vec<_> = (0..10)
                .map(|i| std::thread::spawn(move || get(port, &format!("/{i}"))))
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>()
        },
    );
    for (i, response) in served.client.iter().enumerate() {
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), format!("answer {i}"));
    }
}
