//! Purpose connect over real loopback sockets: ktx's connect end ([`ConnectClient`]) and the
//! connect pod's end ([`ConnectPodEndpoint`]) of this crate, with real destinations.
//!
//! The pod refuses its own loopback (the deny rule), so destinations listen on this machine's
//! non-loopback address, as a Service would be reached from a pod; a listener on 127.0.0.2
//! proves the rule holds end to end.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktx_tunnel::client::{ClientConfig, Status, TcpConnector, Tunnel};
use ktx_tunnel::connect::client::{ConnectClient, ConnectConfig, OpenError, OpenOptions};
use ktx_tunnel::connect::pod::{ConnectPodEndpoint, DialObserver};
use ktx_tunnel::credentials::SessionCredentials;
use ktx_tunnel::proto::backoff::BackoffPolicy;
use ktx_tunnel::proto::VersionRange;
use ktx_tunnel::shadow::ShadowEndpoint;
use ktx_tunnel::splice::Observer;
use ktx_tunnel::TunnelOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// This machine's address on its default route: reachable, and not the pod's loopback.
fn outside_ip() -> IpAddr {
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // A UDP "connect" only picks a route and a source address; nothing is sent.
    for target in ["192.0.2.1:9", "10.255.255.254:9", "198.51.100.1:9"] {
        if udp.connect(target).is_ok() {
            if let Ok(a) = udp.local_addr() {
                if !a.ip().is_loopback() && !a.ip().is_unspecified() {
                    return a.ip();
                }
            }
        }
    }
    panic!(
        "these tests need a non-loopback IPv4 address (the connect pod refuses its loopback); \
         this machine has none with a route"
    )
}

async fn listen_outside() -> TcpListener {
    TcpListener::bind(SocketAddr::new(outside_ip(), 0))
        .await
        .unwrap()
}

/// An echo server: copies until EOF, then half-closes.
async fn echo_server(l: TcpListener) -> SocketAddr {
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn quick(program: &str) -> TunnelOptions {
    let mut o = TunnelOptions::new(program);
    o.keepalive_interval = Duration::from_millis(200);
    o.keepalive_timeout = Duration::from_secs(5);
    o.handshake_timeout = Duration::from_secs(5);
    o.drain_timeout = Duration::from_millis(500);
    o
}

fn quick_backoff() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        healthy_after: Duration::from_secs(1),
    }
}

#[derive(Default)]
struct Quiet;
impl Observer for Quiet {}
impl DialObserver for Quiet {}

/// A connect pod on loopback that takes one session after another, and ktx's end for it.
struct Rig {
    client: ConnectClient,
}

impl Rig {
    async fn start() -> Self {
        Self::start_with(quick("ktx-shadow"), Duration::from_secs(5)).await
    }

    async fn start_with(pod_options: TunnelOptions, dial_timeout: Duration) -> Self {
        Self::start_full(pod_options, dial_timeout, OpenOptions::default()).await
    }

    async fn start_full(
        pod_options: TunnelOptions,
        dial_timeout: Duration,
        open: OpenOptions,
    ) -> Self {
        let creds = SessionCredentials::generate("connect").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tunnel_addr = listener.local_addr().unwrap();
        let endpoint = ConnectPodEndpoint::new(
            creds.shadow().shadow_config().unwrap(),
            pod_options,
            dial_timeout,
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(accepted) = endpoint.accept(tcp, || Some(())).await else {
                    continue;
                };
                tokio::spawn(
                    accepted
                        .session
                        .run(Arc::new(Quiet), std::future::pending()),
                );
            }
        });
        let client = ConnectClient::start(
            ConnectConfig {
                tls: creds.ktx().ktx_config().unwrap(),
                options: quick("ktx"),
                backoff: quick_backoff(),
                open,
            },
            Arc::new(TcpConnector { addr: tunnel_addr }),
        );
        let up = within("the connect tunnel", client.wait_for_session(1)).await;
        assert!(matches!(up, Status::Up { version: 2, .. }), "{up:?}");
        Self { client }
    }
}

async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reaches_its_destination_and_comes_back() {
    let rig = Rig::start().await;
    let dest = echo_server(listen_outside().await).await;
    let mut s = within("open", rig.client.handle().open(dest))
        .await
        .expect("the pod reaches the echo");
    assert_eq!(s.dest(), dest);
    s.write_all(b"there and back again").await.unwrap();
    s.shutdown().await.unwrap();
    let echo = within("the echo", read_all(&mut s)).await.unwrap();
    assert_eq!(echo, b"there and back again");
    let stats = rig.client.handle().stats().clone();
    assert_eq!(stats.opened.load(ORD), 1);
    assert_eq!(stats.active.load(ORD), 1);
    assert_eq!(
        (stats.bytes_sent.load(ORD), stats.bytes_received.load(ORD)),
        (20, 20)
    );
    drop(s);
    assert_eq!(stats.active.load(ORD), 0);
}

const ORD: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_own_loopback_and_link_local_are_forbidden() {
    let rig = Rig::start().await;
    // Something does listen on 127.0.0.2: only the deny rule keeps the pod from reaching it.
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let on_loopback = l.local_addr().unwrap();
    for dest in [
        on_loopback,
        SocketAddr::from(([169, 254, 169, 254], 80)),
        "[::1]:7766".parse().unwrap(),
    ] {
        let err = within("the refusal", rig.client.handle().open(dest))
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::Forbidden { .. }), "{dest}: {err}");
    }
    // Nothing reached the listener.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), l.accept())
            .await
            .is_err(),
        "the pod dialled its own loopback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_a_typed_error_at_once() {
    let rig = Rig::start().await;
    let closed = {
        let l = listen_outside().await;
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    let err = within("the refusal", rig.client.handle().open(closed))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rig.client.handle().stats().failed.load(ORD), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_does_not_answer_is_a_timeout_after_the_dial_timeout() {
    let rig = Rig::start_with(quick("ktx-shadow"), Duration::from_millis(300)).await;
    // A listener whose accept queue is full drops new SYNs: connecting to it hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(outside_ip(), 0)).unwrap();
    let full = socket.listen(0).unwrap();
    let dest = full.local_addr().unwrap();
    let _queued = TcpStream::connect(dest).await.unwrap();
    let started = Instant::now();
    let err = within("the timeout", rig.client.handle().open(dest))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_does_not_answer_in_time_is_a_timeout_on_ktxs_clock() {
    // The pod would wait 10 s for the destination; ktx gives up after 300 ms.
    let open = OpenOptions {
        answer_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let rig = Rig::start_full(quick("ktx-shadow"), Duration::from_secs(10), open).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(outside_ip(), 0)).unwrap();
    let full = socket.listen(0).unwrap();
    let dest = full.local_addr().unwrap();
    let _queued = TcpStream::connect(dest).await.unwrap();
    let err = within("the timeout", rig.client.handle().open(dest))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Timeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the connect pod did not answer within 300ms"),
        "{err}"
    );
    // The tunnel itself is fine: the next open works.
    let echo = echo_server(listen_outside().await).await;
    let mut s = rig.client.handle().open(echo).await.unwrap();
    s.write_all(b"still here").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await.unwrap(), b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_each_way_keeps_the_other_way_open() {
    let rig = Rig::start().await;
    // The destination greets, half-closes, then still reads until our EOF and reports it.
    let l = listen_outside().await;
    let dest = l.local_addr().unwrap();
    let (heard_tx, heard_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"hello from the cluster\n").await.unwrap();
        s.shutdown().await.unwrap();
        let heard = read_all(&mut s).await.unwrap();
        let _ = heard_tx.send(heard);
    });
    let mut s = rig.client.handle().open(dest).await.unwrap();
    let greeting = within("greeting and EOF", read_all(&mut s)).await.unwrap();
    assert_eq!(greeting, b"hello from the cluster\n");
    s.write_all(b"and goodbye from the laptop").await.unwrap();
    s.shutdown().await.unwrap();
    let heard = within("the destination to hear us", heard_rx)
        .await
        .unwrap();
    assert_eq!(heard, b"and goodbye from the laptop");

    // The other way round: our half-close first, the answer after it (an echo).
    let dest = echo_server(listen_outside().await).await;
    let mut s = rig.client.handle().open(dest).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(within("echo", read_all(&mut s)).await.unwrap(), b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_either_side_is_a_reset_on_the_other() {
    let rig = Rig::start().await;
    let l = listen_outside().await;
    let dest = l.local_addr().unwrap();

    // ktx drops an open stream: the destination's socket is reset, not closed cleanly.
    let s = rig.client.handle().open(dest).await.unwrap();
    let (mut far, _) = within("accept", l.accept()).await.unwrap();
    drop(s);
    let mut buf = [0u8; 16];
    let r = within("the reset", far.read(&mut buf)).await;
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("the destination read {n} bytes / EOF instead of a reset"),
    }

    // The destination resets: ktx's read fails with a reset, not EOF.
    let mut s = rig.client.handle().open(dest).await.unwrap();
    let (far, _) = within("accept", l.accept()).await.unwrap();
    s.write_all(b"are you there?").await.unwrap();
    far.set_zero_linger().unwrap();
    drop(far);
    let err = within("the reset", read_all(&mut s))
        .await
        .expect_err("a cut stream must not read as complete");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_client_socket_spliced_to_a_stream_keeps_half_close_and_resets() {
    // What a SOCKS5 / HTTP CONNECT front does once it has answered its client.
    let rig = Rig::start().await;
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let far = listen_outside().await;
    let dest = far.local_addr().unwrap();
    let handle = rig.client.handle();
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel(2);
    let proxy = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (client, _) = front.accept().await.unwrap();
            let stream = handle.open(dest).await.unwrap();
            opened_tx.send(()).await.unwrap();
            results.push(stream.splice(client, 64 << 10, &Quiet).await.is_ok());
        }
        results
    });

    // 1: the client half-closes first; the destination answers after our EOF, then closes.
    let mut client = TcpStream::connect(front_addr).await.unwrap();
    let (mut d, _) = within("accept", far.accept()).await.unwrap();
    within("the open", opened.recv()).await.unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(
        within("the request", read_all(&mut d)).await.unwrap(),
        b"request"
    );
    d.write_all(b"answer").await.unwrap();
    drop(d);
    assert_eq!(
        within("the answer", read_all(&mut client)).await.unwrap(),
        b"answer"
    );

    // 2: the destination resets: the proxy's client is reset too, not closed cleanly.
    let mut client = TcpStream::connect(front_addr).await.unwrap();
    let (d, _) = within("accept", far.accept()).await.unwrap();
    within("the open", opened.recv()).await.unwrap();
    d.set_zero_linger().unwrap();
    drop(d);
    let err = within("the reset", read_all(&mut client))
        .await
        .expect_err("a cut stream must not read as complete");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(within("the proxy", proxy).await.unwrap(), [true, false]);
    let stats = rig.client.handle().stats().clone();
    assert_eq!(
        (stats.bytes_sent.load(ORD), stats.bytes_received.load(ORD)),
        (7, 6)
    );
    assert_eq!(stats.active.load(ORD), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_share_the_tunnel() {
    const N: usize = 100;
    let rig = Rig::start().await;
    let dest = echo_server(listen_outside().await).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (handle, barrier) = (rig.client.handle(), barrier.clone());
        tasks.spawn(async move {
            let msg = format!("stream {i} ").repeat(200);
            let mut s = handle.open(dest).await.expect("open");
            s.write_all(msg.as_bytes()).await?;
            let mut echo = vec![0; msg.len()];
            s.read_exact(&mut echo).await?;
            assert_eq!(echo, msg.as_bytes());
            // All N are open at once here.
            barrier.wait().await;
            s.shutdown().await?;
            assert!(read_all(&mut s).await?.is_empty());
            std::io::Result::Ok(())
        });
    }
    within("100 streams", async {
        while let Some(r) = tasks.join_next().await {
            r.expect("stream task").expect("stream i/o");
        }
    })
    .await;
    let stats = rig.client.handle().stats().clone();
    assert_eq!(
        (stats.opened.load(ORD), stats.failed.load(ORD)),
        (N as u64, 0)
    );
    assert_eq!(stats.sessions.load(ORD), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_arrive_intact_both_ways() {
    const SIZE: usize = 100 << 20;
    let rig = Rig::start().await;
    let dest = echo_server(listen_outside().await).await;
    let s = rig.client.handle().open(dest).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let pattern = |i: usize| (i as u64).wrapping_mul(2654435761).to_le_bytes()[3];
    let writer = tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < SIZE {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = pattern(at + j);
            }
            wr.write_all(&chunk).await?;
            at += chunk.len();
        }
        wr.shutdown().await?;
        std::io::Result::Ok(())
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut at = 0;
    let mut bad = None;
    within("100 MiB back", async {
        loop {
            let n = rd.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            for (j, b) in buf[..n].iter().enumerate() {
                if bad.is_none() && *b != pattern(at + j) {
                    bad = Some(at + j);
                }
            }
            at += n;
        }
    })
    .await;
    writer.await.unwrap().unwrap();
    assert_eq!(at, SIZE);
    assert_eq!(bad, None, "first wrong byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_without_a_tunnel_fails_as_tunnel_down_after_its_wait() {
    // Nothing listens where the pod should be.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let creds = SessionCredentials::generate("connect").unwrap();
    let client = ConnectClient::start(
        ConnectConfig {
            tls: creds.ktx().ktx_config().unwrap(),
            options: quick("ktx"),
            backoff: quick_backoff(),
            open: OpenOptions {
                tunnel_wait: Duration::from_millis(300),
                ..Default::default()
            },
        },
        Arc::new(TcpConnector { addr: gone }),
    );
    let err = within("the open to fail", client.handle().open(gone))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::TunnelDown(_)), "{err}");
    client.shutdown().await.unwrap();
}

/// A hand-made ktx: TLS, the preamble written frame by frame, then a raw HTTP/2 client, so a
/// test can send the heads the real ktx never sends.
async fn raw_ktx(
    creds: &SessionCredentials,
    pod: SocketAddr,
) -> h2::client::SendRequest<bytes::Bytes> {
    use ktx_tunnel::proto::frame::{decode, Decoded, Frame, Hello, Purpose, Role};
    let tcp = TcpStream::connect(pod).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(creds.ktx().ktx_config().unwrap())
        .connect(ktx_tunnel::tls::shadow_server_name(), tcp)
        .await
        .unwrap();
    let hello = Frame::Hello(Hello {
        role: Role::Ktx,
        protocol: VersionRange::CONNECT,
        software: "raw".into(),
        purpose: Some(Purpose::Connect),
    });
    tls.write_all(&hello.encode()).await.unwrap();
    // The pod's Hello, then its Accept: read exactly those two frames.
    for _ in 0..2 {
        let mut buf = Vec::new();
        let mut need = 7;
        loop {
            let start = buf.len();
            buf.resize(need, 0);
            tls.read_exact(&mut buf[start..]).await.unwrap();
            match decode(&buf).unwrap() {
                Decoded::Complete { frame, .. } => {
                    assert!(!matches!(frame, Frame::Refuse(_)), "{frame:?}");
                    break;
                }
                Decoded::Incomplete { needed } => need = needed,
            }
        }
    }
    let (sender, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_real_ktx_never_sends_are_answered_400_or_403() {
    let creds = SessionCredentials::generate("raw").unwrap();
    let (addr, _verdict) = pod(&creds, true, VersionRange::CURRENT).await;
    let sender = raw_ktx(&creds, addr).await;
    for (method, authority, status, reason) in [
        ("CONNECT", "inventory.shop:80", 400, "bad-head"),
        ("CONNECT", "10.0.0.1:0", 400, "bad-head"),
        ("GET", "10.0.0.1:80", 400, "bad-head"),
        ("CONNECT", "[::ffff:127.0.0.1]:7766", 403, "forbidden"),
        ("CONNECT", "0.0.0.0:9902", 403, "forbidden"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(if method == "GET" {
                format!("http://{authority}/")
            } else {
                authority.to_string()
            })
            .body(())
            .unwrap();
        let mut sender = sender.clone().ready().await.unwrap();
        let (resp, _send) = sender.send_request(req, false).unwrap();
        let resp = within("the answer", resp).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {authority}");
        assert_eq!(resp.headers()["ktx-reason"], reason, "{method} {authority}");
        assert!(resp.headers().contains_key("ktx-error"));
    }
}

/// A pod of either purpose on loopback that takes one session; returns its tunnel address.
async fn pod(
    creds: &SessionCredentials,
    connect: bool,
    protocol: VersionRange,
) -> (SocketAddr, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = quick("ktx-shadow");
    options.protocol = protocol;
    let tls = creds.shadow().shadow_config().unwrap();
    let (verdict_tx, verdict) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let verdict = if connect {
            let e = ConnectPodEndpoint::new(tls, options, Duration::from_secs(1));
            match e.accept(tcp, || Some(())).await {
                Ok(a) => {
                    tokio::spawn(a.session.run(Arc::new(Quiet), std::future::pending()));
                    format!("accepted {}", a.version)
                }
                Err(e) => e.reason().to_string(),
            }
        } else {
            match ShadowEndpoint::new(tls, options)
                .accept(tcp, || Some(()))
                .await
            {
                Ok(a) => {
                    let (handle, driver) = (a.handle, a.driver);
                    tokio::spawn(async move {
                        // The shadow's opener keeps the HTTP/2 client connection open.
                        let _handle = handle;
                        driver.run(std::future::pending()).await
                    });
                    format!("accepted {}", a.version)
                }
                Err(e) => e.reason().to_string(),
            }
        };
        let _ = verdict_tx.send(verdict);
    });
    (addr, verdict)
}

fn connect_client(creds: &SessionCredentials, addr: SocketAddr) -> ConnectClient {
    ConnectClient::start(
        ConnectConfig {
            tls: creds.ktx().ktx_config().unwrap(),
            options: quick("ktx"),
            backoff: quick_backoff(),
            open: OpenOptions::default(),
        },
        Arc::new(TcpConnector { addr }),
    )
}

fn serve_tunnel(creds: &SessionCredentials, addr: SocketAddr, protocol: VersionRange) -> Tunnel {
    let mut options = quick("ktx");
    options.protocol = protocol;
    Tunnel::spawn(
        ClientConfig {
            tls: creds.ktx().ktx_config().unwrap(),
            ports: Default::default(),
            options,
            backoff: quick_backoff(),
        },
        Arc::new(TcpConnector { addr }),
    )
}

fn range(min: u16, max: u16) -> VersionRange {
    VersionRange::new(min, max).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_the_other_purpose_refuses_for_good_both_ways() {
    // ktx connect → a mesh shadow.
    let creds = SessionCredentials::generate("p").unwrap();
    let (addr, verdict) = pod(&creds, false, VersionRange::CURRENT).await;
    let client = connect_client(&creds, addr);
    let end = within("the refusal", client.wait_for_session(1)).await;
    let Status::Failed { error } = end else {
        panic!("{end:?}")
    };
    assert!(
        error.contains("is a mesh shadow") && error.contains("purpose connect"),
        "{error}"
    );
    assert_eq!(verdict.await.unwrap(), "purpose");
    assert!(client.shutdown().await.is_err(), "a permanent refusal");

    // ktx mesh → a connect pod.
    let creds = SessionCredentials::generate("p").unwrap();
    let (addr, verdict) = pod(&creds, true, VersionRange::CURRENT).await;
    let tunnel = serve_tunnel(&creds, addr, VersionRange::CURRENT);
    let end = within("the refusal", tunnel.wait_for_session(1)).await;
    let Status::Failed { error } = end else {
        panic!("{end:?}")
    };
    assert!(error.contains("is a connect pod"), "{error}");
    assert_eq!(verdict.await.unwrap(), "purpose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_peers_either_side_are_told_apart_or_served_as_before() {
    // ktx connect → a shadow image that speaks only version 1 (it knows no purpose; checked
    // by version first, a newer image narrowed to 1..1 answers exactly as an old one).
    let creds = SessionCredentials::generate("o").unwrap();
    let (addr, verdict) = pod(&creds, false, range(1, 1)).await;
    let client = connect_client(&creds, addr);
    let end = within("the refusal", client.wait_for_session(1)).await;
    let Status::Failed { error } = end else {
        panic!("{end:?}")
    };
    assert!(
        error.ends_with("speaks 1..1: use a newer shadow image (--shadowImage) or an older ktx"),
        "{error}"
    );
    assert_eq!(verdict.await.unwrap(), "version");

    // An old ktx (version 1 only; the serve purpose it sends is what no purpose means) → a
    // new mesh shadow: served as version 1.
    let creds = SessionCredentials::generate("o").unwrap();
    let (addr, verdict) = pod(&creds, false, VersionRange::CURRENT).await;
    let tunnel = serve_tunnel(&creds, addr, range(1, 1));
    let up = within("the session", tunnel.wait_for_session(1)).await;
    assert!(matches!(up, Status::Up { version: 1, .. }), "{up:?}");
    assert_eq!(verdict.await.unwrap(), "accepted 1");

    // A new mesh ktx → an old shadow (1..1): version 1, as before.
    let creds = SessionCredentials::generate("o").unwrap();
    let (addr, verdict) = pod(&creds, false, range(1, 1)).await;
    let tunnel = serve_tunnel(&creds, addr, VersionRange::CURRENT);
    let up = within("the session", tunnel.wait_for_session(1)).await;
    assert!(matches!(up, Status::Up { version: 1, .. }), "{up:?}");
    assert_eq!(verdict.await.unwrap(), "accepted 1");
}
