//! The classic request-smuggling shapes, sent raw to the router, with a strict recording
//! upstream behind it. For each shape the router either refuses (400, then closes) or
//! normalizes the request so that the upstream parses exactly one unambiguous request; a
//! request hidden in the first one's framing never reaches the upstream as its own.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::*;

/// What one raw exchange produced on both sides.
struct Outcome {
    replies: Vec<Reply>,
    closed: bool,
    seen: Vec<Seen>,
    garbage: Vec<String>,
}

async fn exchange(bytes: &[u8]) -> Outcome {
    let up = Recorder::spawn(Answer::AfterBody).await;
    let front = Front::start(up.addr, |_| {}).await;
    let mut s = TcpStream::connect(front.addr()).await.unwrap();
    // The router may close before reading everything; that is one of the allowed outcomes.
    let _ = s.write_all(bytes).await;
    let (replies, closed) = read_replies(&mut s, Duration::from_secs(1)).await;
    let seen = up.seen();
    let garbage = up.garbage();
    Outcome {
        replies,
        closed,
        seen,
        garbage,
    }
}

impl Outcome {
    /// Refused: one 400, the connection closed, nothing reached the upstream.
    fn assert_refused(&self) {
        assert_eq!(
            self.replies.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![400],
            "expected exactly one 400"
        );
        assert!(self.closed, "the connection stays open after a 400");
        assert!(
            self.seen.is_empty(),
            "reached the upstream: {:?}",
            self.seen
        );
        assert!(self.garbage.is_empty(), "{:?}", self.garbage);
    }

    /// Normalized: the upstream parsed exactly these request lines, nothing it could not parse.
    fn assert_upstream_saw(&self, lines: &[&str]) {
        assert!(
            self.garbage.is_empty(),
            "unparsable at the upstream: {:?}",
            self.garbage
        );
        let got: Vec<&str> = self.seen.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(got, lines);
    }
}

/// A request hidden after the first one's body, if its framing were misread.
const HIDDEN: &str = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";

/// CL+TE: normalized. hyper frames by `Transfer-Encoding` (RFC 9112 §6.3), drops the
/// `Content-Length`, and closes the connection after answering (§6.1), so the bytes after the
/// chunked body are never read as a request; the upstream gets one chunked POST.
#[tokio::test]
async fn content_length_beside_transfer_encoding_is_framed_by_chunked_then_closed() {
    let o = exchange(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
        )
        .as_bytes(),
    )
    .await;
    o.assert_upstream_saw(&["POST / HTTP/1.1"]);
    assert!(
        o.seen[0].header("content-length").is_empty(),
        "{:?}",
        o.seen
    );
    assert_eq!(o.replies.len(), 1, "{:?}", o.replies);
    assert!(o.closed, "the connection stays open after CL+TE");
}

/// Two different `Content-Length`s: refused.
#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let o = exchange(
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 33\r\n\r\nabcd{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_refused();
}

/// The same `Content-Length` twice (RFC 9110 §8.6 allows folding them): normalized to one.
#[tokio::test]
async fn equal_duplicate_content_lengths_become_one() {
    let o = exchange(
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_upstream_saw(&["POST / HTTP/1.1", "GET /x HTTP/1.1"]);
    assert_eq!(o.seen[0].header("content-length"), ["4"]);
    assert_eq!(o.seen[0].body, b"abcd");
    assert_eq!(o.replies.len(), 2, "{:?}", o.replies);
}

/// `Transfer-Encoding` whose last coding is not `chunked`: the length is unknowable, refused.
#[tokio::test]
async fn transfer_encoding_without_final_chunked_is_refused() {
    let o = exchange(
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_refused();
}

/// obs-fold (a header line continued on the next) that would hide a `Transfer-Encoding`:
/// refused (RFC 9112 §5.2 allows rejecting it).
#[tokio::test]
async fn obs_fold_is_refused() {
    let o = exchange(
        format!("POST / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_refused();
}

/// Bare LF as the line end of a head: normalized; the upstream gets one CRLF request with the
/// same fields (its strict parser would reject a bare LF).
#[tokio::test]
async fn bare_lf_heads_are_forwarded_as_crlf() {
    let o = exchange(b"GET /a HTTP/1.1\nHost: x\nX-A: 1\n\n").await;
    o.assert_upstream_saw(&["GET /a HTTP/1.1"]);
    assert_eq!(o.seen[0].header("x-a"), ["1"]);
    assert_eq!(o.replies.len(), 1, "{:?}", o.replies);
    assert_eq!(o.replies[0].body, b"ok");
}

/// Bare LF inside chunked framing: refused with 400, the client's fault, not the upstream's.
/// hyper's chunk decoder rejects it mid-body, the upstream never gets a complete request, and
/// the client connection is closed.
#[tokio::test]
async fn bare_lf_in_chunked_framing_is_refused() {
    let o = exchange(
        format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_refused();
}

/// Absolute-form target whose host differs from `Host`: normalized to origin-form with the
/// target's host (RFC 9112 §3.2.2), so the upstream sees exactly one host.
#[tokio::test]
async fn absolute_form_is_forwarded_in_origin_form_with_its_host() {
    let o = exchange(b"GET http://evil/x?q=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    o.assert_upstream_saw(&["GET /x?q=1 HTTP/1.1"]);
    assert_eq!(o.seen[0].header("host"), ["evil"]);
    assert_eq!(o.replies.len(), 1, "{:?}", o.replies);
}

/// An absolute-form target with a query and no path (`http://evil?q=1`): its path is `/`, and
/// it goes upstream in origin-form with one host, like any other.
#[tokio::test]
async fn absolute_form_without_a_path_is_forwarded_in_origin_form_with_its_host() {
    let o = exchange(b"GET http://evil?q=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    o.assert_upstream_saw(&["GET /?q=1 HTTP/1.1"]);
    assert_eq!(o.seen[0].header("host"), ["evil"]);
    assert_eq!(o.replies.len(), 1, "{:?}", o.replies);
}

/// `Connection: content-length` must not strip the framing of a body: normalized, the
/// upstream gets the 4 bytes with their length and then the next request on its own.
#[tokio::test]
async fn connection_cannot_remove_content_length() {
    let o = exchange(
        format!("POST /a HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 4\r\n\r\nabcd{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_upstream_saw(&["POST /a HTTP/1.1", "GET /x HTTP/1.1"]);
    assert_eq!(o.seen[0].header("content-length"), ["4"]);
    assert_eq!(o.seen[0].body, b"abcd");
}

/// `Connection: transfer-encoding` on a chunked body: the body keeps its framing.
#[tokio::test]
async fn connection_cannot_remove_transfer_encoding() {
    let o = exchange(
        format!("POST /a HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_upstream_saw(&["POST /a HTTP/1.1", "GET /x HTTP/1.1"]);
    assert_eq!(o.seen[0].body, b"abcd");
}

/// Issue 11 §5d: `Connection: host` sent a Host-less request upstream. Host is kept.
#[tokio::test]
async fn connection_cannot_remove_host() {
    let o = exchange(b"GET /a HTTP/1.1\r\nHost: orders\r\nConnection: host, x-a\r\nX-A: 1\r\n\r\n")
        .await;
    o.assert_upstream_saw(&["GET /a HTTP/1.1"]);
    assert_eq!(o.seen[0].header("host"), ["orders"]);
    assert!(
        o.seen[0].header("x-a").is_empty(),
        "nominated headers are still removed"
    );
}

/// Issue 11 §5c: a chunked `GET` body was silently dropped. It is forwarded, chunked.
#[tokio::test]
async fn chunked_get_body_is_forwarded() {
    let o = exchange(
        format!("GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n{HIDDEN}")
            .as_bytes(),
    )
    .await;
    o.assert_upstream_saw(&["GET /a HTTP/1.1", "GET /x HTTP/1.1"]);
    assert_eq!(o.seen[0].header("transfer-encoding"), ["chunked"]);
    assert_eq!(o.seen[0].body, b"abcd");
    assert_eq!(o.replies.len(), 2, "{:?}", o.replies);
}

/// A transfer coding other than `chunked` (here `gzip, chunked`, or the same split over two
/// field lines): refused with 501, as nginx does. Forwarded, an upstream that reads only the
/// first `Transfer-Encoding` line would see a body that is not chunked. Found by the fuzzer.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    for te in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let o = exchange(
            format!("POST / HTTP/1.1\r\nHost: x\r\n{te}\r\n4\r\nabcd\r\n0\r\n\r\n{HIDDEN}")
                .as_bytes(),
        )
        .await;
        assert_eq!(
            o.replies.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![501],
            "{te:?}"
        );
        assert!(o.closed, "{te:?}");
        assert!(
            o.seen.is_empty() && o.garbage.is_empty(),
            "{te:?}: {:?} {:?}",
            o.seen,
            o.garbage
        );
    }
}
