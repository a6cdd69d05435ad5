//! What a parked keep-alive connection (idle between exchanges, its buffers freed) still owes:
//! it is closed after `--client-idle-timeout`, reaped when its client goes away, counted by
//! `--max-connections` and the gauges, closed by the drain, and answered when it speaks again.
//! Parking is quick here (30 ms) so each connection is parked before the test goes on; a test
//! waits on the parked gauge, never on a sleep.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

const PARK: Duration = Duration::from_millis(30);
/// How long a test waits for a bounded thing to happen.
const WITHIN: Duration = Duration::from_secs(5);

const PARKED: &str = "ktx_router_parked_connections";
const OPEN_HTTP1: &str = "ktx_router_active_connections{proto=\"http1\"}";

/// One complete keep-alive exchange on a raw socket: `GET /hello`, its whole answer read.
async fn hello(s: &mut TcpStream) {
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(b"hello\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the gauge `name` reads `want` (polling the admin port: the event is inside the
/// router); panics with the metrics after [`WITHIN`].
async fn gauge_reaches(mesh: &Mesh, name: &str, want: f64) {
    let t0 = Instant::now();
    loop {
        let m = mesh.metrics().await;
        if counter(&m, name) == want {
            return;
        }
        assert!(t0.elapsed() < WITHIN, "{name} never reached {want}:\n{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until the router closes the socket; panics if it is still open after [`WITHIN`].
async fn closed_by_router(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WITHIN, s.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("{what}: the router kept the connection open for {WITHIN:?}"),
    }
}

#[tokio::test]
async fn a_parked_connection_is_closed_after_the_client_idle_timeout() {
    let idle = Duration::from_millis(400);
    let mesh = Mesh::start_with(|c| {
        c.idle_park_after = PARK;
        c.client_idle_timeout = idle;
    })
    .await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    hello(&mut s).await;
    let answered = Instant::now();
    gauge_reaches(&mesh, PARKED, 1.0).await;
    let got = closed_by_router(&mut s, "a parked connection past its idle timeout").await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        answered.elapsed() >= idle,
        "closed {:?} after its answer, before the idle timeout",
        answered.elapsed()
    );
    gauge_reaches(&mesh, PARKED, 0.0).await;
    gauge_reaches(&mesh, OPEN_HTTP1, 0.0).await;
}

#[tokio::test]
async fn a_parked_connection_whose_client_left_is_reaped_and_frees_its_slot() {
    let mesh = Mesh::start_with(|c| {
        c.idle_park_after = PARK;
        c.max_connections = 1;
    })
    .await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    hello(&mut s).await;
    gauge_reaches(&mesh, PARKED, 1.0).await;
    drop(s);
    // Long before the idle timeout (120 s), the socket is closed and its slot given back.
    gauge_reaches(&mesh, PARKED, 0.0).await;
    gauge_reaches(&mesh, OPEN_HTTP1, 0.0).await;
    let mut next = TcpStream::connect(mesh.addr()).await.unwrap();
    hello(&mut next).await;
}

#[tokio::test]
async fn max_connections_counts_parked_connections() {
    let mesh = Mesh::start_with(|c| {
        c.idle_park_after = PARK;
        c.max_connections = 1;
    })
    .await;
    let mut parked = TcpStream::connect(mesh.addr()).await.unwrap();
    hello(&mut parked).await;
    gauge_reaches(&mesh, PARKED, 1.0).await;

    let mut over = TcpStream::connect(mesh.addr()).await.unwrap();
    over.write_all(b"GET /hello HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let got = closed_by_router(&mut over, "a connection over the cap").await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let m = mesh.metrics().await;
    assert_eq!(
        counter(
            &m,
            "ktx_router_refused_connections_total{reason=\"connections\"}"
        ),
        1.0,
        "{m}"
    );
    // The parked one is served when it speaks again, and parks again.
    hello(&mut parked).await;
    gauge_reaches(&mesh, PARKED, 1.0).await;
    assert_eq!(counter(&mesh.metrics().await, OPEN_HTTP1), 1.0);
}

#[tokio::test]
async fn many_parked_connections_each_answer_when_they_speak_again() {
    let mesh = Mesh::start_with(|c| c.idle_park_after = PARK).await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
        hello(&mut s).await;
        conns.push(s);
    }
    gauge_reaches(&mesh, PARKED, 50.0).await;
    // In reverse order, twice: each wakes its own connection, none another's.
    for _ in 0..2 {
        for s in conns.iter_mut().rev() {
            hello(s).await;
        }
        gauge_reaches(&mesh, PARKED, 50.0).await;
    }
    assert_eq!(counter(&mesh.metrics().await, OPEN_HTTP1), 50.0);
}

#[tokio::test]
async fn the_drain_closes_parked_connections_at_once() {
    let mesh = Mesh::start_with(|c| c.idle_park_after = PARK).await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    hello(&mut s).await;
    gauge_reaches(&mesh, PARKED, 1.0).await;
    let (router, _original, _shadow) = mesh.split();
    let t0 = Instant::now();
    // The drain timeout is 5 s (support::config): a parked connection must not hold it up.
    router.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the drain waited {:?} for an idle connection",
        t0.elapsed()
    );
    let got = closed_by_router(&mut s, "a parked connection during the drain").await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
