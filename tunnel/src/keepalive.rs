//! Keepalive: each end pings the other on a fixed interval and drops the tunnel when a ping
//! goes unanswered, so a dead peer (laptop asleep, port-forward silently gone) is noticed even
//! when no stream is active.

use std::time::Duration;

use h2::{Ping, PingPong};

/// Why the keepalive gave up on the peer.
#[derive(Debug, thiserror::Error)]
pub enum KeepaliveError {
    #[error("no answer to a keepalive ping within {0:?}")]
    NoPong(Duration),
    #[error("keepalive ping failed: {0}")]
    Ping(h2::Error),
}

/// Pings until the peer fails to answer. The h2 connection must be polled concurrently (the
/// pong arrives through it).
pub(crate) async fn run(
    mut ping: PingPong,
    interval: Duration,
    timeout: Duration,
) -> KeepaliveError {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepaliveError::Ping(e),
            Err(_) => return KeepaliveError::NoPong(timeout),
        }
    }
}
