//! `ktx-shadow --mode connect` in-process, with ktx's real connect end: readiness without a
//! session, dialing for ktx with its metrics, the deny rule against the pod's own admin port,
//! one session at a time, and a mesh ktx refused by purpose.

#[path = "support/harness.rs"]
mod harness;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use harness::*;
use ktx_shadow::config::Mode;
use ktx_shadow::unavailable::Unavailable;
use ktx_shadow::{Settings, Shadow};
use ktx_tunnel::client::{Status, TcpConnector};
use ktx_tunnel::connect::client::{ConnectClient, ConnectConfig, OpenError, OpenOptions};
use ktx_tunnel::credentials::{SessionCredentials, SideMaterial};
use ktx_tunnel::proto::connect_head::DialFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn connect_pod(material: &SideMaterial) -> Shadow {
    Shadow::start(Settings {
        mode: Mode::Connect,
        dial_timeout: Duration::from_secs(5),
        listen_addr: [127, 0, 0, 1].into(),
        tunnel_addr: [127, 0, 0, 1].into(),
        ports: vec![],
        tunnel_port: 0,
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_header_timeout: Duration::from_secs(5),
        tls: material.clone(),
        options: quick("ktx-shadow"),
        unavailable: Unavailable::default(),
    })
    .await
    .expect("the connect pod starts")
}

fn client(material: &SideMaterial, pod: &Shadow) -> ConnectClient {
    ConnectClient::start(
        ConnectConfig {
            tls: material.ktx_config().unwrap(),
            options: quick("ktx"),
            backoff: quick_backoff(),
            open: OpenOptions::default(),
        },
        Arc::new(TcpConnector {
            addr: pod.tunnel_addr,
        }),
    )
}

/// This machine's address on its default route (the pod refuses its own loopback).
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
    panic!("this test needs a non-loopback IPv4 address with a route; this machine has none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_pod_is_ready_while_listening_and_dials_for_ktx() {
    let creds = SessionCredentials::generate("c").unwrap();
    let pod = connect_pod(creds.shadow()).await;
    // Ready before any session: ktx waits for Ready before it port-forwards.
    assert!(pod.is_ready());
    assert_eq!(http_get(pod.admin_addr, "/readyz").await, 200);
    assert!(pod.service_addrs.is_empty());

    let ktx = client(creds.ktx(), &pod);
    let up = within("the connect tunnel", ktx.wait_for_session(1)).await;
    assert!(matches!(up, Status::Up { version: 2, .. }), "{up:?}");

    let echo = TcpListener::bind((outside_ip(), 0)).await.unwrap();
    let dest = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    let mut s = within("open", ktx.handle().open(dest)).await.unwrap();
    s.write_all(b"through the connect pod").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("the echo", s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"through the connect pod");
    within(
        "the stream to close",
        until(|| pod.metrics.active_streams.get() == 0),
    )
    .await;
    assert_eq!(pod.metrics.streams.get(), 1);
    assert_eq!(pod.metrics.bytes_to_ktx.get(), 23);
    assert_eq!(pod.metrics.bytes_from_ktx.get(), 23);

    // The pod's own admin port is on its loopback: forbidden, and counted.
    let err = ktx.handle().open(pod.admin_addr).await.unwrap_err();
    assert!(matches!(err, OpenError::Forbidden { .. }), "{err}");
    assert_eq!(pod.metrics.dial_failures(DialFailure::Forbidden), 1);
    let closed = TcpListener::bind((outside_ip(), 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = ktx.handle().open(closed).await.unwrap_err();
    assert!(matches!(err, OpenError::Refused { .. }), "{err}");
    assert_eq!(pod.metrics.dial_failures(DialFailure::Refused), 1);
    let metrics = http_body(pod.admin_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"ktx_shadow_dial_failures_total{reason="refused"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ktx_shadow_session_up 1"), "{metrics}");

    ktx.shutdown().await.unwrap();
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_at_a_time_and_no_mesh_session() {
    let creds = SessionCredentials::generate("c").unwrap();
    let pod = connect_pod(creds.shadow()).await;
    let first = client(creds.ktx(), &pod);
    within("the first session", first.wait_for_session(1)).await;

    let second = client(creds.ktx(), &pod);
    refused_busy(second.status(), &pod).await;
    second.shutdown().await.unwrap();

    // A mesh ktx with this session's credentials: refused for good, by purpose.
    let local = echo_server().await;
    let mesh = ktx(
        creds.ktx(),
        &pod,
        local,
        Arc::new(TcpConnector {
            addr: pod.tunnel_addr,
        }),
        quick("ktx"),
    );
    let end = within("the refusal", mesh.wait_for_session(1)).await;
    let Status::Failed { error } = end else {
        panic!("{end:?}")
    };
    assert!(error.contains("is a connect pod"), "{error}");
    within(
        "the purpose refusal to be counted",
        until(|| pod.metrics.refused_peers("purpose") == 1),
    )
    .await;
    // The live session was not disturbed.
    assert!(matches!(
        *first.status().borrow(),
        Status::Up { session: 1, .. }
    ));
    first.shutdown().await.unwrap();
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tunnel_cuts_open_streams_and_ktx_comes_back() {
    let creds = SessionCredentials::generate("c").unwrap();
    let pod = connect_pod(creds.shadow()).await;
    let relay = Relay::start(pod.tunnel_addr).await;
    let ktx = ConnectClient::start(
        ConnectConfig {
            tls: creds.ktx().ktx_config().unwrap(),
            options: quick("ktx"),
            backoff: quick_backoff(),
            open: OpenOptions::default(),
        },
        relay.connector(),
    );
    within("session 1", ktx.wait_for_session(1)).await;
    let far = TcpListener::bind((outside_ip(), 0)).await.unwrap();
    let mut s = ktx.handle().open(far.local_addr().unwrap()).await.unwrap();
    let (mut d, _) = within("accept", far.accept()).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    within("the first byte", d.read_exact(&mut one))
        .await
        .unwrap();

    relay.cut();
    // Neither end may take the cut for a complete stream.
    let mut rest = Vec::new();
    let read = within("ktx's read to fail", s.read_to_end(&mut rest)).await;
    assert!(read.is_err(), "ktx read {read:?} after the tunnel was lost");
    let far_read = within("the destination's reset", d.read(&mut one)).await;
    match far_read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("the destination read {n} bytes / EOF instead of a reset"),
    }
    within(
        "the cut stream to be counted",
        until(|| pod.metrics.stream_errors.get() >= 1),
    )
    .await;

    // ktx reconnects by itself, and opens work again.
    let up = within("session 2", ktx.wait_for_session(2)).await;
    assert!(matches!(up, Status::Up { session: 2, .. }), "{up:?}");
    let mut s = ktx.handle().open(far.local_addr().unwrap()).await.unwrap();
    let (mut d, _) = within("accept", far.accept()).await.unwrap();
    s.write_all(b"again").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the bytes", d.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"again");
    ktx.shutdown().await.unwrap();
    pod.shutdown().await;
}
