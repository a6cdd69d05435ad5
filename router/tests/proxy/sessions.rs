//! Connections to a session's shadow are reused only while young (1 s) and, for HTTP/1.1, only
//! if idle less than 100 ms. A shadow stands for a process on a laptop that restarts, sleeps and
//! wakes: a quiet kept connection could outlive what it was connected to — a tunnel stream
//! frozen with the laptop (the next request on it would hang, then fail), or the original
//! workload the shadow fell back to while the process was down (later requests would miss the
//! developer). A fresh connection lets the shadow decide afresh; under load, connections are
//! still reused. Connections to the default target stay pooled.

use std::time::Duration;

use super::support::*;

async fn marked_then_unmarked_h1(client: &mut H1) {
    let r = client.send(get_marked("/who", "foobar")).await;
    assert_eq!(backend_of(&r), SHADOW);
    body_string(r).await;
    let r = client.send(get("/who")).await;
    assert_eq!(backend_of(&r), ORIGINAL);
    body_string(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_http1_connection_to_a_session_is_not_reused() {
    let mesh = Mesh::start().await;
    let mut client = H1::connect(mesh.addr()).await;
    for _ in 0..3 {
        marked_then_unmarked_h1(&mut client).await;
        // Longer than --session-reuse-idle (100 ms).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(mesh.shadow.stats().requests(), 3);
    assert_eq!(
        mesh.shadow.stats().connections(),
        3,
        "a new connection after each quiet spell"
    );
    assert_eq!(
        mesh.original.stats().connections(),
        1,
        "the default target's connection is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http1_connection_to_a_session_is_reused_while_young() {
    let mesh = Mesh::start_with(|cfg| {
        cfg.session_reuse_idle = Duration::from_secs(10);
        cfg.session_reuse_age = Duration::from_millis(300);
    })
    .await;
    let mut client = H1::connect(mesh.addr()).await;
    // Back to back: reused. 12 × 50 ms spans two ages of 300 ms at least.
    for _ in 0..12 {
        marked_then_unmarked_h1(&mut client).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conns = mesh.shadow.stats().connections();
    assert!(
        (2..=4).contains(&conns),
        "reused while young, then a new one: {conns} connections for 12 requests"
    );
    assert_eq!(mesh.original.stats().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_to_a_session_take_only_a_young_connection() {
    let mesh = Mesh::start_with(|cfg| cfg.session_reuse_age = Duration::from_millis(100)).await;
    let mut client = H2::connect(mesh.addr()).await;
    for _ in 0..3 {
        // Older than --session-reuse-age by the next stream.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = client.get(mesh.addr(), "/who", Some("foobar")).await;
        assert_eq!(backend_of(&r), SHADOW);
        body_string(r).await;
        let r = client.get(mesh.addr(), "/who", None).await;
        assert_eq!(backend_of(&r), ORIGINAL);
        body_string(r).await;
    }
    assert_eq!(mesh.shadow.stats().requests(), 3);
    // A stream to a shadow joins only a connection younger than the reuse age.
    assert_eq!(mesh.shadow.stats().connections(), 3);
    assert_eq!(mesh.original.stats().connections(), 1);
}
