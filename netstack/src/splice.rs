//! Copies bytes both ways between a local flow and a dialed stream, with half-close.
//!
//! `tokio::io::copy_bidirectional_with_sizes` already does what a splice must: each direction
//! is copied through a fixed buffer (backpressure: nothing is read that cannot be written), and
//! an EOF on one side becomes a `shutdown` (FIN) on the other while the reverse direction keeps
//! flowing. The idle timeout bounds a flow that neither side uses.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// Per-direction copy buffer: one flow costs at most twice this in the splice.
pub const SPLICE_BUFFER: usize = 64 * 1024;

/// Bytes carried each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    pub to_remote: u64,
    pub to_local: u64,
}

/// Splices `local` and `remote` until both directions ended, or `idle` passes with no byte moved
/// either way (then both are dropped, which resets them).
pub async fn splice<L, R>(local: &mut L, remote: &mut R, idle: Duration) -> io::Result<Carried>
where
    L: AsyncRead + AsyncWrite + Unpin + ?Sized,
    R: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Arc::new(Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut local = Idle::new(local, idle, activity.clone());
    let mut remote = Idle::new(remote, idle, activity);
    let (to_remote, to_local) = tokio::io::copy_bidirectional_with_sizes(
        &mut local,
        &mut remote,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await?;
    Ok(Carried {
        to_remote,
        to_local,
    })
}

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// When a byte last moved in either direction (the two halves share it).
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Wraps one side so a read that waits while nothing moved for `idle` fails with `TimedOut`.
struct Idle<'a, S: ?Sized> {
    inner: &'a mut S,
    idle: Duration,
    activity: Arc<Activity>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<'a, S: ?Sized> Idle<'a, S> {
    fn new(inner: &'a mut S, idle: Duration, activity: Arc<Activity>) -> Self {
        Idle {
            inner,
            idle,
            activity,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Idle<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut *this.inner).poll_read(cx, buf) {
            this.activity.touch();
            return Poll::Ready(r);
        }
        loop {
            let due = this.activity.last() + this.idle;
            if this.deadline.deadline() != due {
                this.deadline.as_mut().reset(due);
            }
            match this.deadline.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if this.activity.last() + this.idle <= Instant::now() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "flow idle for too long",
                    )))
                }
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Idle<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_busy_direction_keeps_an_idle_one_alive_and_half_close_passes_through() {
        let (mut local, mut local_peer) = duplex(1024);
        let (mut remote, mut remote_peer) = duplex(1024);
        let idle = Duration::from_secs(10);
        let spliced = tokio::spawn(async move { splice(&mut local, &mut remote, idle).await });
        // the client says nothing for 30 s while the server streams every 5 s
        for _ in 0..6 {
            remote_peer.write_all(b"tick").await.unwrap();
            let mut got = [0u8; 4];
            local_peer.read_exact(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        // the client half-closes; the server still answers, then closes
        local_peer.shutdown().await.unwrap();
        let mut eof = [0u8; 1];
        assert_eq!(
            remote_peer.read(&mut eof).await.unwrap(),
            0,
            "FIN passed on"
        );
        remote_peer.write_all(b"bye").await.unwrap();
        remote_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        local_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        let carried = spliced.await.unwrap().unwrap();
        assert_eq!(
            carried,
            Carried {
                to_remote: 0,
                to_local: 27
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flow_idle_both_ways_times_out() {
        let (mut local, _local_peer) = duplex(1024);
        let (mut remote, _remote_peer) = duplex(1024);
        let started = tokio::time::Instant::now();
        let err = splice(&mut local, &mut remote, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
