//! The pod end of the tunnel, in this process: where the real ktx reaches a shadow pod through
//! the API server's port-forward, these tests reach a [`ShadowEndpoint`] on loopback that holds
//! the credentials ktx wrote into the shadow's Secret in the fake cluster. A real TLS 1.3 +
//! HTTP/2 tunnel comes up, so setups run to their very end.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use ktx_tunnel::client::{BoxFuture, BoxIo, Connector};
use ktx_tunnel::credentials::SideMaterial;
use ktx_tunnel::shadow::ShadowEndpoint;
use ktx_tunnel::TunnelOptions;
use tokio::net::{TcpListener, TcpStream};

use super::server::Fake;

/// Dials each shadow pod of `fake` in-process.
#[derive(Debug, Clone)]
pub struct ShadowDialer(pub Fake);

impl ktx::cluster::api::Dialer for ShadowDialer {
    fn connector(&self, pod: &str, _port: u16) -> Arc<dyn Connector> {
        Arc::new(InProcessShadow {
            fake: self.0.clone(),
            pod: pod.to_string(),
        })
    }
}

struct InProcessShadow {
    fake: Fake,
    pod: String,
}

impl Connector for InProcessShadow {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let secret: Secret = self
                .fake
                .get(&self.pod)
                .ok_or_else(|| io::Error::other(format!("no Secret {}", self.pod)))?;
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            let creds = SideMaterial::from_secret_data(&data).map_err(io::Error::other)?;
            let tls = creds.shadow_config().map_err(io::Error::other)?;
            let endpoint = ShadowEndpoint::new(tls, TunnelOptions::new("ktx-shadow"));
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if let Ok(accepted) = endpoint.accept(tcp, || Some(())).await {
                    let _streams = accepted.handle;
                    accepted.driver.run(std::future::pending()).await;
                }
            });
            let stream = TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxIo)
        })
    }

    fn describe(&self) -> String {
        format!("in-process shadow {}", self.pod)
    }
}
