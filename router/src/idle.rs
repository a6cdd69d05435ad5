//! Idle detection for whole connections (h2c, TCP passthrough, upgraded WebSockets): a stream
//! wrapper that counts reads and writes, and a watchdog that resolves once the count has not
//! moved for the idle timeout. "Idle" means no bytes in either direction, so a long-lived
//! gRPC stream or WebSocket that keeps moving is never cut.
//!
//! The watchdog sleeps one timeout at a time and compares counts, so a connection is closed
//! between one and two timeouts after its last byte; the I/O path only bumps a counter.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads and writes seen on a connection.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

impl Activity {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// `inner`, counting every read or write that moved bytes.
    #[derive(Debug)]
    pub struct Tracked<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S> Tracked<S> {
    pub fn new(inner: S) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity::default());
        (
            Tracked {
                inner,
                activity: Arc::clone(&activity),
            },
            activity,
        )
    }
}

impl<S: AsyncRead> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bump();
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bump();
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bump();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Resolves once `activity` has not moved for `first` (the first period) or, after that, for
/// `idle`. A zero `first` means `idle` from the start; a zero `idle` turns the bound off after
/// the first period.
pub async fn quiet_for(activity: &Activity, first: Duration, idle: Duration) {
    let mut period = if first.is_zero() { idle } else { first };
    let mut seen = activity.get();
    loop {
        if period.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(period).await;
        let now = activity.get();
        if now == seen {
            return;
        }
        seen = now;
        period = idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn resolves_only_after_a_quiet_period() {
        let a = Arc::new(Activity::default());
        let t0 = tokio::time::Instant::now();
        let mover = {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    a.bump();
                }
            })
        };
        quiet_for(&a, Duration::from_millis(100), Duration::from_millis(100)).await;
        mover.await.unwrap();
        let waited = t0.elapsed();
        // Moving for 500 ms, then quiet: resolves between 100 and 200 ms after the last byte.
        assert!(
            waited >= Duration::from_millis(600) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_first_period_falls_back_to_the_idle_bound() {
        let a = Activity::default();
        let t0 = tokio::time::Instant::now();
        quiet_for(&a, Duration::ZERO, Duration::from_millis(30)).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_period_can_be_shorter() {
        let a = Activity::default();
        let t0 = tokio::time::Instant::now();
        quiet_for(&a, Duration::from_millis(10), Duration::from_secs(60)).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
    }
}
