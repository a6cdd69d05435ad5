//! Byte pipes: plain TCP passthrough of non-HTTP connections to the default target, and the
//! splice of both halves of an HTTP/1.1 Upgrade (WebSocket) after the 101.

use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::Side;
use crate::io::Prefixed;
use crate::proxy::Proxy;

/// Forwards a non-HTTP connection, bytes already read included, to the default target.
pub async fn passthrough(proxy: &Proxy, client: Prefixed<TcpStream>, port: u16, peer: SocketAddr) {
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
    let (prefix, mut client) = client.into_parts();
    if !prefix.is_empty() {
        if let Err(e) = upstream.write_all(&prefix).await {
            tracing::debug!(%peer, error = %e, "tcp: write to upstream failed");
            return;
        }
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(%peer, %addr, up, down, "tcp: closed"),
        Err(e) => tracing::debug!(%peer, %addr, error = %e, "tcp: ended with error"),
    }
}

/// Joins the client's socket (taken back from hyper after the 101) and the upstream's
/// upgraded connection until either side closes.
pub async fn splice_upgraded(client: Prefixed<TcpStream>, upstream: OnUpgrade) {
    let up = match upstream.await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(error = %e, "upstream upgrade failed");
            return;
        }
    };
    let mut up = TokioIo::new(up);
    let (leftover, mut client) = client.into_parts();
    if !leftover.is_empty() {
        if let Err(e) = up.write_all(&leftover).await {
            tracing::debug!(error = %e, "write to upgraded upstream failed");
            return;
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended with error");
    }
}
