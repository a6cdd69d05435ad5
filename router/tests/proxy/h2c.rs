//! h2c: every stream of one multiplexed connection is routed on its own headers.

use futures_util::future::join_all;

use super::support::*;

#[tokio::test]
async fn streams_of_one_connection_are_routed_one_by_one() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let c = H2::connect(addr).await;
    let calls = (0..100).map(|i| {
        let mut c = c.clone();
        async move {
            let marked = i % 2 == 0;
            let r = c.get(addr, "/", marked.then_some("foobar")).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), http::Version::HTTP_2);
            (marked, backend_of(&r), body_string(r).await)
        }
    });
    for (marked, backend, body) in join_all(calls).await {
        let want = if marked { SHADOW } else { ORIGINAL };
        assert_eq!(backend, want);
        assert_eq!(body, format!("{want}\n"));
    }
    assert_eq!(mesh.shadow.stats().requests(), 50);
    assert_eq!(mesh.original.stats().requests(), 50);
    // Streams of one client connection share its upstream h2 connection to the original (its
    // first body-less ones the connection shared by all clients); to the session's shadow only
    // a busy, young connection takes more streams (`sessions.rs`).
    assert!((1..=50).contains(&mesh.shadow.stats().connections()));
    assert!((1..=2).contains(&mesh.original.stats().connections()));
    let m = mesh.metrics().await;
    assert_eq!(
        counter(&m, "ktx_router_active_connections{proto=\"h2c\"}"),
        1.0,
        "{m}"
    );
}
