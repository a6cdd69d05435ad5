//! TLS 1.3 for both ends of the tunnel, with mutual authentication by pinned certificates.
//!
//! There is no CA: ktx makes one self-signed certificate per side per session
//! ([`crate::credentials`]) and each side accepts exactly the other's certificate, byte for
//! byte, plus a valid handshake signature by its key. Names, validity dates and chains are not
//! consulted: the pin is the whole trust decision, which also makes clock skew between a
//! laptop and a cluster irrelevant. TLS 1.2, session resumption and SNI are off.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};

use crate::proto::ALPN;

/// The server name ktx puts in its handshake. Not checked by anyone (the pin is), but rustls
/// needs one.
pub const SHADOW_SERVER_NAME: &str = "ktx-shadow";

/// A certificate and its private key.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    pub fn new(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        Self { cert, key }
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

/// A TLS configuration that could not be built (a key rustls cannot use).
#[derive(Debug, thiserror::Error)]
#[error("build the tunnel's TLS configuration: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

/// aws-lc-rs's TLS 1.3 suites with AES-128-GCM first (its default, like ring's, puts AES-256
/// first). Both ends are ours and both offer it, so every tunnel uses it: TLS 1.3's mandatory
/// suite, 128-bit security, and 10 AES rounds per block instead of 14. The cipher is the
/// largest single cost of a tunnel end moving bulk data: on loopback its share of each end's
/// CPU fell from 26% to 23% with this, and one stream ran about 3% faster. The others stay,
/// for a peer that lacks it. aws-lc-rs rather than ring: on CPUs with 512-bit VAES it seals a
/// 16 KiB record in ~60% of ring's time (ring stops at 256-bit VAES), and every byte of a
/// marked request crosses this cipher twice and the API server's TLS once more at ktx's end.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// ktx's configuration: present `own`, accept only `shadow_cert`.
pub fn ktx_config(
    own: &Identity,
    shadow_cert: &CertificateDer<'static>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let pin = Arc::new(Pinned::new(shadow_cert.clone(), &provider));
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(pin)
        .with_client_auth_cert(vec![own.cert.clone()], own.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_sni = false;
    Ok(Arc::new(cfg))
}

/// The shadow's configuration: present `own`, require exactly `ktx_cert` from the client.
pub fn shadow_config(
    own: &Identity,
    ktx_cert: &CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let pin = Arc::new(Pinned::new(ktx_cert.clone(), &provider));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(pin)
        .with_single_cert(vec![own.cert.clone()], own.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The server name to pass to the TLS connector.
pub fn shadow_server_name() -> ServerName<'static> {
    ServerName::try_from(SHADOW_SERVER_NAME).expect("a constant DNS name")
}

/// Accepts one exact certificate; the handshake signature is still verified against its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn new(cert: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self {
            cert,
            algs: provider.signature_verification_algorithms,
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.cert.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("the ktx tunnel only speaks TLS 1.3".into())
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What went wrong in a TLS handshake, coarsely, for metrics and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// We refused the peer's certificate (not the pinned one, or none).
    PeerCertificate,
    /// The peer refused ours (it sent a certificate alert).
    OurCertificateRefused,
    /// Anything else: garbage, a TLS 1.2-only peer, no ALPN in common, a reset.
    Handshake,
}

/// Classifies an error from a tokio-rustls handshake or the first reads after it.
pub fn classify(err: &io::Error) -> TlsFailure {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return TlsFailure::Handshake;
    };
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::PeerCertificate
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::DecryptError
            | AlertDescription::AccessDenied,
        ) => TlsFailure::OurCertificateRefused,
        _ => TlsFailure::Handshake,
    }
}
