//! A server-style host on tokio: the scheduler is driven by `Scheduler::run_until` from start-up,
//! with no work at all, while the host accepts requests over time and starts one Lua handler task
//! per request. Each handler calls `lookup`, a Rust async function that awaits a tokio timer (a
//! stand-in for a database), and returns a status and a body; the host awaits each task with
//! `Scheduler::join` and prints the responses in request order. When the last response is out,
//! the driver's end future completes and the driver returns.
//!
//! No sockets: the requests come from a list, one every few milliseconds, as a listener would
//! hand them over. The output is the same on every run, and the run takes well under a second.
//!
//! ```sh
//! cargo run -p spindle --example tokio_server
//! ```
//!
//! Its test (`cargo test -p spindle --example tokio_server`) runs the same `serve` into a buffer
//! and compares the whole output.

use std::io::Write;
use std::time::{Duration, Instant};

use spindle::mlua::{self, Lua};
use spindle::{Outcome, Scheduler};

/// The Lua handler: one task per request, with the request's id and path as `...`.
const HANDLER: &str = r#"
local id, path = ...
if path == "/teapot" then
    error("I am a teapot")
end
local name = string.match(path, "^/users/(%w+)$")
if not name then
    return 404, "no route for " .. path
end
local user = lookup(name) -- suspends this task only, until the tokio timer fires
if not user then
    return 404, "no user " .. name
end
return 200, string.format("%s, born %d (request %d)", user.name, user.born, id)
"#;

/// The requests, in the order they arrive.
const REQUESTS: [&str; 5] = [
    "/users/ada",
    "/users/grace",
    "/users/nobody",
    "/teapot",
    "/users/alan",
];

/// Time between two requests; `lookup` takes longer, so the handlers overlap.
const ARRIVAL_GAP: Duration = Duration::from_millis(5);
const LOOKUP_TIME: Duration = Duration::from_millis(20);

/// Runs the server on a current-thread tokio runtime and writes what it serves to `out`.
pub fn serve(out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // The scheduler is not `Send`: it and the tasks that join it run on one thread, in a LocalSet.
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let lua = Lua::new();
        let scheduler = Scheduler::builder()
            // Handler errors become 500 responses below; keep stderr quiet.
            .on_error(|_, _| {})
            .build(&lua)?;
        scheduler.install_task_library()?;

        // A Rust async function: the calling task is suspended while the tokio timer runs,
        // and the others go on.
        let lookup = scheduler.create_async_function(|lua, name: String| async move {
            tokio::time::sleep(LOOKUP_TIME).await;
            let born = match name.as_str() {
                "ada" => 1815,
                "grace" => 1906,
                "alan" => 1912,
                _ => return Ok(mlua::Value::Nil),
            };
            let user = lua.create_table()?;
            let mut capitalized = name.clone();
            capitalized[..1].make_ascii_uppercase();
            user.set("name", capitalized)?;
            user.set("born", born)?;
            Ok(mlua::Value::Table(user))
        })?;
        lua.globals().set("lookup", lookup)?;
        let handler = lua
            .load(HANDLER)
            .set_name("@handler.luau")
            .into_function()?;

        // The host's side of the server: accepts the requests over time, starts a handler task
        // for each, and answers in request order. When it completes, the driver returns.
        let host = async {
            writeln!(out, "serving: {} tasks", scheduler.task_count())?;
            let mut responders = Vec::new();
            for (id, path) in (1..).zip(REQUESTS) {
                // Waits for the next request, as a listener would.
                tokio::time::sleep(ARRIVAL_GAP).await;
                // Runs the handler up to its first suspension (its call to `lookup`).
                let task = scheduler.spawn(&handler, (id, path))?;
                // One local tokio task per request awaits its handler; the scheduler wakes it
                // when the handler ends. The join owns what it needs: it moves into the task.
                let joined = scheduler.join::<(u16, String)>(&task);
                responders.push(tokio::task::spawn_local(async move {
                    let response = match joined.await? {
                        Outcome::Finished(response) => response,
                        Outcome::Failed(error) => (500, error.message),
                        _ => (503, "cancelled".to_string()),
                    };
                    Ok::<_, spindle::Error>((path, response))
                }));
            }
            for responder in responders {
                let (path, (status, body)) = responder.await??;
                writeln!(out, "GET {path} -> {status} {body}")?;
            }
            writeln!(out, "done: {} tasks", scheduler.task_count())?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };

        // The driver starts with nothing to do and sleeps, using no CPU, until the host gives it
        // work or a tokio timer that a handler waits on fires.
        let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
        scheduler.run_until(sleeper, host).await?
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    serve(&mut std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    /// The whole output, as `cargo run --example tokio_server` prints it.
    const EXPECTED: &str = "\
serving: 0 tasks
GET /users/ada -> 200 Ada, born 1815 (request 1)
GET /users/grace -> 200 Grace, born 1906 (request 2)
GET /users/nobody -> 404 no user nobody
GET /teapot -> 500 handler.luau:4: I am a teapot
GET /users/alan -> 200 Alan, born 1912 (request 5)
done: 0 tasks
";

    #[test]
    fn serves_every_request_and_ends() {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        super::serve(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), EXPECTED);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the server took {:?}",
            started.elapsed()
        );
    }
}
