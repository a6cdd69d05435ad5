//! The service ports: while a tunnel session is up, each accepted connection becomes one tunnel
//! stream; while none is, the port is not listened on at all, so callers get a refused
//! connection. A refusal is what the router reads as "this session is unavailable" before it
//! has sent anything, so marked requests fall back (or get the rule's 503) at once instead of
//! being reset after they were written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ktx_tunnel::proto::stream_head::StreamHead;
use ktx_tunnel::shadow::Forwarded;
use ktx_tunnel::splice::abort;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::{Metrics, NotTakenLabel};
use crate::ready::Readiness;
use crate::slot::{Live, Slot};
use crate::stopped;
use crate::unavailable::Unavailable;

/// How long to wait before trying again when the port cannot be bound again, doubling up to
/// the maximum.
const REBIND_RETRY: Duration = Duration::from_millis(250);
const REBIND_RETRY_MAX: Duration = Duration::from_secs(5);

/// What every service port shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub slot: Arc<Slot>,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub unavailable: Arc<Unavailable>,
}

/// Serves one service port until `stop`. `first` is the socket [`crate::Shadow::start`] bound
/// (proof that the port is ours); it is closed while no session is up and bound again at
/// `addr` when one comes.
pub(crate) async fn serve(
    first: TcpListener,
    addr: SocketAddr,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let Shared {
        slot,
        readiness,
        metrics,
        unavailable,
    } = shared;
    let mut sessions = slot.subscribe();
    let mut streams = JoinSet::new();
    let mut next_id = 0u64;
    let mut listener = Some(first);
    let mut retry = REBIND_RETRY;
    loop {
        // No session: close the port, and wait for one (finishing old streams meanwhile).
        if sessions.borrow_and_update().is_none() {
            listener = None;
            tokio::select! {
                r = sessions.wait_for(Option::is_some) => if r.is_err() { break },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
                _ = stopped(&mut stop) => break,
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => {
                    retry = REBIND_RETRY;
                    l
                }
                Err(e) => {
                    // Not ready meanwhile (the port is not counted), so no traffic is lost to
                    // it: the router falls back. In a pod nothing else can hold the port.
                    tracing::error!(%addr, error = %e, ?retry, "cannot listen on the service port again; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    retry = (retry * 2).min(REBIND_RETRY_MAX);
                    continue;
                }
            },
        };
        let counted = readiness.listening();
        tokio::select! {
            () = accept_while_live(&l, addr.port(), &slot, &metrics, &unavailable, &mut streams, &mut next_id) => {}
            r = sessions.wait_for(Option::is_none) => if r.is_err() { break },
            _ = stopped(&mut stop) => break,
        }
        drop(counted);
        // The session is over; if another is already up (a quick reconnect), keep the port.
        if sessions.borrow_and_update().is_some() {
            listener = Some(l);
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain_timeout, async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    streams.shutdown().await;
}

/// Accepts connections and starts one stream each; never returns on its own.
async fn accept_while_live(
    listener: &TcpListener,
    port: u16,
    slot: &Slot,
    metrics: &Metrics,
    unavailable: &Arc<Unavailable>,
    streams: &mut JoinSet<()>,
    next_id: &mut u64,
) {
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
        };
        // The session may have ended between the kernel's accept and ours.
        let Some(live) = slot.current() else {
            metrics.refused_connections.inc();
            tracing::debug!(%peer, port, "no tunnel: connection reset");
            abort(&tcp);
            continue;
        };
        // Small writes (interactive protocols) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        *next_id += 1;
        let ctx = StreamCtx {
            port,
            id: *next_id,
            metrics: metrics.clone(),
            unavailable: unavailable.clone(),
        };
        spawn_stream(streams, live, tcp, peer, ctx);
    }
}

/// What a stream's task needs besides its connection.
struct StreamCtx {
    port: u16,
    id: u64,
    metrics: Metrics,
    unavailable: Arc<Unavailable>,
}

fn spawn_stream(
    streams: &mut JoinSet<()>,
    live: Live,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: StreamCtx,
) {
    let StreamCtx {
        port,
        id,
        metrics,
        unavailable,
    } = ctx;
    let span = tracing::debug_span!("stream", session = live.id, port, id);
    streams.spawn(
        async move {
            metrics.streams.inc();
            metrics.active_streams.inc();
            let head = StreamHead {
                port,
                peer: Some(peer),
            };
            let result = live.handle.forward(tcp, head, &metrics).await;
            match result {
                Ok(Forwarded::Spliced(moved)) => tracing::debug!(%peer, ?moved, "stream done"),
                Ok(Forwarded::NotTaken(nt)) => {
                    let reason = nt.why.label();
                    tracing::debug!(%peer, why = %nt.why, "ktx did not take the connection");
                    unavailable
                        .handle(nt, port, |outcome| {
                            metrics
                                .not_taken
                                .get_or_create(&NotTakenLabel {
                                    reason,
                                    action: outcome.label(),
                                })
                                .inc();
                        })
                        .await;
                }
                Err(e) => {
                    metrics.stream_errors.inc();
                    tracing::debug!(%peer, error = %e, "stream cut");
                }
            }
            metrics.active_streams.dec();
        }
        .instrument(span),
    );
}
