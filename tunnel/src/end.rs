//! How a live tunnel session ended, as seen from either end.

use crate::keepalive::KeepaliveError;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("the peer closed the tunnel")]
    Closed,
    #[error("tunnel connection failed: {0}")]
    Failed(h2::Error),
    #[error(transparent)]
    DeadPeer(KeepaliveError),
    #[error("stopped by this side")]
    Stopped,
}
