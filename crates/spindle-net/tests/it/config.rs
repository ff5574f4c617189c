//! `net.serve`'s refusals: each names the script line and what was wrong.

use mlua::Lua;
use spindle::Scheduler;

fn refusal(call: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    scheduler.install_task_library().unwrap();
    lua.globals()
        .set("net", spindle_net::module(&scheduler).unwrap())
        .unwrap();
    lua.load(call)
        .set_name("@main.luau")
        .exec()
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_serve_arguments_are_refused_with_the_line_and_the_reason() {
    let cases = [
        (
            r#"net.serve("80", print)"#,
            "invalid argument #1 (port or config table expected, got string)",
        ),
        (
            r#"net.serve(80, 5)"#,
            "invalid argument #2 (handler function or config table expected, got number)",
        ),
        (
            r#"net.serve(70000, print)"#,
            "port must be an integer from 0 to 65535, got 70000",
        ),
        (r#"net.serve(0)"#, "no handler given"),
        (r#"net.serve({ handleRequest = print })"#, "no port given"),
        (
            r#"net.serve(0, { handleRequest = print, maxBody = 5 })"#,
            "unknown option 'maxBody'",
        ),
        (
            r#"net.serve(0, { handleRequest = print, [true] = 5 })"#,
            "option keys are strings, got a boolean",
        ),
        (
            r#"net.serve(0, { handleRequest = print, maxBodySize = -1 })"#,
            "option 'maxBodySize' must be a positive integer, got -1",
        ),
        (
            r#"net.serve(0, { handleRequest = print, requestTimeout = 0 })"#,
            "option 'requestTimeout' must be a positive number of seconds",
        ),
        (
            r#"net.serve(0, { handleRequest = print, address = "nowhere" })"#,
            "option 'address' must be an IP address",
        ),
        (
            r#"net.serve(0, { handleWebSocket = 5 })"#,
            "option 'handleWebSocket' must be a function, got number",
        ),
        (
            r#"net.serve(0, { handleWebSocket = print, maxMessageSize = 0 })"#,
            "option 'maxMessageSize' must be a positive integer, got 0",
        ),
    ];
    for (call, reason) in cases {
        let error = refusal(call);
        assert!(
            error.contains(&format!("main.luau:1: net.serve: {reason}")),
            "{call}: {error}"
        );
    }
}
