//! The byte stream of one port-forward, owning the forward itself.
//!
//! kube-rs runs the WebSocket in a background task and reports a failure on the pod side (for
//! example nothing listening on the port) on a separate error channel, while the data stream
//! just stays silent. Here that error becomes an I/O error on the next read or write, so the
//! tunnel client fails the attempt at once with the API server's words instead of waiting for
//! its handshake timeout. Dropping the stream aborts the forward's task (closing the
//! WebSocket).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use kube::api::Portforwarder;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

type ErrorFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// One port-forwarded stream.
pub struct PortForwardIo {
    stream: DuplexStream,
    /// Resolves with the pod side's error message, or `None` once the forward has ended.
    error: Option<ErrorFuture>,
    failed: Option<String>,
    forwarder: Portforwarder,
    what: String,
}

impl std::fmt::Debug for PortForwardIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardIo")
            .field("what", &self.what)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl PortForwardIo {
    pub fn new(
        stream: DuplexStream,
        error: ErrorFuture,
        forwarder: Portforwarder,
        what: String,
    ) -> Self {
        Self {
            stream,
            error: Some(error),
            failed: None,
            forwarder,
            what,
        }
    }

    /// Checks the error channel; an error there fails every later read and write.
    fn poll_failed(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        if let Some(error) = self.error.as_mut() {
            match error.as_mut().poll(cx) {
                Poll::Ready(Some(message)) => {
                    self.error = None;
                    self.failed = Some(message);
                }
                // The forward ended without an error message: the stream's own EOF says so.
                Poll::Ready(None) => self.error = None,
                Poll::Pending => {}
            }
        }
        match &self.failed {
            Some(message) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{}: {message}", self.what),
            )),
            None => Ok(()),
        }
    }
}

impl AsyncRead for PortForwardIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_failed(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForwardIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.poll_failed(cx)?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_failed(cx)?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Drop for PortForwardIo {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}
