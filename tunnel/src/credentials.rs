//! Per-session credentials: two self-signed certificates (ktx's and the shadow's) made fresh for
//! every session, and the Secret data that carries the shadow's half into the pod.
//!
//! ktx keeps its key in memory only; the shadow's key travels in a Secret owned by the shadow
//! pod (the control plane creates it) and is mounted as files. Each side's material is the same
//! three things — its certificate, its key, the peer's certificate — so one loader serves the
//! shadow's mounted directory and the benchmark's temporary one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::{self, Identity, TlsConfigError, SHADOW_SERVER_NAME};

/// Secret key / file name of the side's own certificate (PEM).
pub const CERT_FILE: &str = "tls.crt";
/// Secret key / file name of the side's own private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "tls.key";
/// Secret key / file name of the pinned peer certificate (PEM).
pub const PEER_FILE: &str = "peer.crt";

/// Making or reading credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("generate a session certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is not valid PEM: {source}")]
    Pem {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tunnel credentials lack `{0}`")]
    Missing(&'static str),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// One side's material: its identity and the certificate it pins for the other side.
#[derive(Clone)]
pub struct SideMaterial {
    pub identity: Identity,
    pub peer: CertificateDer<'static>,
}

impl fmt::Debug for SideMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SideMaterial")
            .field("cert_len", &self.identity.cert().len())
            .field("peer_len", &self.peer.len())
            .finish_non_exhaustive()
    }
}

impl SideMaterial {
    /// ktx's TLS client configuration from this material.
    pub fn ktx_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
        tls::ktx_config(&self.identity, &self.peer)
    }

    /// The shadow's TLS server configuration from this material.
    pub fn shadow_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
        tls::shadow_config(&self.identity, &self.peer)
    }

    /// Reads `tls.crt`, `tls.key` and `peer.crt` from a directory (a mounted Secret).
    pub fn load_dir(dir: &Path) -> Result<Self, CredentialsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| CredentialsError::Read { path, source })
        };
        let mut data = BTreeMap::new();
        for name in [CERT_FILE, KEY_FILE, PEER_FILE] {
            data.insert(name.to_string(), read(name)?);
        }
        Self::from_secret_data(&data)
    }

    /// Reads the three PEM entries of a Secret's data.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, CredentialsError> {
        let get = |k: &'static str| data.get(k).ok_or(CredentialsError::Missing(k));
        let pem = |what: &str| {
            let what = what.to_string();
            move |source| CredentialsError::Pem { what, source }
        };
        let cert = CertificateDer::from_pem_slice(get(CERT_FILE)?).map_err(pem(CERT_FILE))?;
        let key = PrivateKeyDer::from_pem_slice(get(KEY_FILE)?).map_err(pem(KEY_FILE))?;
        let peer = CertificateDer::from_pem_slice(get(PEER_FILE)?).map_err(pem(PEER_FILE))?;
        Ok(Self {
            identity: Identity::new(cert, key),
            peer,
        })
    }
}

/// Both halves of one session's credentials. `Debug` never shows key material.
pub struct SessionCredentials {
    ktx: SideMaterial,
    shadow: SideMaterial,
    ktx_pem: Pem,
    shadow_pem: Pem,
}

struct Pem {
    cert: String,
    key: String,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCredentials").finish_non_exhaustive()
    }
}

impl SessionCredentials {
    /// Makes a fresh pair of self-signed certificates (ECDSA P-256) for `session`; the session
    /// name only goes into the certificates' common names, for people reading them.
    pub fn generate(session: &str) -> Result<Self, CredentialsError> {
        let (ktx_id, ktx_pem) = self_signed(&format!("ktx session {session}"))?;
        let (shadow_id, shadow_pem) = self_signed(&format!("ktx shadow {session}"))?;
        let shadow = SideMaterial {
            peer: ktx_id.cert().clone(),
            identity: shadow_id.clone(),
        };
        let ktx = SideMaterial {
            peer: shadow_id.cert().clone(),
            identity: ktx_id,
        };
        Ok(Self {
            ktx,
            shadow,
            ktx_pem,
            shadow_pem,
        })
    }

    /// ktx's half (kept in memory).
    pub fn ktx(&self) -> &SideMaterial {
        &self.ktx
    }

    /// The shadow's half, for loopback tests that run the shadow in-process.
    pub fn shadow(&self) -> &SideMaterial {
        &self.shadow
    }

    /// The data of the shadow's Secret: `tls.crt`, `tls.key` (the shadow's) and `peer.crt`
    /// (ktx's certificate, which the shadow pins).
    pub fn shadow_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        secret_data(&self.shadow_pem, &self.ktx_pem.cert)
    }

    /// The same layout for ktx's half. Only the benchmark writes this to (temporary) disk;
    /// `ktx` itself keeps it in memory.
    pub fn ktx_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        secret_data(&self.ktx_pem, &self.shadow_pem.cert)
    }
}

fn secret_data(own: &Pem, peer_cert: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (CERT_FILE.to_string(), own.cert.clone().into_bytes()),
        (KEY_FILE.to_string(), own.key.clone().into_bytes()),
        (PEER_FILE.to_string(), peer_cert.as_bytes().to_vec()),
    ])
}

fn self_signed(common_name: &str) -> Result<(Identity, Pem), CredentialsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![SHADOW_SERVER_NAME.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let cert = params.self_signed(&key)?;
    let identity = Identity::new(
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    );
    let pem = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    Ok((identity, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_round_trips_and_pins_the_other_side() {
        let creds = SessionCredentials::generate("foobar").unwrap();
        let data = creds.shadow_secret_data();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [PEER_FILE, CERT_FILE, KEY_FILE]
        );
        let shadow = SideMaterial::from_secret_data(&data).unwrap();
        assert_eq!(shadow.peer, *creds.ktx().identity.cert());
        assert_eq!(shadow.identity.cert(), creds.shadow().identity.cert());
        assert_eq!(creds.ktx().peer, *creds.shadow().identity.cert());
        shadow.shadow_config().unwrap();
        creds.ktx().ktx_config().unwrap();
        assert!(!format!("{creds:?}").contains("PRIVATE"));
    }

    /// The two ends' configurations, handshaking in memory, agree on AES-128-GCM (see
    /// `tls::provider`).
    #[test]
    fn the_ends_agree_on_aes_128_gcm() {
        let creds = SessionCredentials::generate("s").unwrap();
        let mut client = rustls::ClientConnection::new(
            creds.ktx().ktx_config().unwrap(),
            crate::tls::shadow_server_name(),
        )
        .unwrap();
        let mut server =
            rustls::ServerConnection::new(creds.shadow().shadow_config().unwrap()).unwrap();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        for suite in [
            client.negotiated_cipher_suite(),
            server.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
    }

    #[test]
    fn every_session_gets_new_keys() {
        let a = SessionCredentials::generate("s").unwrap();
        let b = SessionCredentials::generate("s").unwrap();
        assert_ne!(a.ktx().identity.cert(), b.ktx().identity.cert());
    }

    #[test]
    fn missing_or_bad_entries_are_named() {
        let mut data = SessionCredentials::generate("s")
            .unwrap()
            .shadow_secret_data();
        data.insert(PEER_FILE.into(), b"not pem".to_vec());
        let err = SideMaterial::from_secret_data(&data).unwrap_err();
        assert!(err.to_string().contains(PEER_FILE), "{err}");
        data.remove(KEY_FILE);
        assert!(matches!(
            SideMaterial::from_secret_data(&data),
            Err(CredentialsError::Missing(KEY_FILE))
        ));
    }
}
