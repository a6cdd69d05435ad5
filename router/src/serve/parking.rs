//! The parking lot: where idle keep-alive HTTP/1.1 connections wait between exchanges with no
//! task, no reactor registration and no heap of their own.
//!
//! A proxy in front of a Service holds thousands of idle keep-alive connections. Once
//! `serve::http1` has freed a quiet connection's hyper state, the bare socket leaves tokio
//! (`into_std`) and comes here: one slab entry (the socket, its peer, its admission slot and
//! gauge, its deadline: 128 bytes) and one registration with the lot's own epoll instance,
//! keyed by the slab index. One thread ("ktx-parking") waits on that epoll with the earliest
//! deadline as its timeout. When a parked socket turns readable the thread peeks one byte:
//! data → the socket is handed back (the caller's `wake` spawns a fresh connection task on the
//! runtime, which registers it with tokio again); end of stream or an error → the client is
//! gone and the socket is closed. A parked connection with no new request for
//! `--client-idle-timeout` is closed; every connection gets the same timeout, so parking order
//! is deadline order and a FIFO of (index, sequence) is the whole timer. When shutdown is
//! signalled (or the runtime goes away) the lot closes every parked socket, refuses new ones,
//! and its thread ends.
//! Once parking has been quiet for a moment after a wave, the thread lets the allocator give
//! back what the parked connections freed (`return_freed_pages`).
//!
//! A thread rather than a task: watching an epoll instance from tokio needs `AsyncFd`, whose
//! safe constructors are deprecated as unsound (tokio#8587) and whose replacements are
//! `unsafe`; the thread also keeps the lot's work off the request workers.
//!
//! What this module does not own: deciding when a connection may park (only between two
//! complete exchanges: `serve::http1`), and serving it once woken.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use prometheus_client::metrics::gauge::Gauge;
use slab::Slab;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{after, earliest, signalled};
use crate::admission::Admitted;
use crate::metrics::ConnGuard;

/// What a client connection holds for as long as it is open, parked or not: its admission slot
/// (so `--max-connections` and the per-source limit count parked connections) and its place
/// in the open-connections gauge.
#[derive(Debug)]
pub struct Held {
    pub slot: Admitted,
    pub guard: ConnGuard,
}

/// A parked connection handed back because its client sent bytes. `stream` is in
/// non-blocking mode, ready for `tokio::net::TcpStream::from_std` on the runtime.
#[derive(Debug)]
pub struct Woken {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub port: u16,
    pub held: Held,
}

/// Events taken from the lot's epoll per wake-up.
const EVENTS: usize = 256;

/// The token of the lot's waker; slab indices never reach it.
const WAKER: Token = Token(usize::MAX);

/// After a wave of parkings, the lot's thread calls [`return_freed_pages`] once parking has
/// been quiet this long, or twice the allocator's purge delay if that is longer (what the wave
/// freed is then due): a wave costs its freed buffers for a moment only.
const TIDY_AFTER: Duration = Duration::from_millis(100);

/// A wave is tidied up at the latest this long after its first parking (or the delay above, if
/// longer), so that a steady trickle of parkings, each less than [`TIDY_AFTER`] after the last,
/// does not put it off for good.
const TIDY_WITHIN: Duration = Duration::from_secs(1);

/// How long after a wave of parkings to call [`return_freed_pages`], given the allocator's
/// `MIMALLOC_PURGE_DELAY` (milliseconds; mimalloc's default is 1,000, `main.rs` sets 10 unless
/// the operator chose). None when the allocator purges at once (0) or never (negative).
pub fn tidy_after(purge_delay: Option<&str>) -> Option<Duration> {
    let delay_ms = purge_delay
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(1000);
    let delay = Duration::from_millis(u64::try_from(delay_ms).ok().filter(|&ms| ms > 0)?);
    Some(TIDY_AFTER.max(delay.saturating_mul(2)))
}

/// One parked connection.
#[derive(Debug)]
struct Parked {
    stream: MioStream,
    peer: SocketAddr,
    port: u16,
    held: Held,
    deadline: Instant,
    /// Tells this parking from an earlier one that used the same slab index.
    seq: u32,
}

#[derive(Debug, Default)]
struct Lot {
    parked: Slab<Parked>,
    /// (index, seq) in parking order, which is deadline order. Entries of connections that
    /// left early stay until they reach the front or a compaction drops them.
    order: VecDeque<(u32, u32)>,
    next_seq: u32,
    /// Shutdown: no more parking.
    closed: bool,
    /// The current wave of parkings: when it began, and when the lot's thread lets the
    /// allocator give back what its connections freed ([`return_freed_pages`]).
    wave: Option<Wave>,
    /// Waves tidied up so far.
    tidies: u64,
}

#[derive(Debug, Clone, Copy)]
struct Wave {
    since: Instant,
    tidy_at: Instant,
}

impl Lot {
    fn is_current(&self, (key, seq): (u32, u32)) -> bool {
        self.parked.get(key as usize).is_some_and(|p| p.seq == seq)
    }

    /// Keeps `order` at most about twice the parked count: a connection that parks and wakes
    /// every few seconds would otherwise leave one stale entry per parking for a whole
    /// timeout.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.parked.len() + 1024 {
            let mut order = std::mem::take(&mut self.order);
            order.retain(|&e| self.is_current(e));
            order.shrink_to(2 * order.len() + 1024);
            self.order = order;
        }
    }
}

/// The parking lot: connections park here; its thread watches them.
#[derive(Debug)]
pub struct ParkingLot {
    registry: Registry,
    lot: Mutex<Lot>,
    /// Wakes the thread: a connection parked in an empty lot (no deadline armed yet), the
    /// first parking of a wave (no tidying armed yet), or shutdown.
    waker: Waker,
    idle_timeout: Duration,
    /// See [`tidy_after`]; None: no tidying.
    tidy_after: Option<Duration>,
    parked_gauge: Gauge,
}

impl ParkingLot {
    /// Starts a lot whose connections are closed `idle_timeout` after they park, and which
    /// tidies up `tidy_after` a wave of parkings (see [`tidy_after`]); woken ones go
    /// to `wake` with the lot (called on the lot's thread: it should only hand them to the
    /// runtime). The lot
    /// closes when `shutdown` turns true or the runtime this is called on shuts down.
    pub fn start(
        idle_timeout: Duration,
        tidy_after: Option<Duration>,
        parked_gauge: Gauge,
        shutdown: watch::Receiver<bool>,
        wake: impl Fn(Woken, &Arc<ParkingLot>) + Send + 'static,
    ) -> io::Result<Arc<Self>> {
        let poll = Poll::new()?;
        let lot = Arc::new(ParkingLot {
            registry: poll.registry().try_clone()?,
            waker: Waker::new(poll.registry(), WAKER)?,
            lot: Mutex::default(),
            idle_timeout,
            tidy_after,
            parked_gauge,
        });
        std::thread::Builder::new()
            .name("ktx-parking".into())
            .spawn({
                let lot = Arc::clone(&lot);
                move || run(&lot, poll, wake)
            })?;
        tokio::spawn(close_on_shutdown(Arc::clone(&lot), shutdown));
        Ok(lot)
    }

    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.lot
            .lock()
            .expect("the parking lot's lock is never held across a panic")
    }

    /// Parks an idle connection (its hyper state already freed, no unread bytes). On an error
    /// (the router is shutting down, or the kernel refused the registration) the connection
    /// is closed, which a keep-alive client must expect at any time between requests anyway.
    pub fn park(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        port: u16,
        held: Held,
    ) -> io::Result<()> {
        let mut stream = MioStream::from_std(stream.into_std()?);
        let mut lot = self.lock();
        if lot.closed {
            return Err(io::Error::other("shutting down"));
        }
        let now = Instant::now();
        let seq = lot.next_seq;
        lot.next_seq = seq.wrapping_add(1);
        let entry = lot.parked.vacant_entry();
        let key = entry.key();
        let Ok(index) = u32::try_from(key) else {
            return Err(io::Error::other("too many parked connections"));
        };
        // Registered under the lock: an event for `key` is handled only once the entry is in.
        self.registry
            .register(&mut stream, Token(key), Interest::READABLE)?;
        entry.insert(Parked {
            stream,
            peer,
            port,
            held,
            deadline: after(now, self.idle_timeout),
            seq,
        });
        lot.order.push_back((index, seq));
        lot.compact();
        self.parked_gauge.inc();
        let mut new_wave = false;
        if let Some(after) = self.tidy_after {
            let since = lot.wave.map_or(now, |w| w.since);
            new_wave = lot.wave.is_none();
            lot.wave = Some(Wave {
                since,
                tidy_at: (now + after).min(since + after.max(TIDY_WITHIN)),
            });
        }
        if lot.parked.len() == 1 || new_wave {
            // The thread may be waiting with no deadline, or only for a later one.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Takes a connection out of the lot (and out of its epoll).
    fn remove(&self, lot: &mut Lot, key: usize) -> Parked {
        let mut p = lot.parked.remove(key);
        // Closing the socket would remove it from the epoll as well; a socket handed back
        // must leave it, or its next bytes would wake the lot too.
        let _ = self.registry.deregister(&mut p.stream);
        self.parked_gauge.dec();
        p
    }

    /// Handles readiness of the connection at `key`; pushes it to `out` if it must leave.
    /// An event may be stale (its connection left and the index was reused within one batch of
    /// events): the peek then finds the new socket quiet, or finds it readable or closed, which
    /// is true of that socket too.
    fn readable(&self, lot: &mut Lot, key: usize, out: &mut Vec<(Parked, bool)>) {
        let Some(p) = lot.parked.get(key) else {
            return;
        };
        let mut byte = [0u8; 1];
        let woken = match p.stream.peek(&mut byte) {
            Ok(0) => false, // the client closed its side: nothing more will come
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => false, // reset
        };
        out.push((self.remove(lot, key), woken));
    }

    /// Closes the connections whose deadline has passed; returns the next deadline.
    fn expire(&self, now: Instant, out: &mut Vec<(Parked, bool)>) -> Option<Instant> {
        let mut lot = self.lock();
        while let Some(&(key, seq)) = lot.order.front() {
            if !lot.is_current((key, seq)) {
                lot.order.pop_front();
                continue;
            }
            let deadline = lot.parked[key as usize].deadline;
            if deadline > now {
                return Some(deadline);
            }
            lot.order.pop_front();
            let p = self.remove(&mut lot, key as usize);
            tracing::debug!(peer = %p.peer, "idle keep-alive connection closed after the idle timeout");
            out.push((p, false));
        }
        None
    }

    /// Whether parking has been quiet long enough to tidy up now (which this records), and
    /// else when to look again.
    fn tidy(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut lot = self.lock();
        match lot.wave {
            Some(w) if w.tidy_at <= now => {
                lot.wave = None;
                lot.tidies += 1;
                (true, None)
            }
            w => (false, w.map(|w| w.tidy_at)),
        }
    }

    /// Refuses new connections from now on and tells the thread to close the parked ones.
    fn close(&self) {
        self.lock().closed = true;
        let _ = self.waker.wake();
    }

    /// Closes every parked connection (and refuses new ones).
    fn close_all(&self) {
        let closed: Vec<Parked> = {
            let mut lot = self.lock();
            lot.closed = true;
            lot.order.clear();
            self.parked_gauge.dec_by(lot.parked.len() as i64);
            lot.parked.drain().collect()
        };
        drop(closed);
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Closes the lot once shutdown is signalled, or when this task is dropped with its runtime.
async fn close_on_shutdown(lot: Arc<ParkingLot>, mut shutdown: watch::Receiver<bool>) {
    struct CloseOnDrop(Arc<ParkingLot>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseOnDrop(lot);
    signalled(&mut shutdown).await;
}

/// The lot's thread: hands woken connections to `wake`, closes the ones whose client left or
/// whose idle timeout passed, until the lot is closed (or its epoll instance fails); then
/// closes every parked connection.
fn run(lot: &Arc<ParkingLot>, mut poll: Poll, wake: impl Fn(Woken, &Arc<ParkingLot>)) {
    let mut events = Events::with_capacity(EVENTS);
    let mut leaving = Vec::new();
    loop {
        let now = Instant::now();
        let next = lot.expire(now, &mut leaving);
        hand_out(lot, &mut leaving, &wake);
        if lot.is_closed() {
            break;
        }
        let (tidy_now, tidy_at) = lot.tidy(now);
        if tidy_now {
            return_freed_pages();
        }
        let next = earliest(next, tidy_at);
        let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "the parking lot failed; idle keep-alive connections are closed");
                break;
            }
        }
        let mut parked = lot.lock();
        for ev in events.iter().filter(|ev| ev.token() != WAKER) {
            lot.readable(&mut parked, ev.token().0, &mut leaving);
        }
        drop(parked);
        hand_out(lot, &mut leaving, &wake);
    }
    lot.close_all();
}

/// Lets the allocator give back to the OS the memory that connections freed before they
/// parked (their hyper state: buffers of several KiB each).
///
/// mimalloc (the router's allocator, `main.rs`) returns freed pages to the OS in batches, once
/// `MIMALLOC_PURGE_DELAY` has passed since the first of them was freed, and only from inside a
/// later call that frees a page, abandons one (a thread's exit) or collects. A router that
/// goes quiet after a wave of parkings makes no such call, and kept the wave's last buffers in
/// its RSS until the next burst of traffic (measured with 5,000 connections parked: 0.82–0.98
/// KB per connection 1.5 s after the wave, 0.6 KB once a thread's exit happened to purge).
/// Freeing a block too large to share a page (over 512 KiB: it gets a page of its own, never
/// retired) is such a call, from any thread. The block's memory is never written by us;
/// mimalloc writes its first word, so it costs at most one page fault. (`mi_collect` would say
/// it directly, but only through `unsafe`.)
fn return_freed_pages() {
    let block: Vec<u8> = Vec::with_capacity(1 << 20);
    std::hint::black_box(&block);
}

/// Outside the lock: hands woken connections to `wake`, closes the others.
fn hand_out(
    lot: &Arc<ParkingLot>,
    leaving: &mut Vec<(Parked, bool)>,
    wake: &impl Fn(Woken, &Arc<ParkingLot>),
) {
    for (p, woken) in leaving.drain(..) {
        if woken {
            let woken = Woken {
                stream: std::net::TcpStream::from(OwnedFd::from(p.stream)),
                peer: p.peer,
                port: p.port,
                held: p.held,
            };
            wake(woken, lot);
        }
        // Otherwise dropped here: socket closed, slot and gauge released.
    }
    if leaving.capacity() > EVENTS {
        leaving.shrink_to(EVENTS);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::mpsc;

    use super::*;
    use crate::admission::Admission;
    use crate::metrics::{Metrics, Proto};

    /// A lot (60 s idle timeout) with what parking needs: metrics, admission, a listener.
    struct Fixture {
        metrics: Metrics,
        admission: Admission,
        lot: Arc<ParkingLot>,
        listener: tokio::net::TcpListener,
        _stop: watch::Sender<bool>,
    }

    impl Fixture {
        /// `max_connections`: the admission cap of the connections parked here.
        async fn new(
            max_connections: usize,
            wake: impl Fn(Woken, &Arc<ParkingLot>) + Send + 'static,
        ) -> Self {
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = Metrics::new(&mut registry);
            let admission = Admission::new(max_connections, 0, 0, metrics.clone());
            let (stop, shutdown) = watch::channel(false);
            let lot = ParkingLot::start(
                Duration::from_secs(60),
                Some(TIDY_AFTER),
                metrics.parked_connections.clone(),
                shutdown,
                wake,
            )
            .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Fixture {
                metrics,
                admission,
                lot,
                listener,
                _stop: stop,
            }
        }

        /// A connected pair: (the router's side as a tokio stream, the client's side).
        async fn pair(&self) -> (TcpStream, std::net::TcpStream) {
            let addr = self.listener.local_addr().unwrap();
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (server, _) = self.listener.accept().await.unwrap();
            (server, client)
        }

        /// What an admitted connection from `peer` holds.
        fn held(&self, peer: SocketAddr) -> Held {
            Held {
                slot: self.admission.admit(peer.ip()).unwrap(),
                guard: ConnGuard::new(&self.metrics, Proto::http1),
            }
        }
    }

    /// What a parked connection costs the lot: its slab entry and two words of FIFO.
    #[test]
    fn a_parked_connection_is_a_small_slab_entry() {
        let entry = std::mem::size_of::<Parked>();
        eprintln!("parked connection: {entry} bytes");
        assert!(entry <= 160, "{entry} bytes");
        assert!(after(Instant::now(), Duration::MAX) > Instant::now());
    }

    /// Once parking has been quiet for `TIDY_AFTER`, the lot's thread lets the allocator give
    /// back what the parked connections freed, also when the lot was not empty (its thread
    /// then waits for a deadline a whole idle timeout away, and a parking must wake it).
    #[tokio::test]
    async fn the_lot_tidies_up_after_each_wave_of_parkings() {
        let f = Fixture::new(64, |_, _| {}).await;
        let lot = &f.lot;
        let tidies = || lot.lock().tidies;
        let mut clients = Vec::new();
        for wave in 0..2 {
            let (server, client) = f.pair().await;
            let peer = server.peer_addr().unwrap();
            lot.park(server, peer, 80, f.held(peer)).unwrap();
            clients.push(client);
            let mut tidied = false;
            for _ in 0..100 {
                tokio::time::sleep(TIDY_AFTER / 4).await;
                tidied = tidies() == wave + 1;
                if tidied {
                    break;
                }
            }
            assert!(
                tidied,
                "wave {wave}: {} tidies after {:?}",
                tidies(),
                TIDY_AFTER * 25
            );
        }
        assert_eq!(f.metrics.parked_connections.get(), 2);
    }

    /// Parkings that never pause for `TIDY_AFTER` (a steady trickle) still get a tidy-up
    /// within `TIDY_WITHIN` of the first.
    #[tokio::test]
    async fn a_steady_trickle_of_parkings_is_tidied_up_too() {
        let f = Fixture::new(64, |_, _| {}).await;
        let started = Instant::now();
        let mut clients = Vec::new();
        while f.lot.lock().tidies == 0 {
            assert!(
                started.elapsed() < TIDY_WITHIN * 3,
                "no tidy-up in {:?} of parkings every {:?}",
                started.elapsed(),
                TIDY_AFTER / 2
            );
            let (server, client) = f.pair().await;
            let peer = server.peer_addr().unwrap();
            f.lot.park(server, peer, 80, f.held(peer)).unwrap();
            clients.push(client);
            tokio::time::sleep(TIDY_AFTER / 2).await;
        }
    }

    #[test]
    fn tidying_follows_the_allocators_purge_delay() {
        // Unset: mimalloc's own default, a second.
        assert_eq!(tidy_after(None), Some(Duration::from_secs(2)));
        // As main.rs sets it, or anything short: TIDY_AFTER.
        assert_eq!(tidy_after(Some("10")), Some(TIDY_AFTER));
        assert_eq!(tidy_after(Some(" 1 ")), Some(TIDY_AFTER));
        assert_eq!(tidy_after(Some("300")), Some(Duration::from_millis(600)));
        // Purged at once, or never: nothing to tidy.
        assert_eq!(tidy_after(Some("0")), None);
        assert_eq!(tidy_after(Some("-1")), None);
        // Unreadable: mimalloc falls back to its default too.
        assert_eq!(tidy_after(Some("soon")), Some(Duration::from_secs(2)));
    }

    /// A connection that parks and wakes again and again (a client with a request every
    /// second or two) leaves stale entries in the deadline FIFO; they are compacted away, so
    /// the FIFO stays near the number of parked connections.
    #[tokio::test]
    async fn a_connection_that_parks_and_wakes_often_leaves_a_bounded_fifo() {
        let (woken_tx, woken_rx) = mpsc::channel::<Woken>();
        let f = Fixture::new(2, move |w, _| woken_tx.send(w).unwrap()).await;
        let (lot, metrics, admission) = (&f.lot, &f.metrics, &f.admission);
        // A quiet connection parked first stays at the head of the FIFO, so stale entries
        // behind it are never popped there.
        let (quiet, _quiet_client) = f.pair().await;
        let quiet_peer = quiet.peer_addr().unwrap();
        lot.park(quiet, quiet_peer, 80, f.held(quiet_peer)).unwrap();
        let (mut server, mut client) = f.pair().await;
        let peer = client.local_addr().unwrap();
        let mut held = f.held(peer);
        for i in 0..3000u32 {
            lot.park(server, peer, 80, held).unwrap();
            client.write_all(b"x").unwrap();
            let w = woken_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let mut byte = [0u8; 1];
            let mut stream = w.stream;
            stream.set_nonblocking(false).unwrap();
            stream.read_exact(&mut byte).unwrap();
            stream.set_nonblocking(true).unwrap();
            held = w.held;
            server = TcpStream::from_std(stream).unwrap();
            let order = lot.lock().order.len();
            assert!(
                order <= 2 * 2 + 1024 + 1,
                "FIFO of {order} after {i} parkings"
            );
        }
        assert_eq!(metrics.parked_connections.get(), 1);
        // The client leaves while parked: reaped, its slot given back.
        lot.park(server, peer, 80, held).unwrap();
        assert_eq!(metrics.parked_connections.get(), 2);
        drop(client);
        // The slot comes back once the lot's thread has closed the socket.
        let mut admitted = None;
        for _ in 0..500 {
            admitted = admission.admit(peer.ip()).ok();
            if admitted.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(admitted.is_some(), "the reaped connection kept its slot");
        assert_eq!(metrics.parked_connections.get(), 1);
    }
}
