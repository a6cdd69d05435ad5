//! The admin port's answers: `/healthz` (the process runs), `/readyz` (200 only while a tunnel
//! session is up, every service port listens for it and the shadow is not draining — see
//! [`crate::ready`]), `/metrics`. The server itself, with its bounds, is
//! [`ktx_telemetry::admin`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use ktx_telemetry::admin::{self, Reply};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ready::Readiness;
use crate::stopped;

/// What the admin endpoints report.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub registry: Arc<Mutex<Registry>>,
    pub readiness: Arc<Readiness>,
    /// A client must send its request head within this long.
    pub header_timeout: Duration,
}

impl AdminState {
    pub fn ready(&self) -> bool {
        self.readiness.is_ready()
    }
}

fn respond(req: &Request<Incoming>, state: &AdminState) -> Reply {
    match req.uri().path() {
        "/healthz" => admin::text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready() && !state.readiness.needs_session() => {
            admin::text(StatusCode::OK, "ready: listening for ktx connect\n")
        }
        "/readyz" if state.ready() => admin::text(StatusCode::OK, "ready: tunnel up\n"),
        "/readyz" => admin::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no tunnel from ktx\n",
        ),
        "/metrics" => admin::metrics(&state.registry),
        _ => admin::text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    }
}

/// Serves the admin port until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) {
    let limits = admin::Limits {
        header_timeout: state.header_timeout,
    };
    admin::serve(
        listener,
        limits,
        move |req: &Request<Incoming>| respond(req, &state),
        async move { stopped(&mut stop).await },
    )
    .await;
}
