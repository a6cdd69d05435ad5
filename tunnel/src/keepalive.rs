//! Keepalive: each end pings the other on a fixed interval and drops the tunnel when a ping
//! goes unanswered, so a dead peer (laptop asleep, port-forward silently gone) is noticed even
//! when no stream is active.
//!
//! A peer whose bytes keep arriving is alive, even when its pong is late: on a saturated link
//! (a marked download over a slow uplink) the pong waits behind the data already queued. So a
//! ping times out only after the timeout passed with no byte at all from the peer
//! ([`Counted`] counts them).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use h2::{Ping, PingPong};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why the keepalive gave up on the peer.
#[derive(Debug, thiserror::Error)]
pub enum KeepaliveError {
    #[error("no answer to a keepalive ping, and no byte from the peer, within {0:?}")]
    NoPong(Duration),
    #[error("keepalive ping failed: {0}")]
    Ping(h2::Error),
}

/// Pings until the peer fails to answer while sending nothing else either. `received` counts
/// the bytes read from the peer (the transport's [`Counted`]). The h2 connection must be
/// polled concurrently (the pong arrives through it).
pub(crate) async fn run(
    mut ping: PingPong,
    interval: Duration,
    timeout: Duration,
    received: Arc<AtomicU64>,
) -> KeepaliveError {
    loop {
        tokio::time::sleep(interval).await;
        let pong = ping.ping(Ping::opaque());
        tokio::pin!(pong);
        let mut seen = received.load(Ordering::Relaxed);
        loop {
            match tokio::time::timeout(timeout, &mut pong).await {
                Ok(Ok(_pong)) => break,
                Ok(Err(e)) => return KeepaliveError::Ping(e),
                Err(_) => {
                    let now = received.load(Ordering::Relaxed);
                    if now == seen {
                        return KeepaliveError::NoPong(timeout);
                    }
                    // Bytes came meanwhile: the pong is behind them; wait for it again.
                    seen = now;
                }
            }
        }
    }
}

/// A transport that counts the bytes read through it.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    received: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    /// `inner`, and the count of bytes read from it.
    pub fn new(inner: T) -> (Counted<T>, Arc<AtomicU64>) {
        let received = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner,
            received: Arc::clone(&received),
        };
        (counted, received)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
