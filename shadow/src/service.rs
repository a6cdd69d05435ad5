//! The service ports: each accepted connection becomes one tunnel stream, or, while no tunnel
//! is up, is reset at once (callers must not hang on a shadow whose developer is gone).

use std::sync::Arc;
use std::time::Duration;

use ktx_tunnel::proto::stream_head::StreamHead;
use ktx_tunnel::splice::abort;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::slot::Slot;
use crate::stopped;

pub(crate) async fn serve(
    listener: TcpListener,
    port: u16,
    slot: Arc<Slot>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut streams = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    crate::accept_failed(&e).await;
                    continue;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => continue,
            _ = stopped(&mut stop) => break,
        };
        let Some(live) = slot.current() else {
            metrics.refused_connections.inc();
            tracing::debug!(%peer, port, "no tunnel: connection reset");
            abort(&tcp);
            continue;
        };
        // Small writes (interactive protocols) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let span = tracing::debug_span!("stream", session = live.id, port, id = next_id);
        let metrics = metrics.clone();
        streams.spawn(
            async move {
                metrics.streams.inc();
                metrics.active_streams.inc();
                let head = StreamHead {
                    port,
                    peer: Some(peer),
                };
                let result = live.handle.forward(tcp, head, &metrics).await;
                metrics.active_streams.dec();
                match result {
                    Ok(moved) => tracing::debug!(%peer, ?moved, "stream done"),
                    Err(e) => {
                        metrics.stream_errors.inc();
                        tracing::debug!(%peer, error = %e, "stream cut");
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    let _ = tokio::time::timeout(drain_timeout, async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    streams.shutdown().await;
}
