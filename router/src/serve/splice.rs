//! Byte pipes: plain TCP passthrough of non-HTTP connections to the default target, and the
//! splice of both halves of an HTTP/1.1 Upgrade (WebSocket) after the 101. Every splice ends
//! when neither side has sent a byte for the splice idle timeout; a passthrough of a silent
//! client (one that sent nothing before the sniff timeout, hoping the server speaks first) ends
//! sooner if the server does not speak either.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Side;
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::proxy::Proxy;

/// Idle bounds of one splice.
#[derive(Debug, Clone, Copy)]
pub struct SpliceIdle {
    /// Neither side sent a byte for this long: close both.
    pub idle: Duration,
    /// For a client that said nothing before the sniff timeout: the upstream must speak
    /// within this long, or both are closed.
    pub silent_first: Duration,
}

/// Forwards a non-HTTP connection, bytes already read included, to the default target.
pub async fn passthrough(
    proxy: &Proxy,
    client: Prefixed<TcpStream>,
    port: u16,
    peer: SocketAddr,
    bounds: SpliceIdle,
) {
    let table = std::sync::Arc::clone(&proxy.table.borrow());
    let Some(addr) = proxy.upstreams.pick(table.default_target(), port) else {
        proxy.metrics.error(Side::Upstream);
        tracing::debug!(%peer, "tcp: no ready endpoint for the default target; closing");
        return;
    };
    let mut upstream = match proxy.upstreams.connect_tcp(addr, Side::Upstream).await {
        Ok(s) => s,
        Err(e) => {
            proxy.metrics.error(Side::Upstream);
            tracing::debug!(%peer, error = %e, "tcp: connect failed; closing");
            return;
        }
    };
    let (prefix, client) = client.into_parts();
    let first = if prefix.is_empty() {
        bounds.silent_first
    } else {
        if let Err(e) = upstream.write_all(&prefix).await {
            tracing::debug!(%peer, error = %e, "tcp: write to upstream failed");
            return;
        }
        bounds.idle
    };
    match splice(client, upstream, first, bounds.idle).await {
        Ok(Some((up, down))) => tracing::debug!(%peer, %addr, up, down, "tcp: closed"),
        Ok(None) => tracing::debug!(%peer, %addr, "tcp: closed after the idle timeout"),
        Err(e) => tracing::debug!(%peer, %addr, error = %e, "tcp: ended with error"),
    }
}

/// Copies both ways until both sides close (the byte counts) or neither sends for the idle
/// bound (`None`; both are closed on drop).
async fn splice<A, B>(
    a: A,
    mut b: B,
    first: Duration,
    idle: Duration,
) -> std::io::Result<Option<(u64, u64)>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, activity) = Tracked::new(a);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => r.map(Some),
        _ = quiet_for(&activity, first, idle) => Ok(None),
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
    match splice(client, up, idle, idle).await {
        Ok(Some(_)) => {}
        Ok(None) => tracing::debug!("upgraded connection closed after the idle timeout"),
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended with error"),
    }
}
