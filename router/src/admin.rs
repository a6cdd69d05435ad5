//! The admin port's answers: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (listeners bound, a route table loaded, not draining), `/routes` (the table in use
//! as JSON, [`ktx_rules::applied::AppliedTable`]: how ktx learns that a rule is applied). The
//! server itself, with its bounds, is [`ktx_telemetry::admin`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use ktx_rules::applied::{AppliedTable, ROUTES_PATH};
use ktx_rules::RouteTable;
use ktx_telemetry::admin::{self, Reply};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{Metrics, ResultLabel};

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
    /// The table the request path uses.
    pub table: watch::Receiver<Arc<RouteTable>>,
    /// Its generation and the refused updates.
    pub metrics: Metrics,
}

/// What `/routes` says: the rules of the table in use, read from the table itself.
pub fn applied(state: &AdminState) -> AppliedTable {
    let table = Arc::clone(&state.table.borrow());
    let m = &state.metrics;
    let rejected = m
        .table_updates
        .get_or_create(&ResultLabel { result: "rejected" })
        .get();
    AppliedTable::of(
        &table,
        u64::try_from(m.table_version.get()).unwrap_or(0),
        rejected,
    )
}

fn respond(req: &Request<Incoming>, state: &AdminState) -> Reply {
    match req.uri().path() {
        "/healthz" => admin::text(StatusCode::OK, "ok\n"),
        "/readyz" if *state.ready.borrow() && !state.draining.load(Ordering::Relaxed) => {
            admin::text(StatusCode::OK, "ready\n")
        }
        "/readyz" => admin::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => admin::metrics(&state.registry),
        ROUTES_PATH => admin::json(&applied(state)),
        _ => admin::text(
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz, /readyz or /routes\n",
        ),
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
