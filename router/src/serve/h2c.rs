//! Serving one h2c connection with hyper's HTTP/2 server: each stream is one request for the
//! proxy core, on this connection's own upstream HTTP/2 pool (or the shared one with
//! `--upstream-h2-shared`). The connection is closed after `--h2c-idle-timeout` without a
//! byte either way, and drained gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{signalled, ListenConfig};
use crate::exec::{Driven, Exec, Local};
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::proxy::{Proxy, Wire};
use crate::upstream::H2Pool;

/// How long a finished connection keeps driving what it started before dropping it: its own
/// upstream connections close once their last stream ended (at once when none is left).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

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
    // Its streams and its own upstream connections run in this task (see `crate::exec`).
    let local = Local::default();
    let exec = Exec::Local(local.clone());
    let pool = match &proxy.shared_h2 {
        Some(shared) => Arc::clone(shared),
        None => Arc::new(H2Pool::per_client(
            Arc::clone(&proxy.upstreams),
            proxy.shared_conns.clone(),
            exec.clone(),
        )),
    };
    let svc = service_fn(move |req| {
        let p = Arc::clone(&proxy);
        let pool = Arc::clone(&pool);
        async move { Ok::<_, std::convert::Infallible>(p.handle(req, port, Wire::H2(&pool)).await) }
    });
    let (io, activity) = Tracked::new(io);
    let conn = http2::Builder::new(exec)
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        .initial_stream_window_size(cfg.h2_stream_window)
        .initial_connection_window_size(cfg.h2_connection_window)
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = Driven::new(conn, local);
    let idle = cfg.h2c_idle_timeout;
    let result = tokio::select! {
        r = &mut conn => r,
        _ = quiet_for(&activity, idle, idle) => {
            // No byte either way for the idle timeout: whatever streams remain are stalled.
            tracing::debug!(%peer, "h2c connection closed after the idle timeout");
            return;
        }
        _ = signalled(&mut shutdown) => {
            if let Some(main) = conn.main() {
                main.graceful_shutdown();
            }
            (&mut conn).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "h2c connection ended with error");
    }
    // What is left: upstream connections closing, streams the client's end cut short.
    if conn.running() > 0 && tokio::time::timeout(LINGER, conn.drain()).await.is_err() {
        tracing::debug!(%peer, left = conn.running(), "h2c connection: tasks dropped after the linger");
    }
}
