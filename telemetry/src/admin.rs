//! The admin port every ktx process in the cluster serves (`ktx-router`, `ktx-shadow`, `ktx
//! janitor`): plain HTTP/1.1 on its own listener, each request answered by the binary's own
//! `respond` function (which paths exist and what they say is the binary's business), every
//! connection bounded the same way — a request head must arrive within the header timeout and
//! fit in [`MAX_HEAD`] bytes, so a slow or chatty client cannot hold the port.
//!
//! Helpers build the common answers: [`text`], [`json`], [`metrics`] (Prometheus text from a
//! `prometheus-client` registry).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// An admin answer.
pub type Reply = Response<Full<Bytes>>;

/// The most a request head may take (hyper's smallest read buffer); a larger head closes the
/// connection.
pub const MAX_HEAD: usize = 8 * 1024;

/// The longest a `/readyz` probe waits for a starting process to become ready before it is
/// answered "not ready". The kubelet probes every second; answered at once, a probe that
/// arrives just before the process is ready makes the pod Ready only at the next probe, up to a
/// second later, and `ktx mesh` waits for that on its way to the first routed request. Held,
/// the probe is answered the moment the process is ready. Only until it first is: a process
/// that was ready and is not any more (a tunnel gone, a drain) answers at once, so Kubernetes
/// takes it out of its Services without delay. Below every probe's timeout (1 s).
pub const READY_HOLD: Duration = Duration::from_millis(700);

/// How each admin connection is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send a complete request head within this long.
    pub header_timeout: Duration,
}

/// `body` as `text/plain` with `status`.
pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

/// `value` as JSON (200), or a 500 that says why it could not be encoded.
pub fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encode JSON: {e}\n"),
        ),
    }
}

/// The registry's metrics as Prometheus text.
pub fn metrics(registry: &Mutex<Registry>) -> Reply {
    let mut out = String::new();
    // A panic while encoding leaves the registry as it was: use it anyway.
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out.into_bytes(),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encode metrics: {e}\n"),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Pauses after a failed `accept` (typically out of file descriptors) instead of spinning on
/// the same error: 5 ms, doubling up to 1 s, back to nothing after a success.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    async fn failed(&mut self) {
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        tokio::time::sleep(self.pause).await;
    }
}

/// Serves `listener` until `stop` resolves, answering every request with `respond`.
pub async fn serve<F>(
    listener: TcpListener,
    limits: Limits,
    respond: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn(&Request<Incoming>) -> Reply + Send + Sync + 'static,
{
    serve_async(
        listener,
        limits,
        move |req: &Request<Incoming>| std::future::ready(respond(req)),
        stop,
    )
    .await;
}

/// [`serve`] for a process Kubernetes probes for readiness (`ktx-router`, `ktx-shadow`): a
/// `/readyz` probe that comes before the process was first ready waits for it, at most `hold`
/// ([`READY_HOLD`]), before `respond` answers it. `until_first_ready` gives that wait, or `None`
/// once the process has been ready: a process that was ready and is not any more (a drain, a
/// tunnel gone) is answered at once, and so is every other path.
pub async fn serve_probed<F, W, R>(
    listener: TcpListener,
    limits: Limits,
    hold: Duration,
    respond: F,
    until_first_ready: W,
    stop: impl Future<Output = ()>,
) where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
    W: Fn() -> Option<R> + Send + Sync + 'static,
    R: Future<Output = ()> + Send + 'static,
{
    let respond = Arc::new(respond);
    serve_async(
        listener,
        limits,
        move |req: &Request<Incoming>| {
            let path = req.uri().path().to_owned();
            let wait = if path == "/readyz" {
                until_first_ready()
            } else {
                None
            };
            let respond = Arc::clone(&respond);
            async move {
                if let Some(wait) = wait {
                    let _ = tokio::time::timeout(hold, wait).await;
                }
                respond(&path)
            }
        },
        stop,
    )
    .await;
}

/// [`serve`] for an answer that may wait.
async fn serve_async<F, A>(
    listener: TcpListener,
    limits: Limits,
    respond: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn(&Request<Incoming>) -> A + Send + Sync + 'static,
    A: Future<Output = Reply> + Send + 'static,
{
    let respond = Arc::new(respond);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(stop);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => {
                    backoff = AcceptBackoff::default();
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    backoff.failed().await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let respond = Arc::clone(&respond);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = respond(&req);
                async move { Ok::<_, std::convert::Infallible>(r.await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended with error");
            }
        });
    }
}

#[cfg(test)]
mod tests;
