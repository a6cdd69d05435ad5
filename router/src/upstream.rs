//! Where targets are and how to reach them: ready endpoints per target (static, or published by
//! the Kubernetes watcher), round robin, and pooled upstream connections with TCP_NODELAY and a
//! connect timeout. HTTP/1.1 connections are reused one exchange at a time, and driven by the
//! task of the exchange that holds them ([`Driver`]); HTTP/2 connections
//! belong to one downstream connection each ([`H2Pool`], in `upstream/h2_pool.rs`), except
//! the shared ones a few body-less streams per client ride ([`SharedH2`], `upstream/h2_shared.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ktx_rules::Target;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::body::RequestBody;
use crate::error::{ProxyError, Side};

pub mod h2_client;
mod h2_pool;
mod h2_shared;
pub mod raw_h1;
pub use h2_pool::H2Pool;
pub use h2_shared::SharedH2;
use raw_h1::RawConn;

/// A map by upstream address, with a fast hasher: the pools look an address up twice per
/// request, and SipHash (std's default, there to resist keys a client chooses) was about
/// 1.5% of an HTTP/1.1 request's instructions. Addresses come from the cluster's endpoints,
/// never from a client.
pub(crate) type AddrMap<V> = HashMap<SocketAddr, V, foldhash::fast::RandomState>;

/// Ready addresses of the Services the router knows, by Service name and then by port.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EndpointMap {
    pub services: HashMap<String, ServiceEndpoints>,
}

/// Ready endpoints of one Service: for each endpoint port number, the ready addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub by_port: HashMap<u16, Vec<SocketAddr>>,
}

/// Tuning of upstream connections.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_addr: usize,
    /// Streams one upstream HTTP/2 connection carries at most; the next opens another.
    pub h2_streams_per_connection: usize,
    /// Upstream HTTP/2 connections one downstream connection may open to one address.
    pub h2_connections_per_client: usize,
    /// How long a stream waits for a slot once all of those are full.
    pub h2_stream_slot_timeout: Duration,
    /// Receive windows of upstream HTTP/2 connections (the most a stalled stream, and a
    /// connection, can make the router buffer).
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    /// Streams without a request body one client connection may have at a time on the
    /// upstream HTTP/2 connections shared by every client (0: none, all on its own).
    pub h2_shared_streams_per_client: usize,
    /// How long a connection to a session's shadow may be reused.
    pub session_reuse: SessionReuse,
}

/// Reuse of connections to a session's shadow: only while young, and (HTTP/1.1) only if just
/// idle. A shadow stands for a laptop that sleeps and a process that restarts; a quiet kept
/// connection could lead into a frozen tunnel (a request sent on it hangs, then fails) or to
/// the original workload the shadow fell back to while the process was down (later requests
/// would miss the restarted process). A fresh connection lets the shadow decide afresh.
#[derive(Debug, Clone, Copy)]
pub struct SessionReuse {
    /// Reused only if it went idle less than this long ago.
    pub idle: Duration,
    /// Reused only if opened less than this long ago.
    pub age: Duration,
}

impl SessionReuse {
    /// Whether a connection born at `born`, idle since `idle_since` (`None`: busy now), may take
    /// another request.
    pub fn allows(&self, born: Instant, idle_since: Option<Instant>) -> bool {
        self.allows_at(Instant::now(), born, idle_since)
    }

    /// [`SessionReuse::allows`] with the clock already read.
    fn allows_at(&self, now: Instant, born: Instant, idle_since: Option<Instant>) -> bool {
        now.saturating_duration_since(born) < self.age
            && idle_since.is_none_or(|t| now.saturating_duration_since(t) < self.idle)
    }
}

/// Endpoint lookup plus connection pools.
#[derive(Debug)]
pub struct Upstreams {
    endpoints: watch::Receiver<Arc<EndpointMap>>,
    next: AtomicUsize,
    cfg: UpstreamConfig,
    h1_idle: Mutex<AddrMap<Vec<IdleH1>>>,
    /// Idle connections of the router's own HTTP/1.1 client (`upstream/raw_h1.rs`), newest last.
    raw_idle: Mutex<AddrMap<Vec<IdleRaw>>>,
}

#[derive(Debug)]
struct IdleRaw {
    since: Instant,
    conn: RawConn,
}

#[derive(Debug)]
struct IdleH1 {
    since: Instant,
    born: Instant,
    side: Side,
    tx: http1::SendRequest<RequestBody>,
    driver: Option<Driver>,
    /// Whether it went into the pool with its `driver` (else its own task drives it).
    driven: bool,
}

/// A pooled upstream HTTP/1.1 connection's state machine (hyper's `Connection`: it writes the
/// request and reads the response). It has no task of its own: the exchange that holds the
/// connection polls it ([`driving`], and the response body), so a request goes upstream in the
/// same poll that read it from the client, and the response goes back in the poll that read
/// it, with no hop through the scheduler's queue behind every other ready connection. Idle in
/// the pool, nobody polls it; a checkout polls it once to see whether the upstream closed it.
pub type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, RequestBody>>>;

/// Polls `driver` once, and drops it once the connection has ended.
pub fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(d) = driver {
        if let Poll::Ready(r) = d.as_mut().poll(cx) {
            if let Err(e) = r {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            *driver = None;
        }
    }
}

/// `fut`, with the connection's `driver` (if it has one) polled before it each time. `fut`
/// (`ready()`, or a sent request's response) is completed only by the driver, which this poll
/// runs first, so it is polled with a waker that does nothing: the driver's own wake-ups
/// (socket, request body) bring the task back, and a completed response does not also
/// schedule the task once more.
pub async fn driving<F: Future>(driver: &mut Option<Driver>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        poll_driver(driver, cx);
        match driver {
            Some(_) => {
                let r = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                // A future out of tokio's cooperative budget is pending only until the task's
                // next turn, which it asks of the waker it was given: ask the real one.
                if r.is_pending() && !tokio::task::coop::has_budget_remaining() {
                    cx.waker().wake_by_ref();
                }
                r
            }
            // Ended (the future fails at once) or driven by a task of its own.
            None => fut.as_mut().poll(cx),
        }
    })
    .await
}

/// Polls `driver` once outside any exchange (checkout, checkin, sweep): lets it notice that
/// the upstream closed the connection, or finish handing over a response. Whatever waker it
/// leaves registered is replaced by the next exchange's first poll.
/// Unconstrained by tokio's cooperative budget: with the budget spent, the socket poll would
/// do nothing (and wake only the no-op waker), and a closed connection would look idle.
fn refresh(driver: &mut Option<Driver>) {
    let once = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
        poll_driver(driver, cx);
        Poll::Ready(())
    }));
    let _ = std::pin::pin!(once).poll(&mut Context::from_waker(Waker::noop()));
}

impl H1Conn {
    /// Hands the connection's driver to a task of its own, which drives it from now on.
    pub fn detach(&mut self) {
        if let Some(d) = self.driver.take() {
            let addr = self.addr;
            tokio::spawn(async move {
                if let Err(e) = d.await {
                    tracing::debug!(%addr, error = %e, "upstream connection ended");
                }
            });
        }
    }
}

/// An HTTP/1.1 connection checked out for one exchange.
#[derive(Debug)]
pub struct H1Conn {
    pub addr: SocketAddr,
    pub tx: http1::SendRequest<RequestBody>,
    /// Set for a pooled connection: poll it while using `tx` (see [`Driver`]).
    pub driver: Option<Driver>,
    /// When it was opened.
    pub born: Instant,
    /// Whom it leads to (a session's shadow is reused only while young and just idle).
    pub side: Side,
}

impl Upstreams {
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    pub fn new(endpoints: watch::Receiver<Arc<EndpointMap>>, cfg: UpstreamConfig) -> Self {
        Upstreams {
            endpoints,
            next: AtomicUsize::new(0),
            cfg,
            h1_idle: Mutex::default(),
            raw_idle: Mutex::default(),
        }
    }

    /// One ready address of `target` for traffic that arrived on `port`, round robin.
    pub fn pick(&self, target: &Target, port: u16) -> Option<SocketAddr> {
        match target {
            Target::Static(addrs) => self.round_robin(addrs),
            Target::Service(name) => {
                let map = self.endpoints.borrow();
                let svc = map.services.get(name)?;
                let addrs = match svc.by_port.get(&port) {
                    Some(a) => a,
                    // A single-port target serves every listener (e.g. a shadow with one port).
                    None if svc.by_port.len() == 1 => svc.by_port.values().next()?,
                    None => return None,
                };
                self.round_robin(addrs)
            }
        }
    }

    fn round_robin(&self, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        match addrs.len() {
            0 => None,
            1 => Some(addrs[0]),
            n => Some(addrs[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        side: Side,
    ) -> Result<TokioIo<TcpStream>, ProxyError> {
        let stream =
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(ProxyError::ConnectUpstream { side, addr, source }),
                Err(_) => {
                    return Err(ProxyError::ConnectTimeout {
                        side,
                        addr,
                        after: self.cfg.connect_timeout,
                    })
                }
            };
        // Latency matters more than segment count for request/response traffic.
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    /// A raw TCP connection (passthrough of non-HTTP traffic).
    pub async fn connect_tcp(&self, addr: SocketAddr, side: Side) -> Result<TcpStream, ProxyError> {
        Ok(self.connect(addr, side).await?.into_inner())
    }

    /// An idle pooled HTTP/1.1 connection to `addr`, or a new one.
    pub async fn h1(&self, addr: SocketAddr, side: Side) -> Result<H1Conn, ProxyError> {
        if let Some((tx, born, driver)) = self.checkout_h1(addr, side) {
            return Ok(H1Conn {
                addr,
                tx,
                driver,
                born,
                side,
            });
        }
        // Boxed: connecting is the rare path, and its state would make every request's
        // future larger (and every request copy it).
        Box::pin(async {
            let (tx, conn) = self.handshake(addr, side).await?;
            Ok(H1Conn {
                addr,
                tx,
                driver: Some(Box::pin(conn)),
                born: Instant::now(),
                side,
            })
        })
        .await
    }

    /// An idle pooled connection of the router's own HTTP/1.1 client to `addr`, or a new one.
    pub async fn raw_h1(&self, addr: SocketAddr, side: Side) -> Result<RawConn, ProxyError> {
        if let Some(conn) = self.checkout_raw(addr, side) {
            return Ok(conn);
        }
        // Boxed: connecting is the rare path (see `h1`).
        Box::pin(async {
            let stream = self.connect_tcp(addr, side).await?;
            Ok(RawConn::new(addr, side, stream))
        })
        .await
    }

    fn checkout_raw(&self, addr: SocketAddr, side: Side) -> Option<RawConn> {
        let mut idle = self
            .raw_idle
            .lock()
            .expect("pool lock is never held across a panic");
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        let mut found = None;
        // Newest first; the closed and expired ones met on the way are dropped.
        while let Some(c) = list.pop() {
            if self.may_reuse(now, c.since, c.conn.born, side) && c.conn.is_reusable() {
                found = Some(c.conn);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(&addr);
        }
        found
    }

    /// Puts a connection of the router's own client back, its response read to the end.
    pub fn checkin_raw(&self, conn: RawConn) {
        let mut idle = self
            .raw_idle
            .lock()
            .expect("pool lock is never held across a panic");
        let list = idle.entry(conn.addr).or_default();
        if list.len() < self.cfg.max_idle_per_addr {
            list.push(IdleRaw {
                since: Instant::now(),
                conn,
            });
        }
    }

    /// A new HTTP/1.1 connection that is never pooled (for Upgrade), driven by a task of its
    /// own (it outlives the exchange as a spliced tunnel).
    pub async fn h1_fresh(&self, addr: SocketAddr, side: Side) -> Result<H1Conn, ProxyError> {
        let (tx, conn) = self.handshake(addr, side).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
        Ok(H1Conn {
            addr,
            tx,
            driver: None,
            born: Instant::now(),
            side,
        })
    }

    async fn handshake(
        &self,
        addr: SocketAddr,
        side: Side,
    ) -> Result<
        (
            http1::SendRequest<RequestBody>,
            http1::Connection<TokioIo<TcpStream>, RequestBody>,
        ),
        ProxyError,
    > {
        let io = self.connect(addr, side).await?;
        http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| ProxyError::Handshake { side, addr, source })
    }

    /// Whether an idle connection (idle since `since`, opened at `born`) may take a request
    /// to `side`: not past the idle timeout and, to a session's shadow, within its reuse rules.
    fn may_reuse(&self, now: Instant, since: Instant, born: Instant, side: Side) -> bool {
        now.saturating_duration_since(since) < self.cfg.idle_timeout
            && (side != Side::Shadow || self.cfg.session_reuse.allows_at(now, born, Some(since)))
    }

    fn checkout_h1(
        &self,
        addr: SocketAddr,
        side: Side,
    ) -> Option<(http1::SendRequest<RequestBody>, Instant, Option<Driver>)> {
        let mut idle = self
            .h1_idle
            .lock()
            .expect("pool lock is never held across a panic");
        // One clock read per checkout (it runs for every request).
        let now = Instant::now();
        let usable = |c: &IdleH1| self.may_reuse(now, c.since, c.born, side);
        let list = idle.get_mut(&addr)?;
        // Newest first. A connection still finishing its last exchange (its request body
        // still streaming) is skipped but kept; closed and expired ones are dropped.
        let mut i = list.len();
        let mut busy_seen = 0;
        let mut found = None;
        while i > 0 && busy_seen < 8 {
            i -= 1;
            let c = &mut list[i];
            let fresh = usable(c);
            if fresh {
                refresh(&mut c.driver);
            }
            if c.tx.is_closed() || !fresh || is_ended(c) {
                list.swap_remove(i);
            } else if c.tx.is_ready() {
                let c = list.swap_remove(i);
                found = Some((c.tx, c.born, c.driver));
                break;
            } else {
                busy_seen += 1;
            }
        }
        if list.is_empty() {
            // No entry outlives its connections: the map holds only addresses in use.
            idle.remove(&addr);
        }
        found
    }

    /// Drops closed and expired idle connections, connections to a session's shadow that
    /// its reuse rules no longer allow (they would only be dropped at a later checkout, and
    /// each holds a tunnel stream and hyper's buffers), and the entries of addresses left with
    /// none (an address that went away is never checked out again). Run periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self
            .h1_idle
            .lock()
            .expect("pool lock is never held across a panic");
        idle.retain(|_, list| {
            list.retain_mut(|c| {
                refresh(&mut c.driver);
                !c.tx.is_closed() && !is_ended(c) && self.may_reuse(now, c.since, c.born, c.side)
            });
            !list.is_empty()
        });
        drop(idle);
        let mut raw = self
            .raw_idle
            .lock()
            .expect("pool lock is never held across a panic");
        raw.retain(|_, list| {
            list.retain(|c| {
                c.conn.is_reusable() && self.may_reuse(now, c.since, c.conn.born, c.conn.side)
            });
            !list.is_empty()
        });
    }

    /// Addresses with at least one idle HTTP/1.1 connection (the pool's size, for tests and
    /// metrics).
    pub fn idle_h1_addrs(&self) -> usize {
        let hyper = self
            .h1_idle
            .lock()
            .expect("pool lock is never held across a panic");
        let raw = self
            .raw_idle
            .lock()
            .expect("pool lock is never held across a panic");
        hyper.len() + raw.keys().filter(|a| !hyper.contains_key(a)).count()
    }

    /// Puts a connection back once its response body has ended. Its request body may still
    /// be finishing (the upstream answered early): then it gets a task of its own to finish
    /// it, and `checkout_h1` hands it out only once it is ready.
    pub fn checkin(&self, mut conn: H1Conn) {
        if conn.driver.is_some() {
            refresh(&mut conn.driver);
            if conn.driver.is_none() {
                return; // it ended
            }
            if !conn.tx.is_ready() {
                conn.detach();
            }
        }
        if conn.tx.is_closed() {
            return;
        }
        let mut idle = self
            .h1_idle
            .lock()
            .expect("pool lock is never held across a panic");
        let list = idle.entry(conn.addr).or_default();
        if list.len() < self.cfg.max_idle_per_addr {
            list.push(IdleH1 {
                since: Instant::now(),
                born: conn.born,
                side: conn.side,
                tx: conn.tx,
                driven: conn.driver.is_some(),
                driver: conn.driver,
            });
        }
    }
}

/// A pooled connection whose state machine has ended (the upstream closed it, or it failed);
/// its `tx` may not say so yet.
fn is_ended(c: &IdleH1) -> bool {
    c.driven && c.driver.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(idle_timeout: Duration) -> Upstreams {
        let (_tx, rx) = watch::channel(Arc::new(EndpointMap::default()));
        Upstreams::new(
            rx,
            UpstreamConfig {
                connect_timeout: Duration::from_secs(2),
                idle_timeout,
                max_idle_per_addr: 8,
                h2_streams_per_connection: 100,
                h2_connections_per_client: 4,
                h2_stream_slot_timeout: Duration::from_secs(2),
                h2_stream_window: 1 << 16,
                h2_connection_window: 1 << 20,
                h2_shared_streams_per_client: 0,
                session_reuse: SessionReuse {
                    idle: Duration::from_millis(100),
                    age: Duration::from_secs(1),
                },
            },
        )
    }

    /// The pool's invariant: an address has an entry only while it has an idle connection, so
    /// addresses that go away (pods replaced, sessions ended) leave nothing behind.
    #[tokio::test]
    async fn the_h1_pool_keeps_no_entry_for_an_address_without_connections() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = ktx_testbackend::spawn("a", any).await.unwrap();
        let b = ktx_testbackend::spawn("b", any).await.unwrap();
        let pool = upstreams(Duration::from_secs(60));
        for backend in [&a, &b] {
            let conn = pool.h1(backend.addr(), Side::Upstream).await.unwrap();
            pool.checkin(conn);
        }
        assert_eq!(pool.idle_h1_addrs(), 2);

        // Checked out: the address's list is empty, and so it is gone.
        let conn = pool.h1(a.addr(), Side::Upstream).await.unwrap();
        assert_eq!(pool.idle_h1_addrs(), 1);
        drop(conn);

        // `b` goes away: its idle connection closes, and a sweep drops the entry.
        b.shutdown(Duration::from_secs(1)).await;
        for _ in 0..200 {
            pool.sweep();
            if pool.idle_h1_addrs() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool kept {} address entries", pool.idle_h1_addrs());
    }

    /// A burst of clients opens many upstream connections at once; once it is over the pool
    /// keeps only `--upstream-max-idle` of them (each holds hyper's buffers until it closes).
    #[tokio::test]
    async fn a_full_pool_closes_the_connections_returned_to_it() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = ktx_testbackend::spawn("a", any).await.unwrap();
        let pool = upstreams(Duration::from_secs(60));
        let mut burst = Vec::new();
        for _ in 0..10 {
            burst.push(pool.h1_fresh(a.addr(), Side::Upstream).await.unwrap());
        }
        for conn in burst {
            pool.checkin(conn);
        }
        let kept = pool.h1_idle.lock().unwrap()[&a.addr()].len();
        assert_eq!(kept, pool.config().max_idle_per_addr);
    }

    /// A connection to a shadow that went quiet may not be reused (`SessionReuse`); the sweep
    /// closes it instead of keeping it for the whole idle timeout.
    #[tokio::test]
    async fn a_sweep_drops_shadow_connections_that_may_not_be_reused() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = ktx_testbackend::spawn("a", any).await.unwrap();
        let pool = upstreams(Duration::from_secs(60));
        let shadow = pool.h1(a.addr(), Side::Shadow).await.unwrap();
        let original = pool.h1(a.addr(), Side::Upstream).await.unwrap();
        pool.checkin(shadow);
        pool.checkin(original);
        pool.sweep();
        assert_eq!(pool.h1_idle.lock().unwrap()[&a.addr()].len(), 2);
        // Past the session reuse idle bound (100 ms here): only the original's stays.
        tokio::time::sleep(Duration::from_millis(150)).await;
        pool.sweep();
        let kept = pool.h1_idle.lock().unwrap()[&a.addr()]
            .iter()
            .map(|c| c.side)
            .collect::<Vec<_>>();
        assert_eq!(kept, [Side::Upstream]);
    }

    #[tokio::test]
    async fn a_sweep_drops_expired_connections_and_their_entries() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = ktx_testbackend::spawn("a", any).await.unwrap();
        let pool = upstreams(Duration::from_millis(1));
        let conn = pool.h1(a.addr(), Side::Upstream).await.unwrap();
        pool.checkin(conn);
        assert_eq!(pool.idle_h1_addrs(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        pool.sweep();
        assert_eq!(pool.idle_h1_addrs(), 0);
    }
}
