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

/// What an h2 upstream saw of one request body.
#[derive(Debug, PartialEq)]
enum Seen {
    Bytes(usize),
    Ended,
    Reset,
}

/// An h2 upstream that reads each request body and reports what it sees, and never answers.
async fn upstream_watching_bodies() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    held.push(respond);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut got = 0;
                        loop {
                            let seen = match body.data().await {
                                Some(Ok(b)) => {
                                    got += b.len();
                                    let _ = body.flow_control().release_capacity(b.len());
                                    Seen::Bytes(got)
                                }
                                Some(Err(_)) => Seen::Reset,
                                None => Seen::Ended,
                            };
                            let last = !matches!(seen, Seen::Bytes(_));
                            let _ = tx.send(seen);
                            if last {
                                return;
                            }
                        }
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// A client that resets its stream in the middle of a request body has cancelled the request,
/// whatever the reason code: the upstream sees its stream reset, never the part it got as a
/// whole body.
#[tokio::test]
async fn a_request_body_the_client_resets_is_reset_upstream_not_ended() {
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
    for reason in [h2::Reason::NO_ERROR, h2::Reason::CANCEL] {
        let (upstream, mut seen) = upstream_watching_bodies().await;
        let routes = temp_path("h2c-reset.yaml");
        write_routes(
            &routes,
            &format!("default: {{ addrs: [\"{upstream}\"] }}\n"),
        );
        let _routes = RemoveOnDrop(routes.clone());
        let router = ktx_router::Router::start(config(&routes)).await.unwrap();
        wait_ready(router.admin_addr).await;
        let addr = router.listen_addrs[0];
        let mut tx = raw_h2(addr).await;
        let req = http::Request::post(format!("http://{addr}/upload"))
            .body(())
            .unwrap();
        let (_answer, mut body) = tx.send_request(req, false).unwrap();
        body.send_data(bytes::Bytes::from_static(b"the first part"), false)
            .unwrap();
        let first = tokio::time::timeout(WITHIN, seen.recv()).await.unwrap();
        assert_eq!(first, Some(Seen::Bytes(14)), "{reason:?}");
        body.send_reset(reason);
        let last = tokio::time::timeout(WITHIN, seen.recv())
            .await
            .expect("the upstream saw nothing more of the body");
        assert_eq!(last, Some(Seen::Reset), "client reset with {reason:?}");
    }
}
