//! The tunnel as the orchestration uses it: make a session's credentials, start the ktx end
//! towards the shadow pod, wait until it is up, watch it, stop it.
//!
//! The tunnel itself is `ktx-tunnel` (its client keeps reconnecting with backoff); the way the
//! bytes reach the pod — the API server's port-forward — is [`crate::cluster::port_forward`]'s connector. This
//! module only wires them to the session: exposed target port → `127.0.0.1:LOCAL`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ktx_tunnel::client::{ClientConfig, Connector, PortMap, Status, Tunnel};
use ktx_tunnel::connect::client::{ConnectClient, ConnectConfig, ConnectHandle, OpenOptions};
use ktx_tunnel::credentials::SessionCredentials;
use ktx_tunnel::TunnelOptions;
use tokio::sync::watch;

use crate::cluster::api::Kube;
use crate::cluster::port_forward::PortForwardConnector;
use crate::error::{Error, Result};
use crate::plan::ports::ExposedPort;
use crate::progress::Progress;

/// One session's credentials: ktx's half stays in this process, the shadow's goes into the
/// shadow's Secret.
#[derive(Debug)]
pub struct Credentials(SessionCredentials);

pub fn credentials(session: &str) -> Result<Credentials> {
    SessionCredentials::generate(session)
        .map(Credentials)
        .map_err(|e| Error::Tunnel(format!("cannot make the session's certificates: {e}")))
}

impl Credentials {
    /// The Secret data the shadow mounts.
    pub fn shadow_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.shadow_secret_data()
    }
}

/// A running tunnel to one shadow pod (serve: the pod opens streams towards this machine) or
/// to one connect pod (connect: this machine opens streams into the cluster).
#[derive(Debug)]
pub struct Link {
    tunnel: Inner,
}

#[derive(Debug)]
enum Inner {
    Serve(Tunnel),
    Connect(Box<ConnectClient>),
}

/// Where each exposed target port goes on this machine.
pub fn port_map(exposed: &[ExposedPort]) -> PortMap {
    exposed
        .iter()
        .map(|e| (e.target, SocketAddr::from((Ipv4Addr::LOCALHOST, e.local))))
        .collect()
}

/// The connector to `pod`'s tunnel port through the API server's port-forward.
pub fn connector(kube: &Kube, pod: &str, port: u16) -> Arc<dyn Connector> {
    if let Some(d) = &kube.dialer {
        return d.connector(pod, port);
    }
    Arc::new(PortForwardConnector::new(
        kube.client.clone(),
        &kube.namespace,
        pod,
        port,
    ))
}

/// Starts the ktx end towards `pod` and waits until the first tunnel session is up.
pub async fn open(
    kube: &Kube,
    pod: &str,
    tunnel_port: u16,
    exposed: &[ExposedPort],
    creds: &Credentials,
    timeout: Duration,
    progress: &Progress,
) -> Result<Link> {
    let tls = creds
        .0
        .ktx()
        .ktx_config()
        .map_err(|e| Error::Tunnel(format!("TLS configuration: {e}")))?;
    let config = ClientConfig {
        tls,
        ports: port_map(exposed),
        options: TunnelOptions::new("ktx"),
        backoff: Default::default(),
    };
    let tunnel = Tunnel::spawn(config, connector(kube, pod, tunnel_port));
    let status = tunnel.status();
    let what = format!("tunnel to shadow pod {}/{pod}", kube.namespace);
    let link = Link {
        tunnel: Inner::Serve(tunnel),
    };
    link.wait_up(what, status, timeout, progress).await
}

/// Starts the ktx end of a connect session towards connect pod `pod` and waits until the first
/// tunnel session is up; streams are opened with the returned handle.
pub async fn open_connect(
    kube: &Kube,
    pod: &str,
    tunnel_port: u16,
    creds: &Credentials,
    timeout: Duration,
    progress: &Progress,
) -> Result<(Link, ConnectHandle)> {
    let tls = creds
        .0
        .ktx()
        .ktx_config()
        .map_err(|e| Error::Tunnel(format!("TLS configuration: {e}")))?;
    let config = ConnectConfig {
        tls,
        options: TunnelOptions::new("ktx"),
        backoff: Default::default(),
        open: OpenOptions::default(),
    };
    let client = ConnectClient::start(config, connector(kube, pod, tunnel_port));
    let handle = client.handle();
    let status = client.status();
    let what = format!("tunnel to connect pod {}/{pod}", kube.namespace);
    let link = Link {
        tunnel: Inner::Connect(Box::new(client)),
    };
    Ok((link.wait_up(what, status, timeout, progress).await?, handle))
}

impl Link {
    /// Waits until the tunnel is up for the first time; stops it on failure or timeout.
    async fn wait_up(
        self,
        what: String,
        mut status: watch::Receiver<Status>,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Link> {
        let wait = async {
            loop {
                let now = status.borrow_and_update().clone();
                match now {
                    Status::Up { .. } => return Ok(()),
                    Status::Failed { error } => {
                        return Err(Error::Tunnel(format!("{what}: {error}")))
                    }
                    Status::Stopped => return Err(Error::Tunnel(format!("{what}: stopped"))),
                    Status::Connecting { attempt } => {
                        progress.waiting(format!("connecting the {what} (attempt {attempt})"))
                    }
                    Status::Down { error, .. } => {
                        progress.waiting(format!("connecting the {what}: {}", shorten(&error, 160)))
                    }
                }
                if status.changed().await.is_err() {
                    return Err(Error::Tunnel(format!("{what}: the tunnel task ended")));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Ok(self),
            Ok(Err(e)) => {
                self.close().await;
                Err(e)
            }
            Err(_) => {
                let last = format!("{:?}", *self.status().borrow());
                self.close().await;
                Err(Error::Timeout {
                    what,
                    waited: timeout,
                    last,
                })
            }
        }
    }
}

/// The first `max` characters of `s` (port-forward errors run to several lines' worth).
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Link {
    /// The tunnel's state, for the session to report drops and recoveries.
    pub fn status(&self) -> watch::Receiver<Status> {
        match &self.tunnel {
            Inner::Serve(t) => t.status(),
            Inner::Connect(c) => c.status(),
        }
    }

    /// Stops the tunnel: no new streams; open ones get the tunnel's drain time.
    pub async fn close(self) {
        let ended = match self.tunnel {
            Inner::Serve(t) => t.shutdown().await,
            Inner::Connect(c) => c.shutdown().await,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "tunnel ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_targets_map_to_local_ports() {
        let m = port_map(&[ExposedPort {
            local: 3001,
            port: 80,
            target: 8080,
        }]);
        assert_eq!(m.get(8080), Some("127.0.0.1:3001".parse().unwrap()));
        assert_eq!(m.get(80), None);
    }

    #[test]
    fn every_session_gets_a_full_secret() {
        let c = credentials("foobar").unwrap();
        let keys: Vec<String> = c.shadow_secret_data().into_keys().collect();
        assert_eq!(keys, ["peer.crt", "tls.crt", "tls.key"]);
    }
}
