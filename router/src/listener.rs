//! Accepting connections: per listening port, accept → sniff the first bytes → serve as
//! HTTP/1.1, h2c or plain TCP. Each connection watches the shutdown signal and, when it fires,
//! finishes its in-flight requests and closes (graceful drain).
//!
//! Overload (see `admission.rs`): a connection over a limit is accepted and closed at once, so
//! the client learns right away instead of waiting in the kernel's backlog, and the open ones
//! keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::admission::{Admission, Admitted};
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::metrics::{ConnGuard, Proto};
use crate::proxy::{Proxy, Wire};
use crate::sniff::{sniff, Sniffed};
use crate::serve::splice::SpliceIdle;
use crate::upstream::H2Pool;

/// Connection-level settings of the listeners.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// How long to wait for a client's first bytes before treating it as plain TCP (protocols
    /// where the server speaks first).
    pub sniff_timeout: Duration,
    /// Time allowed to receive a complete HTTP/1.1 request head (slowloris guard).
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// A keep-alive connection quiet this long after a response is parked (buffers freed).
    pub idle_park_after: Duration,
    /// A parked connection with no new request for this long is closed.
    pub client_idle_timeout: Duration,
    /// Receive windows of downstream h2c connections: the most one client's stream, and one
    /// client connection, can make the router buffer of request bodies.
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    /// An HTTP/1.1 connection in the middle of an exchange with no bytes either way for this
    /// long is closed (the longest legitimate pause: the response-header or the body idle
    /// timeout).
    pub exchange_stall_timeout: Duration,
    /// An h2c connection with no bytes either way for this long is closed.
    pub h2c_idle_timeout: Duration,
    /// A TCP passthrough or upgraded connection with no bytes either way for this long is
    /// closed.
    pub splice_idle_timeout: Duration,
    /// A client silent until the sniff timeout is passed through only if the upstream speaks
    /// within this long.
    pub silent_upstream_timeout: Duration,
}

/// Sleeps after a failed accept. EMFILE and friends do not clear by retrying at once, and an
/// immediate retry would spin a core; the pause doubles from 5 ms to 1 s while failures repeat.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    pub async fn failed(&mut self) {
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        tokio::time::sleep(self.pause).await;
    }
}

/// Accepts until `shutdown` turns true; every connection task holds a clone of `drained`'s
/// receiver, so the caller knows when all have finished.
pub async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    cfg: Arc<ListenConfig>,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let slot = match admission.admit(peer.ip()) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        // Overloaded: close now (the client sees the connection end at once)
                        // and keep serving the connections already open.
                        tracing::debug!(%peer, port, reason = reason.as_str(), "refused a new connection");
                        drop(stream);
                        continue;
                    }
                };
                let proxy = Arc::clone(&proxy);
                let cfg = Arc::clone(&cfg);
                let shutdown = shutdown.clone();
                let span = tracing::debug_span!("conn", %peer, port);
                tokio::spawn(
                    serve_connection(stream, peer, port, proxy, cfg, slot, shutdown)
                        .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "accept failed");
                backoff.failed().await;
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    proxy: Arc<Proxy>,
    cfg: Arc<ListenConfig>,
    _slot: Admitted,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(32);
    let proto = loop {
        match sniff(&buf) {
            Sniffed::NeedMore => {}
            Sniffed::Http1 => break Proto::http1,
            Sniffed::H2c => break Proto::h2c,
            Sniffed::Tcp => break Proto::tcp,
        }
        match tokio::time::timeout(cfg.sniff_timeout, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return, // closed before saying anything
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "read failed while sniffing");
                return;
            }
            // Silent client: maybe a server-speaks-first protocol. Pass it through.
            Err(_) => break Proto::tcp,
        }
    };
    let _guard = ConnGuard::new(&proxy.metrics, proto);
    let io = Prefixed::new(buf.freeze(), stream);
    tracing::debug!(proto = ?proto, "accepted");
    match proto {
        Proto::tcp => {
            let bounds = SpliceIdle {
                idle: cfg.splice_idle_timeout,
                silent_first: cfg.silent_upstream_timeout,
            };
            crate::serve::splice::passthrough(&proxy, io, port, peer, bounds).await
        }
        Proto::http1 => crate::serve::http1::serve(io, peer, port, proxy, cfg, shutdown).await,
        // Boxed so every connection's task is not as large as an HTTP/2 connection's state.
        Proto::h2c => Box::pin(serve_h2c(io, peer, port, proxy, cfg, shutdown)).await,
    }
}

async fn serve_h2c(
    io: Prefixed<TcpStream>,
    peer: SocketAddr,
    port: u16,
    proxy: Arc<Proxy>,
    cfg: Arc<ListenConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    // This connection's own upstream connections (see `upstream::H2Pool`), unless the
    // operator chose one pool for all clients (`--upstream-h2-shared`).
    let pool = match &proxy.shared_h2 {
        Some(shared) => Arc::clone(shared),
        None => Arc::new(H2Pool::new(Arc::clone(&proxy.upstreams))),
    };
    let svc = service_fn(move |req| {
        let p = Arc::clone(&proxy);
        let pool = Arc::clone(&pool);
        async move { Ok::<_, std::convert::Infallible>(p.handle(req, port, Wire::H2(&pool)).await) }
    });
    let (io, activity) = Tracked::new(io);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        .initial_stream_window_size(cfg.h2_stream_window)
        .initial_connection_window_size(cfg.h2_connection_window)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = cfg.h2c_idle_timeout;
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = quiet_for(&activity, idle, idle) => {
            // No byte either way for the idle timeout: whatever streams remain are stalled.
            tracing::debug!(%peer, "h2c connection closed after the idle timeout");
            return;
        }
        _ = signalled(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "h2c connection ended with error");
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
