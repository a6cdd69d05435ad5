//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process runs), `/readyz`
//! (listeners bound, a route table loaded, not draining).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin endpoints report.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub registry: Arc<Mutex<Registry>>,
    pub ready: watch::Receiver<bool>,
    /// Set on SIGTERM: not ready any more, so Kubernetes stops sending new connections.
    pub draining: Arc<AtomicBool>,
    /// A client must send its request head within this long (a slow client cannot hold an
    /// admin connection open forever).
    pub header_timeout: Duration,
}

fn respond(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if *state.ready.borrow() && !state.draining.load(Ordering::Relaxed) => {
            (StatusCode::OK, "ready\n".to_string())
        }
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        "/metrics" => {
            let mut out = String::new();
            let registry = state
                .registry
                .lock()
                .expect("registry lock is never held across a panic");
            match prometheus_client::encoding::text::encode(&mut out, &registry) {
                Ok(()) => (StatusCode::OK, out),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encode metrics: {e}\n"),
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = crate::listener::AcceptBackoff::default();
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    backoff.failed().await;
                    continue;
                }
            },
            _ = crate::listener::signalled(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let header_timeout = state.header_timeout;
            let svc = service_fn(move |req| {
                let r = respond(&req, &state);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended with error");
            }
        });
    }
}
