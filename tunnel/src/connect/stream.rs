//! One open connect stream, as ktx's callers see it: `AsyncRead + AsyncWrite`, with the
//! tunnel's half-close and abort semantics.
//!
//! - `shutdown()` is the local flow's half-close (END_STREAM); reading goes on.
//! - A read returns EOF when the destination half-closed; an error of kind
//!   `ConnectionReset` when the stream was reset (the destination or the pod cut it, or the
//!   tunnel was lost), so a caller never mistakes a cut stream for a complete one.
//! - Dropping the stream before both ways are done resets it (`RST_STREAM CANCEL`): the pod
//!   then closes the destination socket with RST. [`ConnectStream::reset`] does it explicitly.
//! - Backpressure: receive window is given back only as the caller reads; writes wait for
//!   send capacity.

use std::future::ready;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::client::ConnectStats;
use crate::splice::{abort, splice, Observer, SpliceError, Spliced};

/// Largest single write handed to h2 (it copies the caller's buffer).
const MAX_WRITE: usize = 256 * 1024;

/// A stream to a destination through the connect pod.
pub struct ConnectStream {
    dest: SocketAddr,
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received, not yet read by the caller (its window is not given back yet).
    pending: Bytes,
    read_done: bool,
    write_done: bool,
    /// Counts bytes, and this stream as active until dropped.
    stats: Active,
}

/// One active stream in [`ConnectStats::active`] while it lives.
struct Active(Arc<ConnectStats>);

impl Active {
    fn new(stats: Arc<ConnectStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Both the client's counters and the caller's observer see a splice's bytes.
struct Both<'a>(&'a ConnectStats, &'a dyn Observer);

impl Observer for Both<'_> {
    fn sent(&self, n: u64) {
        self.0.sent(n);
        self.1.sent(n);
    }

    fn received(&self, n: u64) {
        self.0.received(n);
        self.1.received(n);
    }
}

impl std::fmt::Debug for ConnectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectStream")
            .field("dest", &self.dest)
            .field("read_done", &self.read_done)
            .field("write_done", &self.write_done)
            .finish_non_exhaustive()
    }
}

impl ConnectStream {
    pub(crate) fn new(
        dest: SocketAddr,
        send: SendStream<Bytes>,
        recv: RecvStream,
        stats: Arc<ConnectStats>,
    ) -> Self {
        Self {
            dest,
            send,
            recv,
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
            stats: Active::new(stats),
        }
    }

    /// The destination the pod connected to.
    pub fn dest(&self) -> SocketAddr {
        self.dest
    }

    /// Cuts the stream both ways: the pod closes the destination socket with RST.
    pub fn reset(mut self) {
        self.send.send_reset(Reason::CANCEL);
    }

    /// Splices a fresh stream (as [`crate::connect::client::ConnectHandle::open`] returned
    /// it) with a TCP connection, e.g. a SOCKS5 or HTTP CONNECT client's once it has its
    /// answer: both ways until both are done, half-close passed on, and an abort on either
    /// side a reset on the other (the socket is closed with RST). `observer.sent` counts
    /// bytes from `socket` into the tunnel.
    pub async fn splice(
        self,
        socket: TcpStream,
        read_chunk: usize,
        observer: &dyn Observer,
    ) -> Result<Spliced, SpliceError> {
        let ConnectStream {
            send,
            mut recv,
            pending,
            read_done,
            write_done,
            stats,
            ..
        } = self;
        if read_done || write_done {
            return Err(SpliceError::Closed);
        }
        let mut socket = socket;
        if !pending.is_empty() {
            // Bytes a caller peeked at before handing the stream over go first.
            if let Err(e) = socket.write_all(&pending).await {
                abort(&socket);
                return Err(SpliceError::SocketWrite(e));
            }
            let _ = recv.flow_control().release_capacity(pending.len());
        }
        let both = Both(&stats.0, observer);
        splice(socket, send, ready(Ok(recv)), read_chunk, &both).await
    }
}

/// An h2 error as the io error a socket would give.
fn to_io(e: h2::Error) -> io::Error {
    if e.is_reset() {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    } else if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("tunnel i/o error"))
    } else {
        io::Error::new(io::ErrorKind::ConnectionAborted, e)
    }
}

fn reset(reason: Reason) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("the connect pod reset the stream ({reason})"),
    )
}

impl AsyncRead for ConnectStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                this.stats.0.received(n as u64);
                // Fails only when the stream is gone, which the next poll reports.
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => this.read_done = true,
            }
        }
    }
}

impl AsyncWrite for ConnectStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Poll::Ready(r) = this.send.poll_reset(cx) {
            return Poll::Ready(Err(match r {
                Ok(reason) => reset(reason),
                Err(e) => to_io(e),
            }));
        }
        this.send.reserve_capacity(buf.len().min(MAX_WRITE));
        loop {
            return match ready!(this.send.poll_capacity(cx)) {
                // Zero means "capacity changed but none is free"; the next poll parks us.
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(to_io)?;
                    this.stats.0.sent(n as u64);
                    Poll::Ready(Ok(n))
                }
                Some(Err(e)) => Poll::Ready(Err(to_io(e))),
                None => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the tunnel closed the stream",
                ))),
            };
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 sends queued data as the connection is driven; there is nothing to push here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            this.write_done = true;
            this.send.send_data(Bytes::new(), true).map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
