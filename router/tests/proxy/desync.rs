//! Request desync: bytes a client sent as a request body must never be read as a request of
//! their own, however late they arrive and whatever the upstream did with the request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::*;

/// 28 bytes that read as a request of their own.
const SMUGGLED: &[u8] = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n";

/// How long the slow client waits before sending its body: many times the park delay, so a
/// router that parks quiet connections has done so (the client waited 5 s).
const CLIENT_DELAY: Duration = Duration::from_millis(400);

/// The reproduction: a POST with `Content-Length: 28` answered early by the upstream,
/// then, after a pause, 28 body bytes that read as `GET /x`. The client gets exactly the one
/// response; the upstream never parses `GET /x` as a request.
async fn late_body_is_never_a_request(answer: Answer) {
    late_body_with_head_is_never_a_request(
        answer,
        "POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n",
    )
    .await;
}

async fn late_body_with_head_is_never_a_request(answer: Answer, head: &str) {
    let up = Recorder::spawn(answer).await;
    let front = Front::start(up.addr, |c| c.idle_park_after = Duration::from_millis(30)).await;
    let mut s = TcpStream::connect(front.addr()).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The upstream's early 404 comes back before any body byte was sent.
    let mut head = Vec::new();
    // Until the 404's head is in (a 100 Continue may come first).
    let answered = |h: &[u8]| find(h, b"404").is_some_and(|i| find(&h[i..], b"\r\n\r\n").is_some());
    while !answered(&head) {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("early answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.contains("HTTP/1.1 404") || head.starts_with("HTTP/1.0 404"),
        "{head:?}"
    );
    tokio::time::sleep(CLIENT_DELAY).await;
    let _ = s.write_all(SMUGGLED).await;
    // A router that closes does so at once; one that keeps the connection gets 1 s to answer.
    let (more, closed) = read_replies(&mut s, Duration::from_secs(1)).await;
    assert!(
        more.is_empty(),
        "a second response for body bytes: {more:?}"
    );
    // Whatever the router forwarded for the client's bytes has reached the upstream by now:
    // it answered before the client saw EOF or the 1 s passed.
    let seen = up.wait_for(1).await;
    assert!(
        seen.iter().all(|r| !r.line.starts_with("GET /x")),
        "GET /x reached the upstream as a request: {seen:?}"
    );
    assert!(
        !seen.is_empty() && seen[0].line.starts_with("POST /early"),
        "{seen:?}"
    );
    if answer != Answer::Early {
        // The body was abandoned mid-way: the connection cannot be reused.
        assert!(closed, "the connection stays open after an abandoned body");
    }
}

#[tokio::test]
async fn late_body_after_early_answer_and_upstream_close_is_not_a_request() {
    late_body_is_never_a_request(Answer::EarlyThenClose).await;
}

#[tokio::test]
async fn late_body_after_early_answer_and_a_later_upstream_close_is_not_a_request() {
    // The upstream hangs up after the router has parked the quiet client connection (30 ms)
    // and before the client's body arrives (400 ms): the request body is abandoned mid-way.
    late_body_is_never_a_request(Answer::EarlyThenCloseAfter(Duration::from_millis(150))).await;
}

#[tokio::test]
async fn late_body_after_early_answer_from_a_draining_upstream_is_not_a_request() {
    late_body_is_never_a_request(Answer::Early).await;
}

/// The same with `Expect: 100-continue`: the early answer comes instead of the 100.
#[tokio::test]
async fn late_body_after_expect_continue_and_an_early_answer_is_not_a_request() {
    late_body_with_head_is_never_a_request(
        Answer::EarlyThenCloseAfter(Duration::from_millis(150)),
        "POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 28\r\n\r\n",
    )
    .await;
}

/// The same when the client asked to close (`Connection: close`, and HTTP/1.0 without
/// keep-alive): hyper has then finished its side of the exchange with the early answer while
/// the body is still owed, which must not pass for a connection between two exchanges.
#[tokio::test]
async fn late_body_after_an_early_answer_to_a_closing_client_is_not_a_request() {
    late_body_with_head_is_never_a_request(
        Answer::Early,
        "POST /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 28\r\n\r\n",
    )
    .await;
    late_body_with_head_is_never_a_request(
        Answer::Early,
        "POST /early HTTP/1.0\r\nHost: x\r\nContent-Length: 28\r\n\r\n",
    )
    .await;
}

/// The other side of the fix: a connection whose POST body was read to its end is still parked
/// between exchanges and serves the next request.
#[tokio::test]
async fn a_complete_post_is_still_parked_and_reused() {
    use super::support::*;
    let mesh = Mesh::start_with(|c| c.idle_park_after = Duration::from_millis(30)).await;
    let mut c = H1::connect(mesh.addr()).await;
    let post = http::Request::post("/echo")
        .header("host", "orders")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    assert_eq!(body_string(c.send(post).await).await, "hello");
    let mut parked = 0.0;
    for _ in 0..200 {
        parked = counter(&mesh.metrics().await, "ktx_router_parked_connections");
        if parked >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        parked, 1.0,
        "the connection was not parked after a complete POST"
    );
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
}
