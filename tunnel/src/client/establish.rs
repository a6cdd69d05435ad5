//! One attempt of the ktx end: connector → TLS (client) → preamble → HTTP/2 (the role the
//! purpose gives ktx: server for serve, client for connect).

use std::future::Future;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{BoxIo, Connector};
use crate::keepalive::Counted;
use crate::options::TunnelOptions;
use crate::preamble::{read_frame, write_frames, PreambleError};
use crate::proto::frame::{Frame, Hello, Purpose, Role};
use crate::proto::negotiate::{ktx_check_hello, ktx_conclude, Refused};
use crate::tls::{classify, shadow_server_name, TlsFailure};

/// Why an attempt to bring the tunnel up failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to the shadow: {0}")]
    Connect(io::Error),
    #[error("the shadow presented a certificate that is not the one made for this session: {0}")]
    WrongShadowCertificate(io::Error),
    #[error("the shadow refused ktx's certificate (it holds another session's credentials): {0}")]
    CertificateRefused(io::Error),
    #[error("TLS handshake with the shadow: {0}")]
    Tls(io::Error),
    #[error(transparent)]
    Preamble(PreambleError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("HTTP/2 handshake: {0}")]
    H2(#[from] h2::Error),
    #[error("no tunnel within {0:?} (connect, TLS and handshake)")]
    Timeout(Duration),
    #[error("the tunnel task failed: {0}")]
    Task(String),
}

impl ConnectError {
    /// Retrying the same shadow cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ConnectError::Refused(r) if r.is_permanent())
    }

    fn from_tls(e: io::Error) -> Self {
        match classify(&e) {
            TlsFailure::PeerCertificate => ConnectError::WrongShadowCertificate(e),
            TlsFailure::OurCertificateRefused => ConnectError::CertificateRefused(e),
            TlsFailure::Handshake => ConnectError::Tls(e),
        }
    }

    /// In TLS 1.3 the server judges our certificate after our side has finished the
    /// handshake, so its refusal arrives as an alert on the first read of the preamble.
    fn from_preamble(e: PreambleError) -> Self {
        match e {
            PreambleError::Io(io) if classify(&io) != TlsFailure::Handshake => {
                ConnectError::from_tls(io)
            }
            other => ConnectError::Preamble(other),
        }
    }
}

/// The TLS stream to the pod, once the preamble is done, counting the bytes read from it.
pub(crate) type PodTls = Counted<TlsStream<BoxIo>>;

/// A tunnel that passed every handshake; `C` is the HTTP/2 connection of its purpose.
pub(crate) struct Established<C> {
    pub conn: C,
    /// Bytes read from the pod (the keepalive's sign of life besides pongs).
    pub received: Arc<AtomicU64>,
    pub version: u16,
    pub peer: Hello,
}

/// What one attempt needs to know.
pub(crate) struct Attempt<'a> {
    pub tls: &'a Arc<rustls::ClientConfig>,
    pub options: &'a TunnelOptions,
    pub purpose: Purpose,
}

/// One attempt, bounded by the handshake timeout; `h2` runs the HTTP/2 handshake of the
/// purpose on the authenticated, negotiated stream.
pub(crate) async fn establish<C, F, Fut>(
    attempt: Attempt<'_>,
    connector: &dyn Connector,
    h2: F,
) -> Result<Established<C>, ConnectError>
where
    F: FnOnce(PodTls) -> Fut,
    Fut: Future<Output = Result<C, h2::Error>>,
{
    let limit = attempt.options.handshake_timeout;
    let run = async {
        let (tls, version, peer) = preamble(attempt, connector).await?;
        let (tls, received) = Counted::new(tls);
        let conn = h2(tls).await?;
        Ok(Established {
            conn,
            received,
            version,
            peer,
        })
    };
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or(Err(ConnectError::Timeout(limit)))
}

async fn preamble(
    attempt: Attempt<'_>,
    connector: &dyn Connector,
) -> Result<(TlsStream<BoxIo>, u16, Hello), ConnectError> {
    let io = connector.connect().await.map_err(ConnectError::Connect)?;
    let mut tls = TlsConnector::from(attempt.tls.clone())
        .connect(shadow_server_name(), io)
        .await
        .map_err(ConnectError::from_tls)?;

    let ours = Hello {
        role: Role::Ktx,
        protocol: attempt.options.protocol,
        software: attempt.options.software.clone(),
        purpose: Some(attempt.purpose),
    };
    write_frames(&mut tls, &[Frame::Hello(ours.clone())])
        .await
        .map_err(|e| ConnectError::from_preamble(e.into()))?;
    let theirs = read_frame(&mut tls)
        .await
        .map_err(ConnectError::from_preamble)?;
    let theirs = ktx_check_hello(&theirs)?.clone();
    let verdict = read_frame(&mut tls)
        .await
        .map_err(ConnectError::from_preamble)?;
    let version = ktx_conclude(&ours, &theirs, &verdict)?;
    Ok((tls, version, theirs))
}
