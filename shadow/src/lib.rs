//! `ktx-shadow`: runs in the shadow pod, listens on the Service's target ports and sends every
//! connection through the tunnel to the developer's machine. In connect mode
//! ([`config::Mode::Connect`], the pod of `ktx connect`) it has no service ports: ktx opens
//! streams through the tunnel and the pod dials their destinations
//! (`ktx_tunnel::connect::pod`); it is ready once it listens on the tunnel port.
//!
//! One readable assembly ([`Shadow::start`]): bind every port → the tunnel port accepts one
//! authenticated ktx session at a time ([`tunnel`]) → the service ports turn each connection
//! into a tunnel stream, and are not listened on while no session is up ([`service`]) → the admin
//! port reports health, readiness (a session is up and every port listens for it, [`ready`])
//! and metrics ([`admin`]). The protocol itself is the `ktx-tunnel` crate.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod ready;
mod service;
pub mod slot;
mod tunnel;
pub mod unavailable;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ktx_tunnel::connect::pod::ConnectPodEndpoint;
use ktx_tunnel::credentials::{CredentialsError, SideMaterial};
use ktx_tunnel::shadow::ShadowEndpoint;
use ktx_tunnel::tls::TlsConfigError;
use ktx_tunnel::TunnelOptions;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminState;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::ready::Readiness;
use crate::slot::{Live, Slot};
use crate::unavailable::Unavailable;

/// Everything [`Shadow::start`] needs, already loaded and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Mesh (service ports → ktx) or connect (ktx → destinations in the cluster).
    pub mode: Mode,
    /// Connect mode: how long a connection attempt to a destination may take.
    pub dial_timeout: std::time::Duration,
    /// Where the service ports listen (every interface in a pod).
    pub listen_addr: IpAddr,
    /// Where the tunnel port listens (the pod's loopback, which the port-forward reaches).
    pub tunnel_addr: IpAddr,
    /// Service ports; `0` picks a free port (tests).
    pub ports: Vec<u16>,
    pub tunnel_port: u16,
    pub admin: SocketAddr,
    /// An admin client must send its request head within this long.
    pub admin_header_timeout: std::time::Duration,
    pub tls: SideMaterial,
    pub options: TunnelOptions,
    /// What happens to connections ktx does not take.
    pub unavailable: Unavailable,
}

/// The shadow could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("load the tunnel credentials from {dir}: {source}")]
    Credentials {
        dir: std::path::PathBuf,
        source: CredentialsError,
    },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Config(String),
    #[error("port {0} is both a service port and the tunnel or admin port")]
    PortClash(u16),
    #[error("listen on {addr}: {source}{}", privileged_port_hint(*addr, source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Settings {
    /// Reads the credentials named by the config.
    pub fn from_config(cfg: &Config) -> Result<Self, StartError> {
        cfg.check().map_err(StartError::Config)?;
        let tls =
            SideMaterial::load_dir(&cfg.tls_dir).map_err(|source| StartError::Credentials {
                dir: cfg.tls_dir.clone(),
                source,
            })?;
        let mut options = TunnelOptions::new("ktx-shadow");
        options.keepalive_interval = cfg.keepalive_interval;
        options.keepalive_timeout = cfg.keepalive_timeout;
        options.handshake_timeout = cfg.handshake_timeout;
        options.drain_timeout = cfg.drain_timeout;
        options.answer_timeout = cfg.answer_timeout;
        cfg.tuning.apply(&mut options);
        let unavailable = Unavailable {
            policy: cfg.policy().map_err(StartError::Policy)?,
            session: cfg.session.clone(),
        };
        Ok(Self {
            mode: cfg.mode,
            dial_timeout: cfg.dial_timeout,
            listen_addr: cfg.listen_addr,
            tunnel_addr: cfg.tunnel_addr,
            ports: cfg.ports.clone(),
            tunnel_port: cfg.tunnel_port,
            admin: cfg.admin,
            admin_header_timeout: cfg.admin_header_timeout,
            tls,
            options,
            unavailable,
        })
    }
}

/// A running shadow.
#[derive(Debug)]
pub struct Shadow {
    /// Bound service addresses, in the order of `Settings::ports`.
    pub service_addrs: Vec<SocketAddr>,
    pub tunnel_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    slot: Arc<Slot>,
    readiness: Arc<Readiness>,
    stop_service: watch::Sender<bool>,
    stop_tunnel: watch::Sender<bool>,
    services: Vec<JoinHandle<()>>,
    tunnel: JoinHandle<()>,
    admin: JoinHandle<()>,
}

/// What to do when a port below 1024 is refused: the shadow runs as a non-root user with every
/// capability dropped but NET_BIND_SERVICE, which reaches the process only through the file
/// capability on its binary.
fn privileged_port_hint(addr: SocketAddr, e: &std::io::Error) -> &'static str {
    if addr.port() < 1024 && e.kind() == std::io::ErrorKind::PermissionDenied {
        " (a port below 1024 as a non-root user needs NET_BIND_SERVICE: the image's /ktx-shadow \
         must carry it as a file capability, `setcap cap_net_bind_service=+ep`, as e2e/images.sh \
         and e2e/Dockerfile set it; and the container must add NET_BIND_SERVICE, as ktx's pod does)"
    } else {
        ""
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Shadow {
    /// Binds every port and starts serving. Not ready until ktx connects.
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        for p in &settings.ports {
            if *p != 0 && (*p == settings.tunnel_port || *p == settings.admin.port()) {
                return Err(StartError::PortClash(*p));
            }
        }
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let slot = Slot::new(metrics.clone());
        // A connect pod serves no ports and is ready while it listens: ktx waits for that
        // before it opens the tunnel.
        let needs_session = settings.mode == Mode::Mesh;
        let readiness = Readiness::new(slot.clone(), settings.ports.len(), needs_session);
        let (stop_service, _) = watch::channel(false);
        let (stop_tunnel, _) = watch::channel(false);

        let tls = settings.tls.shadow_config()?;
        let options = settings.options.clone();
        let endpoint = match settings.mode {
            Mode::Mesh => tunnel::Endpoint::Mesh(ShadowEndpoint::new(tls, options)),
            Mode::Connect => tunnel::Endpoint::Connect(ConnectPodEndpoint::new(
                tls,
                options,
                settings.dial_timeout,
            )),
        };

        // Bind everything before starting anything, so a failure leaves nothing running.
        let tunnel_listener =
            bind(SocketAddr::new(settings.tunnel_addr, settings.tunnel_port)).await?;
        let tunnel_addr = local_addr(&tunnel_listener)?;
        let mut service_listeners = Vec::new();
        for port in &settings.ports {
            let listener = bind(SocketAddr::new(settings.listen_addr, *port)).await?;
            let addr = local_addr(&listener)?;
            service_listeners.push((listener, addr));
        }
        let admin_listener = bind(settings.admin).await?;
        let admin_addr = local_addr(&admin_listener)?;

        let mut service_addrs = Vec::new();
        let mut services = Vec::new();
        let unavailable = Arc::new(settings.unavailable.clone());
        for (listener, addr) in service_listeners {
            service_addrs.push(addr);
            let shared = service::Shared {
                slot: slot.clone(),
                readiness: readiness.clone(),
                metrics: metrics.clone(),
                unavailable: unavailable.clone(),
            };
            services.push(tokio::spawn(service::serve(
                listener,
                addr,
                shared,
                stop_service.subscribe(),
                settings.options.drain_timeout,
            )));
        }
        let tunnel = tokio::spawn(tunnel::serve(
            tunnel_listener,
            endpoint,
            slot.clone(),
            metrics.clone(),
            stop_tunnel.subscribe(),
        ));
        let state = AdminState {
            registry: Arc::new(Mutex::new(registry)),
            readiness: readiness.clone(),
            header_timeout: settings.admin_header_timeout,
        };
        let admin = tokio::spawn(admin::serve(admin_listener, state, stop_tunnel.subscribe()));
        tracing::info!(
            mode = ?settings.mode,
            ports = ?service_addrs,
            tunnel = %tunnel_addr,
            admin = %admin_addr,
            "shadow listening"
        );
        Ok(Self {
            service_addrs,
            tunnel_addr,
            admin_addr,
            metrics,
            slot,
            readiness,
            stop_service,
            stop_tunnel,
            services,
            tunnel,
            admin,
        })
    }

    /// Whether a tunnel session is up and every service port listens for it, and the shadow is
    /// not draining: what `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Resolves once [`Shadow::is_ready`] is `ready`.
    pub async fn wait_ready(&self, ready: bool) {
        self.readiness.wait(ready).await
    }

    /// Follows the live session: `Some(id)` while one is up.
    pub fn session(&self) -> watch::Receiver<Option<Live>> {
        self.slot.subscribe()
    }

    /// Not ready at once; stop taking connections; let open ones finish for the drain
    /// timeout; then close the tunnel and the admin port.
    pub async fn shutdown(self) {
        self.readiness.drain();
        self.stop_service.send_replace(true);
        for s in self.services {
            let _ = s.await;
        }
        self.stop_tunnel.send_replace(true);
        let _ = self.tunnel.await;
        let _ = self.admin.await;
    }
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Resolves once `stop` is set or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// After a failed `accept` (typically out of file descriptors), pause briefly instead of
/// spinning on the same error.
pub(crate) async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_low_port_says_how_to_allow_it() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = StartError::Bind {
            addr: "0.0.0.0:80".parse().unwrap(),
            source: denied(),
        };
        assert!(
            e.to_string().contains("setcap cap_net_bind_service=+ep"),
            "{e}"
        );
        let e = StartError::Bind {
            addr: "0.0.0.0:8080".parse().unwrap(),
            source: denied(),
        };
        assert!(!e.to_string().contains("setcap"), "{e}");
    }
}
