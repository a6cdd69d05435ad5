//! Serving one HTTP/1.1 client connection with hyper, and parking it while it is idle.
//!
//! hyper keeps about 16 KB of buffers for every open connection, idle or not. A proxy in front
//! of a Service holds thousands of idle keep-alive connections, so once a connection has been
//! quiet for a moment after a complete exchange, the hyper connection is shut down *without*
//! closing the socket (`poll_without_shutdown` + `into_parts`), its buffers are freed, and the
//! bare socket waits in the parking lot (`parking.rs`) with no task of its own. The next
//! request starts a fresh task and hyper connection on the same socket; the client never
//! notices. Only a connection between two complete exchanges is
//! parked: one that went quiet mid-exchange (a request body the upstream answered early and
//! abandoned) is closed when hyper is done with it, so late body bytes are never read as a
//! request. Absolute-form targets are made origin-form before routing. Upgrades (WebSocket)
//! come out of the same door: the socket is taken back from hyper and spliced to the
//! upstream's upgraded connection.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::parking::{Held, ParkingLot};
use super::{after_tokio, earliest, signalled, ListenConfig};
use crate::io::Prefixed;
use crate::proxy::{Proxy, UpgradeSlot, Wire};

/// Counts reads and writes so the connection task can tell a quiet connection from a busy one.
#[derive(Debug, Default)]
struct Activity {
    reads: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    reads: u64,
    writes: u64,
}

impl Activity {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

pin_project_lite::pin_project! {
    struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
        // Set when the last I/O event was a write: a response went out after the last request
        // bytes came in, which is what "between requests" looks like.
        last_was_write: Arc<std::sync::atomic::AtomicBool>,
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            this.last_was_write.store(false, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.writes.fetch_add(1, Ordering::Relaxed);
            this.last_was_write.store(true, Ordering::Relaxed);
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
            this.activity.writes.fetch_add(1, Ordering::Relaxed);
            this.last_was_write.store(true, Ordering::Relaxed);
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

/// Quiet checks per `--idle-park-after`; a connection is parked after this many in a row.
const PARK_CHECKS: u32 = 4;

/// How one hyper connection on the socket ended.
enum Ended {
    /// We parked it: the socket is open and idle; here it is with any unread bytes.
    Parked(Prefixed<TcpStream>),
    /// The client upgraded; splice its socket with the upstream.
    Upgraded(Prefixed<TcpStream>, OnUpgrade),
    /// Closed (by the client, by an error, or by shutdown).
    Closed,
}

/// What the quiet-connection check decided for the current hyper connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Not quiet yet (or never checked).
    Serving,
    /// Was idle between exchanges: hand back the socket.
    Parking,
    /// Was quiet mid-exchange: let hyper finish it, then close the socket.
    Closing,
}

/// What every HTTP/1.1 connection of one router shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub proxy: Arc<Proxy>,
    pub cfg: Arc<ListenConfig>,
    pub lot: Arc<ParkingLot>,
    pub shutdown: watch::Receiver<bool>,
}

/// Serves HTTP/1.1 on `io` until the client goes away, shutdown is signalled, or the
/// connection goes idle between two exchanges: then its hyper state is freed and the bare
/// socket, with what it holds (`held`), moves to the parking lot, which ends this task and
/// starts a new one when the client speaks again.
pub async fn serve(
    mut io: Prefixed<TcpStream>,
    peer: SocketAddr,
    port: u16,
    held: Held,
    shared: Shared,
) {
    let Shared {
        proxy,
        cfg,
        lot,
        mut shutdown,
    } = shared;
    loop {
        match serve_until_idle(io, peer, port, &proxy, &cfg, &mut shutdown).await {
            Ended::Closed => return,
            Ended::Upgraded(client, upstream) => {
                crate::serve::splice::splice_upgraded(client, upstream, cfg.splice_idle_timeout)
                    .await;
                return;
            }
            Ended::Parked(parked) => {
                let (prefix, stream) = parked.into_parts();
                if prefix.is_empty() {
                    if let Err(e) = lot.park(stream, peer, port, held) {
                        tracing::debug!(%peer, error = %e, "idle keep-alive connection closed: not parked");
                    }
                    return;
                }
                // Bytes of the next request came with the last one: serve them at once.
                io = Prefixed::new(prefix, stream);
            }
        }
    }
}

async fn serve_until_idle(
    io: Prefixed<TcpStream>,
    peer: SocketAddr,
    port: u16,
    proxy: &Arc<Proxy>,
    cfg: &ListenConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let activity = Arc::new(Activity::default());
    let last_was_write = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The client asked to close after an exchange: hyper ends its side of the connection
    // with the response, so a quiet one may still owe request body bytes; never parked.
    let client_closes = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slot = UpgradeSlot::default();
    let svc = {
        let proxy = Arc::clone(proxy);
        let slot = slot.clone();
        let client_closes = Arc::clone(&client_closes);
        service_fn(move |mut req| {
            let proxy = Arc::clone(&proxy);
            if crate::headers::client_closes(&req) {
                client_closes.store(true, Ordering::Relaxed);
            }
            crate::headers::to_origin_form(&mut req);
            // Only an Upgrade needs the slot (`proxy.rs` takes it in the same case): a first
            // extension costs every request a map and a box.
            if crate::headers::is_upgrade(req.headers()) {
                req.extensions_mut().insert(slot.clone());
            }
            // Boxed so the connection is Unpin, which `poll_without_shutdown` needs.
            let fut = async move {
                if crate::headers::has_unsupported_transfer_coding(req.headers()) {
                    return Ok(unsupported_transfer_coding());
                }
                let req = req.map(crate::body::ClientBody::Http1);
                Ok::<_, std::convert::Infallible>(proxy.handle(req, port, Wire::Http1).await)
            };
            Box::pin(fut)
        })
    };
    let watched = Watched {
        inner: io,
        activity: Arc::clone(&activity),
        last_was_write: Arc::clone(&last_was_write),
    };
    let mut conn = Box::new(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(watched), svc),
    );
    let mut quiet = Quiet::Serving;
    let mut stopping = false;
    let mut seen = activity.snapshot();
    // Checked PARK_CHECKS times per --idle-park-after: a connection is parked between one and
    // 1.25 park delays after its last byte (checking once per delay took up to two).
    let check = (cfg.idle_park_after / PARK_CHECKS).max(std::time::Duration::from_millis(1));
    let mut quiet_checks = 0;
    // No byte either way for this long while hyper still runs the connection: a client that
    // stopped reading its response, or any other stall the per-wait timeouts do not end.
    let stall_every = cfg.exchange_stall_timeout;
    let mut stall_seen = seen;
    // One timer for both checks, at the earlier of the two (None: that check is off): the
    // loop polls its timers on every wake of the connection, that is several times per
    // request.
    let begun = tokio::time::Instant::now();
    let mut tick_at = Some(after_tokio(begun, check));
    let mut stall_at = (!stall_every.is_zero()).then(|| after_tokio(begun, stall_every));
    let timer = tokio::time::sleep_until(earliest(tick_at, stall_at).unwrap_or(begun));
    tokio::pin!(timer);
    // Made once: a new one per turn of the loop would join and leave the watch's waiters
    // each time the connection wakes.
    let stop = signalled(shutdown);
    tokio::pin!(stop);
    let result = loop {
        // The connection first: a request hyper can read now is read before a shutdown
        // signalled meanwhile asks it to close, so the drain answers it (with `Connection:
        // close`) rather than dropping it unanswered.
        tokio::select! {
            biased;
            r = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = &mut timer, if tick_at.is_some() || stall_at.is_some() => {
                let now = tokio::time::Instant::now();
                if stall_at.is_some_and(|at| at <= now) {
                    let snap = activity.snapshot();
                    if snap == stall_seen {
                        tracing::debug!(%peer, "http1 connection stalled mid-exchange; closing");
                        return Ended::Closed;
                    }
                    stall_seen = snap;
                    stall_at = Some(after_tokio(now, stall_every));
                }
                if tick_at.is_some_and(|at| at <= now) {
                    tick_at = Some(after_tokio(now, check));
                    let snap = activity.snapshot();
                    if snap == seen {
                        quiet_checks += 1;
                    } else {
                        seen = snap;
                        quiet_checks = 0;
                    }
                    if quiet_checks >= PARK_CHECKS
                        && last_was_write.load(Ordering::Relaxed)
                        && !client_closes.load(Ordering::Relaxed)
                    {
                        // Quiet since a response went out. hyper finishes at once only when
                        // the last exchange is complete both ways (unless the client asked to
                        // close: then its side ended with the response, so such a connection
                        // is left to hyper, which closes it); one still waiting for request
                        // body bytes (a body the upstream answered early and then abandoned)
                        // must not be parked, or those bytes would be read as a request of
                        // their own.
                        Pin::new(&mut *conn).graceful_shutdown();
                        match poll_fn(|cx| Poll::Ready(conn.poll_without_shutdown(cx))).await {
                            Poll::Ready(r) => {
                                quiet = Quiet::Parking;
                                break r;
                            }
                            Poll::Pending => {
                                quiet = Quiet::Closing;
                                tick_at = None;
                            }
                        }
                    }
                }
                if let Some(next) = earliest(tick_at, stall_at) {
                    timer.as_mut().reset(next);
                }
            }
            _ = &mut stop, if !stopping => {
                Pin::new(&mut *conn).graceful_shutdown();
                stopping = true;
                // No parking once stopping; the stall check goes on.
                tick_at = None;
                if let Some(next) = stall_at {
                    timer.as_mut().reset(next);
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http1 connection ended with error");
        return Ended::Closed;
    }
    let parts = conn.into_parts();
    let read_buf: Bytes = parts.read_buf;
    let client = parts.io.into_inner().inner;
    let (prefix, mut stream) = client.into_parts();
    // Bytes hyper read but did not use (a pipelined request, or the first upgraded bytes).
    // Copied out: `read_buf` is a view into hyper's whole read buffer, and keeping the view
    // would keep the buffer — exactly what parking is meant to free.
    let leftover = match (prefix.is_empty(), read_buf.is_empty()) {
        (true, true) => Bytes::new(),
        (true, false) => Bytes::copy_from_slice(&read_buf),
        _ => {
            let mut b = BytesMut::with_capacity(prefix.len() + read_buf.len());
            b.extend_from_slice(&prefix);
            b.extend_from_slice(&read_buf);
            b.freeze()
        }
    };
    if let Some(upstream) = slot.take() {
        return Ended::Upgraded(Prefixed::new(leftover, stream), upstream);
    }
    if quiet == Quiet::Parking && !stopping {
        return Ended::Parked(Prefixed::new(leftover, stream));
    }
    // hyper finished on its own (client asked to close, or shutdown): close as hyper would.
    let _ = stream.shutdown().await;
    Ended::Closed
}

/// 501 for a request framed with a transfer coding other than `chunked`; the body cannot be
/// skipped safely, so the connection is closed after the answer.
fn unsupported_transfer_coding() -> http::Response<crate::body::RouterBody> {
    let mut resp = http::Response::new(crate::body::RouterBody::local(
        "ktx-router: only the chunked transfer coding is supported\n",
    ));
    *resp.status_mut() = http::StatusCode::NOT_IMPLEMENTED;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    h.insert("x-ktx-error", http::HeaderValue::from_static("client"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_too_far_for_the_clock_is_about_never_not_a_panic() {
        let now = tokio::time::Instant::now();
        assert!(
            after_tokio(now, Duration::MAX)
                > after_tokio(now, Duration::from_secs(365 * 24 * 3600))
        );
        assert_eq!(
            after_tokio(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn earliest_ignores_a_check_that_is_off() {
        let now = tokio::time::Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(now), None), Some(now));
        assert_eq!(earliest::<tokio::time::Instant>(None, None), None);
    }
}
