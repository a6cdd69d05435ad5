//! The admin port: `/healthz` (the process runs), `/readyz` (200 only while a tunnel session
//! is up, every service port listens for it and the shadow is not draining — see [`crate::ready`]),
//! `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
}

impl AdminState {
    pub fn ready(&self) -> bool {
        self.readiness.is_ready()
    }
}

fn respond(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if state.ready() => (StatusCode::OK, "ready: tunnel up\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no tunnel from ktx\n".to_string(),
        ),
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

/// Serves the admin port until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    crate::accept_failed(&e).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = respond(&req, &state);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended with error");
            }
        });
    }
}
