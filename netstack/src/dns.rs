//! The local DNS resolver (UDP + TCP on one address, e.g. `127.0.0.153:53`).
//!
//! Each query is decided by [`decide`], a pure function over the bytes and a [`Names`] snapshot:
//! cluster names are answered from the table (A/AAAA, authoritative, short TTL), an ExternalName
//! Service as a CNAME followed by its target's records ([`alias`]), unknown names under
//! `svc.DOMAIN` get NXDOMAIN, and everything else is relayed byte for byte to the machine's
//! previous resolvers by [`forward`]. Only the DNS wire format comes from `hickory-proto`; no
//! resolver or server crate (they bring their own runtime layers, caches and config parsers this
//! job does not need).

pub mod alias;
pub mod forward;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::names::{Lookup, NameTable, Names};
use forward::Forwarder;

/// The UDP payload this resolver says it takes, in the OPT of its replies (the size DNS Flag
/// Day 2020 settled on: no IP fragmentation on common paths).
const EDNS_PAYLOAD: u16 = 1232;

/// Limits and timeouts of the resolver (ktx exposes each as a flag).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where to listen, UDP and TCP.
    pub listen: SocketAddr,
    /// The previous resolvers, tried in order (never include `listen` itself).
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream may take before the next is tried.
    pub forward_timeout: Duration,
    /// TTL of the answers from the table: short, the table changes as pods come and go.
    pub ttl: u32,
    /// Queries relayed at once (UDP + TCP); past it, SERVFAIL at once.
    pub max_forwards: usize,
    /// TCP clients at once; past it, new connections are closed.
    pub max_tcp_clients: usize,
    /// A TCP client that sends no query for this long is closed.
    pub tcp_idle: Duration,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> Self {
        DnsConfig {
            listen,
            upstreams,
            forward_timeout: Duration::from_secs(2),
            ttl: 5,
            max_forwards: 256,
            max_tcp_clients: 64,
            tcp_idle: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("bind DNS {proto} on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Relay the query to the previous resolvers.
    Forward,
    /// The name is an alias of this one (an ExternalName Service): answer with the alias and
    /// the target's records ([`alias::chase`]).
    Alias(String),
    /// Not a DNS query worth an answer (unparsable, or a response): drop it.
    Drop,
}

/// Decides one query. Never panics, whatever the bytes (proptest in `tests/dns.rs`).
pub fn decide(query: &[u8], names: &Names, ttl: u32) -> Decision {
    let Ok(msg) = Message::from_vec(query) else {
        return Decision::Drop;
    };
    let meta = msg.metadata;
    if meta.message_type != MessageType::Query {
        return Decision::Drop;
    }
    let reply = |code: ResponseCode, answers: Vec<Record>, authoritative: bool| {
        let mut out = Message::error_msg(meta.id, meta.op_code, code);
        out.metadata.recursion_desired = meta.recursion_desired;
        out.metadata.recursion_available = true;
        out.metadata.authoritative = authoritative;
        out.add_queries(msg.queries.clone());
        out.add_answers(answers);
        // RFC 6891 §6.1.1: a reply to a query with OPT carries OPT.
        if msg.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            out.set_edns(edns);
        }
        match out.to_vec() {
            Ok(bytes) => Decision::Reply(bytes),
            Err(_) => Decision::Drop,
        }
    };
    if meta.op_code != OpCode::Query {
        return reply(ResponseCode::NotImp, vec![], false);
    }
    let [query] = msg.queries.as_slice() else {
        return reply(ResponseCode::FormErr, vec![], false);
    };
    match names.lookup(&query.name().to_ascii()) {
        Lookup::NotOurs => Decision::Forward,
        Lookup::NoSuchName => reply(ResponseCode::NXDomain, vec![], true),
        // Asked for the alias itself: the CNAME record is the whole answer.
        Lookup::Alias(target) if query.query_type() == RecordType::CNAME => {
            match Name::from_ascii(format!("{target}.")) {
                Ok(to) => {
                    let cname =
                        Record::from_rdata(query.name().clone(), ttl, RData::CNAME(CNAME(to)));
                    reply(ResponseCode::NoError, vec![cname], true)
                }
                Err(_) => reply(ResponseCode::ServFail, vec![], false),
            }
        }
        Lookup::Alias(target) => Decision::Alias(target),
        Lookup::Found(ips) => {
            let qtype = query.query_type();
            let answers = ips
                .into_iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                        Some(RData::AAAA(AAAA(v6)))
                    }
                    _ => None,
                })
                .map(|rdata| Record::from_rdata(query.name().clone(), ttl, rdata))
                .collect();
            reply(ResponseCode::NoError, answers, true)
        }
    }
}

/// [`decide`] for a UDP query: an answer larger than the client can take over UDP (512 bytes, or
/// its EDNS payload size, at most this resolver's own [`EDNS_PAYLOAD`]) is sent truncated (TC
/// set, no records), so the client retries over TCP — a headless Service with many pods does
/// not fit in 512 bytes, and past 1,232 bytes a UDP answer risks fragmentation.
pub fn decide_udp(query: &[u8], names: &Names, ttl: u32) -> Decision {
    match decide(query, names, ttl) {
        Decision::Reply(bytes) => fit_udp(query, bytes),
        other => other,
    }
}

/// `answer` as a UDP reply to `query`: truncated when it is larger than the client takes.
pub fn fit_udp(query: &[u8], answer: Vec<u8>) -> Decision {
    let limit = Message::from_vec(query).map_or(512, |q| {
        usize::from(q.max_payload().clamp(512, EDNS_PAYLOAD))
    });
    if answer.len() <= limit {
        return Decision::Reply(answer);
    }
    match Message::from_vec(&answer).map(|m| m.truncate().to_vec()) {
        Ok(Ok(truncated)) => Decision::Reply(truncated),
        _ => Decision::Drop,
    }
}

/// A bound resolver; [`DnsServer::run`] serves until dropped.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    names: NameTable,
    config: DnsConfig,
}

impl DnsServer {
    pub async fn bind(config: DnsConfig, names: NameTable) -> Result<Self, DnsError> {
        // With port 0 the OS picks the UDP port, which TCP may not have free: try a few.
        let attempts = if config.listen.port() == 0 { 16 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let addr = config.listen;
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(|source| DnsError::Bind {
                    proto: "udp",
                    addr,
                    source,
                })?;
            let tcp_addr = udp.local_addr().unwrap_or(addr);
            match TcpListener::bind(tcp_addr).await {
                Ok(tcp) => {
                    return Ok(DnsServer {
                        udp,
                        tcp,
                        names,
                        config,
                    })
                }
                Err(source) => {
                    last = Some(DnsError::Bind {
                        proto: "tcp",
                        addr: tcp_addr,
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(DnsError::Bind {
            proto: "tcp",
            addr: config.listen,
            source: std::io::ErrorKind::AddrInUse.into(),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves UDP and TCP until the future is dropped; its TCP clients and relayed queries end
    /// with it.
    pub async fn run(self) {
        let forwarder = Arc::new(Forwarder::new(&self.config));
        let udp = Arc::new(self.udp);
        let tcp_slots = Arc::new(Semaphore::new(self.config.max_tcp_clients));
        let udp_loop = serve_udp(udp, self.names.clone(), forwarder.clone(), self.config.ttl);
        let tcp_loop = async {
            let mut clients = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    a = self.tcp.accept() => a,
                    Some(_) = clients.join_next(), if !clients.is_empty() => continue,
                };
                let (conn, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        crate::accept_failed("dns", &e).await;
                        continue;
                    }
                };
                let Ok(slot) = tcp_slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "dns: too many TCP clients, closing");
                    continue;
                };
                let names = self.names.clone();
                let forwarder = forwarder.clone();
                let (ttl, idle) = (self.config.ttl, self.config.tcp_idle);
                clients.spawn(async move {
                    let _slot = slot;
                    let _ = serve_tcp(conn, names, forwarder, ttl, idle).await;
                });
            }
        };
        tokio::join!(udp_loop, tcp_loop);
    }
}

async fn serve_udp(udp: Arc<UdpSocket>, names: NameTable, forwarder: Arc<Forwarder>, ttl: u32) {
    let mut buf = vec![0u8; 65535];
    // Relayed and chased queries: they end with the resolver.
    let mut relays = JoinSet::new();
    loop {
        let received = tokio::select! {
            r = udp.recv_from(&mut buf) => r,
            Some(_) = relays.join_next(), if !relays.is_empty() => continue,
        };
        let Ok((n, peer)) = received else {
            continue;
        };
        let query = &buf[..n];
        match decide_udp(query, &names.snapshot(), ttl) {
            Decision::Reply(bytes) => {
                let _ = udp.send_to(&bytes, peer).await;
            }
            Decision::Drop => {}
            Decision::Forward => {
                let query = query.to_vec();
                let (udp, forwarder) = (udp.clone(), forwarder.clone());
                relays.spawn(async move {
                    // Sized like the resolver's own answers (an upstream may send the client
                    // all its EDNS size allows, past what travels unfragmented).
                    let answer = forwarder.udp(&query).await.map(|a| fit_udp(&query, a));
                    if let Some(Decision::Reply(answer)) = answer {
                        let _ = udp.send_to(&answer, peer).await;
                    }
                });
            }
            Decision::Alias(target) => {
                let query = query.to_vec();
                let (udp, forwarder, names) = (udp.clone(), forwarder.clone(), names.snapshot());
                relays.spawn(async move {
                    let answer =
                        alias::chase(&query, target, &names, &forwarder, ttl, alias::Via::Udp);
                    if let Some(Decision::Reply(answer)) = answer.await.map(|a| fit_udp(&query, a))
                    {
                        let _ = udp.send_to(&answer, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(
    mut conn: TcpStream,
    names: NameTable,
    forwarder: Arc<Forwarder>,
    ttl: u32,
    idle: Duration,
) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(idle, conn.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        tokio::time::timeout(idle, conn.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let answer = match decide(&query, &names.snapshot(), ttl) {
            Decision::Reply(bytes) => bytes,
            Decision::Drop => return Ok(()),
            Decision::Forward => match forwarder.tcp(&query).await {
                Some(answer) => answer,
                None => return Ok(()),
            },
            Decision::Alias(target) => {
                let names = names.snapshot();
                let chased = alias::chase(&query, target, &names, &forwarder, ttl, alias::Via::Tcp);
                match chased.await {
                    Some(answer) => answer,
                    None => return Ok(()),
                }
            }
        };
        let Some(framed) = tcp_framed(&answer) else {
            return Ok(());
        };
        // One write (with Nagle on, a second small one would wait for the client's delayed
        // ACK), bounded like the reads: a client that never reads gives its slot back.
        tokio::time::timeout(idle, conn.write_all(&framed))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
    }
}

/// `msg` with its two-byte length in front, as DNS over TCP sends it; None if it is too long.
pub(crate) fn tcp_framed(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    Some(framed)
}
