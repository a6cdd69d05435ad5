//! Accepting connections: per listening port, accept → sniff the first bytes → serve as
//! HTTP/1.1, h2c or plain TCP. Each connection watches the shutdown signal and, when it fires,
//! finishes its in-flight requests and closes (graceful drain).

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

use crate::io::Prefixed;
use crate::metrics::{ConnGuard, Proto};
use crate::proxy::{Proxy, Wire};
use crate::sniff::{sniff, Sniffed};

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
}

/// Accepts until `shutdown` turns true; every connection task holds a clone of `drained`'s
/// receiver, so the caller knows when all have finished.
pub async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    cfg: Arc<ListenConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let proxy = Arc::clone(&proxy);
                let cfg = Arc::clone(&cfg);
                let shutdown = shutdown.clone();
                let span = tracing::debug_span!("conn", %peer, port);
                tokio::spawn(
                    serve_connection(stream, peer, port, proxy, cfg, shutdown).instrument(span),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        Proto::tcp => crate::tcp::passthrough(&proxy, io, port, peer).await,
        Proto::http1 => crate::http1::serve(io, peer, port, proxy, cfg, shutdown).await,
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
    let svc = service_fn(move |req| {
        let p = Arc::clone(&proxy);
        async move { Ok::<_, std::convert::Infallible>(p.handle(req, port, Wire::H2).await) }
    });
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
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
