//! The one seam to the cluster: [`Dial`] opens a byte stream to a destination address.
//!
//! ktx implements it over the authenticated tunnel to the in-cluster connect pod; tests implement
//! it with plain TCP to loopback ([`TcpDial`]). This crate never knows which.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// Why a dial failed; each variant picks the answer the client sees (TCP RST, SOCKS5 reply code,
/// HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The destination answered with a refusal (nothing listens there).
    #[error("connection to {dst} refused")]
    Refused { dst: SocketAddr },
    /// No route to the destination, or it did not answer in time.
    #[error("{dst} unreachable: {reason}")]
    Unreachable { dst: SocketAddr, reason: String },
    /// The connect pod or a policy forbids this destination.
    #[error("connection to {dst} forbidden: {reason}")]
    Forbidden { dst: SocketAddr, reason: String },
    /// The way to the cluster (tunnel, connect pod) is down.
    #[error("connect tunnel down: {reason}")]
    Down { reason: String },
}

impl DialError {
    /// Maps an OS connect error to the variant a caller should see.
    pub fn from_io(dst: SocketAddr, err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => DialError::Refused { dst },
            io::ErrorKind::PermissionDenied => DialError::Forbidden {
                dst,
                reason: err.to_string(),
            },
            _ => DialError::Unreachable {
                dst,
                reason: err.to_string(),
            },
        }
    }
}

/// Opens streams to destinations (a Service's ClusterIP:port, a pod IP:port).
pub trait Dial: Send + Sync + 'static {
    /// The stream a successful dial returns.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `dst`; resolves only once the far end accepted (or refused).
    fn dial(&self, dst: SocketAddr)
        -> impl Future<Output = Result<Self::Stream, DialError>> + Send;
}

/// A [`Dial`] over plain TCP with a connect timeout; `map` rewrites the destination (tests map
/// `10.250.x.y:p` to a loopback listener).
pub struct TcpDial<F> {
    map: F,
    timeout: Duration,
}

impl<F> TcpDial<F>
where
    F: Fn(SocketAddr) -> SocketAddr + Send + Sync + 'static,
{
    pub fn new(map: F, timeout: Duration) -> Self {
        TcpDial { map, timeout }
    }
}

impl<F> Dial for TcpDial<F>
where
    F: Fn(SocketAddr) -> SocketAddr + Send + Sync + 'static,
{
    type Stream = tokio::net::TcpStream;

    async fn dial(&self, dst: SocketAddr) -> Result<Self::Stream, DialError> {
        let to = (self.map)(dst);
        match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(to)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(DialError::from_io(dst, &e)),
            Err(_) => Err(DialError::Unreachable {
                dst,
                reason: format!("no answer within {:?}", self.timeout),
            }),
        }
    }
}
