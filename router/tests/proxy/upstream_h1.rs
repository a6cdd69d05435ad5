//! The router's own HTTP/1.1 client (`upstream/raw_h1.rs`), against an upstream that answers
//! with scripted bytes: what a client gets back, and whether the upstream connection is used
//! again. A response the router cannot frame with certainty is a 502, and its connection is
//! never reused, so no client ever gets bytes meant for another exchange.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::wire::{find, Front};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
/// A response of its own, sent where only the end of another one was due.
const EVIL: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil";

/// What the upstream does for one request.
#[derive(Debug, Clone)]
enum Step {
    Reply(Vec<u8>),
    ReplyThenClose(Vec<u8>),
    /// Replies, then sends more bytes a moment later, unasked.
    ReplyThenLater(Vec<u8>, Vec<u8>),
    /// Replies in pieces, a few milliseconds apart.
    Pieces(Vec<Vec<u8>>),
}

/// An upstream that answers each request (on whatever connection) with the next step, and
/// with [`OK`] once the steps are used up.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Scripted {
    async fn spawn(steps: Vec<Step>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let steps = Arc::new(Mutex::new(VecDeque::from(steps)));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, Arc::clone(&steps)));
            }
        });
        Scripted { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut s: TcpStream, steps: Arc<Mutex<VecDeque<Step>>>) {
    let mut buf = Vec::new();
    loop {
        // The router sends body-less requests here: a head is a whole request.
        while find(&buf, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        let step = steps.lock().unwrap().pop_front();
        match step.unwrap_or_else(|| Step::Reply(OK.to_vec())) {
            Step::Reply(b) => {
                let _ = s.write_all(&b).await;
            }
            Step::ReplyThenClose(b) => {
                let _ = s.write_all(&b).await;
                return;
            }
            Step::Pieces(pieces) => {
                for p in pieces {
                    let _ = s.write_all(&p).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Step::ReplyThenLater(b, later) => {
                let _ = s.write_all(&b).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = s.write_all(&later).await;
            }
        }
    }
}

/// What a client got: status (0: the router closed the connection without one), body (or
/// why it broke off), headers.
struct Got {
    status: u16,
    body: Result<Bytes, String>,
    headers: HeaderMap,
}

async fn fetch(front: &Front, method: Method, path: &str) -> Got {
    let s = TcpStream::connect(front.addr()).await.unwrap();
    let (mut tx, conn) = http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("an answer within 5 s");
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            return Got {
                status: 0,
                body: Err(e.to_string()),
                headers: HeaderMap::new(),
            }
        }
    };
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect())
        .await
        .expect("the body within 5 s")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Got {
        status,
        body,
        headers,
    }
}

async fn get(front: &Front, path: &str) -> Got {
    fetch(front, Method::GET, path).await
}

async fn scripted(steps: Vec<Step>) -> (Scripted, Front) {
    let up = Scripted::spawn(steps).await;
    let front = Front::start(up.addr, |_| {}).await;
    (up, front)
}

/// The first answer is refused with a 502 the router wrote, and the connection it came on is
/// not used again: the next request gets a clean answer on a new connection.
async fn refused(reply: &[u8]) {
    let (up, front) = scripted(vec![Step::Reply(reply.to_vec())]).await;
    let got = get(&front, "/a").await;
    let shown = String::from_utf8_lossy(reply);
    assert_eq!(got.status, 502, "for {shown:?}");
    assert_eq!(got.headers["x-ktx-error"], "upstream", "for {shown:?}");
    let next = get(&front, "/b").await;
    assert_eq!((next.status, next.body.unwrap()), (200, Bytes::from("ok")));
    assert_eq!(
        up.accepted(),
        2,
        "the refused connection was reused, for {shown:?}"
    );
}

/// The answer reaches the client whole, and the connection is reused (`true`) or not.
async fn answered(reply: &[u8], body: &str, reused: bool) {
    let (up, front) = scripted(vec![Step::Reply(reply.to_vec())]).await;
    let got = get(&front, "/a").await;
    let shown = String::from_utf8_lossy(reply);
    assert_eq!(got.status, 200, "for {shown:?}");
    assert_eq!(
        got.body.unwrap(),
        Bytes::from(body.to_string()),
        "for {shown:?}"
    );
    let next = get(&front, "/b").await;
    assert_eq!((next.status, next.body.unwrap()), (200, Bytes::from("ok")));
    let want = if reused { 1 } else { 2 };
    assert_eq!(up.accepted(), want, "for {shown:?}");
}

#[tokio::test]
async fn body_less_requests_share_one_upstream_connection() {
    let (up, front) = scripted(vec![]).await;
    for path in ["/a", "/b", "/c"] {
        let got = get(&front, path).await;
        assert_eq!((got.status, got.body.unwrap()), (200, Bytes::from("ok")));
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn content_length_beside_transfer_encoding_is_refused() {
    refused(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
}

#[tokio::test]
async fn content_lengths_that_disagree_or_are_not_numbers_are_refused() {
    for cl in [
        "content-length: 2\r\ncontent-length: 3",
        "content-length: 2, 3",
        "content-length: +2",
        "content-length: -1",
        "content-length: 2 2",
        "content-length: 0x2",
        "content-length: 18446744073709551616",
    ] {
        refused(format!("HTTP/1.1 200 OK\r\n{cl}\r\n\r\nok").as_bytes()).await;
    }
}

#[tokio::test]
async fn equal_duplicate_content_lengths_become_one() {
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2, 2\r\n\r\nok";
    let (_up, front) = scripted(vec![Step::Reply(reply.to_vec())]).await;
    let got = get(&front, "/a").await;
    assert_eq!(got.status, 200);
    let lengths: Vec<_> = got.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["2"]);
    assert_eq!(got.body.unwrap(), Bytes::from("ok"));
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    for te in [
        "transfer-encoding: gzip",
        "transfer-encoding: chunked, gzip",
        "transfer-encoding: gzip, chunked",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked",
    ] {
        refused(format!("HTTP/1.1 200 OK\r\n{te}\r\n\r\n2\r\nok\r\n0\r\n\r\n").as_bytes()).await;
    }
    refused(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    for reply in [
        &b"HTTP/1.1 20 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"ICY 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    ] {
        refused(reply).await;
    }
}

/// hyper's limit on a response head, which the router's own client keeps too.
const MAX_HEAD: usize = 408 * 1024;

#[tokio::test]
async fn a_response_head_over_the_limit_is_refused() {
    let mut reply = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    reply.resize(reply.len() + MAX_HEAD + 1024, b'a');
    reply.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    refused(&reply).await;
}

/// An upstream (a developer's shadow, say) that sends header bytes and never ends the head:
/// the router stops reading at the limit and answers 502 at once, rather than buffering all
/// of it until the response header timeout.
#[tokio::test]
async fn a_response_head_that_never_ends_is_refused_at_the_limit() {
    let mut reply = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    reply.resize(4 * MAX_HEAD, b'a');
    refused(&reply).await;
}

#[tokio::test]
async fn interim_answers_are_skipped_but_not_endlessly() {
    let mut reply =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".to_vec();
    reply.extend_from_slice(OK);
    answered(&reply, "ok", true).await;
    let mut endless = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9);
    endless.extend_from_slice(OK);
    refused(&endless).await;
}

#[tokio::test]
async fn a_head_that_comes_a_byte_at_a_time_is_read() {
    let bytes = OK.iter().map(|&b| vec![b]).collect();
    let (up, front) = scripted(vec![Step::Pieces(bytes)]).await;
    let got = get(&front, "/a").await;
    assert_eq!((got.status, got.body.unwrap()), (200, Bytes::from("ok")));
    assert_eq!(get(&front, "/b").await.status, 200);
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn interim_answers_are_bounded_however_slowly_they_come() {
    let mut pieces = vec![b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(); 9];
    pieces.push(OK.to_vec());
    let (up, front) = scripted(vec![Step::Pieces(pieces)]).await;
    let got = get(&front, "/a").await;
    assert_eq!(got.status, 502);
    assert_eq!(get(&front, "/b").await.status, 200);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn bytes_after_a_complete_body_never_reach_a_client() {
    let together = [OK, EVIL].concat();
    for step in [
        Step::Reply(together),
        Step::ReplyThenLater(OK.to_vec(), EVIL.to_vec()),
    ] {
        let (up, front) = scripted(vec![step.clone()]).await;
        let got = get(&front, "/a").await;
        assert_eq!(got.body.unwrap(), Bytes::from("ok"), "{step:?}");
        // The late bytes have arrived by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = get(&front, "/b").await;
        assert_eq!(
            (next.status, next.body.unwrap()),
            (200, Bytes::from("ok")),
            "{step:?}"
        );
        assert_eq!(up.accepted(), 2, "{step:?}");
    }
}

#[tokio::test]
async fn a_204_that_announces_a_body_is_not_reused() {
    let reply = [
        &b"HTTP/1.1 204 No Content\r\ncontent-length: 4\r\n\r\n"[..],
        b"evil",
    ]
    .concat();
    let (up, front) = scripted(vec![Step::Reply(reply)]).await;
    let got = get(&front, "/a").await;
    assert_eq!((got.status, got.body.unwrap()), (204, Bytes::new()));
    let next = get(&front, "/b").await;
    assert_eq!((next.status, next.body.unwrap()), (200, Bytes::from("ok")));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn head_and_304_answers_have_no_body_and_keep_the_connection() {
    let (up, front) = scripted(vec![
        Step::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec()),
        Step::Reply(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n".to_vec()),
    ])
    .await;
    let head = fetch(&front, Method::HEAD, "/a").await;
    assert_eq!((head.status, head.body.unwrap()), (200, Bytes::new()));
    assert_eq!(head.headers["content-length"], "10");
    let not_modified = get(&front, "/b").await;
    assert_eq!(
        (not_modified.status, not_modified.body.unwrap()),
        (304, Bytes::new())
    );
    let next = get(&front, "/c").await;
    assert_eq!((next.status, next.body.unwrap()), (200, Bytes::from("ok")));
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn answers_that_end_the_connection_are_read_whole_and_not_reused() {
    // Close-delimited.
    let (up, front) = scripted(vec![Step::ReplyThenClose(
        b"HTTP/1.1 200 OK\r\n\r\nabc".to_vec(),
    )])
    .await;
    let got = get(&front, "/a").await;
    assert_eq!((got.status, got.body.unwrap()), (200, Bytes::from("abc")));
    assert_eq!(get(&front, "/b").await.status, 200);
    assert_eq!(up.accepted(), 2);
    // HTTP/1.0, and `Connection: close`, even with a length.
    answered(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "ok",
        false,
    )
    .await;
    answered(
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nok",
        "ok",
        false,
    )
    .await;
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_for_the_client() {
    let (up, front) = scripted(vec![Step::ReplyThenClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(),
    )])
    .await;
    let got = get(&front, "/a").await;
    // The router may have sent the head before the body broke off, or not.
    assert!(matches!(got.status, 0 | 200), "{}", got.status);
    assert!(got.body.is_err(), "a cut body looked whole: {:?}", got.body);
    assert_eq!(get(&front, "/b").await.status, 200);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_keep_the_connection() {
    answered(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        "abcde",
        true,
    )
    .await;
    answered(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-checksum: 1\r\n\r\n",
        "abc",
        true,
    )
    .await;
}

#[tokio::test]
async fn malformed_chunked_framing_aborts_the_body_and_the_connection() {
    for chunks in [
        &b"3\nabc\r\n0\r\n\r\n"[..],
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"3 x\r\nabc\r\n0\r\n\r\n",
    ] {
        let reply = [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            chunks,
        ]
        .concat();
        let (up, front) = scripted(vec![Step::Reply(reply)]).await;
        let got = get(&front, "/a").await;
        let shown = String::from_utf8_lossy(chunks);
        assert!(got.body.is_err(), "{shown:?} read as {:?}", got.body);
        assert_eq!(get(&front, "/b").await.status, 200, "{shown:?}");
        assert_eq!(up.accepted(), 2, "{shown:?}");
    }
}
