//! A live session at the ktx end: accept the shadow's streams, connect each to its local port,
//! ping the shadow, and end the session when it dies or ktx stops.
//!
//! Stream tasks live in a `JoinSet` owned by the session: when the session ends, the HTTP/2
//! connection is dropped first (every stream then fails and its task closes its socket), and
//! whatever has not finished after the drain timeout is aborted. No task or socket outlives
//! its session.

use std::future::ready;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::establish::{Established, PodTls};
use super::{stopped, ClientConfig, PortMap, TunnelStats};
use crate::end::SessionEnd;
use crate::keepalive;
use crate::proto::stream_head::{connected_response, StreamHead, StreamRefusal};
use crate::splice::splice;

pub(crate) async fn run(
    established: Established<h2::server::Connection<PodTls, Bytes>>,
    config: &ClientConfig,
    stats: &Arc<TunnelStats>,
    stop: &mut watch::Receiver<bool>,
    session: u64,
) -> SessionEnd {
    let Established {
        mut conn, received, ..
    } = established;
    let opts = &config.options;
    let ping = conn
        .ping_pong()
        .expect("ping_pong is taken once, here, right after the handshake");
    let keepalive = keepalive::run(
        ping,
        opts.keepalive_interval,
        opts.keepalive_timeout,
        received,
    );
    tokio::pin!(keepalive);
    let ports = Arc::new(config.ports.clone());
    let mut streams = JoinSet::new();
    let end = loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let id = u32::from(respond.stream_id());
                    let span = tracing::debug_span!("stream", session, id);
                    let limits = (opts.connect_timeout, opts.read_chunk);
                    let task = serve_stream(req, respond, ports.clone(), stats.clone(), limits);
                    streams.spawn(task.instrument(span));
                }
                Some(Err(e)) => break SessionEnd::Failed(e),
                None => break SessionEnd::Closed,
            },
            dead = &mut keepalive => break SessionEnd::DeadPeer(dead),
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            _ = stopped(stop) => {
                // GOAWAY, then keep driving the connection until the open streams are done.
                // (The shadow keeps its end open for the next session, so waiting for the
                // connection itself to close would always take the whole drain timeout.)
                conn.graceful_shutdown();
                let _ = tokio::time::timeout(opts.drain_timeout, async {
                    loop {
                        tokio::select! {
                            // New streams after GOAWAY are refused by h2; drop any that slip in.
                            next = conn.accept() => if next.is_none() { break },
                            joined = streams.join_next() => if joined.is_none() { break },
                        }
                    }
                })
                .await;
                break SessionEnd::Stopped;
            }
        }
    };
    drop(conn);
    drain(streams, opts.drain_timeout).await;
    end
}

/// Lets stream tasks notice the dropped connection and close their sockets, then aborts the rest.
async fn drain(mut streams: JoinSet<()>, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    streams.shutdown().await;
}

async fn serve_stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ports: Arc<PortMap>,
    stats: Arc<TunnelStats>,
    (connect_timeout, read_chunk): (Duration, usize),
) {
    let refuse = |respond: &mut SendResponse<Bytes>, refusal: StreamRefusal| {
        stats.refused_streams.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %refusal, "stream refused");
        // Fails only when the stream is gone already.
        let _ = respond.send_response(refusal.to_response(), true);
    };
    let head = match StreamHead::from_request(&req) {
        Ok(h) => h,
        Err(e) => return refuse(&mut respond, e.into()),
    };
    let Some(addr) = ports.get(head.port) else {
        return refuse(&mut respond, StreamRefusal::NoMapping(head.port));
    };
    let socket = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = e.to_string();
            return refuse(&mut respond, StreamRefusal::ConnectFailed { addr, reason });
        }
        Err(_) => {
            let reason = format!("no answer within {connect_timeout:?}");
            return refuse(&mut respond, StreamRefusal::ConnectFailed { addr, reason });
        }
    };
    // Small writes (interactive protocols) must not wait for Nagle.
    let _ = socket.set_nodelay(true);
    let send = match respond.send_response(connected_response(), false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "stream gone before it was connected");
            return;
        }
    };
    stats.streams.fetch_add(1, Ordering::Relaxed);
    stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let body = ready(Ok(req.into_body()));
    let result = splice(socket, send, body, read_chunk, stats.as_ref()).await;
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(moved) => tracing::debug!(port = head.port, peer = ?head.peer, ?moved, "stream done"),
        Err(e) => tracing::debug!(port = head.port, peer = ?head.peer, error = %e, "stream cut"),
    }
}
