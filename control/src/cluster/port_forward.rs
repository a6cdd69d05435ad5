//! The ktx end's way to a shadow pod: the API server's port-forward (over a WebSocket that kube
//! opens and [`io::PortForwardIo`] speaks), as a [`Connector`] for the tunnel client.
//!
//! Every tunnel attempt opens a fresh port-forward to the pod's tunnel port, so a restarted pod,
//! an API server hiccup or a dropped WebSocket is handled by the client's reconnect with
//! backoff. The stream handed to the client owns its port-forward ([`io::PortForwardIo`]):
//! dropping it closes the WebSocket, so no forward outlives its tunnel session. Nothing here
//! listens on a local port.

mod io;
#[cfg(test)]
mod tests;

use std::io::Error as IoError;

use k8s_openapi::api::core::v1::Pod;
use ktx_tunnel::client::{BoxFuture, BoxIo, Connector};
use kube::{Client, Resource};

pub use io::PortForwardIo;

/// Connects to `port` of `pod` through the API server.
#[derive(Clone)]
pub struct PortForwardConnector {
    client: Client,
    namespace: String,
    pod: String,
    port: u16,
}

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
