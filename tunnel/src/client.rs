//! The ktx end: keeps one tunnel to the shadow up, reconnecting with backoff, and connects every
//! stream the shadow opens to the mapped local port.
//!
//! How the bytes reach the shadow is a [`Connector`]: a TCP address on loopback, or (in
//! `control/`) a Kubernetes port-forward. Each attempt is connect → TLS → preamble → HTTP/2
//! (see [`establish`]); a live session is [`session`]. A permanent refusal (no common protocol
//! version, a pod for another purpose) stops the loop: retrying cannot help, the developer
//! must upgrade or fix something. The same loop (`keep_up`) keeps a connect session up
//! ([`crate::connect::client`]).

pub(crate) mod establish;
mod session;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use establish::ConnectError;

use self::establish::{Attempt, Established, PodTls};
use crate::end::SessionEnd;
use crate::options::TunnelOptions;
use crate::proto::backoff::{Backoff, BackoffPolicy};
use crate::proto::frame::Purpose;
use crate::splice::Observer;

/// A byte stream to the shadow's tunnel port.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;
/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes a fresh byte stream to the shadow's tunnel port for each attempt.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>>;
    /// Where it connects, for logs (e.g. `pod default/orders-ktx-mesh-foobar:7766`).
    fn describe(&self) -> String;
}

/// Connects straight to a TCP address (loopback tests, benchmarks).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub addr: SocketAddr,
}

impl Connector for TcpConnector {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxIo)
        })
    }

    fn describe(&self) -> String {
        self.addr.to_string()
    }
}

/// Which local address each shadow port goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap(BTreeMap<u16, SocketAddr>);

impl PortMap {
    pub fn get(&self, shadow_port: u16) -> Option<SocketAddr> {
        self.0.get(&shadow_port).copied()
    }
}

impl FromIterator<(u16, SocketAddr)> for PortMap {
    fn from_iter<I: IntoIterator<Item = (u16, SocketAddr)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Everything the ktx end needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// From [`crate::credentials::SideMaterial::ktx_config`].
    pub tls: Arc<rustls::ClientConfig>,
    pub ports: PortMap,
    pub options: TunnelOptions,
    pub backoff: BackoffPolicy,
}

/// What the tunnel is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting {
        attempt: u32,
    },
    /// Session number `session` (counting from 1) is up.
    Up {
        session: u64,
        version: u16,
        shadow: String,
    },
    /// The last attempt or session failed; the next attempt follows after `retry_in`.
    Down {
        error: String,
        retry_in: Duration,
    },
    /// Refused for good (e.g. no common protocol version); not retrying.
    Failed {
        error: String,
    },
    Stopped,
}

/// Counters of the ktx end, for status output and tests.
#[derive(Debug, Default)]
pub struct TunnelStats {
    pub sessions: AtomicU64,
    pub streams: AtomicU64,
    pub active_streams: AtomicU64,
    pub refused_streams: AtomicU64,
    pub bytes_to_local: AtomicU64,
    pub bytes_from_local: AtomicU64,
}

impl Observer for TunnelStats {
    fn sent(&self, n: u64) {
        self.bytes_from_local.fetch_add(n, Ordering::Relaxed);
    }

    fn received(&self, n: u64) {
        self.bytes_to_local.fetch_add(n, Ordering::Relaxed);
    }
}

/// A running ktx end. Dropping it stops the tunnel too (without waiting).
#[derive(Debug)]
pub struct Tunnel {
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ConnectError>>,
    stats: Arc<TunnelStats>,
}

impl Tunnel {
    /// Starts keeping the tunnel up in the background.
    pub fn spawn(config: ClientConfig, connector: Arc<dyn Connector>) -> Self {
        let (status_tx, status) = watch::channel(Status::Connecting { attempt: 1 });
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(TunnelStats::default());
        let backoff = config.backoff;
        let kind = Arc::new(Serve {
            config,
            stats: stats.clone(),
        });
        let task = tokio::spawn(keep_up(kind, backoff, connector, status_tx, stop_rx));
        Self {
            status,
            stop,
            task,
            stats,
        }
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    pub fn stats(&self) -> &Arc<TunnelStats> {
        &self.stats
    }

    /// Waits until session number `session` or a later one is up. Returns the status that
    /// ended the wait: `Up`, or `Failed`/`Stopped` if it will never come.
    pub async fn wait_for_session(&self, session: u64) -> Status {
        let mut rx = self.status.clone();
        let seen = rx
            .wait_for(|s| match s {
                Status::Up { session: n, .. } => *n >= session,
                Status::Failed { .. } | Status::Stopped => true,
                _ => false,
            })
            .await
            .map(|s| s.clone());
        seen.unwrap_or(Status::Stopped)
    }

    /// Stops reconnecting, lets open streams finish for the drain timeout, and waits for the
    /// background task. Returns the permanent error, if that is what had stopped it.
    pub async fn shutdown(self) -> Result<(), ConnectError> {
        self.stop.send_replace(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ConnectError::Task(e.to_string())),
        }
    }
}

/// Resolves once `stop` is set or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the `Tunnel` was dropped: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

fn jitter() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The serve purpose: the shadow opens streams, ktx connects them to local ports.
struct Serve {
    config: ClientConfig,
    stats: Arc<TunnelStats>,
}

impl Kind for Serve {
    type Conn = h2::server::Connection<PodTls, bytes::Bytes>;

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            tls: &self.config.tls,
            options: &self.config.options,
            purpose: Purpose::Serve,
        }
    }

    fn handshake(&self, tls: PodTls) -> BoxFuture<'static, Result<Self::Conn, h2::Error>> {
        Box::pin(self.config.options.h2_server().handshake(tls))
    }

    fn up(&self) {
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
    }

    fn run<'a>(
        &'a self,
        established: Established<Self::Conn>,
        stop: &'a mut watch::Receiver<bool>,
        session: u64,
    ) -> BoxFuture<'a, SessionEnd> {
        Box::pin(session::run(
            established,
            &self.config,
            &self.stats,
            stop,
            session,
        ))
    }
}

/// One purpose's part of a session, for [`keep_up`].
pub(crate) trait Kind: Send + Sync + 'static {
    /// The HTTP/2 connection (and handles) of a live session.
    type Conn: Send + 'static;
    /// TLS, options and purpose of each attempt.
    fn attempt(&self) -> Attempt<'_>;
    /// The HTTP/2 handshake in this purpose's role.
    fn handshake(&self, tls: PodTls) -> BoxFuture<'static, Result<Self::Conn, h2::Error>>;
    /// Counts a session that came up (before its status says so).
    fn up(&self) {}
    /// Runs a live session until it ends.
    fn run<'a>(
        &'a self,
        established: Established<Self::Conn>,
        stop: &'a mut watch::Receiver<bool>,
        session: u64,
    ) -> BoxFuture<'a, SessionEnd>;
}

/// Keeps a session of `kind` up until stopped or refused for good, reporting on `status`.
pub(crate) async fn keep_up<K: Kind>(
    kind: Arc<K>,
    backoff: BackoffPolicy,
    connector: Arc<dyn Connector>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    let via = connector.describe();
    let mut backoff = Backoff::new(backoff);
    let mut session_no = 0u64;
    loop {
        status.send_replace(Status::Connecting {
            attempt: backoff.failures() + 1,
        });
        let attempt = tokio::select! {
            r = establish::establish(kind.attempt(), connector.as_ref(), |tls| kind.handshake(tls)) => r,
            _ = stopped(&mut stop) => break,
        };
        let error = match attempt {
            Ok(established) => {
                session_no += 1;
                kind.up();
                tracing::info!(
                    session = session_no,
                    version = established.version,
                    shadow = %established.peer.software,
                    %via,
                    "tunnel up"
                );
                status.send_replace(Status::Up {
                    session: session_no,
                    version: established.version,
                    shadow: established.peer.software.clone(),
                });
                let started = Instant::now();
                let end = kind.run(established, &mut stop, session_no).await;
                if let SessionEnd::Stopped = end {
                    break;
                }
                backoff.session_ended(started.elapsed());
                format!("tunnel session {session_no} ended: {end}")
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(%via, error = %e, "tunnel refused for good; not retrying");
                status.send_replace(Status::Failed {
                    error: e.to_string(),
                });
                return Err(e);
            }
            Err(e) => e.to_string(),
        };
        let retry_in = backoff.next_delay(jitter());
        tracing::warn!(%via, %error, ?retry_in, "tunnel down; reconnecting");
        status.send_replace(Status::Down { error, retry_in });
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    status.send_replace(Status::Stopped);
    Ok(())
}
