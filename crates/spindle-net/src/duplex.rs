//! One connection shared by tasks: its reading half and its writing half, each behind an async
//! lock of its own, and a close that ends both.
//!
//! Any task may hold the object (a socket passed to another task works): one task may read while
//! another writes, and two readers (or two writers) take turns in the order they came. Invariants:
//! an operation in progress holds its half's lock only while its future lives, so a task
//! cancelled mid-read releases the half at once, with the read's future; once [`Duplex::close`]
//! is called, operations in progress end (with `None`) at their next poll, later ones do not
//! start, and both halves are dropped, which closes the connection without waiting for the
//! collector.

use tokio::sync::{watch, Mutex};

/// The two halves of a connection, and whether it was closed.
pub(crate) struct Duplex<R, W> {
    reader: Mutex<Option<R>>,
    writer: Mutex<Option<W>>,
    closed: watch::Sender<bool>,
}

impl<R, W> Duplex<R, W> {
    pub(crate) fn new(reader: R, writer: W) -> Self {
        Duplex {
            reader: Mutex::new(Some(reader)),
            writer: Mutex::new(Some(writer)),
            closed: watch::Sender::new(false),
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Runs `op` on the reading half, once the readers before it are done; `None` if the
    /// connection is closed before or while it runs.
    pub(crate) async fn reading<T>(&self, op: impl AsyncFnOnce(&mut R) -> T) -> Option<T> {
        on_half(&self.reader, &self.closed, op).await
    }

    /// Runs `op` on the writing half, as [`reading`](Self::reading) does on the other.
    pub(crate) async fn writing<T>(&self, op: impl AsyncFnOnce(&mut W) -> T) -> Option<T> {
        on_half(&self.writer, &self.closed, op).await
    }

    /// Ends the operations in progress and drops both halves. Closing twice does nothing more.
    pub(crate) async fn close(&self) {
        self.close_after(async |_| {}).await;
    }

    /// As [`close`](Self::close), but runs `farewell` on the writing half (once the writers in
    /// progress have let go of it, and if the connection was open) before dropping it: a TLS
    /// session's close_notify, say. The caller bounds how long `farewell` may take.
    pub(crate) async fn close_after(&self, farewell: impl AsyncFnOnce(&mut W)) {
        self.closed.send_replace(true);
        // The operations in progress give their locks back at their next poll.
        let mut writer = self.writer.lock().await;
        if let Some(half) = writer.as_mut() {
            farewell(half).await;
        }
        drop(writer.take());
        drop(writer);
        drop(self.reader.lock().await.take());
    }
}

async fn on_half<H, T>(
    half: &Mutex<Option<H>>,
    closed: &watch::Sender<bool>,
    op: impl AsyncFnOnce(&mut H) -> T,
) -> Option<T> {
    let mut signal = closed.subscribe();
    if *signal.borrow_and_update() {
        return None;
    }
    let work = async {
        let mut guard = half.lock().await;
        let half = guard.as_mut()?;
        Some(op(half).await)
    };
    tokio::select! {
        biased;
        _ = signal.wait_for(|closed| *closed) => None,
        done = work => done,
    }
}
