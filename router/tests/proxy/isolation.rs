//! One client's stall never spends another client's window, slot or memory: a real h2 client
//! that advertises a zero window and never grants any, and a well-behaved client beside it
//! whose request must still complete quickly.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ktx_testbackend::grpc::{EchoClient, EchoRequest};
use tokio::net::TcpStream;

use super::support::*;

/// How long the good client may take while the bad one stalls. Straight to the backend it takes
/// milliseconds; the bound leaves room for a slow CI machine.
const GOOD_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// Opens an h2c connection with SETTINGS_INITIAL_WINDOW_SIZE=0 (connection window left at the
/// default 64 KiB, which the first response fills), starts `streams` requests for `path` and
/// never reads a byte of their bodies. The returned handles keep the streams open; PINGs are
/// still answered by the connection task.
async fn stalled_client(
    addr: SocketAddr,
    path: &str,
    streams: usize,
) -> Vec<h2::client::ResponseFuture> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut held = Vec::new();
    for _ in 0..streams {
        tx = tx.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}{path}"))
            .body(())
            .unwrap();
        let (resp, _) = tx.send_request(req, true).unwrap();
        held.push(resp);
    }
    held
}

/// Waits until the backend has seen `n` requests (the stalled streams have reached it).
async fn backend_saw(mesh: &Mesh, n: u64) {
    for _ in 0..500 {
        if mesh.original.stats().requests() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "backend saw {} requests, expected {n}",
        mesh.original.stats().requests()
    );
}

#[tokio::test]
async fn a_zero_window_h2_client_does_not_stall_another_clients_body() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let held = stalled_client(addr, "/bytes?n=65536", 256).await;
    backend_saw(&mesh, 256).await;

    let mut good = H2::connect(addr).await;
    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        let r = good.get(addr, "/hello", None).await;
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello\n");
    })
    .await;
    assert!(
        answered.is_ok(),
        "a second client's body did not arrive within {GOOD_CLIENT_BOUND:?} while another \
         client stalled 256 streams"
    );
    drop(held);
}

#[tokio::test]
async fn a_zero_window_h2_client_does_not_stall_another_clients_grpc_stream() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let held = stalled_client(addr, "/bytes?n=65536", 256).await;
    backend_saw(&mesh, 256).await;

    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        let mut plain = EchoClient::connect(addr).await.unwrap();
        let mut s = plain
            .server_stream(EchoRequest::new("s"))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = s.next().await {
            m.unwrap();
            n += 1;
        }
        assert!(n >= 2, "server stream sent {n} messages");
    })
    .await;
    assert!(
        answered.is_ok(),
        "a gRPC server stream did not finish within {GOOD_CLIENT_BOUND:?} while another \
         client stalled 256 streams"
    );
    drop(held);
}

/// An h2c client connection whose requests carry a body.
async fn h2_with_bodies(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn post(addr: SocketAddr, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .body(Full::new(body))
        .unwrap()
}

#[tokio::test]
async fn uploads_the_upstream_does_not_read_do_not_stall_another_clients_upload() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    // `/slow` never reads its request body: 16 uploads of 1 MiB fill every window on the way.
    let bad = h2_with_bodies(addr).await;
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut tx = bad.clone();
        held.push(tokio::spawn(async move {
            tx.ready().await.unwrap();
            let _ = tx
                .send_request(post(
                    addr,
                    "/slow?ms=60000",
                    Bytes::from(vec![b'x'; 1 << 20]),
                ))
                .await;
        }));
    }
    backend_saw(&mesh, 16).await;

    let mut good = h2_with_bodies(addr).await;
    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        good.ready().await.unwrap();
        let r = good
            .send_request(post(addr, "/sink", Bytes::from(vec![b'y'; 256 * 1024])))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], format!("{}\n", 256 * 1024).as_bytes());
    })
    .await;
    assert!(
        answered.is_ok(),
        "a second client's upload did not complete within {GOOD_CLIENT_BOUND:?} while another \
         client's uploads sat unread upstream"
    );
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn a_stream_with_no_free_slot_gets_503_or_grpc_unavailable() {
    // Every stream on the client's own connections (none shared), whose slots run out.
    let mesh = Mesh::start_with(|c| {
        c.upstream_h2_streams = 1;
        c.upstream_h2_connections = 1;
        c.upstream_h2_shared_streams = 0;
        c.stream_slot_timeout = Duration::from_millis(200);
    })
    .await;
    let addr = mesh.addr();
    let c = H2::connect(addr).await;
    // One stream holds the only slot of this client connection to the original.
    let busy = {
        let mut c = c.clone();
        tokio::spawn(async move { c.get(addr, "/slow?ms=3000", None).await.status() })
    };
    backend_saw(&mesh, 1).await;
    let r = tokio::time::timeout(GOOD_CLIENT_BOUND, c.clone().get(addr, "/hello", None))
        .await
        .expect("a stream waited unbounded for a slot");
    assert_eq!(r.status(), 503);
    assert!(body_string(r).await.contains("stream slot"));

    // The same for gRPC, as a gRPC status: a bidi stream that stays open holds the only
    // slot of its client connection.
    let mut grpc = EchoClient::connect(addr).await.unwrap();
    let open = futures_util::stream::iter([EchoRequest::new("hold")])
        .chain(futures_util::stream::pending());
    let mut holding = grpc.bidi_stream(open).await.unwrap().into_inner();
    holding.next().await.unwrap().unwrap();
    // A second call on the same tonic channel (same h2c connection) finds no slot.
    let status = tokio::time::timeout(GOOD_CLIENT_BOUND, grpc.unary(EchoRequest::new("hi")))
        .await
        .expect("a gRPC call waited unbounded for a slot");
    match status {
        Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        Ok(r) => panic!("expected UNAVAILABLE, got {:?}", r.into_inner()),
    }
    // Counted as what they stand for: two 503s (one plain, one gRPC).
    let m = mesh.metrics().await;
    assert_eq!(
        counter(
            &m,
            "ktx_router_requests_total{rule=\"default\",status=\"503\"}"
        ),
        2.0,
        "{m}"
    );
    // Slots come back: the other streams do not fail once the busy one ends.
    assert_eq!(busy.await.unwrap(), 200);
    let r = c.clone().get(addr, "/hello", None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_full_upstream_connection_opens_another_up_to_the_cap() {
    let mesh = Mesh::start_with(|c| {
        c.upstream_h2_streams = 2;
        c.upstream_h2_connections = 3;
        c.upstream_h2_shared_streams = 0;
    })
    .await;
    let addr = mesh.addr();
    let c = H2::connect(addr).await;
    // Six streams that stay open together need three connections of two streams each.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move { c.get(addr, "/slow?ms=500", None).await.status() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(mesh.original.stats().connections(), 3);
    // A second client connection never shares the first one's upstream connections.
    let mut other = H2::connect(addr).await;
    assert_eq!(other.get(addr, "/hello", None).await.status(), 200);
    assert_eq!(mesh.original.stats().connections(), 4);
}

/// A client's first body-less streams ride connections shared with other clients; the shared
/// connection's window covers every stream's window, so a zero-window client's stalled
/// streams there (16 × 256 KiB, four times the configured 1 MiB connection window) leave room
/// for another client's stream on the same connection.
#[tokio::test]
async fn a_zero_window_client_does_not_stall_another_client_on_a_shared_connection() {
    let mesh = Mesh::start_with(|c| c.upstream_h2_shared_streams = 16).await;
    let addr = mesh.addr();
    // 16 streams on the shared connection, each filling its 256 KiB stream window, and 4 on
    // the stalled client's own connection.
    let held = stalled_client(addr, "/bytes?n=1048576", 20).await;
    backend_saw(&mesh, 20).await;
    assert_eq!(mesh.original.stats().connections(), 2);

    let mut good = H2::connect(addr).await;
    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        let r = good.get(addr, "/bytes?n=524288", None).await;
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 524288);
    })
    .await;
    assert!(
        answered.is_ok(),
        "a second client's body did not arrive within {GOOD_CLIENT_BOUND:?} on the connection \
         it shares with a stalled client"
    );
    // It rode the shared connection: no connection of its own.
    assert_eq!(mesh.original.stats().connections(), 2);
    drop(held);
}

#[tokio::test]
async fn with_shared_upstream_h2_clients_share_connections() {
    let mesh = Mesh::start_with(|c| c.upstream_h2_shared = true).await;
    let addr = mesh.addr();
    for _ in 0..3 {
        let mut c = H2::connect(addr).await;
        assert_eq!(c.get(addr, "/hello", None).await.status(), 200);
    }
    assert_eq!(mesh.original.stats().connections(), 1);
}

/// An address whose connects hang: a listener with a full accept queue drops further SYNs (a
/// deleted shadow pod whose endpoint is still listed looks the same). Keep the returned sockets
/// for as long as the address must stay so.
async fn swallowing_address() -> (SocketAddr, Vec<TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    (addr, fillers, listener)
}

/// On one client connection, streams to a session whose shadow swallows connects each wait out
/// the connect timeout; a stream to the original beside them opens its own connection at once
/// instead of queueing behind theirs.
#[tokio::test]
async fn a_shadow_that_swallows_connects_holds_up_no_stream_to_the_original() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let original = ktx_testbackend::spawn(ORIGINAL, any).await.unwrap();
    let (shadow, _fillers, _listener) = swallowing_address().await;
    let routes = temp_path("routes.yaml");
    let _cleanup = RemoveOnDrop(routes.clone());
    write_routes(&routes, &one_rule(original.addr(), shadow, "reject"));
    let mut cfg = config(&routes);
    cfg.connect_timeout = Duration::from_secs(1);
    let router = ktx_router::Router::start(cfg).await.unwrap();
    wait_ready(router.admin_addr).await;
    let addr = router.listen_addrs[0];

    let mut tx = raw_h2(addr).await;
    let mut marked = Vec::new();
    for _ in 0..3 {
        let req = Request::get(format!("http://{addr}/hello"))
            .header("version", "foobar")
            .body(())
            .unwrap();
        marked.push(tx.send_request(req, true).unwrap().0);
        tx = tx.ready().await.unwrap();
    }
    // The marked streams are now waiting on their connects.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let req = Request::get(format!("http://{addr}/hello"))
        .body(())
        .unwrap();
    let resp = tx.send_request(req, true).unwrap().0;
    let resp = tokio::time::timeout(GOOD_CLIENT_BOUND, resp)
        .await
        .expect("the original's answer")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        took < Duration::from_millis(500),
        "a stream to the original waited {took:?} behind connects to the shadow"
    );
    for r in marked {
        let r = tokio::time::timeout(GOOD_CLIENT_BOUND, r)
            .await
            .expect("the marked streams' answers")
            .unwrap();
        // `reject`: the session is unreachable.
        assert_eq!(r.status(), 503, "a connect the shadow swallowed");
    }
}

/// Streams to a session that outlive the age a shadow connection takes new streams for (a
/// gateway's long-lived streams, one every so often) still go on at most
/// `--upstream-h2-connections` connections per client connection: past the cap a new stream
/// goes on the youngest of them, so the memory they hold keeps its bound.
#[tokio::test]
async fn long_lived_streams_to_a_session_stay_within_the_connection_cap() {
    let mesh = Mesh::start_with(|c| c.session_reuse_age = Duration::from_millis(100)).await;
    let addr = mesh.addr();
    let mut tx = raw_h2(addr).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let req = Request::get(format!("http://{addr}/bytes?n=100000000"))
            .header("version", "foobar")
            .body(())
            .unwrap();
        let resp = tx.send_request(req, true).unwrap().0;
        // The head only: the body is never read, so the stream stays open.
        let resp = tokio::time::timeout(GOOD_CLIENT_BOUND, resp)
            .await
            .expect("a response head")
            .unwrap();
        assert_eq!(resp.status(), 200);
        held.push(resp);
        tx = tx.ready().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let opened = mesh.shadow.stats().connections();
    assert!(
        opened <= 4,
        "ten long-lived streams to the session opened {opened} upstream connections"
    );
}
