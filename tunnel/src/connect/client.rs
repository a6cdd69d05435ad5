//! ktx's end of purpose connect: keeps one tunnel to the connect pod up (the serve purpose's
//! reconnect loop and backoff, over any [`Connector`]) and opens one stream per destination.
//!
//! Many opens share the one HTTP/2 connection; [`ConnectHandle`] is cheap to clone and can be
//! used from any task. An open waits for a tunnel that is (re)connecting for at most
//! [`OpenOptions::tunnel_wait`], and for the pod's answer for at most
//! [`OpenOptions::answer_timeout`]; its errors say what a SOCKS or HTTP CONNECT caller must
//! answer ([`OpenError`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::stream::ConnectStream;
use crate::client::establish::{Attempt, Established, PodTls};
use crate::client::{keep_up, stopped, BoxFuture, ConnectError, Connector, Kind, Status};
use crate::end::SessionEnd;
use crate::keepalive;
use crate::options::TunnelOptions;
use crate::proto::backoff::BackoffPolicy;
use crate::proto::connect_head::{check_connect_response, ConnectHead, DialFailure};
use crate::proto::frame::Purpose;
use crate::proto::VersionRange;

/// Waits of [`ConnectHandle::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// How long an open waits for a tunnel that is down (reconnecting) before it fails with
    /// [`OpenError::TunnelDown`].
    pub tunnel_wait: Duration,
    /// How long an open waits for the pod's answer once the stream is sent. Longer than the
    /// pod's dial timeout (10 s by default), so the pod's own 504 normally comes first.
    pub answer_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            tunnel_wait: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything ktx's connect end needs.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// From [`crate::credentials::SideMaterial::ktx_config`].
    pub tls: Arc<rustls::ClientConfig>,
    /// `protocol` is narrowed to the versions that know purpose connect
    /// ([`VersionRange::CONNECT`]).
    pub options: TunnelOptions,
    pub backoff: BackoffPolicy,
    pub open: OpenOptions,
}

/// Why a stream was not opened. Each variant maps to one SOCKS5 / HTTP CONNECT answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Nothing listens at the destination (SOCKS5 `05`, HTTP 502).
    #[error("{dest}: connection refused: {reason}")]
    Refused { dest: SocketAddr, reason: String },
    /// No route or host down, seen from the pod (SOCKS5 `04`, HTTP 502).
    #[error("{dest}: unreachable from the connect pod: {reason}")]
    Unreachable { dest: SocketAddr, reason: String },
    /// The pod's dial, or its answer, took too long (SOCKS5 `06`, HTTP 504).
    #[error("{dest}: timed out: {reason}")]
    Timeout { dest: SocketAddr, reason: String },
    /// The destination is the pod's own host (SOCKS5 `02`, HTTP 403).
    #[error("{dest}: not allowed: {reason}")]
    Forbidden { dest: SocketAddr, reason: String },
    /// The pod could not read the request: a bug on one side (SOCKS5 `01`, HTTP 400).
    #[error("{dest}: the connect pod refused the request: {reason}")]
    BadRequest { dest: SocketAddr, reason: String },
    /// No tunnel: reconnecting, refused for good, or stopped (SOCKS5 `01`, HTTP 503).
    #[error("no tunnel to the connect pod: {0}")]
    TunnelDown(String),
}

impl OpenError {
    fn dial(dest: SocketAddr, failure: DialFailure, reason: String) -> Self {
        match failure {
            DialFailure::Refused => OpenError::Refused { dest, reason },
            DialFailure::Unreachable => OpenError::Unreachable { dest, reason },
            DialFailure::Timeout => OpenError::Timeout { dest, reason },
            DialFailure::Forbidden => OpenError::Forbidden { dest, reason },
            DialFailure::BadHead => OpenError::BadRequest { dest, reason },
        }
    }
}

/// Counters of ktx's connect end.
#[derive(Debug, Default)]
pub struct ConnectStats {
    pub sessions: AtomicU64,
    /// Streams the pod connected.
    pub opened: AtomicU64,
    /// Opens that failed, for any reason.
    pub failed: AtomicU64,
    /// Streams open now.
    pub active: AtomicU64,
    /// Bytes written into streams (towards the cluster).
    pub bytes_sent: AtomicU64,
    /// Bytes read from streams (from the cluster).
    pub bytes_received: AtomicU64,
}

impl crate::splice::Observer for ConnectStats {
    fn sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    fn received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }
}

/// The live session's stream opener, `None` while the tunnel is down.
type Live = Option<SendRequest<Bytes>>;

/// Opens streams through the connect tunnel. Cheap to clone.
#[derive(Clone)]
pub struct ConnectHandle {
    live: watch::Receiver<Live>,
    status: watch::Receiver<Status>,
    open: OpenOptions,
    stats: Arc<ConnectStats>,
}

impl std::fmt::Debug for ConnectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ConnectHandle {
    /// Opens a stream to `dest` (an address in the cluster; names are resolved by the caller).
    /// Returns once the pod has connected to it.
    pub async fn open(&self, dest: SocketAddr) -> Result<ConnectStream, OpenError> {
        let result = self.try_open(dest).await;
        let counter = match result {
            Ok(_) => &self.stats.opened,
            Err(_) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn try_open(&self, dest: SocketAddr) -> Result<ConnectStream, OpenError> {
        let sender = self.sender().await?;
        let limit = self.open.answer_timeout;
        let answered = tokio::time::timeout(limit, async {
            let mut sender = sender.ready().await.map_err(lost)?;
            let (response, send) = sender
                .send_request(ConnectHead { dest }.to_request(), false)
                .map_err(lost)?;
            let response = response.await.map_err(lost)?;
            Ok::<_, OpenError>((response, send))
        })
        .await;
        // On a timeout the stream's handles are dropped here, which resets it.
        let (response, send) = answered.map_err(|_| OpenError::Timeout {
            dest,
            reason: format!("the connect pod did not answer within {limit:?}"),
        })??;
        check_connect_response(&response)
            .map_err(|r| OpenError::dial(dest, r.failure, r.reason))?;
        Ok(ConnectStream::new(
            dest,
            send,
            response.into_body(),
            self.stats.clone(),
        ))
    }

    /// The live session's opener, waiting up to `tunnel_wait` for one.
    async fn sender(&self) -> Result<SendRequest<Bytes>, OpenError> {
        let (mut live, mut status) = (self.live.clone(), self.status.clone());
        let wait = async {
            loop {
                if let Some(s) = live.borrow_and_update().clone() {
                    return Ok(s);
                }
                if let Status::Failed { error } = &*status.borrow_and_update() {
                    return Err(OpenError::TunnelDown(error.clone()));
                }
                if let Status::Stopped = &*status.borrow() {
                    return Err(OpenError::TunnelDown("ktx connect is stopping".into()));
                }
                tokio::select! {
                    r = live.changed() => if r.is_err() { break },
                    r = status.changed() => if r.is_err() { break },
                }
            }
            Err(OpenError::TunnelDown("ktx connect has stopped".into()))
        };
        let limit = self.open.tunnel_wait;
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            let now = match &*self.status.borrow() {
                Status::Down { error, .. } => error.clone(),
                other => format!("{other:?}"),
            };
            Err(OpenError::TunnelDown(format!(
                "not up within {limit:?} ({now})"
            )))
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<ConnectStats> {
        &self.stats
    }
}

fn lost(e: h2::Error) -> OpenError {
    OpenError::TunnelDown(format!("the tunnel failed while opening the stream: {e}"))
}

/// A running connect end. Dropping it stops the tunnel too (without waiting).
#[derive(Debug)]
pub struct ConnectClient {
    handle: ConnectHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ConnectError>>,
}

impl ConnectClient {
    /// Starts keeping the tunnel up in the background. The offered protocol range is narrowed
    /// to the versions that know purpose connect; a pod that speaks none of them (an image
    /// older than connect) refuses it for good with a message that names the image.
    pub fn start(mut config: ConnectConfig, connector: Arc<dyn Connector>) -> Self {
        let offered = config.options.protocol;
        config.options.protocol = VersionRange::new(
            offered.min().max(VersionRange::CONNECT.min()),
            offered.max().max(VersionRange::CONNECT.min()),
        )
        .expect("min is at most max: both were raised to at least the connect minimum");
        let (status_tx, status) = watch::channel(Status::Connecting { attempt: 1 });
        let (live_tx, live) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(ConnectStats::default());
        let backoff = config.backoff;
        let handle = ConnectHandle {
            live,
            status,
            open: config.open,
            stats: stats.clone(),
        };
        let kind = Arc::new(Connect {
            config,
            live: live_tx,
            stats,
        });
        let task = tokio::spawn(keep_up(kind, backoff, connector, status_tx, stop_rx));
        Self { handle, stop, task }
    }

    /// A handle to open streams with.
    pub fn handle(&self) -> ConnectHandle {
        self.handle.clone()
    }

    /// What the tunnel is doing now (the ready signal: [`Status::Up`]).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.handle.status.clone()
    }

    /// Waits until session number `session` or a later one is up; returns `Failed`/`Stopped`
    /// if it will never come.
    pub async fn wait_for_session(&self, session: u64) -> Status {
        let mut rx = self.handle.status.clone();
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

    /// Stops reconnecting, lets open streams finish for the drain timeout, and waits.
    /// Returns the permanent error, if that is what had stopped it.
    pub async fn shutdown(self) -> Result<(), ConnectError> {
        self.stop.send_replace(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ConnectError::Task(e.to_string())),
        }
    }
}

/// The connect purpose for the reconnect loop.
struct Connect {
    config: ConnectConfig,
    live: watch::Sender<Live>,
    stats: Arc<ConnectStats>,
}

type ClientConn = (SendRequest<Bytes>, h2::client::Connection<PodTls, Bytes>);

impl Kind for Connect {
    type Conn = ClientConn;

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            tls: &self.config.tls,
            options: &self.config.options,
            purpose: Purpose::Connect,
        }
    }

    fn handshake(&self, tls: PodTls) -> BoxFuture<'static, Result<Self::Conn, h2::Error>> {
        let builder = self.config.options.h2_client();
        Box::pin(async move { builder.handshake(tls).await })
    }

    fn up(&self) {
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
    }

    fn run<'a>(
        &'a self,
        established: Established<Self::Conn>,
        stop: &'a mut watch::Receiver<bool>,
        _session: u64,
    ) -> BoxFuture<'a, SessionEnd> {
        Box::pin(async move {
            let (sender, mut conn) = established.conn;
            let received = established.received;
            let opts = &self.config.options;
            let ping = conn
                .ping_pong()
                .expect("ping_pong is taken once, here, right after the handshake");
            let keepalive = keepalive::run(
                ping,
                opts.keepalive_interval,
                opts.keepalive_timeout,
                received,
            );
            self.live.send_replace(Some(sender));
            let end = tokio::select! {
                r = &mut conn => match r {
                    Ok(()) => SessionEnd::Closed,
                    Err(e) => SessionEnd::Failed(e),
                },
                dead = keepalive => SessionEnd::DeadPeer(dead),
                _ = stopped(stop) => {
                    // No new opens; the open streams get the drain timeout to finish (the
                    // connection completes once they are done and no opener is left).
                    self.live.send_replace(None);
                    let _ = tokio::time::timeout(opts.drain_timeout, &mut conn).await;
                    SessionEnd::Stopped
                }
            };
            // Streams still open fail from here on: the connection is dropped with us.
            self.live.send_replace(None);
            end
        })
    }
}
