//! Floods of connections (the noisy-neighbour scenarios of `loadtests/`): many sockets at once
//! must neither be dropped by the kernel nor make the router's work for them crowd out the
//! requests of other clients.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::support::*;

/// Opens `n` connections to `addr` at once from a thread of its own, each given `within` to
/// complete its handshake; returns how many did.
fn burst_from_another_thread(
    addr: SocketAddr,
    n: usize,
    within: Duration,
) -> std::thread::JoinHandle<Vec<TcpStream>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tries = (0..n).map(|_| tokio::time::timeout(within, TcpStream::connect(addr)));
            futures_util::future::join_all(tries)
                .await
                .into_iter()
                .filter_map(|r| r.ok().and_then(Result::ok))
                .collect()
        })
    })
}

/// The kernel holds a burst of new connections until the accept loop takes them. A connection
/// that finds the listen backlog full has its SYN dropped, and its client waits a second for the
/// retransmit: that was the good client's first request in `noisy-silent-5k`, behind 5,000
/// silent sockets (tokio's default backlog is 128).
#[tokio::test]
async fn a_burst_of_connections_waits_for_the_accept_loop_instead_of_being_dropped() {
    let mesh = Mesh::start().await;
    const BURST: usize = 400;
    // Within 2 s: a SYN dropped by a full backlog is retried after 1 s, and again after 3 s.
    let burst = burst_from_another_thread(mesh.addr(), BURST, Duration::from_secs(2));
    // This test's runtime has one thread, which the router shares: blocked here, it accepts
    // nothing while the burst arrives, as when its worker is busy.
    let opened = burst.join().unwrap();
    assert_eq!(
        opened.len(),
        BURST,
        "connections that completed their handshake while the router was not accepting"
    );
    // Each of them is then served.
    drop(opened);
    let r = H1::connect(mesh.addr()).await.send(get("/hello")).await;
    assert_eq!(r.status(), 200);
}

/// Counts the connections whose handshake `listener` completed since the last call (taking
/// them from the kernel's queue and closing them).
fn handshakes(listener: &std::net::TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

/// An HTTP/1.1 backend whose every answer is the number of handshakes `counted` completed
/// since the last answer.
async fn counting_backend(counted: std::net::TcpListener) -> SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let counted = std::sync::Arc::new(counted);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let counted = std::sync::Arc::clone(&counted);
            let svc = service_fn(move |_req| {
                let n = handshakes(&counted);
                let body = http_body_util::Full::new(bytes::Bytes::from(n.to_string()));
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

/// Thousands of silent sockets reach the sniff timeout in the same millisecond, and each then
/// connects upstream (a server that speaks first would be waiting). Those connects take turns,
/// a few at a time, so a request arriving in that millisecond is forwarded after a handful of
/// them, not after all: without turns the router made every connect first (`noisy-silent-5k`).
/// Paused time makes "the same millisecond" exact; the count is the upstream's kernel queue.
#[tokio::test(start_paused = true)]
async fn a_request_does_not_wait_for_the_connects_of_a_silent_flood() {
    const SILENT: usize = 1000;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let original = socket.listen(4096).unwrap().into_std().unwrap();
    let original_addr = original.local_addr().unwrap();
    let shadow = counting_backend(original.try_clone().unwrap()).await;
    let routes = temp_path("flood.yaml");
    let _cleanup = RemoveOnDrop(routes.clone());
    write_routes(&routes, &one_rule(original_addr, shadow, "fallback"));
    let mut cfg = config(&routes);
    let sniff = Duration::from_secs(1);
    cfg.sniff_timeout = sniff;
    cfg.silent_upstream_timeout = Duration::from_secs(600);
    cfg.idle_park_after = Duration::from_secs(600);
    let router = ktx_router::Router::start(cfg).await.unwrap();
    wait_ready(router.admin_addr).await;
    let addr = router.listen_addrs[0];

    // The good client's connection is open and has been served once.
    let mut good = H1::connect(addr).await;
    let r = good.send(get_marked("/", "foobar")).await;
    assert_eq!(body_string(r).await, "0");

    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // No time passes while the router accepts them: all their sniff timeouts end at once,
    // and the good request is sent in that very tick.
    tokio::time::sleep(sniff).await;
    let r = good.send(get_marked("/", "foobar")).await;
    let connected_before: usize = body_string(r).await.parse().unwrap();
    eprintln!("connected before the request: {connected_before}");
    assert!(
        connected_before < SILENT / 4,
        "the router connected {connected_before} silent sockets upstream before forwarding the request"
    );
    // And every silent socket is passed through in the end.
    let mut total = connected_before;
    while total < SILENT {
        tokio::time::sleep(Duration::from_millis(10)).await;
        total += handshakes(&original);
    }
    drop(silent);
}
