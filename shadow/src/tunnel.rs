//! The tunnel port: authenticate ktx, enforce one session at a time, and run the session (a
//! mesh session whose streams the service ports open, or a connect session whose streams ktx
//! opens and the pod dials).
//!
//! Handshakes run concurrently (bounded), each within the handshake timeout, so a silent or
//! hostile peer can neither hold the slot nor block the real ktx. Every refusal is counted by
//! reason and logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ktx_tunnel::connect::pod::ConnectPodEndpoint;
use ktx_tunnel::shadow::{AcceptError, ShadowEndpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::slot::{Live, Slot};
use crate::stopped;

/// The tunnel end of this pod's mode.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Mesh(ShadowEndpoint),
    Connect(ConnectPodEndpoint),
}

/// Handshakes in progress at once; more are closed at once (counted as `overload`).
const MAX_HANDSHAKES: usize = 32;

pub(crate) async fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    slot: Arc<Slot>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let ids = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    crate::accept_failed(&e).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stopped(&mut stop) => break,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            metrics
                .refused_peers
                .get_or_create(&crate::metrics::ReasonLabel { reason: "overload" })
                .inc();
            tracing::warn!(%peer, "too many tunnel handshakes at once; closing");
            continue;
        };
        let conn = Connection {
            endpoint: endpoint.clone(),
            slot: slot.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            id: ids.fetch_add(1, Ordering::Relaxed) + 1,
        };
        tasks.spawn(async move {
            conn.run(tcp, peer, permit).await;
        });
    }
    // Sessions watch `stop` themselves and end at once; a handshake still running would only
    // end at its timeout, so it is cut.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
}

struct Connection {
    endpoint: Endpoint,
    slot: Arc<Slot>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    id: u64,
}

impl Connection {
    async fn run(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        match &self.endpoint {
            Endpoint::Mesh(e) => {
                let accepted = e.accept(tcp, || self.slot.try_claim()).await;
                drop(permit);
                let accepted = match accepted {
                    Ok(a) => a,
                    Err(e) => return self.refused(peer, &e),
                };
                self.up(peer, &accepted.peer.software, accepted.version);
                accepted.claim.publish(Live {
                    id: self.id,
                    handle: accepted.handle,
                });
                let mut stop = self.stop.clone();
                let end = accepted
                    .driver
                    .run(async move { stopped(&mut stop).await })
                    .await;
                // Not ready from here on: the claim goes with the session.
                drop(accepted.claim);
                tracing::warn!(session = self.id, %peer, reason = %end, "tunnel session ended: not ready");
            }
            Endpoint::Connect(e) => {
                let accepted = e.accept(tcp, || self.slot.try_claim()).await;
                drop(permit);
                let accepted = match accepted {
                    Ok(a) => a,
                    Err(e) => return self.refused(peer, &e),
                };
                self.up(peer, &accepted.peer.software, accepted.version);
                accepted.claim.mark_up();
                let mut stop = self.stop.clone();
                let end = accepted
                    .session
                    .run(Arc::new(self.metrics.clone()), async move {
                        stopped(&mut stop).await
                    })
                    .await;
                drop(accepted.claim);
                tracing::warn!(session = self.id, %peer, reason = %end, "connect session ended");
            }
        }
    }

    fn refused(&self, peer: SocketAddr, e: &AcceptError) {
        self.metrics
            .refused_peers
            .get_or_create(&crate::metrics::ReasonLabel { reason: e.reason() })
            .inc();
        tracing::warn!(%peer, reason = e.reason(), error = %e, "tunnel connection refused");
    }

    fn up(&self, peer: SocketAddr, ktx: &str, version: u16) {
        tracing::info!(session = self.id, %peer, %ktx, version, "tunnel session up");
        self.metrics.sessions.inc();
    }
}
