//! The shadow end of the protocol: accept one tunnel connection (TLS server → preamble →
//! HTTP/2 client), then open one stream per in-cluster connection and splice it. The TLS and
//! preamble part (`pod_preamble`) is shared with the connect pod (`crate::connect::pod`).
//!
//! Listeners, the one-session rule, readiness and metrics belong to the `ktx-shadow` binary;
//! it decides who may hold the session through the `claim` callback of
//! [`ShadowEndpoint::accept`], consulted only after the peer is authenticated and speaks a
//! common version.

use std::future::Future;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::PingPong;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::end::SessionEnd;
use crate::keepalive::{self, Counted};
use crate::options::TunnelOptions;
use crate::preamble::{read_frame, write_frames, PreambleError};
use crate::proto::frame::{Accept, Frame, Hello, Purpose, Refuse, RefuseCode, Role};
use crate::proto::negotiate::{busy_refusal, shadow_verdict};
use crate::proto::stream_head::{check_response, StreamHead};
use crate::splice::{splice, Observer, SpliceError, Spliced};
use crate::tls::{classify, TlsFailure};

/// Why a tunnel connection was not accepted. [`AcceptError::reason`] is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the peer's certificate is not the pinned ktx certificate: {0}")]
    PeerCertificate(io::Error),
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    #[error(transparent)]
    Preamble(#[from] PreambleError),
    #[error("refused {peer}: {message}")]
    Refused {
        peer: String,
        code: RefuseCode,
        message: String,
    },
    #[error("HTTP/2 handshake: {0}")]
    H2(#[from] h2::Error),
    #[error("no complete handshake within {0:?}")]
    Timeout(Duration),
}

impl AcceptError {
    /// A short, stable label: `certificate`, `tls`, `preamble`, `version`, `purpose`, `busy`,
    /// `refused`, `h2`, `timeout`.
    pub fn reason(&self) -> &'static str {
        match self {
            AcceptError::PeerCertificate(_) => "certificate",
            AcceptError::Tls(_) => "tls",
            AcceptError::Preamble(_) => "preamble",
            AcceptError::Refused { code, .. } => match code {
                RefuseCode::Incompatible => "version",
                RefuseCode::Busy => "busy",
                RefuseCode::BadPreamble => "preamble",
                RefuseCode::WrongPurpose => "purpose",
                RefuseCode::Other(_) => "refused",
            },
            AcceptError::H2(_) => "h2",
            AcceptError::Timeout(_) => "timeout",
        }
    }
}

/// Accepts tunnel connections on the shadow.
#[derive(Clone)]
pub struct ShadowEndpoint {
    acceptor: TlsAcceptor,
    options: Arc<TunnelOptions>,
}

impl std::fmt::Debug for ShadowEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowEndpoint")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// An accepted session: the claim that admitted it, a handle to open streams, and the driver
/// that must be run for anything to move.
pub struct Accepted<G> {
    pub version: u16,
    pub peer: Hello,
    pub claim: G,
    pub handle: SessionHandle,
    pub driver: SessionDriver,
}

impl ShadowEndpoint {
    pub fn new(tls: Arc<rustls::ServerConfig>, options: TunnelOptions) -> Self {
        Self {
            acceptor: TlsAcceptor::from(tls),
            options: Arc::new(options),
        }
    }

    /// Runs the handshakes on a new tunnel connection, bounded by the handshake timeout.
    /// `claim` is called once the peer is authenticated and compatible; `None` refuses it as
    /// busy. The claim is dropped if anything after it fails.
    pub async fn accept<G>(
        &self,
        tcp: TcpStream,
        claim: impl FnOnce() -> Option<G>,
    ) -> Result<Accepted<G>, AcceptError> {
        let limit = self.options.handshake_timeout;
        tokio::time::timeout(limit, self.handshake(tcp, claim))
            .await
            .unwrap_or(Err(AcceptError::Timeout(limit)))
    }

    async fn handshake<G>(
        &self,
        tcp: TcpStream,
        claim: impl FnOnce() -> Option<G>,
    ) -> Result<Accepted<G>, AcceptError> {
        let (tls, version, theirs, claim) =
            pod_preamble(&self.acceptor, &self.options, Purpose::Serve, tcp, claim).await?;
        let (tls, received) = Counted::new(tls);
        let (sender, mut conn) = self.options.h2_client().handshake(tls).await?;
        let ping = conn
            .ping_pong()
            .expect("ping_pong is taken once, here, right after the handshake");
        Ok(Accepted {
            version,
            peer: theirs,
            claim,
            handle: SessionHandle {
                sender,
                read_chunk: self.options.read_chunk,
                answer_timeout: self.options.answer_timeout,
            },
            driver: SessionDriver {
                conn,
                ping,
                received,
                options: self.options.clone(),
            },
        })
    }
}

/// The pod end's handshake up to HTTP/2, for either purpose: TLS (server) → ktx's `Hello` →
/// verdict (role, version, `purpose`) → `claim` → our `Hello` and `Accept`. Every refusal is
/// told to the peer before the connection closes.
pub(crate) async fn pod_preamble<G>(
    acceptor: &TlsAcceptor,
    options: &TunnelOptions,
    purpose: Purpose,
    tcp: TcpStream,
    claim: impl FnOnce() -> Option<G>,
) -> Result<(TlsStream<TcpStream>, u16, Hello, G), AcceptError> {
    let _ = tcp.set_nodelay(true);
    let mut tls = acceptor.accept(tcp).await.map_err(|e| match classify(&e) {
        TlsFailure::PeerCertificate => AcceptError::PeerCertificate(e),
        _ => AcceptError::Tls(e),
    })?;
    let ours = Hello {
        role: Role::Shadow,
        protocol: options.protocol,
        software: options.software.clone(),
        purpose: Some(purpose),
    };
    let theirs = match read_frame(&mut tls).await? {
        Frame::Hello(h) => h,
        _ => {
            let refusal = Refuse {
                code: RefuseCode::BadPreamble,
                message: "the first frame must be a Hello".into(),
            };
            return Err(refuse(tls, ours, refusal, "unknown".into()).await);
        }
    };
    let version = match shadow_verdict(&ours, &theirs) {
        Ok(v) => v,
        Err(refusal) => return Err(refuse(tls, ours, refusal, theirs.software).await),
    };
    let Some(claim) = claim() else {
        return Err(refuse(tls, ours, busy_refusal(), theirs.software).await);
    };
    write_frames(
        &mut tls,
        &[Frame::Hello(ours), Frame::Accept(Accept { version })],
    )
    .await
    .map_err(PreambleError::from)?;
    Ok((tls, version, theirs, claim))
}

/// Tells the peer why, closes the connection, and returns the error to report.
async fn refuse(
    mut tls: TlsStream<TcpStream>,
    ours: Hello,
    refusal: Refuse,
    peer: String,
) -> AcceptError {
    // Best effort: the peer may already be gone, and the refusal stands either way.
    let _ = write_frames(
        &mut tls,
        &[Frame::Hello(ours), Frame::Refuse(refusal.clone())],
    )
    .await;
    let _ = tls.shutdown().await;
    AcceptError::Refused {
        peer,
        code: refusal.code,
        message: refusal.message,
    }
}

/// Opens streams on a live session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    sender: SendRequest<Bytes>,
    read_chunk: usize,
    answer_timeout: Duration,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Sends `tcp` through the tunnel as one stream named by `head`, and splices until both
    /// ways are done. None of the client's bytes go out before ktx has answered that it
    /// connected to the developer's port: a connection ktx does not take — nothing listens
    /// there, no answer within `answer_timeout`, or the tunnel is gone — comes back unread
    /// ([`Forwarded::NotTaken`]), so the caller may hand it to someone else and the request
    /// still runs once. (Sent early, the bytes could reach the developer's process while ktx's
    /// answer was still on its way, stuck behind an upload; the original workload would then
    /// run the request a second time.) The price is one round trip of the tunnel per
    /// connection.
    pub async fn forward(
        &self,
        tcp: TcpStream,
        head: StreamHead,
        observer: &dyn Observer,
    ) -> Result<Forwarded, SpliceError> {
        let opened = async {
            let mut sender = self.sender.clone().ready().await?;
            sender.send_request(head.to_request(), false)
        };
        let (response, send) = match opened.await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Forwarded::NotTaken(NotTaken {
                    socket: tcp,
                    why: NotTakenReason::Tunnel(e.to_string()),
                }))
            }
        };
        let why = match tokio::time::timeout(self.answer_timeout, response).await {
            Ok(Ok(resp)) => match check_response(&resp) {
                Ok(()) => {
                    let body = resp.into_body();
                    let moved =
                        splice(tcp, send, async { Ok(body) }, self.read_chunk, observer).await?;
                    return Ok(Forwarded::Spliced(moved));
                }
                Err(rejected) => NotTakenReason::Refused(rejected.reason),
            },
            Ok(Err(e)) => NotTakenReason::Tunnel(e.to_string()),
            Err(_) => NotTakenReason::NoAnswer(self.answer_timeout),
        };
        let mut send = send;
        send.send_reset(h2::Reason::CANCEL);
        Ok(Forwarded::NotTaken(NotTaken { socket: tcp, why }))
    }
}

/// How a forwarded connection ended.
#[derive(Debug)]
pub enum Forwarded {
    /// ktx took it; the splice finished.
    Spliced(Spliced),
    /// ktx did not take it: nothing of it reached the developer's process.
    NotTaken(NotTaken),
}

/// A connection ktx did not take, none of it read.
#[derive(Debug)]
pub struct NotTaken {
    pub socket: TcpStream,
    pub why: NotTakenReason,
}

/// Why ktx did not take a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTakenReason {
    /// ktx answered with an error: e.g. nothing listens on the developer's port.
    Refused(String),
    /// ktx did not answer in time (a frozen laptop, a paused API server).
    NoAnswer(Duration),
    /// The tunnel failed before ktx answered.
    Tunnel(String),
}

impl NotTakenReason {
    /// A short, stable label for metrics: `refused`, `no_answer`, `tunnel`.
    pub fn label(&self) -> &'static str {
        match self {
            NotTakenReason::Refused(_) => "refused",
            NotTakenReason::NoAnswer(_) => "no_answer",
            NotTakenReason::Tunnel(_) => "tunnel",
        }
    }
}

impl std::fmt::Display for NotTakenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotTakenReason::Refused(r) => write!(f, "the developer's machine refused it: {r}"),
            NotTakenReason::NoAnswer(d) => {
                write!(f, "the developer's machine did not answer within {d:?}")
            }
            NotTakenReason::Tunnel(e) => write!(f, "the tunnel failed: {e}"),
        }
    }
}

/// Drives a session's connection and keepalive; nothing moves unless it runs.
pub struct SessionDriver {
    conn: h2::client::Connection<Counted<TlsStream<TcpStream>>, Bytes>,
    ping: PingPong,
    /// Bytes read from ktx (the keepalive's sign of life besides pongs).
    received: Arc<AtomicU64>,
    options: Arc<TunnelOptions>,
}

impl std::fmt::Debug for SessionDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDriver").finish_non_exhaustive()
    }
}

impl SessionDriver {
    /// Runs until the connection ends, the peer stops answering pings, or `stop` resolves.
    /// Every open stream fails once this returns.
    pub async fn run(self, stop: impl Future<Output = ()>) -> SessionEnd {
        let SessionDriver {
            mut conn,
            ping,
            received,
            options,
        } = self;
        let keepalive = keepalive::run(
            ping,
            options.keepalive_interval,
            options.keepalive_timeout,
            received,
        );
        tokio::select! {
            r = &mut conn => match r {
                Ok(()) => SessionEnd::Closed,
                Err(e) => SessionEnd::Failed(e),
            },
            dead = keepalive => SessionEnd::DeadPeer(dead),
            () = stop => SessionEnd::Stopped,
        }
    }
}
