//! The connect pod's end of purpose connect: accept one authenticated ktx session (TLS server,
//! then HTTP/2 server), and for every stream ktx opens, check the destination against the deny
//! rule, dial it within the dial timeout, answer, and splice.
//!
//! The one-session rule, listeners, readiness and metrics belong to the `ktx-shadow` binary
//! (`--mode connect`), as for the serve purpose; the `claim` callback of
//! [`ConnectPodEndpoint::accept`] is how it decides who holds the session.

use std::future::{ready, Future};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::end::SessionEnd;
use crate::keepalive::{self, Counted};
use crate::options::TunnelOptions;
use crate::proto::connect_head::{forbidden, ConnectHead, DialFailure, DialRejected};
use crate::proto::frame::{Hello, Purpose};
use crate::shadow::{pod_preamble, AcceptError};
use crate::splice::{splice, Observer};

/// Sees what the pod does with each stream (for metrics). Bytes arrive through [`Observer`]:
/// `sent` is destination → ktx, `received` ktx → destination.
pub trait DialObserver: Observer {
    /// The destination was reached and the stream is spliced.
    fn opened(&self) {}
    /// The stream was answered with an error.
    fn failed(&self, _failure: DialFailure) {}
    /// A spliced stream ended; `cut` when abnormally (reset, tunnel lost).
    fn closed(&self, _cut: bool) {}
}

/// Accepts connect sessions on the pod's tunnel port.
#[derive(Clone)]
pub struct ConnectPodEndpoint {
    acceptor: TlsAcceptor,
    options: Arc<TunnelOptions>,
    dial_timeout: Duration,
}

impl std::fmt::Debug for ConnectPodEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectPodEndpoint")
            .field("options", &self.options)
            .field("dial_timeout", &self.dial_timeout)
            .finish_non_exhaustive()
    }
}

/// An accepted connect session: the claim that admitted it, and the session to run.
pub struct ConnectAccepted<G> {
    pub version: u16,
    pub peer: Hello,
    pub claim: G,
    pub session: ConnectSession,
}

impl ConnectPodEndpoint {
    /// `dial_timeout` bounds each connection attempt to a destination (answered `504` after).
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        options: TunnelOptions,
        dial_timeout: Duration,
    ) -> Self {
        Self {
            acceptor: TlsAcceptor::from(tls),
            options: Arc::new(options),
            dial_timeout,
        }
    }

    /// Runs the handshakes on a new tunnel connection, bounded by the handshake timeout; as
    /// [`crate::shadow::ShadowEndpoint::accept`], for purpose connect.
    pub async fn accept<G>(
        &self,
        tcp: TcpStream,
        claim: impl FnOnce() -> Option<G>,
    ) -> Result<ConnectAccepted<G>, AcceptError> {
        let limit = self.options.handshake_timeout;
        let run = async {
            let (tls, version, peer, claim) =
                pod_preamble(&self.acceptor, &self.options, Purpose::Connect, tcp, claim).await?;
            let (tls, received) = Counted::new(tls);
            let conn = self.options.h2_server().handshake(tls).await?;
            Ok(ConnectAccepted {
                version,
                peer,
                claim,
                session: ConnectSession {
                    conn,
                    received,
                    options: self.options.clone(),
                    dial_timeout: self.dial_timeout,
                },
            })
        };
        tokio::time::timeout(limit, run)
            .await
            .unwrap_or(Err(AcceptError::Timeout(limit)))
    }
}

/// A live connect session; nothing moves until [`ConnectSession::run`].
pub struct ConnectSession {
    conn: h2::server::Connection<Counted<TlsStream<TcpStream>>, Bytes>,
    /// Bytes read from ktx (the keepalive's sign of life besides pongs).
    received: Arc<AtomicU64>,
    options: Arc<TunnelOptions>,
    dial_timeout: Duration,
}

impl std::fmt::Debug for ConnectSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSession").finish_non_exhaustive()
    }
}

impl ConnectSession {
    /// Serves ktx's streams until the connection ends, ktx stops answering pings, or `stop`
    /// resolves. Stream tasks belong to the session: once it ends, streams still open are cut
    /// (their destination sockets closed with RST) after the drain timeout at most.
    pub async fn run(
        self,
        observer: Arc<dyn DialObserver>,
        stop: impl Future<Output = ()>,
    ) -> SessionEnd {
        let ConnectSession {
            mut conn,
            received,
            options,
            dial_timeout,
        } = self;
        let ping = conn
            .ping_pong()
            .expect("ping_pong is taken once, here, right after the handshake");
        let keepalive = keepalive::run(
            ping,
            options.keepalive_interval,
            options.keepalive_timeout,
            received,
        );
        tokio::pin!(keepalive, stop);
        let mut streams = JoinSet::new();
        let end = loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((req, respond))) => {
                        let id = u32::from(respond.stream_id());
                        let span = tracing::debug_span!("stream", id);
                        let task = dial_stream(
                            req,
                            respond,
                            observer.clone(),
                            (dial_timeout, options.read_chunk),
                        );
                        streams.spawn(task.instrument(span));
                    }
                    Some(Err(e)) => break SessionEnd::Failed(e),
                    None => break SessionEnd::Closed,
                },
                dead = &mut keepalive => break SessionEnd::DeadPeer(dead),
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
                () = &mut stop => {
                    conn.graceful_shutdown();
                    let _ = tokio::time::timeout(options.drain_timeout, async {
                        loop {
                            tokio::select! {
                                next = conn.accept() => if next.is_none() { break },
                                joined = streams.join_next() => if joined.is_none() { break },
                            }
                        }
                    })
                    .await;
                    break SessionEnd::Stopped;
                }
            }
        };
        drop(conn);
        let _ = tokio::time::timeout(options.drain_timeout, async {
            while streams.join_next().await.is_some() {}
        })
        .await;
        streams.shutdown().await;
        end
    }
}

async fn dial_stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    observer: Arc<dyn DialObserver>,
    (dial_timeout, read_chunk): (Duration, usize),
) {
    let socket = match dial(&req, dial_timeout).await {
        Ok(s) => s,
        Err(rejected) => {
            observer.failed(rejected.failure);
            tracing::debug!(failure = rejected.failure.label(), error = %rejected, "stream refused");
            // Fails only when the stream is gone already.
            let _ = respond.send_response(rejected.to_response(), true);
            return;
        }
    };
    // Small writes (interactive protocols) must not wait for Nagle.
    let _ = socket.set_nodelay(true);
    let dest = socket.peer_addr().ok();
    let send = match respond.send_response(http::Response::new(()), false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "stream gone before it was connected");
            return;
        }
    };
    observer.opened();
    let body = ready(Ok(req.into_body()));
    let result = splice(socket, send, body, read_chunk, observer.as_ref()).await;
    observer.closed(result.is_err());
    match result {
        Ok(moved) => tracing::debug!(?dest, ?moved, "stream done"),
        Err(e) => tracing::debug!(?dest, error = %e, "stream cut"),
    }
}

/// Reads the head, applies the deny rule, and connects within `limit`.
async fn dial<B>(req: &Request<B>, limit: Duration) -> Result<TcpStream, DialRejected> {
    let head = ConnectHead::from_request(req).map_err(|e| DialRejected {
        failure: DialFailure::BadHead,
        reason: e.to_string(),
    })?;
    let dest: SocketAddr = head.dest;
    if let Some(why) = forbidden(dest.ip()) {
        return Err(DialRejected {
            failure: DialFailure::Forbidden,
            reason: format!("{dest} is {why}: the connect pod does not dial it"),
        });
    }
    match tokio::time::timeout(limit, TcpStream::connect(dest)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(DialRejected {
            failure: DialFailure::from_io(&e),
            reason: format!("connect to {dest}: {e}"),
        }),
        Err(_) => Err(DialRejected {
            failure: DialFailure::Timeout,
            reason: format!("connect to {dest}: no answer within {limit:?}"),
        }),
    }
}
