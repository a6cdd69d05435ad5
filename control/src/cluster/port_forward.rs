//! The ktx end's way to a shadow pod: the API server's port-forward, as a [`Connector`] for the
//! tunnel client. It rides SPDY/3.1 ([`spdy::SpdyIo`], what `kubectl port-forward` speaks),
//! and the WebSocket ([`io::PortForwardIo`]) where the SPDY upgrade is refused (a proxy in
//! front of the API server that passes only WebSockets, say); after one such refusal the
//! process stays on the WebSocket (it talks to one API server). `KTX_PORT_FORWARD=spdy|websocket` pins one (default
//! `auto`). SPDY first because the container runtime's streaming server spends about three
//! times the CPU per byte on the WebSocket (see `spdy.rs`).
//!
//! Every tunnel attempt opens a fresh port-forward to the pod's tunnel port, so a restarted pod,
//! an API server hiccup or a dropped WebSocket is handled by the client's reconnect with
//! backoff. The stream handed to the client owns its port-forward ([`io::PortForwardIo`]):
//! dropping it closes the WebSocket, so no forward outlives its tunnel session. Nothing here
//! listens on a local port.

mod io;
mod spdy;
#[cfg(test)]
mod spdy_tests;
#[cfg(test)]
mod tests;

use std::io::Error as IoError;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use ktx_tunnel::client::{BoxFuture, BoxIo, Connector};
use kube::{Client, Resource};

pub use io::PortForwardIo;
pub use spdy::SpdyIo;

/// The environment variable that pins the transport.
pub const TRANSPORT_ENV: &str = "KTX_PORT_FORWARD";

/// Which transport a port-forward rides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SPDY, and the WebSocket where the SPDY upgrade is refused.
    Auto,
    Spdy,
    WebSocket,
}

impl Transport {
    /// `KTX_PORT_FORWARD`: `auto` (or unset), `spdy` or `websocket`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(Transport::Auto),
            Some("spdy") => Ok(Transport::Spdy),
            Some("websocket" | "ws") => Ok(Transport::WebSocket),
            Some(other) => Err(format!(
                "{TRANSPORT_ENV}={other:?} is not a port-forward transport: use auto, spdy or websocket"
            )),
        }
    }

    fn from_env() -> Result<Self, String> {
        Transport::parse(std::env::var(TRANSPORT_ENV).ok().as_deref())
    }
}

/// Why the SPDY way did not give a stream.
enum SpdyError {
    /// The upgrade was refused: the WebSocket may still work.
    Refused(String),
    /// The upgrade was accepted and then the port-forward failed.
    Failed(std::io::Error),
}

/// Connects to `port` of `pod` through the API server.
#[derive(Clone)]
pub struct PortForwardConnector {
    client: Client,
    namespace: String,
    pod: String,
    port: u16,
}

/// Set once a SPDY upgrade was refused and the WebSocket worked (`Transport::Auto`): every
/// later port-forward of this process (`ktx forward` opens one per connection) goes straight
/// to the WebSocket.
static WEBSOCKET_ONLY: AtomicBool = AtomicBool::new(false);

impl std::fmt::Debug for PortForwardConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PortForwardConnector {
    pub fn new(client: Client, namespace: &str, pod: &str, port: u16) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            port,
        }
    }

    async fn open(&self) -> std::io::Result<BoxIo> {
        let transport = Transport::from_env().map_err(IoError::other)?;
        self.open_with(transport).await
    }

    async fn open_with(&self, transport: Transport) -> std::io::Result<BoxIo> {
        if transport == Transport::WebSocket || WEBSOCKET_ONLY.load(Ordering::Relaxed) {
            return self.open_websocket().await;
        }
        match self.open_spdy().await {
            Ok(io) => Ok(io),
            Err(SpdyError::Failed(e)) => Err(e),
            Err(SpdyError::Refused(why)) if transport == Transport::Spdy => Err(IoError::other(
                format!("{}: {why} ({TRANSPORT_ENV}=spdy)", self.describe()),
            )),
            Err(SpdyError::Refused(why)) => {
                let io = self.open_websocket().await?;
                tracing::info!(
                    forward = %self.describe(),
                    "the API server refused the SPDY port-forward ({why}); using its WebSocket from now on"
                );
                WEBSOCKET_ONLY.store(true, Ordering::Relaxed);
                Ok(io)
            }
        }
    }

    /// The port-forward as `kubectl port-forward` opens it: a POST upgraded to SPDY/3.1.
    async fn open_spdy(&self) -> Result<BoxIo, SpdyError> {
        use http::header::{CONNECTION, UPGRADE};
        let path = format!(
            "{}/{}/portforward",
            Pod::url_path(&(), Some(&self.namespace)),
            self.pod
        );
        let request = http::Request::post(path)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, spdy::UPGRADE)
            .header(STREAM_PROTOCOL, spdy::PROTOCOL)
            .body(kube::client::Body::from(Vec::new()))
            .map_err(|e| SpdyError::Refused(e.to_string()))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| SpdyError::Refused(api_error(&e)))?;
        let status = response.status();
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(SpdyError::Refused(format!(
                "it answered {status} to the SPDY upgrade"
            )));
        }
        let agreed = response
            .headers()
            .get(STREAM_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if agreed != Some(spdy::PROTOCOL) {
            return Err(SpdyError::Refused(format!(
                "it upgraded to SPDY with stream protocol {agreed:?}, not {}",
                spdy::PROTOCOL
            )));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| SpdyError::Refused(format!("the upgrade failed: {e}")))?;
        let io = SpdyIo::open(TokioIo::new(upgraded), self.port, self.describe())
            .await
            .map_err(SpdyError::Failed)?;
        Ok(Box::new(io))
    }

    async fn open_websocket(&self) -> std::io::Result<BoxIo> {
        let request = kube::core::Request::new(Pod::url_path(&(), Some(&self.namespace)))
            .portforward(&self.pod, &[self.port])
            .map_err(|e| IoError::other(format!("{}: {e}", self.describe())))?;
        let ws = self
            .client
            .connect(request)
            .await
            .map_err(|e| IoError::other(format!("{}: {}", self.describe(), api_error(&e))))?
            .into_stream();
        Ok(Box::new(PortForwardIo::new(ws, self.port, self.describe())))
    }
}

const STREAM_PROTOCOL: &str = "X-Stream-Protocol-Version";

/// What both transports keep for their errors: the port-forward's name, and the pod side's
/// error once one arrived, with which every later read and write fails.
#[derive(Debug)]
struct Failure {
    what: String,
    failed: Option<String>,
}

impl Failure {
    fn new(what: String) -> Self {
        Failure { what, failed: None }
    }

    fn error(&self, kind: std::io::ErrorKind, message: impl std::fmt::Display) -> IoError {
        IoError::new(kind, format!("{}: {message}", self.what))
    }

    fn check(&self) -> std::io::Result<()> {
        match &self.failed {
            Some(message) => Err(self.error(std::io::ErrorKind::ConnectionAborted, message)),
            None => Ok(()),
        }
    }

    /// Fails the stream with `message` (the first failure stays) and returns its error.
    fn fail(&mut self, message: String) -> IoError {
        self.failed.get_or_insert(message);
        self.check().expect_err("just failed")
    }
}

/// The API server's own words for a refusal (`pods "x" not found`, 403 …) rather than the
/// whole status object.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

impl Connector for PortForwardConnector {
    fn connect(&self) -> BoxFuture<'_, std::io::Result<BoxIo>> {
        Box::pin(self.open())
    }

    fn describe(&self) -> String {
        format!(
            "port-forward to pod {}/{} port {}",
            self.namespace, self.pod, self.port
        )
    }
}
