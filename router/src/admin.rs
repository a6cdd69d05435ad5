//! The admin port's answers: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (listeners bound, a route table loaded, not draining), `/routes` (the table in use
//! as JSON, [`ktx_rules::applied::AppliedTable`]: how ktx learns that a rule is applied). The
//! server itself, with its bounds, is [`ktx_telemetry::admin`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
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

fn respond(path: &str, state: &AdminState) -> Reply {
    match path {
        "/healthz" => admin::text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state),
        "/metrics" => admin::metrics(&state.registry),
        ROUTES_PATH => admin::json(&applied(state)),
        _ => admin::text(
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz, /readyz or /routes\n",
        ),
    }
}

fn readyz(state: &AdminState) -> Reply {
    if *state.ready.borrow() && !state.draining.load(Ordering::Relaxed) {
        admin::text(StatusCode::OK, "ready\n")
    } else {
        admin::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the admin port until `shutdown` turns true. A `/readyz` probe that comes before the
/// router was first ready (its first route table and Endpoints list still on their way) is held
/// for it ([`admin::serve_probed`]). Readiness never goes back to "not loaded": once ready, only
/// a drain makes the router not ready, and that is answered without waiting.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let limits = admin::Limits {
        header_timeout: state.header_timeout,
    };
    let ready = state.ready.clone();
    admin::serve_probed(
        listener,
        limits,
        admin::READY_HOLD,
        move |path| respond(path, &state),
        move || {
            let mut ready = ready.clone();
            let loaded = *ready.borrow();
            (!loaded).then_some(async move {
                let _ = ready.wait_for(|r| *r).await;
            })
        },
        async move { crate::listener::signalled(&mut shutdown).await },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Running {
        addr: SocketAddr,
        ready: watch::Sender<bool>,
        draining: Arc<AtomicBool>,
        _stop: watch::Sender<bool>,
    }

    async fn start() -> Running {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (ready, ready_rx) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));
        let (_, table) = watch::channel(Arc::new(crate::unreachable_table()));
        let state = AdminState {
            registry: Arc::new(Mutex::new(registry)),
            ready: ready_rx,
            draining: Arc::clone(&draining),
            header_timeout: Duration::from_secs(5),
            table,
            metrics,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(listener, state, stop_rx));
        Running {
            addr,
            ready,
            draining,
            _stop: stop,
        }
    }

    /// GET `path`: the status code and how long the answer took.
    async fn get(addr: SocketAddr, path: &str) -> (u16, Duration) {
        let t0 = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, t0.elapsed())
    }

    #[tokio::test]
    async fn a_probe_before_the_first_ready_is_answered_when_the_router_gets_ready() {
        let r = start().await;
        let probe = tokio::spawn(get(r.addr, "/readyz"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.ready.send_replace(true);
        let (code, took) = probe.await.unwrap();
        assert_eq!(code, 200);
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_drain_after_ready_is_answered_at_once() {
        let r = start().await;
        r.ready.send_replace(true);
        assert_eq!(get(r.addr, "/readyz").await.0, 200);
        r.draining.store(true, Ordering::Relaxed);
        let (code, took) = get(r.addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(took < admin::READY_HOLD / 2, "{took:?}");
    }
}
