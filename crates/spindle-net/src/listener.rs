//! A listening socket run as a task, and the handle that stops it: what `net.serve` and
//! `net.tcp.listen` share.
//!
//! The listener is owned by one future (the server's), which a task of the scheduler waits on,
//! so a listening server counts as the scheduler's work and a run does not end while it listens.
//! `stop()` only signals; the future sees the signal, drops the listener (the port is closed),
//! does what it must to drain, and completes, which ends its task.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use mlua::{Lua, MultiValue, Table};
use spindle::Scheduler;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error_at_caller;

/// Becomes `true` once `stop()` was called.
pub(crate) type Stopped = watch::Receiver<bool>;

/// Binds `address`, starts a task whose future is `server(listener, scheduler, stopped)`, and
/// returns the handle: `address`, `port` (the bound one) and `stop()`. Errors are raised at the
/// script's line and name `function`.
pub(crate) fn listen<F, Fut>(
    lua: &Lua,
    function: &str,
    address: SocketAddr,
    server: F,
) -> mlua::Result<Table>
where
    F: FnOnce(TcpListener, &Scheduler, Stopped) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let fail = |message: String| error_at_caller(lua, format!("{function}: {message}"));
    let scheduler = Scheduler::from_lua(lua)
        .ok_or_else(|| fail("the task scheduler of this Lua state was dropped".into()))?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(fail(
            "no tokio runtime: drive the scheduler inside one (see spindle-net's docs)".into(),
        ));
    }
    let listener = std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(|e| fail(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;

    let (stop, stopped) = watch::channel(false);
    let future = server(listener, &scheduler, stopped);
    // The server's task: a Spindle async function whose future is the server itself.
    let slot = RefCell::new(Some(future));
    let run = scheduler.create_async_function(move |_lua, ()| {
        let future = slot.borrow_mut().take();
        async move {
            if let Some(future) = future {
                future.await;
            }
            Ok(())
        }
    })?;
    scheduler.spawn(run, ())?;

    let handle = lua.create_table()?;
    handle.set("address", bound.ip().to_string())?;
    handle.set("port", bound.port())?;
    // `handle.stop()` as in Lune, and `handle:stop()`: the arguments are ignored.
    let stop = lua.create_function(move |_, _: MultiValue| {
        stop.send_replace(true);
        Ok(())
    })?;
    handle.set("stop", stop)?;
    Ok(handle)
}

/// After a failed accept. Out of file descriptors, or a connection reset before it was
/// accepted: the server goes on, after a pause if the system is short.
pub(crate) async fn accept_failed(error: std::io::Error) {
    if !matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Completes once `stop()` was called; never, if the handle (the sender) is gone without it.
pub(crate) async fn until_stopped(stopped: &mut Stopped) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
