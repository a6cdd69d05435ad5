//! Loopback tests of the whole tunnel: a real `ktx-shadow` (in-process) and the real ktx end,
//! over real sockets. Each test reads as its scenario; fixtures are in `support/harness.rs`.

#[path = "support/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::*;
use ktx_tunnel::client::{ConnectError, Status, TcpConnector};
use ktx_tunnel::credentials::SessionCredentials;
use ktx_tunnel::proto::VersionRange;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Barrier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_the_tunnel_with_half_close_from_the_cluster_side() {
    let rig = Rig::start().await;
    // 1 MiB up, then the client's half-close; the echo comes back whole, then EOF.
    let msg: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let got = within("the echo", round_trip(rig.service(), &msg))
        .await
        .expect("round trip");
    assert_eq!(got.len(), msg.len());
    assert!(got == msg, "echoed bytes differ");
    within(
        "the stream to finish",
        until(|| rig.shadow.metrics.active_streams.get() == 0),
    )
    .await;
    assert_eq!(rig.shadow.metrics.bytes_to_ktx.get(), 1 << 20);
    assert_eq!(rig.shadow.metrics.bytes_from_ktx.get(), 1 << 20);
    assert_eq!(rig.shadow.metrics.stream_errors.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_developer_side_keeps_the_other_way_open() {
    // A server-speaks-first local process: it greets, half-closes, then still reads.
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let (heard_tx, heard_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = local.accept().await.unwrap();
        s.write_all(b"hello from the laptop\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut heard = Vec::new();
        s.read_to_end(&mut heard).await.unwrap();
        let _ = heard_tx.send(heard);
    });
    let creds = SessionCredentials::generate("t").unwrap();
    let shadow = shadow(creds.shadow(), 1, quick("ktx-shadow")).await;
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let tunnel = ktx(creds.ktx(), &shadow, local_addr, connector, quick("ktx"));
    within("the tunnel", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;

    let mut client = TcpStream::connect(shadow.service_addrs[0]).await.unwrap();
    let mut greeting = Vec::new();
    within("the greeting and EOF", client.read_to_end(&mut greeting))
        .await
        .unwrap();
    assert_eq!(greeting, b"hello from the laptop\n");
    // Our write side is still open after the server's half-close.
    client.write_all(b"and goodbye from the pod").await.unwrap();
    client.shutdown().await.unwrap();
    let heard = within("the local process to hear us", heard_rx)
        .await
        .unwrap();
    assert_eq!(heard, b"and goodbye from the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams() {
    const N: usize = 1000;
    let rig = Rig::start().await;
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (service, barrier) = (rig.service(), barrier.clone());
        tasks.spawn(async move {
            let msg = format!("stream {i} ").repeat(100);
            let mut s = TcpStream::connect(service).await?;
            s.write_all(msg.as_bytes()).await?;
            let mut echo = vec![0; msg.len()];
            s.read_exact(&mut echo).await?;
            assert_eq!(echo, msg.as_bytes());
            // All N are open at this point.
            barrier.wait().await;
            s.shutdown().await?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await?;
            assert!(rest.is_empty());
            std::io::Result::Ok(())
        });
    }
    within("1,000 streams", async {
        while let Some(r) = tasks.join_next().await {
            r.expect("stream task").expect("stream i/o");
        }
    })
    .await;
    // Every one of the N arrived as a stream. A stray probe of another test in this process can
    // land here too: `all_refused` connects to ports a shadow just closed, and the kernel may
    // already have given such a port to this one (seen once as 1001).
    let streams = rig.shadow.metrics.streams.get();
    assert!(
        (N as u64..=N as u64 + 2).contains(&streams),
        "{streams} streams for {N} connections"
    );
    // Every one of the N closes; a stray probe (above) may still be open, on its own test's
    // clock (seen once in CI: the wait for all streams timed out).
    let strays = (streams - N as u64) as i64;
    within(
        "the N streams to close",
        until(|| rig.shadow.metrics.active_streams.get() <= strays),
    )
    .await;
    assert_eq!(rig.shadow.metrics.stream_errors.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ktx_with_the_wrong_certificate_is_refused_and_counted() {
    let session = SessionCredentials::generate("mine").unwrap();
    let intruder = SessionCredentials::generate("other").unwrap();
    let shadow = shadow(session.shadow(), 1, quick("ktx-shadow")).await;
    let local = echo_server().await;
    // The intruder pins the right shadow certificate but presents its own.
    let mut material = intruder.ktx().clone();
    material.peer = session.ktx().peer.clone();
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let tunnel = ktx(&material, &shadow, local, connector, quick("ktx"));
    let mut status = tunnel.status();
    let down = within(
        "the refusal",
        status.wait_for(|s| matches!(s, Status::Down { .. })),
    )
    .await
    .unwrap()
    .clone();
    let Status::Down { error, .. } = down else {
        unreachable!()
    };
    assert!(error.contains("refused ktx's certificate"), "{error}");
    within(
        "the refusal to be counted",
        until(|| shadow.metrics.refused_peers("certificate") >= 1),
    )
    .await;
    assert!(!shadow.is_ready());
    assert_eq!(shadow.metrics.sessions.get(), 0);
    tunnel.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_with_the_wrong_certificate_is_refused_by_ktx() {
    let session = SessionCredentials::generate("mine").unwrap();
    let impostor = SessionCredentials::generate("other").unwrap();
    // The impostor shadow pins the right ktx certificate but presents its own.
    let mut material = impostor.shadow().clone();
    material.peer = session.shadow().peer.clone();
    let shadow = shadow(&material, 1, quick("ktx-shadow")).await;
    let local = echo_server().await;
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let tunnel = ktx(session.ktx(), &shadow, local, connector, quick("ktx"));
    let mut status = tunnel.status();
    let down = within(
        "the refusal",
        status.wait_for(|s| matches!(s, Status::Down { .. })),
    )
    .await
    .unwrap()
    .clone();
    let Status::Down { error, .. } = down else {
        unreachable!()
    };
    assert!(
        error.contains("not the one made for this session"),
        "{error}"
    );
    within(
        "the shadow to count it",
        until(|| shadow.metrics.refused_peers("tls") >= 1),
    )
    .await;
    assert!(!shadow.is_ready());
    tunnel.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_version_is_refused_with_a_readable_error() {
    let creds = SessionCredentials::generate("t").unwrap();
    let mut newer = quick("ktx-shadow");
    newer.protocol = VersionRange::new(3, 4).unwrap();
    newer.software = "ktx-shadow 0.3.0".into();
    let shadow = shadow(creds.shadow(), 1, newer).await;
    let local = echo_server().await;
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let mut old = quick("ktx");
    old.software = "ktx 0.1.0".into();
    old.protocol = VersionRange::new(1, 2).unwrap();
    let tunnel = ktx(creds.ktx(), &shadow, local, connector, old);
    let status = within("the verdict", tunnel.wait_for_session(1)).await;
    let want = "ktx 0.1.0 speaks tunnel protocol 1..2, the shadow image (ktx-shadow 0.3.0) \
                speaks 3..4: upgrade ktx";
    assert_eq!(status, Status::Failed { error: want.into() });
    // Permanent: the tunnel task ended by itself with the same error.
    let err = tunnel.shutdown().await.unwrap_err();
    assert!(err.is_permanent() && matches!(err, ConnectError::Refused(_)));
    assert_eq!(err.to_string(), want);
    within(
        "the refusal to be counted",
        until(|| shadow.metrics.refused_peers("version") >= 1),
    )
    .await;
    assert_eq!(shadow.metrics.refused_peers("version"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_is_refused_until_the_first_ends() {
    let rig = Rig::start().await;
    let connector = Arc::new(TcpConnector {
        addr: rig.shadow.tunnel_addr,
    });
    let second = ktx(
        rig.creds.ktx(),
        &rig.shadow,
        rig.local,
        connector,
        quick("ktx"),
    );
    refused_busy(second.status(), &rig.shadow).await;
    // The first session still carries traffic.
    assert_eq!(round_trip(rig.service(), b"ping").await.unwrap(), b"ping");

    // When the first goes away, the second (retrying with backoff) takes over.
    let service = rig.service();
    rig.tunnel.shutdown().await.unwrap();
    let up = within("the second session", second.wait_for_session(1)).await;
    assert!(matches!(up, Status::Up { .. }), "{up:?}");
    within("readiness", wait_ready(&rig.shadow, true)).await;
    assert_eq!(round_trip(service, b"pong").await.unwrap(), b"pong");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tunnel_the_shadow_is_not_ready_and_refuses_connections() {
    let creds = SessionCredentials::generate("t").unwrap();
    let shadow = shadow(creds.shadow(), 2, quick("ktx-shadow")).await;
    assert_eq!(http_get(shadow.admin_addr, "/readyz").await, 503);
    assert_eq!(http_get(shadow.admin_addr, "/healthz").await, 200);
    // Refused, not accepted and reset: the router must learn before it writes a request.
    within("the ports to close", all_refused(&shadow.service_addrs)).await;

    let local = echo_server().await;
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let tunnel = ktx(creds.ktx(), &shadow, local, connector, quick("ktx"));
    within("the tunnel", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;
    assert_eq!(http_get(shadow.admin_addr, "/readyz").await, 200);
    // Ready means listening: no retry.
    for addr in &shadow.service_addrs {
        assert_eq!(round_trip(*addr, b"ping").await.unwrap(), b"ping");
    }
    let metrics = http_body(shadow.admin_addr, "/metrics").await;
    assert!(metrics.contains("ktx_shadow_session_up 1"), "{metrics}");

    tunnel.shutdown().await.unwrap();
    within("not ready again", wait_ready(&shadow, false)).await;
    assert_eq!(http_get(shadow.admin_addr, "/readyz").await, 503);
    within(
        "the ports to close again",
        all_refused(&shadow.service_addrs),
    )
    .await;
}

/// Resolves once a connection to every address is refused.
async fn all_refused(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_drops_mid_stream_and_ktx_reconnects() {
    let creds = SessionCredentials::generate("t").unwrap();
    let shadow = shadow(creds.shadow(), 1, quick("ktx-shadow")).await;
    let relay = Relay::start(shadow.tunnel_addr).await;
    let local = echo_server().await;
    let tunnel = ktx(creds.ktx(), &shadow, local, relay.connector(), quick("ktx"));
    within("session 1", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;

    // A stream in flight…
    let mut inflight = TcpStream::connect(shadow.service_addrs[0]).await.unwrap();
    inflight.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    within("the first echo", inflight.read_exact(&mut buf))
        .await
        .unwrap();

    // …when the port-forward breaks.
    relay.cut();
    let mut rest = Vec::new();
    let cut = within(
        "the in-flight stream to end",
        inflight.read_to_end(&mut rest),
    )
    .await;
    assert!(
        cut.is_err() || rest.is_empty(),
        "the cut stream must not look complete"
    );

    let up = within("session 2", tunnel.wait_for_session(2)).await;
    assert!(matches!(up, Status::Up { session: 2, .. }), "{up:?}");
    within("readiness again", wait_ready(&shadow, true)).await;
    let got = round_trip(shadow.service_addrs[0], b"after").await.unwrap();
    assert_eq!(got, b"after");
    assert_eq!(tunnel.stats().sessions.load(Ordering::Relaxed), 2);
    tunnel.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_by_keepalive_on_both_sides() {
    let creds = SessionCredentials::generate("t").unwrap();
    let eager = |program| {
        let mut o = quick(program);
        o.keepalive_timeout = Duration::from_millis(800);
        o
    };
    let shadow = shadow(creds.shadow(), 1, eager("ktx-shadow")).await;
    let relay = Relay::start(shadow.tunnel_addr).await;
    let local = echo_server().await;
    let tunnel = ktx(creds.ktx(), &shadow, local, relay.connector(), eager("ktx"));
    within("session 1", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;

    // Bytes stop flowing but no socket closes: only pings can tell.
    relay.freeze();
    let mut status = tunnel.status();
    let down = within(
        "ktx to notice",
        status.wait_for(|s| matches!(s, Status::Down { .. })),
    )
    .await
    .unwrap()
    .clone();
    assert!(format!("{down:?}").contains("keepalive"), "{down:?}");
    // The shadow either noticed on its own or was replaced by the reconnected session.
    within("session 2", tunnel.wait_for_session(2)).await;
    within("readiness again", wait_ready(&shadow, true)).await;
    assert_eq!(
        round_trip(shadow.service_addrs[0], b"alive").await.unwrap(),
        b"alive"
    );
    tunnel.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_a_local_port_that_is_down_is_reset_not_hung() {
    let creds = SessionCredentials::generate("t").unwrap();
    let shadow = shadow(creds.shadow(), 1, quick("ktx-shadow")).await;
    // A port with nothing listening. Bound but never listened on, and held for the whole test:
    // connections to it are refused, and no other test in this process can be given it (a
    // dropped listener's port went to another test's service once, whose stream count then
    // saw this test's connection).
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap();
    let connector = Arc::new(TcpConnector {
        addr: shadow.tunnel_addr,
    });
    let tunnel = ktx(creds.ktx(), &shadow, closed_addr, connector, quick("ktx"));
    within("the tunnel", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;
    let r = within("the reset", round_trip(shadow.service_addrs[0], b"hello?")).await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|v| v.is_empty()),
        "{r:?}"
    );
    // Without a policy (`reset`), a connection ktx did not take is reset.
    within(
        "the refusal to be counted",
        until(|| shadow.metrics.not_taken("refused", "reset") == 1),
    )
    .await;
    assert_eq!(tunnel.stats().refused_streams.load(Ordering::Relaxed), 1);
    tunnel.shutdown().await.unwrap();
}

/// Status code of a one-shot HTTP/1.0 GET.
/// The tunnel port is reached through the API server's port-forward, which connects to the pod's
/// loopback; listening anywhere else would let any pod of the cluster hold its handshake slots.
/// Started exactly as the pod starts it (flags/env → `Config` → `Settings`), with defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_port_listens_on_loopback_only_by_default() {
    use clap::Parser;
    let dir = std::env::temp_dir().join(format!(
        "ktx-shadow-bind-{}-{}",
        std::process::id(),
        line!()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = SessionCredentials::generate("bind").unwrap();
    for (file, bytes) in creds.shadow_secret_data() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let cfg = ktx_shadow::config::Config::try_parse_from([
        "ktx-shadow",
        "--ports",
        "0",
        "--tunnel-port",
        "0",
        "--admin",
        "127.0.0.1:0",
        "--tls-dir",
        dir.to_str().unwrap(),
    ])
    .unwrap();
    let shadow = ktx_shadow::Shadow::start(ktx_shadow::Settings::from_config(&cfg).unwrap())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        shadow.tunnel_addr.ip().is_loopback(),
        "the tunnel port listens on {}",
        shadow.tunnel_addr
    );
    // The service ports still take connections from the router and other pods.
    assert!(shadow.service_addrs[0].ip().is_unspecified());
    shadow.shutdown().await;
}

/// A server that writes `bytes` to every connection it accepts, then closes it.
async fn source(bytes: usize) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 64 << 10];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A download from the developer's process over a slow uplink: what ktx sends queues in the
/// sockets' buffers, and its pongs to the shadow's keepalive (the pod's defaults: every
/// 500 ms, 2 s to answer) wait behind it for longer than 2 s. The bytes coming all along show
/// ktx is alive: the tunnel stays up and the download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_stuck_behind_a_download_on_a_slow_uplink_does_not_drop_the_tunnel() {
    const TOTAL: usize = 4 << 20;
    const RATE: u64 = 512 << 10;
    let creds = SessionCredentials::generate("t").unwrap();
    let mut o = quick("ktx-shadow");
    o.keepalive_interval = Duration::from_millis(500);
    o.keepalive_timeout = Duration::from_secs(2);
    let shadow = shadow(creds.shadow(), 1, o).await;
    let relay = Relay::start(shadow.tunnel_addr).await;
    let local = source(TOTAL).await;
    let tunnel = ktx(creds.ktx(), &shadow, local, relay.connector(), quick("ktx"));
    within("the tunnel", tunnel.wait_for_session(1)).await;
    within("readiness", wait_ready(&shadow, true)).await;
    relay.throttle_to_shadow(RATE);
    let mut c = tokio::net::TcpStream::connect(shadow.service_addrs[0])
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the download hung");
    assert_eq!(
        got.len(),
        TOTAL,
        "the download was cut ({:?}) after {} bytes",
        read,
        got.len()
    );
    assert_eq!(
        tunnel.stats().sessions.load(Ordering::Relaxed),
        1,
        "the tunnel was dropped and set up again"
    );
}
