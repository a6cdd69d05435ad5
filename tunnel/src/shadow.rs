//! The shadow end of the protocol: accept one tunnel connection (TLS server → preamble →
//! HTTP/2 client), then open one stream per in-cluster connection and splice it.
//!
//! Listeners, the one-session rule, readiness and metrics belong to the `ktx-shadow` binary;
//! it decides who may hold the session through the `claim` callback of
//! [`ShadowEndpoint::accept`], consulted only after the peer is authenticated and speaks a
//! common version.

use std::future::Future;
use std::io;
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
use crate::keepalive;
use crate::options::TunnelOptions;
use crate::preamble::{read_frame, write_frames, PreambleError};
use crate::proto::frame::{Accept, Frame, Hello, Refuse, RefuseCode, Role};
use crate::proto::negotiate::{busy_refusal, shadow_verdict};
use crate::proto::stream_head::{check_response, StreamHead};
use crate::splice::{abort, splice, Observer, SpliceError, Spliced};
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
    /// A short, stable label: `certificate`, `tls`, `preamble`, `version`, `busy`, `refused`,
    /// `h2`, `timeout`.
    pub fn reason(&self) -> &'static str {
        match self {
            AcceptError::PeerCertificate(_) => "certificate",
            AcceptError::Tls(_) => "tls",
            AcceptError::Preamble(_) => "preamble",
            AcceptError::Refused { code, .. } => match code {
                RefuseCode::Incompatible => "version",
                RefuseCode::Busy => "busy",
                RefuseCode::BadPreamble => "preamble",
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
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| match classify(&e) {
                TlsFailure::PeerCertificate => AcceptError::PeerCertificate(e),
                _ => AcceptError::Tls(e),
            })?;
        let ours = Hello {
            role: Role::Shadow,
            protocol: self.options.protocol,
            software: self.options.software.clone(),
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
            },
            driver: SessionDriver {
                conn,
                ping,
                options: self.options.clone(),
            },
        })
    }
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
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Sends `tcp` through the tunnel as one stream named by `head`, and splices until both
    /// ways are done. The client's first bytes go out before ktx has answered (no extra round
    /// trip); if ktx refuses, the connection is reset.
    pub async fn forward(
        &self,
        tcp: TcpStream,
        head: StreamHead,
        observer: &dyn Observer,
    ) -> Result<Spliced, SpliceError> {
        let opened = async {
            let mut sender = self.sender.clone().ready().await?;
            sender.send_request(head.to_request(), false)
        };
        let (response, send) = match opened.await {
            Ok(r) => r,
            Err(e) => {
                abort(&tcp);
                return Err(e.into());
            }
        };
        let recv = async move {
            let resp = response.await?;
            check_response(&resp)?;
            Ok(resp.into_body())
        };
        splice(tcp, send, recv, self.read_chunk, observer).await
    }
}

/// Drives a session's connection and keepalive; nothing moves unless it runs.
pub struct SessionDriver {
    conn: h2::client::Connection<TlsStream<TcpStream>, Bytes>,
    ping: PingPong,
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
            options,
        } = self;
        let keepalive = keepalive::run(ping, options.keepalive_interval, options.keepalive_timeout);
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
