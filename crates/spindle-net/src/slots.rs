//! A server's connection slots: what `maxConnections` counts.
//!
//! A slot is taken when a connection is accepted and given back when its socket is dropped,
//! whatever the connection became: an HTTP connection holds it while hyper serves it, and a
//! connection upgraded to a WebSocket hands it to the socket's stream ([`Counted`]), so that
//! open WebSockets count as the connections they are. The server's accept loop waits for
//! [`Slots::freed`] while every slot is taken.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The slots of one server.
#[derive(Default)]
pub(crate) struct Slots {
    taken: Cell<usize>,
    freed: Notify,
}

impl Slots {
    /// How many connections hold a slot.
    pub(crate) fn taken(&self) -> usize {
        self.taken.get()
    }

    /// Takes a slot, given back when the returned guard is dropped.
    pub(crate) fn take(self: &Rc<Self>) -> Slot {
        self.taken.set(self.taken.get() + 1);
        Slot(Rc::clone(self))
    }

    /// Completes once a slot was given back (at once if one was since the last call).
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }
}

/// One taken slot.
pub(crate) struct Slot(Rc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.0;
        slots.taken.set(slots.taken.get() - 1);
        slots.freed.notify_one();
    }
}

/// A stream that holds its connection's slot until it is dropped.
pub(crate) struct Counted<I> {
    io: I,
    _slot: Option<Slot>,
}

impl<I> Counted<I> {
    pub(crate) fn new(io: I, slot: Option<Slot>) -> Counted<I> {
        Counted { io, _slot: slot }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
