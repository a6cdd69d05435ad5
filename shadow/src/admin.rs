//! The admin port's answers: `/healthz` (the process runs), `/readyz` (200 only while a tunnel
//! session is up, every service port listens for it and the shadow is not draining — see
//! [`crate::ready`]), `/metrics`. The server itself, with its bounds, is
//! [`ktx_telemetry::admin`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
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

fn respond(path: &str, state: &AdminState) -> Reply {
    match path {
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

/// Serves the admin port until `stop` turns true. A `/readyz` probe that comes before the shadow
/// was first ready (its pod starting, the tunnel from ktx on its way) is held for it
/// ([`admin::serve_probed`]): the kubelet then sees the shadow ready the moment the tunnel is
/// up, not at its next probe. Once the shadow has been ready, "not ready" (the tunnel gone) is
/// answered at once, so the router stops sending it traffic without delay.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) {
    let limits = admin::Limits {
        header_timeout: state.header_timeout,
    };
    let readiness = Arc::clone(&state.readiness);
    admin::serve_probed(
        listener,
        limits,
        admin::READY_HOLD,
        move |path| respond(path, &state),
        move || {
            let readiness = Arc::clone(&readiness);
            (!readiness.is_ready() && !readiness.was_ready())
                .then_some(async move { readiness.wait(true).await })
        },
        async move { stopped(&mut stop).await },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::Metrics;
    use crate::slot::Slot;

    /// An admin port over a readiness that needs no session and one listening port (as in
    /// connect mode): ready exactly while a `listening()` guard is held.
    async fn start() -> (SocketAddr, Arc<Readiness>, watch::Sender<bool>) {
        let mut registry = Registry::default();
        let slot = Slot::new(Metrics::new(&mut registry));
        let readiness = Readiness::new(slot, 1, false);
        let state = AdminState {
            registry: Arc::new(Mutex::new(registry)),
            readiness: Arc::clone(&readiness),
            header_timeout: Duration::from_secs(5),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(listener, state, stop_rx));
        (addr, readiness, stop)
    }

    /// GET `path`: the status code and how long the answer took.
    async fn get(addr: SocketAddr, path: &str) -> (u16, Duration) {
        let t0 = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        (out[9..12].parse().unwrap(), t0.elapsed())
    }

    #[tokio::test]
    async fn a_probe_before_the_first_ready_is_answered_when_the_shadow_gets_ready() {
        let (addr, readiness, _stop) = start().await;
        let probe = tokio::spawn(get(addr, "/readyz"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _listening = readiness.listening();
        let (code, took) = probe.await.unwrap();
        assert_eq!(code, 200);
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn not_ready_after_having_been_ready_is_answered_at_once() {
        let (addr, readiness, _stop) = start().await;
        let listening = readiness.listening();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        drop(listening);
        let (code, took) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(took < admin::READY_HOLD / 2, "{took:?}");
    }
}
