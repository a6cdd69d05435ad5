//! One attempt of the ktx end: connector → TLS (client) → preamble → HTTP/2 (server role).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{BoxIo, ClientConfig, Connector};
use crate::preamble::{read_frame, write_frames, PreambleError};
use crate::proto::frame::{Frame, Hello, Role};
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

/// A tunnel that passed every handshake.
pub(crate) struct Established {
    pub conn: h2::server::Connection<TlsStream<BoxIo>, Bytes>,
    pub version: u16,
    pub peer: Hello,
}

/// One attempt, bounded by the handshake timeout.
pub(crate) async fn establish(
    config: &ClientConfig,
    connector: &dyn Connector,
) -> Result<Established, ConnectError> {
    let limit = config.options.handshake_timeout;
    tokio::time::timeout(limit, attempt(config, connector))
        .await
        .unwrap_or(Err(ConnectError::Timeout(limit)))
}

async fn attempt(
    config: &ClientConfig,
    connector: &dyn Connector,
) -> Result<Established, ConnectError> {
    let io = connector.connect().await.map_err(ConnectError::Connect)?;
    let mut tls = TlsConnector::from(config.tls.clone())
        .connect(shadow_server_name(), io)
        .await
        .map_err(ConnectError::from_tls)?;

    let ours = Hello {
        role: Role::Ktx,
        protocol: config.options.protocol,
        software: config.options.software.clone(),
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

    let conn = config.options.h2_server().handshake(tls).await?;
    Ok(Established {
        conn,
        version,
        peer: theirs,
    })
}
