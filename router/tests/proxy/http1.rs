//! HTTP/1.1: routing by header on one keep-alive connection, Host and hop-by-hop handling,
//! pooling, bodies of any size streamed both ways, 100-continue, and the unavailable policies.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

#[tokio::test]
async fn marked_requests_reach_the_shadow_others_the_original() {
    let mesh = Mesh::start().await;
    let mut c = H1::connect(mesh.addr()).await;
    for i in 0..6 {
        let (req, want) = match i % 3 {
            0 => (get_marked("/", "foobar"), SHADOW),
            1 => (get("/"), ORIGINAL),
            _ => (get_marked("/", "other"), ORIGINAL),
        };
        let r = c.send(req).await;
        assert_eq!(r.status(), 200);
        assert_eq!(backend_of(&r), want, "request {i}");
        assert_eq!(body_string(r).await, format!("{want}\n"));
    }
    // Header names are case-insensitive.
    let req = Request::get("/")
        .header("version", "foobar")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(backend_of(&c.send(req).await), SHADOW);
    let m = mesh.metrics().await;
    assert_eq!(
        counter(
            &m,
            "ktx_router_requests_total{rule=\"foobar\",status=\"200\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "ktx_router_requests_total{rule=\"default\",status=\"200\"}"
        ),
        4.0,
        "{m}"
    );
}

#[tokio::test]
async fn host_is_preserved_and_hop_by_hop_headers_are_not_forwarded() {
    let mesh = Mesh::start().await;
    let mut c = H1::connect(mesh.addr()).await;
    let req = Request::get("/headers?x=1")
        .header("host", "orders.shop.svc:8080")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send(req).await;
    let echo: serde_json::Value = serde_json::from_str(&body_string(r).await).unwrap();
    let text = echo.to_string().to_ascii_lowercase();
    assert!(
        text.contains("orders.shop.svc:8080"),
        "Host must be preserved: {text}"
    );
    assert!(text.contains("x-end-to-end"), "{text}");
    for hop in ["x-hop", "keep-alive\"", "proxy-connection"] {
        assert!(!text.contains(hop), "{hop} must not be forwarded: {text}");
    }
    assert!(text.contains("/headers?x=1"), "path and query kept: {text}");
}

#[tokio::test]
async fn a_clients_connection_close_does_not_close_the_pooled_upstream_connection() {
    let mesh = Mesh::start().await;
    for _ in 0..5 {
        let mut c = H1::connect(mesh.addr()).await;
        let req = Request::get("/")
            .header("connection", "close")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send(req).await;
        assert_eq!(
            r.headers().get("connection").map(|v| v.to_str().unwrap()),
            Some("close")
        );
        body_string(r).await;
        // The pooled connection goes back when the exchange completes; give that task a turn.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(mesh.original.stats().requests(), 5);
    assert_eq!(
        mesh.original.stats().connections(),
        1,
        "one pooled upstream connection served all"
    );
}

/// An upstream closes a keep-alive connection once it has answered (its keep-alive timeout,
/// a restart): the router's next request goes out on a new connection, not on the closed one
/// (which would answer it 502). A pooled connection has no task of its own watching its socket
/// (`upstream::Driver`), so the checkout has to notice the close.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(tokio::sync::Notify::new());
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        // Each connection: one request answered with keep-alive, then closed by the upstream.
        while let Ok((mut sock, _)) = l.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nup\n")
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(sock);
            c.notify_one();
        }
    });
    let routes = temp_path("routes.yaml");
    let _cleanup = RemoveOnDrop(routes.clone());
    write_routes(&routes, &one_rule(up, up, "reject"));
    let router = ktx_router::Router::start(config(&routes)).await.unwrap();
    wait_ready(router.admin_addr).await;

    let mut c = H1::connect(router.listen_addrs[0]).await;
    for i in 0..3 {
        let r = c.send(get("/")).await;
        assert_eq!(
            r.status(),
            200,
            "request {i} (after the upstream closed the last one)"
        );
        assert_eq!(body_string(r).await, "up\n");
        closed.notified().await;
        // Let the FIN arrive.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a new connection for each request"
    );
}

/// A client uploads a large body and reads the answer only once its upload is written; the
/// upstream answers at once, with a large body, while it reads the upload. Without a router
/// the upload flows while the answer waits in socket buffers; the router must keep pulling
/// the upload too, though nobody reads the answer it forwards (a pooled connection driven by
/// the response body alone would stall both: `upstream::Driver`).
#[tokio::test]
async fn an_upload_keeps_flowing_while_the_client_has_not_read_the_early_answer() {
    const N: usize = 32 << 20; // more than every socket buffer on the way can hold
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let (mut r, mut w) = sock.into_split();
        // Answer at once, a body as large as the upload.
        tokio::spawn(async move {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {N}\r\n\r\n");
            w.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'r'; 64 << 10];
            let mut left = N;
            while left > 0 {
                let n = left.min(chunk.len());
                if w.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        // Meanwhile read the request: head, then N body bytes.
        let mut buf = vec![0u8; 64 << 10];
        let mut seen = Vec::new();
        let body_start = loop {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request head");
            seen.extend_from_slice(&buf[..n]);
            if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let mut body = seen.len() - body_start;
        while body < N {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body += n,
            }
        }
        let _ = got_tx.send(body);
    });
    let routes = temp_path("routes.yaml");
    let _cleanup = RemoveOnDrop(routes.clone());
    write_routes(&routes, &one_rule(up, up, "reject"));
    let router = ktx_router::Router::start(config(&routes)).await.unwrap();
    wait_ready(router.admin_addr).await;

    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: {N}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let upload = async {
        let chunk = vec![b'u'; 64 << 10];
        for _ in 0..N / chunk.len() {
            s.write_all(&chunk).await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), upload)
        .await
        .expect("the upload stalled while the client had not read the answer");
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), got_rx)
        .await
        .expect("the upstream never got the whole upload")
        .unwrap();
    assert_eq!(got, N);
    // Now the answer, all of it.
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while answer.len() < N {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("the answer stalled")
            .unwrap();
        assert!(n > 0, "the router closed before the whole answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer[..64]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn chunked_and_large_bodies_stream_both_ways_without_limit() {
    let mesh = Mesh::start().await;
    let mut c = H1::connect(mesh.addr()).await;
    // A chunked upload of 24 MiB (no Content-Length), counted by the backend.
    let chunks = (0..24).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![7u8; 1 << 20])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let s = TcpStream::connect(mesh.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/sink")
        .header("VERSION", "foobar")
        .body(body)
        .unwrap();
    let r = tx.send_request(req).await.unwrap();
    assert_eq!(backend_of(&r), SHADOW);
    assert_eq!(body_string(r).await.trim(), (24u64 << 20).to_string());
    // A 64 MiB download, streamed.
    let r = c.send(get("/bytes?n=67108864")).await;
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let mut n = 0usize;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(n, 64 << 20);
    // Echo round trip.
    let req = Request::post("/echo")
        .body(Full::new(Bytes::from_static(b"ping-pong")))
        .unwrap();
    assert_eq!(body_string(c.send(req).await).await, "ping-pong");
}

async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(needle) {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn expect_100_continue() {
    let mesh = Mesh::start().await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: orders\r\nVERSION: foobar\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    s.write_all(b"hello").await.unwrap();
    let resp = read_until(&mut s, "hello").await;
    assert!(resp.contains("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-ktx-backend: shadow"), "{resp}");
}

/// A mesh whose session target is a port nobody listens on. The socket is bound but never
/// listened on, and must be held for the whole test: a released port can be handed to another
/// test's backend, which would then answer.
async fn mesh_with_dead_shadow(policy: &str) -> (Mesh, SocketAddr, tokio::net::TcpSocket) {
    let mesh = Mesh::start().await;
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = closed.local_addr().unwrap();
    write_routes(&mesh.routes, &one_rule(mesh.original.addr(), dead, policy));
    wait_table_version(&mesh, 2).await;
    (mesh, dead, closed)
}

/// How the session's target in [`mesh_with_dying_shadow`] treats its connections: it reads each
/// request head and dies without answering (the developer's process killed while a request was
/// in flight) on the first `dies` connections, then answers `200` as the shadow.
#[derive(Clone, Copy)]
struct Dying {
    dies: usize,
    /// Reset (SO_LINGER 0) rather than close.
    reset: bool,
}

const ALWAYS: usize = usize::MAX;

/// A mesh whose session target is [`Dying`]. The listener task lives as long as the returned
/// handle.
async fn mesh_with_dying_shadow(policy: &str, how: Dying) -> (Mesh, tokio::task::JoinHandle<()>) {
    let mesh = Mesh::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        for n in 0.. {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if n >= how.dies {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nx-ktx-backend: shadow\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    return;
                }
                if how.reset {
                    // killed with bytes unread: the kernel resets the connection
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(std::time::Duration::ZERO));
                }
                drop(s);
            });
        }
    });
    write_routes(&mesh.routes, &one_rule(mesh.original.addr(), dying, policy));
    wait_table_version(&mesh, 2).await;
    (mesh, task)
}

const DIES: Dying = Dying {
    dies: ALWAYS,
    reset: false,
};

/// A GET in flight when the developer's process died was never answered; it is safe to repeat,
/// so the session's policy answers it as if the process had been down already: here the rule's
/// 503, never a 502 (the inner loop's promise while a developer restarts their process).
#[tokio::test]
async fn a_safe_request_the_dying_session_never_answered_gets_the_rule_503() {
    for how in [
        DIES,
        Dying {
            reset: true,
            ..DIES
        },
    ] {
        let (mesh, _shadow) = mesh_with_dying_shadow("reject", how).await;
        let mut c = H1::connect(mesh.addr()).await;
        let r = c.send(get_marked("/", "foobar")).await;
        assert_eq!(r.status(), 503, "reset: {}", how.reset);
        let body = body_string(r).await;
        assert!(body.contains("session 'foobar'"), "{body}");
    }
}

/// The same over HTTP/2 (the router speaks h2 to the session's target for an h2c client).
#[tokio::test]
async fn an_h2_safe_request_the_dying_session_never_answered_gets_the_rule_503() {
    let (mesh, _shadow) = mesh_with_dying_shadow("reject", DIES).await;
    let mut c = H2::connect(mesh.addr()).await;
    let r = c.get(mesh.addr(), "/", Some("foobar")).await;
    assert_eq!(r.status(), 503);
}

/// The same with `fallback`: the GET goes to the original.
#[tokio::test]
async fn a_safe_request_the_dying_session_never_answered_falls_back_to_the_original() {
    let (mesh, _shadow) = mesh_with_dying_shadow("fallback", DIES).await;
    let mut c = H1::connect(mesh.addr()).await;
    let r = c.send(get_marked("/", "foobar")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(backend_of(&r), ORIGINAL);
}

/// A session whose target broke off once (a kept connection it closed, say) but is alive: the
/// GET is sent to the session once more and answered there, not by the policy.
#[tokio::test]
async fn a_safe_request_is_sent_to_a_live_session_once_more() {
    let (mesh, _shadow) = mesh_with_dying_shadow(
        "fallback",
        Dying {
            dies: 1,
            reset: false,
        },
    )
    .await;
    let mut c = H1::connect(mesh.addr()).await;
    let r = c.send(get_marked("/", "foobar")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(backend_of(&r), SHADOW);
}

/// A POST may have done its work before the process died, and so may a DELETE without a body
/// (idempotent, not safe): neither is sent again, to the original or anywhere; the client gets
/// the 502 (sent to the original, it would have been answered 200).
#[tokio::test]
async fn an_unsafe_request_the_dying_session_never_answered_is_not_repeated() {
    let (mesh, _shadow) = mesh_with_dying_shadow("fallback", DIES).await;
    let mut c = H1::connect(mesh.addr()).await;
    let post = Request::post("/orders")
        .header("version", "foobar")
        .header("host", "orders")
        .body(Full::new(Bytes::from_static(b"order 1")))
        .unwrap();
    assert_eq!(c.send(post).await.status(), 502);
    let mut c = H1::connect(mesh.addr()).await;
    let delete = Request::delete("/orders/1")
        .header("version", "foobar")
        .header("host", "orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(c.send(delete).await.status(), 502);
}

pub async fn wait_table_version(mesh: &Mesh, at_least: u64) {
    for _ in 0..300 {
        if counter(&mesh.metrics().await, "ktx_router_table_version") >= at_least as f64 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("route table never reached version {at_least}");
}

#[tokio::test]
async fn unreachable_session_falls_back_to_the_original() {
    let (mesh, _, _closed) = mesh_with_dead_shadow("fallback").await;
    let mut c = H1::connect(mesh.addr()).await;
    let r = c.send(get_marked("/", "foobar")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(backend_of(&r), ORIGINAL);
    let m = mesh.metrics().await;
    assert!(
        counter(&m, "ktx_router_upstream_errors_total{side=\"shadow\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn unreachable_session_with_reject_policy_answers_503_naming_it() {
    let (mesh, dead, _closed) = mesh_with_dead_shadow("reject").await;
    let mut c = H1::connect(mesh.addr()).await;
    let r = c.send(get_marked("/", "foobar")).await;
    assert_eq!(r.status(), 503);
    let body = body_string(r).await;
    assert!(
        body.contains("session 'foobar'") && body.contains(&dead.to_string()),
        "{body}"
    );
    // Unmarked traffic is untouched.
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
}

#[tokio::test]
async fn idle_connections_are_parked_and_serve_the_next_request() {
    let mesh = Mesh::start_with(|c| c.idle_park_after = std::time::Duration::from_millis(30)).await;
    let mut c = H1::connect(mesh.addr()).await;
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
    let mut parked = 0.0;
    for _ in 0..200 {
        parked = counter(&mesh.metrics().await, "ktx_router_parked_connections");
        if parked >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        parked,
        1.0,
        "the idle client connection was parked: {}",
        mesh.metrics().await
    );
    // Same client connection, after parking: both rules still apply.
    assert_eq!(backend_of(&c.send(get_marked("/", "foobar")).await), SHADOW);
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
}

/// `--idle-park-after` counts from the connection's last byte: a connection quiet that long
/// after its response is parked then, not up to twice that long later (idle keep-alive
/// connections hold hyper's buffers until they are parked; `loadtests/run.sh` idle-5k measures
/// 1.5 s after the last response with the default of 1 s). Paused time makes "then" exact.
#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_parked_once_quiet_for_the_park_delay() {
    let park = std::time::Duration::from_secs(1);
    let mesh = Mesh::start_with(|c| c.idle_park_after = park).await;
    let mut c = H1::connect(mesh.addr()).await;
    // Half a period after the connection opened, one exchange.
    tokio::time::sleep(park / 2).await;
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
    tokio::time::sleep(park + park / 4 + std::time::Duration::from_millis(10)).await;
    let parked = counter(&mesh.metrics().await, "ktx_router_parked_connections");
    assert_eq!(
        parked, 1.0,
        "parked connections 1.26 s after the last response"
    );
    assert_eq!(backend_of(&c.send(get_marked("/", "foobar")).await), SHADOW);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let mesh = Mesh::start_with(|c| c.idle_park_after = std::time::Duration::from_millis(30)).await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nVERSION: foobar\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let out = read_until(&mut s, "original\n").await;
    let first = out.find("shadow\n").expect("first answer");
    let second = out.find("original\n").expect("second answer");
    assert!(first < second, "{out}");
    // Then idle long enough to be parked, and pipeline again.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nVERSION: foobar\r\n\r\n",
    )
    .await
    .unwrap();
    let out = read_until(&mut s, "shadow\n").await;
    assert!(out.contains("original\n"), "{out}");
}
