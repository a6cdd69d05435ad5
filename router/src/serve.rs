//! Serving one connection once the listener has sniffed its protocol: HTTP/1.1 ([`http1`]),
//! whose idle connections wait in the [`parking`] lot, h2c ([`h2c`]), and byte splicing for plain TCP and upgraded connections
//! ([`splice`]). Each hands requests to the proxy core (`crate::proxy`) and owns only the
//! connection: its buffers, idle rules and shutdown. This module holds what they share.

pub mod h2c;
pub mod http1;
pub mod parking;
pub mod splice;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

/// Connection-level settings of the listeners.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// How long to wait for a client's first bytes before treating it as plain TCP (protocols
    /// where the server speaks first).
    pub sniff_timeout: Duration,
    /// Listening ports that carry HTTP only: silent clients there are never passed through.
    pub http_ports: Vec<u16>,
    /// Time allowed to receive a complete HTTP/1.1 request head (slowloris guard).
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// A keep-alive connection quiet this long after a response is parked (buffers freed).
    pub idle_park_after: Duration,
    /// A parked connection with no new request for this long is closed.
    pub client_idle_timeout: Duration,
    /// Receive windows of downstream h2c connections: the most one client's stream, and one
    /// client connection, can make the router buffer of request bodies.
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    /// An HTTP/1.1 connection in the middle of an exchange with no bytes either way for this
    /// long is closed (the longest legitimate pause: the response-header or the body idle
    /// timeout).
    pub exchange_stall_timeout: Duration,
    /// An h2c connection with no bytes either way for this long is closed.
    pub h2c_idle_timeout: Duration,
    /// A TCP passthrough or upgraded connection with no bytes either way for this long is
    /// closed.
    pub splice_idle_timeout: Duration,
    /// A client silent until the sniff timeout is passed through only if the upstream speaks
    /// within this long.
    pub silent_upstream_timeout: Duration,
    /// Upstream connects of silent clients take these turns (`--silent-connects` at a time).
    pub silent_connect_turns: Arc<Semaphore>,
}

/// `now + d`, or about never for a `d` too long for the clock: a timeout flag set absurdly high
/// must not panic.
pub fn after(now: std::time::Instant, d: Duration) -> std::time::Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// [`after`] on tokio's clock.
pub fn after_tokio(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(after(now.into_std(), d))
}

/// `d` from now on tokio's clock, as [`after`]: every deadline a timeout flag sets.
pub fn from_now(d: Duration) -> tokio::time::Instant {
    after_tokio(tokio::time::Instant::now(), d)
}

/// The earlier of two optional instants (None: that check is off).
pub fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
