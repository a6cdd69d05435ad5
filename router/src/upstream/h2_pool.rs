//! Upstream HTTP/2 connections of one downstream h2c connection.
//!
//! Each downstream h2c connection gets its own upstream connections: the shape traffic has
//! without a router, where every client holds its own connection to the backend. A client that
//! stops reading (zero window) stalls only its own upstream connection's windows; another
//! client's streams run on other connections and never wait behind it. Per address, a pool
//! opens a new connection when the open ones carry `h2_streams_per_connection` streams, up to
//! `h2_connections_per_client`; past that a stream waits at most `h2_stream_slot_timeout` for a
//! slot and then fails with [`ProxyError::NoStreamSlot`] (503, or gRPC `UNAVAILABLE`).
//!
//! The pool dies with its downstream connection, whose task drives its connections
//! (`crate::exec`); they close once their last stream ends. With
//! `--upstream-h2-shared-streams N`, a client's first N streams without a request body go on
//! connections shared by every client instead (`h2_shared.rs`), where window arithmetic keeps
//! the isolation. With `--upstream-h2-shared` one pool serves every client (no isolation
//! between clients).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::h2_client::{self, H2Tx, Windows};

use super::h2_shared::SharedH2;
use super::{AddrMap, SessionReuse, Upstreams};
use crate::body::StreamSlot;
use crate::error::{ProxyError, Side};
use crate::exec::Exec;

/// The upstream HTTP/2 connections of one downstream connection, by address.
#[derive(Debug)]
pub struct H2Pool {
    upstreams: Arc<Upstreams>,
    by_addr: Mutex<AddrMap<AddrPool>>,
    /// Connections shared by every client, and this client's quota of streams on them.
    shared: Option<(Arc<SharedH2>, Arc<Semaphore>)>,
    /// Where this pool's connections run: their own tasks, or the client connection's.
    exec: Exec,
}

#[derive(Debug)]
struct AddrPool {
    /// Every stream slot to this address (streams per connection × connections).
    slots: Arc<Semaphore>,
    conns: Vec<H2Conn>,
    /// Serializes opening connections to this address, so a burst of streams fills one before
    /// opening another; per address, so connects to a shadow that swallows them (each waits
    /// out the connect timeout) hold up no stream to the original.
    opening: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
pub(super) struct H2Conn {
    pub(super) tx: H2Tx,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) born: Instant,
    /// When its last stream started (its birth, for the stream that opened it).
    pub(super) last_stream: Instant,
}

impl H2Conn {
    /// A connection just opened for one stream.
    pub(super) fn opened(tx: H2Tx, in_flight: Arc<AtomicUsize>) -> Self {
        let now = Instant::now();
        H2Conn {
            tx,
            in_flight,
            born: now,
            last_stream: now,
        }
    }

    /// Carries a stream, or started one less than `idle` ago.
    fn in_use(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0 || self.last_stream.elapsed() < idle
    }
}

/// A stream's connection and the slot it holds until its response ends.
#[derive(Debug)]
pub struct H2Stream {
    pub tx: H2Tx,
    pub slot: StreamSlot,
}

impl H2Pool {
    /// A pool whose streams all go on its own connections.
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        H2Pool {
            upstreams,
            by_addr: Mutex::default(),
            shared: None,
            exec: Exec::Spawn,
        }
    }

    /// One client connection's pool: up to `h2_shared_streams_per_client` streams without a
    /// request body at a time go on `shared`, the others on the pool's own connections, run
    /// by `exec` (the client connection's task).
    pub fn per_client(
        upstreams: Arc<Upstreams>,
        shared: Option<Arc<SharedH2>>,
        exec: Exec,
    ) -> Self {
        let quota = upstreams.config().h2_shared_streams_per_client;
        let mut pool = H2Pool::new(upstreams);
        pool.exec = exec;
        pool.shared = shared
            .filter(|_| quota > 0)
            .map(|s| (s, Arc::new(Semaphore::new(quota))));
        pool
    }

    /// A connection to `addr` with room for one more stream, waiting a bounded time for a
    /// slot when every allowed connection is full. `bodyless`: the request has no body, so
    /// it may go on a shared connection.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        side: Side,
        bodyless: bool,
    ) -> Result<H2Stream, ProxyError> {
        if let (true, Some((shared, quota))) = (bodyless, &self.shared) {
            if let Ok(q) = Arc::clone(quota).try_acquire_owned() {
                return shared.stream(addr, side, q).await;
            }
        }
        let permit = self.permit(addr, side).await?;
        // Holding a permit guarantees room: on a live connection, or for a new one.
        let permit = match self.take_room(addr, permit, side) {
            Ok(s) => return Ok(s),
            Err(p) => p,
        };
        let gate = self.opening_gate(addr);
        let _gate = gate.lock().await;
        let permit = match self.take_room(addr, permit, side) {
            Ok(s) => return Ok(s),
            Err(p) => p,
        };
        let window = self.upstreams.config().h2_connection_window;
        let tx = Box::pin(open(&self.upstreams, addr, side, window, &self.exec)).await?;
        let in_flight = Arc::new(AtomicUsize::new(1));
        if let Some(p) = self.lock().get_mut(&addr) {
            p.conns
                .push(H2Conn::opened(tx.clone(), Arc::clone(&in_flight)));
        }
        Ok(H2Stream {
            tx,
            slot: StreamSlot {
                _permit: permit,
                in_flight,
            },
        })
    }

    /// A stream slot to `addr`, waiting a bounded time when every allowed one is taken.
    async fn permit(
        &self,
        addr: SocketAddr,
        side: Side,
    ) -> Result<OwnedSemaphorePermit, ProxyError> {
        let cfg = self.upstreams.config();
        let total = cfg.h2_streams_per_connection * cfg.h2_connections_per_client;
        let slots = {
            let mut map = self.lock();
            if !map.contains_key(&addr) {
                // A new address (rare): first forget addresses that went away, so the map
                // holds only addresses with a live connection or a stream in flight.
                map.retain(|_, p| {
                    p.conns.retain(|c| !c.tx.is_closed());
                    !p.conns.is_empty() || p.slots.available_permits() < total
                });
            }
            Arc::clone(
                &map.entry(addr)
                    .or_insert_with(|| AddrPool {
                        slots: Arc::new(Semaphore::new(total)),
                        conns: Vec::new(),
                        opening: Arc::default(),
                    })
                    .slots,
            )
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let after = cfg.h2_stream_slot_timeout;
                match tokio::time::timeout(after, slots.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; treat it like running out of time.
                    Ok(Err(_)) | Err(_) => {
                        return Err(ProxyError::NoStreamSlot { side, addr, after })
                    }
                }
            }
        };
        Ok(permit)
    }

    /// Drops connections that carried no stream for `idle`, and the entries of addresses left
    /// with no connection and no stream. For the one pool of `--upstream-h2-shared`, which no
    /// client's going away closes; run periodically.
    pub fn sweep(&self, idle: Duration) {
        let cfg = self.upstreams.config();
        let total = cfg.h2_streams_per_connection * cfg.h2_connections_per_client;
        self.lock().retain(|_, p| {
            drop_idle(&mut p.conns, idle);
            !p.conns.is_empty() || p.slots.available_permits() < total
        });
    }

    /// The gate that serializes opening connections to `addr` (its entry exists while a
    /// permit to it is held).
    fn opening_gate(&self, addr: SocketAddr) -> Arc<tokio::sync::Mutex<()>> {
        self.lock()
            .get(&addr)
            .map_or_else(Arc::default, |p| Arc::clone(&p.opening))
    }

    /// Addresses this pool keeps state for (for tests and metrics).
    pub fn addrs(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AddrMap<AddrPool>> {
        self.by_addr
            .lock()
            .expect("pool lock is never held across a panic")
    }

    /// A live connection to `addr` under the per-connection stream cap; drops closed ones.
    fn take_room(
        &self,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
        side: Side,
    ) -> Result<H2Stream, OwnedSemaphorePermit> {
        let cfg = self.upstreams.config();
        let mut map = self.lock();
        let Some(pool) = map.get_mut(&addr) else {
            return Err(permit);
        };
        match take_room(
            &mut pool.conns,
            cfg.h2_streams_per_connection,
            cfg.h2_connections_per_client,
            side,
            cfg.session_reuse,
        ) {
            Some((tx, in_flight)) => Ok(H2Stream {
                tx,
                slot: StreamSlot {
                    _permit: permit,
                    in_flight,
                },
            }),
            None => Err(permit),
        }
    }
}

/// Takes a stream on one of `conns` under the per-connection cap `cap` (the connection and
/// its in-flight counter, already counting the new stream); drops closed connections, and for
/// a session's shadow the old quiet ones. A session's shadow gets new streams only on young
/// connections, but once `max_conns` old busy ones are kept (long-lived streams), on the
/// youngest of them rather than on one connection more: the connections, and the windows
/// they buffer, stay within the cap.
pub(super) fn take_room(
    conns: &mut Vec<H2Conn>,
    cap: usize,
    max_conns: usize,
    side: Side,
    reuse: SessionReuse,
) -> Option<(H2Tx, Arc<AtomicUsize>)> {
    let busy = |c: &H2Conn| c.in_flight.load(Ordering::Relaxed) > 0;
    if side == Side::Shadow {
        // A session's shadow: only young connections take more streams (`SessionReuse`;
        // h2 has no idle rule: dropping to zero streams between two of a busy client's
        // would open a connection per stream); an old one is let go once it is quiet.
        conns.retain(|c| !c.tx.is_closed() && (busy(c) || reuse.allows(c.born, None)));
    } else {
        conns.retain(|c| !c.tx.is_closed());
    }
    let room = |c: &H2Conn| c.in_flight.load(Ordering::Relaxed) < cap;
    let at = match conns
        .iter()
        .position(|c| room(c) && (side != Side::Shadow || reuse.allows(c.born, None)))
    {
        Some(at) => at,
        None if side == Side::Shadow && conns.len() >= max_conns => conns
            .iter()
            .enumerate()
            .filter(|(_, c)| room(c))
            .max_by_key(|(_, c)| c.born)
            .map(|(at, _)| at)?,
        None => return None,
    };
    let c = &mut conns[at];
    c.in_flight.fetch_add(1, Ordering::Relaxed);
    c.last_stream = Instant::now();
    Some((c.tx.clone(), Arc::clone(&c.in_flight)))
}

/// Drops closed connections and those that carried no stream for `idle`. Dropping the pool's
/// handle closes a connection once no stream holds another (hyper then ends it).
pub(super) fn drop_idle(conns: &mut Vec<H2Conn>, idle: Duration) {
    conns.retain(|c| !c.tx.is_closed() && c.in_use(idle));
}

/// Opens an HTTP/2 connection to `addr` with the given receive connection window; the
/// connection (and request bodies that wait for window) run on `exec`.
pub(super) async fn open(
    upstreams: &Upstreams,
    addr: SocketAddr,
    side: Side,
    connection_window: u32,
    exec: &Exec,
) -> Result<H2Tx, ProxyError> {
    let cfg = upstreams.config();
    let io = upstreams.connect_tcp(addr, side).await?;
    let windows = Windows {
        stream: cfg.h2_stream_window,
        connection: connection_window,
    };
    h2_client::handshake(io, windows, exec, addr)
        .await
        .map_err(|source| ProxyError::H2Handshake { side, addr, source })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::upstream::{EndpointMap, UpstreamConfig};

    #[tokio::test]
    async fn addresses_that_went_away_leave_no_entry() {
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(EndpointMap::default()));
        let upstreams = Arc::new(Upstreams::new(
            rx,
            UpstreamConfig {
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
                max_idle_per_addr: 8,
                h2_streams_per_connection: 100,
                h2_connections_per_client: 4,
                h2_stream_slot_timeout: Duration::from_secs(2),
                h2_stream_window: 1 << 16,
                h2_connection_window: 1 << 20,
                h2_shared_streams_per_client: 0,
                session_reuse: crate::upstream::SessionReuse {
                    idle: Duration::from_millis(100),
                    age: Duration::from_secs(1),
                },
            },
        ));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let gone = ktx_testbackend::spawn("gone", any).await.unwrap();
        let stays = ktx_testbackend::spawn("stays", any).await.unwrap();
        let pool = H2Pool::new(upstreams);
        drop(
            pool.stream(gone.addr(), Side::Upstream, true)
                .await
                .unwrap(),
        );
        assert_eq!(pool.addrs(), 1);
        gone.shutdown(Duration::from_secs(1)).await;
        // The dead address's connection closes; the next new address sweeps its entry.
        for _ in 0..200 {
            let s = pool
                .stream(stays.addr(), Side::Upstream, true)
                .await
                .unwrap();
            drop(s);
            if pool.addrs() == 1 {
                return;
            }
            // Only a new address sweeps: make `stays` new again by forgetting it.
            pool.lock().remove(&stays.addr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool kept {} addresses", pool.addrs());
    }
}
