//! The admin port's answers: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (listeners bound, a route table loaded, not draining). The server itself, with its
//! bounds, is [`ktx_telemetry::admin`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use ktx_telemetry::admin::{self, Reply};
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

fn respond(req: &Request<Incoming>, state: &AdminState) -> Reply {
    match req.uri().path() {
        "/healthz" => admin::text(StatusCode::OK, "ok\n"),
        "/readyz" if *state.ready.borrow() && !state.draining.load(Ordering::Relaxed) => {
            admin::text(StatusCode::OK, "ready\n")
        }
        "/readyz" => admin::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => admin::metrics(&state.registry),
        _ => admin::text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    }
}

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let limits = admin::Limits {
        header_timeout: state.header_timeout,
    };
    admin::serve(
        listener,
        limits,
        move |req: &Request<Incoming>| respond(req, &state),
        async move { crate::listener::signalled(&mut shutdown).await },
    )
    .await;
}
