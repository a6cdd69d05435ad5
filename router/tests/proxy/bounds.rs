//! Every wait a peer can stall has a bound, and overload refuses new work while existing work
//! goes on: response-header and body idle timeouts, idle h2c connections and splices, silent
//! sockets, the admin port's header timeout, and the connection cap. Each bound is set small
//! (200 ms) and the test allows seconds, so a slow machine does not make it flaky; without the
//! bound each scenario hangs until the test's own limit.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use ktx_testbackend::grpc::{EchoClient, EchoRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

const BOUND: Duration = Duration::from_millis(200);
/// How long a test waits for a bounded thing to happen.
const WITHIN: Duration = Duration::from_secs(5);

/// Reads until the router closes the socket; panics if it is still open after [`WITHIN`].
async fn closed_by_router(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WITHIN, s.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("{what}: the router kept the connection open for {WITHIN:?}"),
    }
}

/// A raw TCP server whose every connection reads what it gets, answers `reply` once, then
/// stays silent (a stalled upstream).
async fn stalling_server(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                // Hold the socket, read and drop whatever comes, never answer again.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A raw TCP echo server that never speaks first.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A router whose default target is `default`, tuned by `tune`.
async fn router_to(
    default: SocketAddr,
    tune: impl FnOnce(&mut ktx_router::Config),
) -> (ktx_router::Router, RemoveOnDrop) {
    let routes = temp_path("bounds.yaml");
    write_routes(&routes, &format!("default: {{ addrs: [\"{default}\"] }}\n"));
    let mut cfg = config(&routes);
    tune(&mut cfg);
    let router = ktx_router::Router::start(cfg).await.unwrap();
    wait_ready(router.admin_addr).await;
    (router, RemoveOnDrop(routes))
}

#[tokio::test]
async fn an_upstream_that_sends_no_response_head_gets_504() {
    let mesh = Mesh::start_with(|c| c.response_header_timeout = BOUND).await;
    let mut c = H1::connect(mesh.addr()).await;
    let r = tokio::time::timeout(WITHIN, c.send(get("/slow?ms=60000")))
        .await
        .expect("no answer while the upstream stalled its response head");
    assert_eq!(r.status(), 504);
    assert!(body_string(r).await.contains("response header timeout"));
}

/// The response-header timeout starts once the request body is sent, also for a body of
/// known length (hyper reads no end-of-body frame after its last data frame).
#[tokio::test]
async fn an_upstream_that_reads_a_request_body_and_never_answers_gets_504() {
    let text = answer_from_a_silent_upstream(
        b"POST /sink HTTP/1.1\r\nHost: orders\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
}

/// The same for a chunked body that ends with trailers (hyper reads nothing after them).
#[tokio::test]
async fn an_upstream_that_reads_a_chunked_body_with_trailers_and_never_answers_gets_504() {
    let text = answer_from_a_silent_upstream(
        b"POST /sink HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
}

/// Sends `request` through a router (response-header timeout [`BOUND`]) to an upstream that
/// reads it and never answers; returns the first bytes the client gets, within [`WITHIN`].
async fn answer_from_a_silent_upstream(request: &[u8]) -> String {
    let upstream = stalling_server(b"").await;
    let (router, _routes) = router_to(upstream, |c| c.response_header_timeout = BOUND).await;
    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(WITHIN, s.read(&mut got))
        .await
        .expect("no answer while the upstream stalled after reading the request body")
        .unwrap();
    String::from_utf8_lossy(&got[..n]).into_owned()
}

#[tokio::test]
async fn a_client_that_stalls_its_request_body_is_cut_off() {
    let mesh = Mesh::start_with(|c| c.body_idle_timeout = BOUND).await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = closed_by_router(&mut s, "stalled request body").await;
    let text = String::from_utf8_lossy(&got);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn an_upstream_that_stalls_its_response_body_is_cut_off() {
    let upstream =
        stalling_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let (router, _routes) = router_to(upstream, |c| c.body_idle_timeout = BOUND).await;
    let mut c = H1::connect(router.listen_addrs[0]).await;
    let r = c.send(get("/")).await;
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(WITHIN, r.into_body().collect())
        .await
        .expect("the response body stalled and the router never ended it");
    assert!(
        body.is_err(),
        "a body of 10 of 100 bytes must end in an error"
    );
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed() {
    let mesh = Mesh::start_with(|c| c.h2c_idle_timeout = BOUND).await;
    let tcp = TcpStream::connect(mesh.addr()).await.unwrap();
    let (_tx, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::time::timeout(WITHIN, conn)
        .await
        .expect("an idle h2c connection stayed open")
        .ok();
}

#[tokio::test]
async fn a_grpc_stream_that_keeps_moving_is_not_cut_by_the_idle_timeouts() {
    let mesh = Mesh::start_with(|c| {
        c.h2c_idle_timeout = BOUND;
        c.body_idle_timeout = BOUND;
    })
    .await;
    let mut client = EchoClient::connect(mesh.addr()).await.unwrap();
    // Each message 100 ms after the previous one: 1.5 s in all, far past the 200 ms bounds.
    let msgs = futures_util::stream::iter(0..15).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        EchoRequest::new(format!("m{i}"))
    });
    let mut s = client.bidi_stream(msgs).await.unwrap().into_inner();
    let mut got = 0;
    while let Some(m) = s.next().await {
        m.expect("a moving stream was cut");
        got += 1;
    }
    assert_eq!(got, 15);
}

#[tokio::test]
async fn an_idle_passthrough_is_closed_and_a_moving_one_is_not() {
    let (router, _routes) = router_to(echo_server().await, |c| {
        c.splice_idle_timeout = BOUND;
    })
    .await;
    let addr = router.listen_addrs[0];
    // Moving: a TLS-looking byte every 100 ms for 1.5 s, each echoed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..15 {
        s.write_all(&[0x16]).await.unwrap();
        let mut b = [0u8; 1];
        tokio::time::timeout(WITHIN, s.read_exact(&mut b))
            .await
            .expect("a moving passthrough was cut")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle: nothing more either way.
    closed_by_router(&mut s, "idle passthrough").await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_when_the_server_does_not_speak_either() {
    let (router, _routes) = router_to(echo_server().await, |c| {
        c.sniff_timeout = Duration::from_millis(100);
        c.silent_upstream_timeout = BOUND;
    })
    .await;
    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    let got = closed_by_router(&mut s, "silent socket").await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn an_idle_websocket_is_closed_and_a_moving_one_is_not() {
    let mesh = Mesh::start_with(|c| c.splice_idle_timeout = BOUND).await;
    let req = format!("ws://{}/ws", mesh.addr())
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(mesh.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.next().await.unwrap().unwrap(); // the backend's greeting
    for i in 0..15 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        let echo = tokio::time::timeout(WITHIN, ws.next())
            .await
            .expect("a moving WebSocket was cut")
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = tokio::time::timeout(WITHIN, ws.next())
        .await
        .expect("an idle WebSocket stayed open");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}

#[tokio::test]
async fn the_admin_port_closes_a_client_that_never_finishes_its_head() {
    let mesh = Mesh::start_with(|c| c.admin_header_timeout = BOUND).await;
    let mut s = TcpStream::connect(mesh.router.admin_addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_router(&mut s, "admin client with half a head").await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_while_open_ones_are_served() {
    let mesh = Mesh::start_with(|c| c.max_connections = 2).await;
    let mut a = H1::connect(mesh.addr()).await;
    let mut b = H1::connect(mesh.addr()).await;
    assert_eq!(a.send(get("/hello")).await.status(), 200);
    assert_eq!(b.send(get("/hello")).await.status(), 200);

    let mut third = TcpStream::connect(mesh.addr()).await.unwrap();
    third
        .write_all(b"GET /hello HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let got = closed_by_router(&mut third, "a connection over the cap").await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));

    // The open ones keep being served.
    for c in [&mut a, &mut b] {
        let r = c.send(get("/hello")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(body_string(r).await, "hello\n");
    }
    let m = mesh.metrics().await;
    assert_eq!(
        counter(
            &m,
            "ktx_router_refused_connections_total{reason=\"connections\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn new_connections_are_refused_while_memory_is_above_the_limit() {
    // Any process is above one byte: every new connection is refused, the admin port answers.
    let mesh = Mesh::start_with(|c| c.max_rss = 1).await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let got = closed_by_router(&mut s, "a connection while over --max-rss").await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let m = mesh.metrics().await;
    assert!(
        counter(
            &m,
            "ktx_router_refused_connections_total{reason=\"memory\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_its_response_is_closed() {
    let mesh = Mesh::start_with(|c| {
        c.body_idle_timeout = BOUND;
        c.response_header_timeout = BOUND;
    })
    .await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    // A response far larger than every buffer on the way, never read.
    s.write_all(b"GET /bytes?n=1000000000 HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let open = "ktx_router_active_connections{proto=\"http1\"}";
    // First the response is under way (the router counts the connection)...
    for _ in 0..(WITHIN.as_millis() / 50) {
        if counter(&mesh.metrics().await, open) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counter(&mesh.metrics().await, open), 1.0);
    // ...then, with nothing read, the router gives up on it.
    for _ in 0..(WITHIN.as_millis() / 50) {
        if counter(&mesh.metrics().await, open) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a client that stopped reading kept its connection open for {WITHIN:?}");
}

/// An h2c backend that answers every stream at once; `open` follows its open connections.
async fn h2_backend() -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (open, rx) = tokio::sync::watch::channel(0usize);
    let open = std::sync::Arc::new(open);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            open.send_modify(|n| *n += 1);
            let open = std::sync::Arc::clone(&open);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hi"));
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                open.send_modify(|n| *n -= 1);
            });
        }
    });
    (addr, rx)
}

/// A client's own upstream h2 connection goes with the client: once the client closed its
/// connection and the last stream ended, the router closes the upstream connection at once, not
/// after a linger (its connections run in the client connection's task, `exec.rs`; the pool that
/// holds them must not outlive the connection's end).
#[tokio::test]
async fn a_clients_own_upstream_h2_connection_closes_when_the_client_goes() {
    let (backend, mut open) = h2_backend().await;
    let (router, _routes) = router_to(backend, |_| {}).await;
    let addr = router.listen_addrs[0];
    let mut client = H2::connect(addr).await;
    let r = client.get(addr, "/", None).await;
    assert_eq!(r.status(), 200);
    drop(r);
    assert_eq!(*open.borrow(), 1, "the client's own upstream connection");
    drop(client);
    tokio::time::timeout(Duration::from_millis(500), open.wait_for(|n| *n == 0))
        .await
        .expect("the upstream connection outlived its client by 500 ms")
        .unwrap();
}

/// The upstream h2 connections every client's body-less streams share belong to no client, so
/// no client's going away closes them: one that carried no stream for the upstream idle
/// timeout is closed, and the next stream opens another.
#[tokio::test]
async fn an_idle_shared_upstream_h2_connection_is_closed() {
    let (backend, mut open) = h2_backend().await;
    let (router, _routes) = router_to(backend, |c| {
        c.upstream_idle_timeout = BOUND;
        c.upstream_h2_shared_streams = 16;
    })
    .await;
    let addr = router.listen_addrs[0];
    // The client stays connected throughout: only the shared connection goes idle.
    let mut client = H2::connect(addr).await;
    let r = client.get(addr, "/", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(*open.borrow(), 1, "one shared upstream connection");
    tokio::time::timeout(WITHIN, open.wait_for(|n| *n == 0))
        .await
        .expect("the idle shared upstream connection was kept open")
        .unwrap();
    let r = client.get(addr, "/", None).await;
    assert_eq!(r.status(), 200, "a new stream after the close");
    assert_eq!(*open.borrow(), 1);
}

/// A stream as an h2 server gets it.
type ServerStream = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<bytes::Bytes>,
);

/// An h2 upstream with `settings`: each stream goes to `stream`, which answers it or gives it
/// back to be held open, unanswered, for as long as its connection lives.
async fn h2_backend_with(
    settings: h2::server::Builder,
    stream: fn(ServerStream) -> Option<ServerStream>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let settings = settings.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = settings.handshake::<_, bytes::Bytes>(s).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(s)) = conn.accept().await {
                    held.extend(stream(s));
                }
            });
        }
    });
    addr
}

/// An h2 upstream that grants no window for request bodies (`SETTINGS_INITIAL_WINDOW_SIZE` 0),
/// takes every stream and never answers: a developer's process paused in a debugger, say.
async fn h2_backend_that_takes_no_body() -> SocketAddr {
    let mut settings = h2::server::Builder::new();
    settings.initial_window_size(0);
    h2_backend_with(settings, Some).await
}

/// A request body the upstream never takes is bounded by the body idle timeout as one the
/// client never sends is: the client gets an answer, not a stream that hangs for good.
#[tokio::test]
async fn an_h2_request_body_the_upstream_never_takes_is_bounded() {
    let (router, _routes) = bounded_router_to(h2_backend_that_takes_no_body().await).await;
    let addr = router.listen_addrs[0];
    let status = post_hello(raw_h2(addr).await, addr).await;
    assert_eq!(status, 504);
}

/// A router to `upstream` with the body idle and response header timeouts at [`BOUND`].
async fn bounded_router_to(upstream: SocketAddr) -> (ktx_router::Router, RemoveOnDrop) {
    router_to(upstream, |c| {
        c.body_idle_timeout = BOUND;
        c.response_header_timeout = BOUND;
    })
    .await
}

/// POSTs `hello` to `/upload` on a new stream of `tx`; the status of the answer, which must
/// come within [`WITHIN`].
async fn post_hello(tx: h2::client::SendRequest<bytes::Bytes>, addr: SocketAddr) -> u16 {
    post_hello_to(tx, addr, "/upload").await
}

async fn post_hello_to(
    mut tx: h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    path: &str,
) -> u16 {
    tx = tx.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let (resp, mut body) = tx.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"hello"), true)
        .unwrap();
    let resp = tokio::time::timeout(WITHIN, resp)
        .await
        .expect("a request body that could not go upstream hung the stream")
        .unwrap();
    resp.status().as_u16()
}

/// An h2 upstream that takes one stream at a time (`SETTINGS_MAX_CONCURRENT_STREAMS` 1): a
/// GET to `/stream` is answered with a byte every 50 ms for as long as it is read; any other
/// stream is taken and never answered.
async fn h2_backend_one_stream_at_a_time() -> SocketAddr {
    let mut settings = h2::server::Builder::new();
    settings.max_concurrent_streams(1);
    h2_backend_with(settings, |(req, mut respond)| {
        if req.uri().path() != "/stream" {
            return Some((req, respond));
        }
        tokio::spawn(async move {
            let Ok(mut send) = respond.send_response(http::Response::new(()), false) else {
                return;
            };
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if send
                    .send_data(bytes::Bytes::from_static(b"."), false)
                    .is_err()
                {
                    return;
                }
            }
        });
        None
    })
    .await
}

/// A request body that cannot go upstream because the upstream takes no more streams now (its
/// one stream carries a long download) is bounded by the body idle timeout: the client gets an
/// answer, and the stream that moves is not cut.
#[tokio::test]
async fn an_h2_request_body_waiting_for_a_stream_the_upstream_does_not_open_is_bounded() {
    let (router, _routes) = bounded_router_to(h2_backend_one_stream_at_a_time().await).await;
    let addr = router.listen_addrs[0];
    let mut tx = raw_h2(addr).await;
    let req = http::Request::get(format!("http://{addr}/stream"))
        .body(())
        .unwrap();
    let (download, _) = tx.send_request(req, true).unwrap();
    let download = tokio::time::timeout(WITHIN, download)
        .await
        .expect("the download's head")
        .unwrap();
    let mut download = download.into_body();
    let reading = tokio::spawn(async move {
        let mut got = 0;
        while let Some(Ok(b)) = download.data().await {
            got += b.len();
            let _ = download.flow_control().release_capacity(b.len());
        }
        got
    });
    assert_eq!(post_hello(tx, addr).await, 504);
    assert!(!reading.is_finished(), "the moving download was cut");
    reading.abort();
}

/// The router's duration flags a test can set to a year and still run: all but the sniff,
/// drain and shutdown delays and the reload interval, which the tests need short.
const TIMEOUT_FLAGS: [&str; 14] = [
    "--connect-timeout",
    "--header-read-timeout",
    "--idle-park-after",
    "--client-idle-timeout",
    "--upstream-idle-timeout",
    "--response-header-timeout",
    "--body-idle-timeout",
    "--h2c-idle-timeout",
    "--splice-idle-timeout",
    "--silent-upstream-timeout",
    "--stream-slot-timeout",
    "--session-reuse-idle",
    "--session-reuse-age",
    "--admin-header-timeout",
];

/// Every timeout flag at the longest the flags take (`525600m`, a year): a long deadline,
/// never one past the clock's end.
fn longest_timeouts(c: &mut ktx_router::Config) {
    use clap::Parser;
    let mut args = vec!["ktx-router"];
    for flag in TIMEOUT_FLAGS {
        args.extend([flag, "525600m"]);
    }
    c.try_update_from(args).unwrap();
    assert_eq!(c.body_idle_timeout, ktx_telemetry::LONGEST_DURATION);
}

/// A duration past what the clock can add (`18446744073709551615s`) was taken, and the router
/// then panicked at start (or on the first request that armed it); now every duration flag
/// refuses it with the longest it takes.
#[test]
fn a_timeout_flag_past_the_longest_is_refused_with_what_to_give() {
    use clap::Parser;
    for flag in TIMEOUT_FLAGS {
        let args = [
            "ktx-router",
            "--listen",
            "127.0.0.1:0",
            "--routes-file",
            "r.yaml",
            flag,
        ];
        let e =
            ktx_router::Config::try_parse_from(args.into_iter().chain(["18446744073709551615s"]))
                .expect_err(flag)
                .to_string();
        assert!(
            e.contains(flag) && e.contains("longer than 365 days (525600m)"),
            "{e}"
        );
    }
}

/// Requests with a body (each arms the body idle and response header bounds, the first in a
/// pause of the client's) are answered over HTTP/1.1 and h2c.
#[tokio::test]
async fn timeouts_as_long_as_the_flags_allow_still_answer_requests_with_a_body() {
    let mesh = Mesh::start_with(longest_timeouts).await;
    let mut s = TcpStream::connect(mesh.addr()).await.unwrap();
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: orders\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"56789").await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(WITHIN, s.read(&mut got))
        .await
        .expect("no answer over HTTP/1.1")
        .unwrap();
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n10\n"),
        "{text}"
    );
    let addr = mesh.addr();
    assert_eq!(post_hello_to(raw_h2(addr).await, addr, "/sink").await, 200);
}

/// The same for a silent client passed through as plain TCP, and the admin port.
#[tokio::test]
async fn timeouts_as_long_as_the_flags_allow_still_pass_a_silent_client_through() {
    let (router, _routes) = router_to(echo_server().await, |c| {
        longest_timeouts(c);
        c.sniff_timeout = Duration::from_millis(100);
    })
    .await;
    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(WITHIN, s.read_exact(&mut got))
        .await
        .expect("no echo through the passthrough")
        .unwrap();
    assert_eq!(&got, b"ping");
    let (status, _) = admin_get(router.admin_addr, "/readyz").await;
    assert_eq!(status, 200);
}
