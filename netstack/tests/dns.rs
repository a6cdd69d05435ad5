//! The resolver with a real client (`dig`, from dnsutils) over UDP and TCP: every name form,
//! NXDOMAIN under svc.DOMAIN, forwarding to a fake upstream on loopback, an upstream that never
//! answers; and a proptest that no packet makes the query path panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ktx_netstack::dns::forward::Forwarder;
use ktx_netstack::dns::{alias, decide, Decision, DnsConfig, DnsServer};
use ktx_netstack::names::{NameTable, ServiceNames};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn table() -> NameTable {
    let t = NameTable::new("cluster.local", "shop");
    t.set_service(
        "shop",
        "many",
        ServiceNames {
            ips: (1..=60)
                .map(|i| format!("10.244.1.{i}").parse().unwrap())
                .collect(),
            pods: BTreeMap::new(),
            alias: None,
        },
    );
    t.set_service(
        "shop",
        "inventory",
        ServiceNames {
            ips: vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            pods: BTreeMap::new(),
            alias: None,
        },
    );
    t.set_service(
        "data",
        "db",
        ServiceNames {
            ips: vec!["10.244.0.5".parse().unwrap(), "10.244.0.6".parse().unwrap()],
            pods: BTreeMap::from([("db-0".into(), vec!["10.244.0.5".parse().unwrap()])]),
            alias: None,
        },
    );
    t
}

fn fake_answer(query: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.add_queries(q.queries.clone());
    let name = q.queries[0].name().clone();
    // `big.example`: 100 addresses, an answer past 1,232 bytes.
    let many = if name.to_ascii().starts_with("big.") {
        100
    } else {
        1
    };
    for i in 0..many {
        r.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::A(A(std::net::Ipv4Addr::from(0xc000_0207 + i))),
        ));
    }
    r.to_vec().unwrap()
}

/// A fake upstream on UDP and TCP (same port): answers every query with A 192.0.2.7 (and
/// `big.example` with 100 addresses from there on).
async fn fake_upstream() -> SocketAddr {
    let (sock, tcp) = loop {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(sock.local_addr().unwrap()).await {
            break (sock, tcp);
        }
    };
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
            sock.send_to(&fake_answer(&buf[..n]), peer).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut c, _) = tcp.accept().await.unwrap();
            tokio::spawn(async move {
                let len = c.read_u16().await.unwrap();
                let mut q = vec![0u8; usize::from(len)];
                c.read_exact(&mut q).await.unwrap();
                let a = fake_answer(&q);
                c.write_u16(a.len() as u16).await.unwrap();
                c.write_all(&a).await.unwrap();
            });
        }
    });
    addr
}

fn have_dig() -> bool {
    if std::process::Command::new("dig").arg("-v").output().is_ok() {
        return true;
    }
    let why = "SKIP dns tests: `dig` not installed (apt-get install dnsutils)";
    if std::env::var("KTX_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{why}, and KTX_REQUIRE_ROOT_TESTS=1");
    }
    eprintln!("{why}");
    false
}

async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .await
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn server(upstreams: Vec<SocketAddr>, timeout: Duration) -> SocketAddr {
    server_with(table(), upstreams, timeout).await
}

async fn server_with(
    names: NameTable,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
) -> SocketAddr {
    let mut config = DnsConfig::new("127.0.0.1:0".parse().unwrap(), upstreams);
    config.forward_timeout = timeout;
    let server = DnsServer::bind(config, names).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.run());
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_every_name_form_nxdomain_and_forwarded_answers() {
    if !have_dig() {
        return;
    }
    let upstream = fake_upstream().await;
    let dns = server(vec![upstream], Duration::from_secs(2)).await;
    for transport in ["+notcp", "+tcp"] {
        for name in [
            "inventory",
            "inventory.shop",
            "inventory.shop.svc",
            "inventory.shop.svc.cluster.local",
            "Inventory.Shop.svc.cluster.local.",
        ] {
            let got = dig(dns, &[transport, "+short", name, "A"]).await;
            assert_eq!(got.trim(), "10.96.0.10", "{transport} {name}");
        }
        let got = dig(dns, &[transport, "+short", "inventory.shop", "AAAA"]).await;
        assert_eq!(got.trim(), "fd00::10", "{transport} AAAA");
        let got = dig(
            dns,
            &[transport, "+short", "db-0.db.data.svc.cluster.local"],
        )
        .await;
        assert_eq!(got.trim(), "10.244.0.5", "{transport} headless pod");
        let got = dig(dns, &[transport, "+short", "db.data.svc.cluster.local"]).await;
        assert_eq!(
            got.lines().count(),
            2,
            "{transport} headless service: {got}"
        );

        for name in [
            "nope.shop.svc.cluster.local",
            "db-9.db.data.svc.cluster.local",
        ] {
            let got = dig(dns, &[transport, name]).await;
            assert!(
                got.contains("status: NXDOMAIN"),
                "{transport} {name}: {got}"
            );
            assert!(got.contains(" aa"), "authoritative: {got}");
        }
        // not ours: forwarded (a known namespace does not capture other names)
        for name in ["example.com", "nope.shop", "inventory.com"] {
            let got = dig(dns, &[transport, "+short", name]).await;
            assert_eq!(got.trim(), "192.0.2.7", "{transport} forwarded {name}");
        }
        // a name that exists without an address of the asked type: NOERROR, no answer
        let got = dig(dns, &[transport, "db.data", "AAAA"]).await;
        assert!(
            got.contains("status: NOERROR") && got.contains("ANSWER: 0"),
            "{got}"
        );
    }
}

/// Stopping the resolver (its future dropped, as `ktx connect` does when it ends) ends its TCP
/// clients too: each ran on in a task of its own, answering from the stale table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_resolver_ends_its_tcp_clients() {
    let config = DnsConfig::new("127.0.0.1:0".parse().unwrap(), vec![]);
    let server = DnsServer::bind(config, table()).await.expect("bind");
    let addr = server.local_addr();
    let server = tokio::spawn(server.run());
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let query = framed(&query_bytes("inventory.shop", RecordType::A));
    c.write_all(&query).await.unwrap();
    let len = c.read_u16().await.unwrap();
    let mut answer = vec![0u8; usize::from(len)];
    c.read_exact(&mut answer).await.unwrap();
    server.abort();
    let _ = server.await;
    let _ = c.write_all(&query).await;
    let mut rest = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut rest)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "the stopped resolver still answers: {got:?}"
    );
}

/// A relayed answer is sized like the resolver's own: an upstream answered a client that offers
/// 4,096 bytes with 1,600 and the resolver passed them on over UDP as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_udp_answer_never_exceeds_the_resolvers_own_payload_size() {
    if !have_dig() {
        return;
    }
    let upstream = fake_upstream().await;
    let dns = server(vec![upstream], Duration::from_secs(2)).await;
    let got = dig(dns, &["+notcp", "+ignore", "+bufsize=4096", "big.example"]).await;
    assert!(got.contains(" tc"), "TC set: {got}");
    // dig retries over TCP by itself when TC is set, and gets it all.
    let got = dig(dns, &["+notcp", "+bufsize=4096", "+short", "big.example"]).await;
    assert_eq!(got.lines().count(), 100, "{got}");
}

/// [`table`] with ExternalName Services: one naming a name outside the cluster, one naming
/// another Service, and two naming each other.
fn table_with_aliases() -> NameTable {
    let t = table();
    for (name, target) in [
        ("payments", "payments.example.com"),
        ("stock", "inventory.shop.svc.cluster.local"),
        // An absolute name, not the short form of the Service `inventory`.
        ("short", "inventory"),
        ("loop-a", "loop-b.shop.svc.cluster.local"),
        ("loop-b", "loop-a.shop.svc.cluster.local"),
    ] {
        t.set_service(
            "shop",
            name,
            ServiceNames {
                alias: Some(target.into()),
                ..ServiceNames::default()
            },
        );
    }
    t
}

/// An ExternalName Service was answered NXDOMAIN. It is an alias (CNAME) of its
/// `externalName`, and, as cluster DNS answers, the answer carries that name's addresses too
/// (glibc does not chase a bare CNAME): from the table when it names another Service, from the
/// previous resolvers otherwise. A loop of aliases gets SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_name_service_answers_its_alias_and_the_targets_addresses() {
    if !have_dig() {
        return;
    }
    let upstream = fake_upstream().await;
    let dns = server_with(table_with_aliases(), vec![upstream], Duration::from_secs(2)).await;
    for transport in ["+notcp", "+tcp"] {
        for name in ["payments", "payments.shop.svc.cluster.local"] {
            let got = dig(dns, &[transport, "+short", name]).await;
            assert_eq!(
                got.lines().collect::<Vec<_>>(),
                ["payments.example.com.", "192.0.2.7"],
                "{transport} {name}"
            );
        }
        // Each record's owner: the chain from the asked name to the target, whose address
        // the previous resolvers were asked for under the target's name.
        let got = dig(dns, &[transport, "+noall", "+answer", "payments.shop"]).await;
        let owners: Vec<(&str, &str)> = got
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((*f.first()?, *f.get(3)?))
            })
            .collect();
        assert_eq!(
            owners,
            [("payments.shop.", "CNAME"), ("payments.example.com.", "A")],
            "{transport}: {got}"
        );
        let got = dig(dns, &[transport, "+short", "short.shop"]).await;
        assert_eq!(
            got.lines().collect::<Vec<_>>(),
            ["inventory.", "192.0.2.7"],
            "{transport}: a target is absolute"
        );
        let got = dig(dns, &[transport, "+short", "stock.shop"]).await;
        assert_eq!(
            got.lines().collect::<Vec<_>>(),
            ["inventory.shop.svc.cluster.local.", "10.96.0.10"],
            "{transport}"
        );
        let got = dig(dns, &[transport, "+short", "payments", "CNAME"]).await;
        assert_eq!(got.trim(), "payments.example.com.", "{transport}");
        let got = dig(dns, &[transport, "loop-a.shop"]).await;
        assert!(got.contains("status: SERVFAIL"), "{transport}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    if !have_dig() {
        return;
    }
    let dns = server(vec![], Duration::from_secs(1)).await;
    let got = dig(dns, &["+notcp", "+noedns", "+ignore", "many.shop"]).await;
    assert!(got.contains(" tc"), "TC set: {got}");
    assert!(got.contains("ANSWER: 0"), "{got}");
    // dig retries over TCP by itself when TC is set
    let got = dig(dns, &["+notcp", "+noedns", "+short", "many.shop"]).await;
    assert_eq!(got.lines().count(), 60, "{got}");
    // an EDNS client with a large buffer gets it all over UDP
    let got = dig(
        dns,
        &["+notcp", "+bufsize=4096", "+ignore", "+short", "many.shop"],
    )
    .await;
    assert_eq!(got.lines().count(), 60, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gives_servfail_after_the_timeout() {
    if !have_dig() {
        return;
    }
    // bound but silent
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = server(
        vec![silent.local_addr().unwrap()],
        Duration::from_millis(300),
    )
    .await;
    let started = Instant::now();
    let got = dig(dns, &["example.com"]).await;
    let took = started.elapsed();
    assert!(got.contains("status: SERVFAIL"), "{got}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // the cluster names still answer
    let got = dig(dns, &["+short", "inventory"]).await;
    assert_eq!(got.trim(), "10.96.0.10");
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

#[test]
fn a_response_or_another_opcode_is_not_answered_as_a_query() {
    let names = table().snapshot();
    let mut m = Message::response(1, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("inventory").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        decide(&m.to_vec().unwrap(), &names, 5),
        ktx_netstack::dns::Decision::Drop
    );
    let mut m = Message::new(2, MessageType::Query, OpCode::Update);
    m.add_query(Query::query(
        Name::from_ascii("inventory").unwrap(),
        RecordType::A,
    ));
    let ktx_netstack::dns::Decision::Reply(r) = decide(&m.to_vec().unwrap(), &names, 5) else {
        panic!("an update gets an answer");
    };
    assert_eq!(
        Message::from_vec(&r).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    let two = {
        let mut m = Message::new(3, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii("a").unwrap(), RecordType::A));
        m.add_query(Query::query(Name::from_ascii("b").unwrap(), RecordType::A));
        m.to_vec().unwrap()
    };
    let ktx_netstack::dns::Decision::Reply(r) = decide(&two, &names, 5) else {
        panic!("two questions get an answer");
    };
    assert_eq!(
        Message::from_vec(&r).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
}

/// A query with its two-byte length in front, as DNS over TCP frames it.
fn framed(q: &[u8]) -> Vec<u8> {
    let mut f = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(q);
    f
}

/// A table with one Service of 1,000 addresses (a ~16 KB answer) beside [`table`]'s.
fn table_with_a_huge_service() -> NameTable {
    let t = table();
    t.set_service(
        "shop",
        "huge",
        ServiceNames {
            ips: (0..1000u32)
                .map(|i| std::net::Ipv4Addr::from(0x0af4_0000 + i).into())
                .collect(),
            pods: BTreeMap::new(),
            alias: None,
        },
    );
    t
}

/// A TCP client that pipelines queries for a large answer and never reads: the server's write
/// blocked with no bound (the idle timeout covered reads only), so the client kept its slot
/// for good, and `max_tcp_clients` such clients shut TCP DNS (the retry after a truncated UDP
/// answer) for everyone. Found by a review helper, 2026-12-07.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_never_reads_does_not_keep_its_slot() {
    let mut config = DnsConfig::new("127.0.0.1:0".parse().unwrap(), vec![]);
    config.max_tcp_clients = 1;
    config.tcp_idle = Duration::from_millis(300);
    let server = DnsServer::bind(config, table_with_a_huge_service())
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run());
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(addr).await.unwrap();
    let big = framed(&query_bytes("huge.shop", RecordType::A));
    for _ in 0..4000 {
        match tokio::time::timeout(Duration::from_millis(200), stalled.write_all(&big)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    // The server answers what fits in the socket buffers (a few MB on loopback: seconds of
    // work in a debug build), then its write is stuck and times out. Another client is then
    // served: asked every 200 ms, for 10 s at most.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(&framed(&query_bytes("inventory.shop", RecordType::A)))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), c.read_u16()).await;
        if matches!(got, Ok(Ok(_))) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(stalled);
    assert!(
        matches!(got, Ok(Ok(_))),
        "no answer: the client that never reads still holds the only slot ({got:?})"
    );
}

/// The length and the message went out as two writes on a socket with Nagle on: with the
/// client's delayed ACK, each answer on a reused connection waited ~40 ms (50 queries took
/// 2.16 s). Now each answer is one write: 50 take a few milliseconds; the bound is loose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_on_a_reused_tcp_connection_are_not_held_back_by_nagle() {
    let addr = server(vec![], Duration::from_secs(1)).await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = framed(&query_bytes("many.shop", RecordType::A));
    let started = Instant::now();
    for _ in 0..50 {
        c.write_all(&q).await.unwrap();
        let n = c.read_u16().await.unwrap();
        let mut a = vec![0u8; usize::from(n)];
        c.read_exact(&mut a).await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "50 answers took {took:?}"
    );
}

/// RFC 6891 §6.1.1: a reply to a query with an OPT record carries one. The reply was sized to
/// the client's EDNS payload yet said nothing of EDNS.
#[test]
fn an_edns_query_gets_opt_back() {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("many.shop").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns);
    for tiny in [false, true] {
        if tiny {
            // Too large for the client's payload: truncated, still with OPT.
            let mut small = hickory_proto::op::Edns::new();
            small.set_max_payload(512);
            m.set_edns(small);
        }
        let ktx_netstack::dns::Decision::Reply(r) =
            ktx_netstack::dns::decide_udp(&m.to_vec().unwrap(), &table().snapshot(), 5)
        else {
            panic!("an answer")
        };
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.metadata.truncation, tiny);
        assert!(
            r.edns.is_some(),
            "the reply to an EDNS query has no OPT (truncated: {tiny})"
        );
    }
    // A query without EDNS gets none.
    let Decision::Reply(r) = decide(
        &query_bytes("many.shop", RecordType::A),
        &table().snapshot(),
        5,
    ) else {
        panic!("an answer")
    };
    assert!(Message::from_vec(&r).unwrap().edns.is_none());
}

/// An answer is sized to the smaller of the client's EDNS payload and the resolver's own
/// (1,232 bytes, the size its OPT announces): a client that offers 4,096 bytes got a 1,700-byte
/// UDP answer, which is fragmented on the way, or dropped where fragments are.
#[test]
fn a_udp_answer_never_exceeds_the_resolvers_own_payload_size() {
    let t = table();
    t.set_service(
        "shop",
        "wide",
        ServiceNames {
            ips: (0..100u32)
                .map(|i| std::net::Ipv4Addr::from(0x0af4_0100 + i).into())
                .collect(),
            pods: BTreeMap::new(),
            alias: None,
        },
    );
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("wide.shop").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns);
    let query = m.to_vec().unwrap();
    let Decision::Reply(whole) = decide(&query, &t.snapshot(), 5) else {
        panic!("an answer")
    };
    assert!(
        whole.len() > 1232,
        "the test needs a larger answer: {}",
        whole.len()
    );
    let Decision::Reply(r) = ktx_netstack::dns::decide_udp(&query, &t.snapshot(), 5) else {
        panic!("an answer")
    };
    assert!(r.len() <= 1232, "a {}-byte UDP answer", r.len());
    let r = Message::from_vec(&r).unwrap();
    assert!(r.metadata.truncation, "TC set, so the client asks over TCP");
    assert!(r.edns.is_some());
}

/// `q` with bytes overwritten (`flips`: where, and with what) and cut short at `cut`.
fn mangled(
    mut q: Vec<u8>,
    flips: Vec<(prop::sample::Index, u8)>,
    cut: prop::sample::Index,
) -> Vec<u8> {
    for (i, b) in flips {
        let at = i.index(q.len());
        q[at] = b;
    }
    q.truncate(cut.index(q.len() + 1));
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn no_packet_makes_the_query_path_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decide(&bytes, &table_with_aliases().snapshot(), 5);
    }

    #[test]
    fn no_mutation_of_a_real_query_makes_it_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let q = mangled(query_bytes("db-0.db.data.svc.cluster.local", RecordType::A), flips, cut);
        let _ = decide(&q, &table().snapshot(), 5);
    }

    /// An alias's chase, from mangled queries for alias names (no previous resolver: a relay
    /// answers SERVFAIL at once).
    #[test]
    fn no_mutation_of_a_query_for_an_alias_makes_the_chase_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        name in prop::sample::select(vec!["payments.shop", "stock", "loop-a.shop", "short"]),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::CNAME, RecordType::MX]),
    ) {
        let names = table_with_aliases().snapshot();
        let q = &mangled(query_bytes(name, qtype), flips, cut);
        if let Decision::Alias(target) = decide(q, &names, 5) {
            let forwarder = Forwarder::new(&DnsConfig::new("127.0.0.1:0".parse().unwrap(), vec![]));
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = rt.block_on(alias::chase(q, target, &names, &forwarder, 5, alias::Via::Udp));
        }
    }
}
