//! The tunnel port: authenticate ktx, enforce one session at a time, and run the session.
//!
//! Handshakes run concurrently (bounded), each within the handshake timeout, so a silent or
//! hostile peer can neither hold the slot nor block the real ktx. Every refusal is counted by
//! reason and logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ktx_tunnel::shadow::ShadowEndpoint;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::slot::{Live, Slot};
use crate::stopped;

/// Handshakes in progress at once; more are closed at once (counted as `overload`).
const MAX_HANDSHAKES: usize = 32;

pub(crate) async fn serve(
    listener: TcpListener,
    endpoint: ShadowEndpoint,
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
    endpoint: ShadowEndpoint,
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
        let accepted = self.endpoint.accept(tcp, || self.slot.try_claim()).await;
        drop(permit);
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                self.metrics
                    .refused_peers
                    .get_or_create(&crate::metrics::ReasonLabel { reason: e.reason() })
                    .inc();
                tracing::warn!(%peer, reason = e.reason(), error = %e, "tunnel connection refused");
                return;
            }
        };
        let session = self.id;
        tracing::info!(
            session,
            %peer,
            ktx = %accepted.peer.software,
            version = accepted.version,
            "tunnel session up: ready"
        );
        self.metrics.sessions.inc();
        accepted.claim.publish(Live {
            id: session,
            handle: accepted.handle,
        });
        let mut stop = self.stop;
        let end = accepted
            .driver
            .run(async move { stopped(&mut stop).await })
            .await;
        // Not ready from here on: the claim goes with the session.
        drop(accepted.claim);
        tracing::warn!(session, %peer, reason = %end, "tunnel session ended: not ready");
    }
}
