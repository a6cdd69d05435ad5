//! Byte pipes: plain TCP passthrough of non-HTTP connections to the default target, and the
//! splice of both halves of an HTTP/1.1 Upgrade (WebSocket) after the 101. Every splice ends
//! when neither side has sent a byte for the splice idle timeout; a passthrough of a silent
//! client (one that sent nothing before the sniff timeout, hoping the server speaks first) ends
//! sooner if the server does not speak either.
//!
//! Silent clients come in floods (thousands of sockets that never send, all reaching the sniff
//! timeout within the same few milliseconds), so their passthrough is built to cost the other
//! clients nothing: upstream connects take turns (`SpliceIdle::silent_turns`, a few at a time,
//! each turn handed on through the scheduler's queue, so requests of other clients run in
//! between instead of behind thousands of connects), and a silent pair holds no copy buffers
//! until one side has bytes to read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::error::Side;
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::proxy::Proxy;

/// Idle bounds of one splice.
#[derive(Debug, Clone)]
pub struct SpliceIdle {
    /// Neither side sent a byte for this long: close both.
    pub idle: Duration,
    /// For a client that said nothing before the sniff timeout: the upstream must speak
    /// within this long (waiting for a connect turn included), or both are closed.
    pub silent_first: Duration,
    /// Turns for the upstream connects of silent clients, shared by every listener.
    pub silent_turns: Arc<Semaphore>,
}

/// Forwards a non-HTTP connection, bytes already read included, to the default target.
pub async fn passthrough(
    proxy: &Proxy,
    client: Prefixed<TcpStream>,
    port: u16,
    peer: SocketAddr,
    bounds: SpliceIdle,
) {
    let table = Arc::clone(&proxy.table.borrow());
    let Some(addr) = proxy.upstreams.pick(table.default_target(), port) else {
        proxy.metrics.error(Side::Upstream);
        tracing::debug!(%peer, "tcp: no ready endpoint for the default target; closing");
        return;
    };
    let (prefix, client) = client.into_parts();
    if prefix.is_empty() {
        return silent_passthrough(proxy, client, addr, peer, bounds).await;
    }
    let Some(mut upstream) = connect(proxy, addr, peer).await else {
        return;
    };
    if let Err(e) = upstream.write_all(&prefix).await {
        tracing::debug!(%peer, error = %e, "tcp: write to upstream failed");
        return;
    }
    report(peer, addr, splice(client, upstream, bounds.idle).await);
}

/// The passthrough of a client that sent nothing before the sniff timeout: connect in turn,
/// then wait, holding no buffers, until either side has something to read.
async fn silent_passthrough(
    proxy: &Proxy,
    client: TcpStream,
    addr: SocketAddr,
    peer: SocketAddr,
    bounds: SpliceIdle,
) {
    let deadline = super::from_now(bounds.silent_first);
    let turn = match tokio::time::timeout_at(deadline, bounds.silent_turns.acquire()).await {
        Ok(Ok(turn)) => turn,
        // The semaphore is never closed; either way the client waited long enough.
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(%peer, "tcp: silent client got no connect turn in time; closing");
            return;
        }
    };
    let connected = connect(proxy, addr, peer).await;
    drop(turn);
    let Some(upstream) = connected else { return };
    let spoke = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            r = client.readable() => r,
            r = upstream.readable() => r,
        }
    });
    match spoke.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, %addr, error = %e, "tcp: silent passthrough failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, %addr, "tcp: neither side spoke; closing");
            return;
        }
    }
    report(peer, addr, splice(client, upstream, bounds.idle).await);
}

async fn connect(proxy: &Proxy, addr: SocketAddr, peer: SocketAddr) -> Option<TcpStream> {
    match proxy.upstreams.connect_tcp(addr, Side::Upstream).await {
        Ok(s) => Some(s),
        Err(e) => {
            proxy.metrics.error(Side::Upstream);
            tracing::debug!(%peer, error = %e, "tcp: connect failed; closing");
            None
        }
    }
}

fn report(peer: SocketAddr, addr: SocketAddr, r: std::io::Result<Option<(u64, u64)>>) {
    match r {
        Ok(Some((up, down))) => tracing::debug!(%peer, %addr, up, down, "tcp: closed"),
        Ok(None) => tracing::debug!(%peer, %addr, "tcp: closed after the idle timeout"),
        Err(e) => tracing::debug!(%peer, %addr, error = %e, "tcp: ended with error"),
    }
}

/// Copies both ways until both sides close (the byte counts) or neither sends for the idle
/// bound (`None`; both are closed on drop).
async fn splice<A, B>(a: A, mut b: B, idle: Duration) -> std::io::Result<Option<(u64, u64)>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, activity) = Tracked::new(a);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => r.map(Some),
        _ = quiet_for(&activity, idle, idle) => Ok(None),
    }
}

/// Joins the client's socket (taken back from hyper after the 101) and the upstream's
/// upgraded connection until either side closes.
pub async fn splice_upgraded(client: Prefixed<TcpStream>, upstream: OnUpgrade, idle: Duration) {
    let up = match upstream.await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(error = %e, "upstream upgrade failed");
            return;
        }
    };
    let mut up = TokioIo::new(up);
    let (leftover, client) = client.into_parts();
    if !leftover.is_empty() {
        if let Err(e) = up.write_all(&leftover).await {
            tracing::debug!(error = %e, "write to upgraded upstream failed");
            return;
        }
    }
    match splice(client, up, idle).await {
        Ok(Some(_)) => {}
        Ok(None) => tracing::debug!("upgraded connection closed after the idle timeout"),
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended with error"),
    }
}
