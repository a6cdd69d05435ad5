//! Upstream HTTP/2 connections shared by every client, for streams without a request body.
//!
//! A client's first `--upstream-h2-shared-streams` body-less streams (GETs, most of a typical
//! h2c workload) ride connections shared by all clients: more frames per syscall and fewer
//! connection tasks than one connection per client. Isolation holds by arithmetic, not by
//! separation:
//! - each shared connection advertises a connection window of at least its stream cap times
//!   the stream window, so streams whose client stopped reading, holding at most their own
//!   stream window each, can never use up the connection window the others need;
//! - a client holds at most its quota of streams here (the rest go on its own connections,
//!   `h2_pool.rs`), so what its stalled streams make the router buffer stays bounded per client
//!   (quota × stream window);
//! - no request body travels here, so a backend that stops reading one client's upload cannot
//!   stall another client's stream behind the backend's connection window.
//!
//! Connections open per address as the open ones fill (`h2_streams_per_connection`); the
//! number of streams, hence of connections, is bounded by the clients' quotas. A connection
//! that carried no stream for `--upstream-idle-timeout` is closed by the periodic sweep.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::h2_pool::{drop_idle, open, take_room, H2Conn, H2Stream};
use super::{AddrMap, Upstreams};
use crate::body::StreamSlot;
use crate::error::{ProxyError, Side};
use crate::exec::Exec;

/// The shared connections, by address.
#[derive(Debug)]
pub struct SharedH2 {
    upstreams: Arc<Upstreams>,
    by_addr: Mutex<AddrMap<AddrConns>>,
    /// Receive window of each shared connection: stream cap × stream window.
    connection_window: u32,
}

#[derive(Debug, Default)]
struct AddrConns {
    conns: Vec<H2Conn>,
    /// Serializes opening connections to this address, so a burst fills one before opening
    /// another; per address, so a slow connect to one address delays no other.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl SharedH2 {
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        let cfg = upstreams.config();
        let connection_window = shared_connection_window(
            cfg.h2_streams_per_connection,
            cfg.h2_stream_window,
            cfg.h2_connection_window,
        );
        SharedH2 {
            upstreams,
            by_addr: Mutex::default(),
            connection_window,
        }
    }

    /// A stream to `addr` on a shared connection; `quota` is one of the client's shared-stream
    /// permits, held until the response ends.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        side: Side,
        quota: OwnedSemaphorePermit,
    ) -> Result<H2Stream, ProxyError> {
        let (quota, opening) = match self.take(addr, side, quota) {
            Ok(s) => return Ok(s),
            Err(q) => q,
        };
        let _gate = opening.lock().await;
        let quota = match self.take(addr, side, quota) {
            Ok(s) => return Ok(s),
            Err((q, _)) => q,
        };
        let tx = Box::pin(open(
            &self.upstreams,
            addr,
            side,
            self.connection_window,
            &Exec::Spawn,
        ))
        .await?;
        let in_flight = Arc::new(AtomicUsize::new(1));
        self.lock()
            .entry(addr)
            .or_default()
            .conns
            .push(H2Conn::opened(tx.clone(), Arc::clone(&in_flight)));
        Ok(H2Stream {
            tx,
            slot: StreamSlot {
                _permit: quota,
                in_flight,
            },
        })
    }

    /// Room on a live connection, or the permit back with this address's opening gate.
    #[allow(clippy::type_complexity)]
    fn take(
        &self,
        addr: SocketAddr,
        side: Side,
        quota: OwnedSemaphorePermit,
    ) -> Result<H2Stream, (OwnedSemaphorePermit, Arc<tokio::sync::Mutex<()>>)> {
        let cfg = self.upstreams.config();
        let mut map = self.lock();
        if !map.contains_key(&addr) {
            // A new address (rare): first forget addresses whose connections all closed and
            // that nobody is opening, so the map holds only addresses in use.
            map.retain(|_, a| {
                a.conns.retain(|c| !c.tx.is_closed());
                !a.conns.is_empty() || Arc::strong_count(&a.opening) > 1
            });
        }
        let a = map.entry(addr).or_default();
        match take_room(
            &mut a.conns,
            cfg.h2_streams_per_connection,
            cfg.h2_connections_per_client,
            side,
            cfg.session_reuse,
        ) {
            Some((tx, in_flight)) => Ok(H2Stream {
                tx,
                slot: StreamSlot {
                    _permit: quota,
                    in_flight,
                },
            }),
            None => Err((quota, Arc::clone(&a.opening))),
        }
    }

    /// Drops connections that carried no stream for `idle` (no client owns them, so no
    /// client's going away closes them), and the entries of addresses left with none that
    /// nobody is opening. Run periodically.
    pub fn sweep(&self, idle: Duration) {
        self.lock().retain(|_, a| {
            drop_idle(&mut a.conns, idle);
            !a.conns.is_empty() || Arc::strong_count(&a.opening) > 1
        });
    }

    /// Addresses with shared connections (for tests).
    pub fn addrs(&self) -> usize {
        self.lock().len()
    }

    /// Live shared connections to `addr` (for tests).
    pub fn connections(&self, addr: SocketAddr) -> usize {
        self.lock()
            .get(&addr)
            .map_or(0, |a| a.conns.iter().filter(|c| !c.tx.is_closed()).count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AddrMap<AddrConns>> {
        self.by_addr
            .lock()
            .expect("shared pool lock is never held across a panic")
    }
}

/// The receive window of a shared connection: room for every stream it may carry to hold a
/// full stream window (never below the configured connection window; HTTP/2's maximum is
/// 2^31 - 1).
pub fn shared_connection_window(streams: usize, stream_window: u32, floor: u32) -> u32 {
    let all = (streams as u64).saturating_mul(u64::from(stream_window));
    all.clamp(u64::from(floor), (1 << 31) - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::shared_connection_window;

    #[test]
    fn the_connection_window_covers_every_stream_window() {
        assert_eq!(
            shared_connection_window(100, 256 * 1024, 1 << 20),
            100 * 256 * 1024
        );
        assert_eq!(shared_connection_window(1, 1024, 1 << 20), 1 << 20);
        assert_eq!(
            shared_connection_window(100_000, 1 << 30, 1 << 20),
            (1 << 31) - 1
        );
    }
}
