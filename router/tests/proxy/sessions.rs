//! Connections to a session's shadow carry one request each. A shadow stands for a process on
//! a laptop that restarts, sleeps and wakes: a kept connection could outlive what it was
//! connected to — a tunnel stream frozen with the laptop (the next request on it hangs, then
//! fails), or the original workload the shadow fell back to while the process was down (every
//! later request on it would miss the developer). A fresh connection per request lets the
//! shadow decide afresh each time. Connections to the default target stay pooled.

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_to_a_session_each_get_a_new_connection() {
    let mesh = Mesh::start().await;
    let mut client = H1::connect(mesh.addr()).await;
    for _ in 0..3 {
        let r = client.send(get_marked("/who", "foobar")).await;
        assert_eq!(backend_of(&r), SHADOW);
        body_string(r).await;
        let r = client.send(get("/who")).await;
        assert_eq!(backend_of(&r), ORIGINAL);
        body_string(r).await;
    }
    assert_eq!(mesh.shadow.stats().requests(), 3);
    assert_eq!(
        mesh.shadow.stats().connections(),
        3,
        "one connection per request to the session's shadow"
    );
    assert_eq!(
        mesh.original.stats().connections(),
        1,
        "the default target's connection is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_to_a_session_each_get_a_new_connection() {
    let mesh = Mesh::start().await;
    let mut client = H2::connect(mesh.addr()).await;
    for _ in 0..3 {
        let r = client.get(mesh.addr(), "/who", Some("foobar")).await;
        assert_eq!(backend_of(&r), SHADOW);
        body_string(r).await;
        let r = client.get(mesh.addr(), "/who", None).await;
        assert_eq!(backend_of(&r), ORIGINAL);
        body_string(r).await;
    }
    assert_eq!(mesh.shadow.stats().requests(), 3);
    assert_eq!(mesh.shadow.stats().connections(), 3);
    assert_eq!(mesh.original.stats().connections(), 1);
}
