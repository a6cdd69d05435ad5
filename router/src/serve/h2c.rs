//! Serving one h2c connection with hyper's HTTP/2 server: each stream is one request for the
//! proxy core, on this connection's own upstream HTTP/2 pool (or the shared one with
//! `--upstream-h2-shared`). The connection is closed after `--h2c-idle-timeout` without a
//! byte either way, and drained gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{signalled, ListenConfig};
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::proxy::{Proxy, Wire};
use crate::upstream::H2Pool;

pub async fn serve(
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
        None => Arc::new(H2Pool::per_client(
            Arc::clone(&proxy.upstreams),
            proxy.shared_conns.clone(),
        )),
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
