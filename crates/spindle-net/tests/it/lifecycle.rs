//! A server's life: it binds (port 0 reports the port it got), keeps the run going while it
//! listens, and `stop()` closes the listener, lets in-flight requests finish and lets the run
//! end.

use std::time::{Duration, Instant};

use mlua::{Lua, Table};
use spindle::Scheduler;

use crate::support::{get, host_with, serve, Client, BOUND};

fn sleeper(deadline: Instant) -> tokio::time::Sleep {
    tokio::time::sleep_until(deadline.into())
}

fn host() -> (tokio::runtime::Runtime, Lua, Scheduler) {
    host_with(|_, e| panic!("{e}"))
}

#[test]
fn port_zero_binds_a_free_port_on_loopback_and_the_handle_reports_it() {
    let served = serve(
        r#"server = net.serve({ port = 0, handleRequest = function() return "hi" end })"#,
        |port| (port, get(port, "/").text()),
    );
    assert_ne!(served.client.0, 0);
    assert_eq!(served.client.1, "hi");
    let address: String = served.lua.load("return server.address").eval().unwrap();
    assert_eq!(address, "127.0.0.1");
}

#[test]
fn an_open_server_keeps_the_run_going_until_stop_and_then_closes_its_listener() {
    let (runtime, lua, scheduler) = host();
    runtime.block_on(async {
        let main = lua
            .load(r#"server = net.serve(0, function() return "x" end) return server"#)
            .into_function()
            .unwrap();
        let task = scheduler.spawn(main, ()).unwrap();
        let server: Table = scheduler
            .take_result(&task)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap();
        let port: u16 = server.get("port").unwrap();
        // With nothing but the server, the run goes on.
        let early = tokio::time::timeout(Duration::from_millis(200), scheduler.run(sleeper)).await;
        assert!(early.is_err(), "the run ended while the server listened");
        server
            .get::<mlua::Function>("stop")
            .unwrap()
            .call::<()>(())
            .unwrap();
        tokio::time::timeout(BOUND, scheduler.run(sleeper))
            .await
            .expect("the run did not end after stop()")
            .unwrap();
        let refused = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "the listener is still open");
    });
}

#[test]
fn stop_lets_an_in_flight_request_finish_then_ends_the_run() {
    // The handler stops its own server while a slow request is in flight on another connection.
    let (runtime, lua, scheduler) = host();
    runtime.block_on(async {
        let main = lua
            .load(
                r#"
                server = net.serve(0, function(request)
                    if request.path == "/slow" then
                        task.wait(0.3)
                        return "slow done"
                    end
                    server.stop()
                    return "stopping"
                end)
                return server.port
                "#,
            )
            .into_function()
            .unwrap();
        let task = scheduler.spawn(main, ()).unwrap();
        let port: u16 = scheduler
            .take_result(&task)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap();
        let client = std::thread::spawn(move || {
            let mut slow = Client::connect(port);
            slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
            std::thread::sleep(Duration::from_millis(50));
            let stopping = get(port, "/stop");
            let slow_response = slow.response().unwrap();
            // The connection is closed after its in-flight request.
            let closed = slow.is_closed_by_server();
            (stopping.text(), slow_response.text(), closed)
        });
        let started = Instant::now();
        tokio::time::timeout(BOUND, scheduler.run(sleeper))
            .await
            .expect("the run did not end after stop()")
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        let (stopping, slow, closed) = client.join().unwrap();
        assert_eq!(stopping, "stopping");
        assert_eq!(slow, "slow done");
        assert!(closed);
    });
}

#[test]
fn stop_gives_up_on_handlers_past_the_shutdown_timeout_and_cancels_them() {
    let (runtime, lua, scheduler) = host();
    runtime.block_on(async {
        let main = lua
            .load(
                r#"
                finished = false
                server = net.serve({ port = 0, shutdownTimeout = 0.1 }, function()
                    task.wait(5)
                    finished = true
                    return "late"
                end)
                return server.port
                "#,
            )
            .into_function()
            .unwrap();
        let task = scheduler.spawn(main, ()).unwrap();
        let port: u16 = scheduler
            .take_result(&task)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap();
        let client = std::thread::spawn(move || {
            let mut client = Client::connect(port);
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            client.response().is_none()
        });
        let server: Table = lua.globals().get("server").unwrap();
        let stop_soon = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            server
                .get::<mlua::Function>("stop")
                .unwrap()
                .call::<()>(())
                .unwrap();
            std::future::pending::<()>().await
        };
        let started = Instant::now();
        let run = async {
            tokio::select! {
                r = scheduler.run(sleeper) => r,
                () = stop_soon => unreachable!(),
            }
        };
        tokio::time::timeout(BOUND, run)
            .await
            .expect("the run did not end")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(client.join().unwrap(), "the client got a response");
        assert!(!lua.globals().get::<bool>("finished").unwrap());
    });
}

#[test]
fn serve_outside_a_tokio_runtime_is_a_clear_error() {
    let (_runtime, lua, _scheduler) = host();
    let error = lua
        .load(r#"net.serve(0, function() end)"#)
        .set_name("@main.luau")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("main.luau:1: net.serve: no tokio runtime"),
        "{error}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (runtime, lua, _scheduler) = host();
    let _entered = runtime.enter();
    let error = lua
        .load(format!("net.serve({port}, function() end)"))
        .set_name("@main.luau")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "main.luau:1: net.serve: cannot listen on 127.0.0.1:{port}"
        )),
        "{error}"
    );
}

/// Serves one request whose handler waits 5 s, runs until the handler waits, then ends the
/// run with `end` (which takes the scheduler); checks that the client got no response and that
/// the listener is closed.
fn end_with_a_request_in_flight(end: impl FnOnce(&mlua::Lua, spindle::Scheduler)) {
    let (runtime, lua, scheduler) = host();
    runtime.block_on(async {
        let main = lua
            .load(
                r#"
                server = net.serve(0, function() task.wait(5) return "late" end)
                return server.port
                "#,
            )
            .into_function()
            .unwrap();
        let task = scheduler.spawn(main, ()).unwrap();
        let port: u16 = scheduler
            .take_result(&task)
            .unwrap()
            .unwrap()
            .into_result()
            .unwrap();
        let client = std::thread::spawn(move || {
            let mut client = Client::connect(port);
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            client.response().is_none()
        });
        // Runs until the handler is waiting.
        let waiting = async {
            while scheduler.task_count() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(BOUND, scheduler.run_until(sleeper, waiting))
            .await
            .expect("the request never reached its handler")
            .unwrap();
        end(&lua, scheduler);
        assert!(client.join().unwrap(), "the client got a response");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    });
}

#[test]
fn shutdown_with_a_request_in_flight_closes_the_server_without_a_panic() {
    end_with_a_request_in_flight(|_, scheduler| {
        scheduler.shutdown().unwrap();
        assert_eq!(scheduler.task_count(), 0);
    });
}

#[test]
fn dropping_the_last_handle_with_a_request_in_flight_ends_the_scheduler_and_the_server() {
    end_with_a_request_in_flight(|lua, scheduler| {
        // The exchange waits on its handler through a join, which holds the scheduler weakly:
        // the last handle ends it, and the server with it.
        let weak = scheduler.downgrade();
        drop(scheduler);
        assert!(
            weak.upgrade().is_none(),
            "the scheduler outlived its last handle"
        );
        assert!(spindle::Scheduler::from_lua(lua).is_none());
    });
}
