use bytes::BytesMut;
use http::{Request, StatusCode, Version};

use super::head::{parse, Framing};
use super::*;

#[test]
fn the_request_head_is_written_as_hypers_client_writes_it() {
    let req = Request::get("/orders?id=7&x=%20")
        .header("Host", "orders")
        .header("x-Trace", "a")
        .header("x-trace", "b")
        .body(())
        .unwrap();
    let mut out = Vec::new();
    encode_head(&req, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /orders?id=7&x=%20 HTTP/1.1\r\nhost: orders\r\nx-trace: a\r\nx-trace: b\r\n\r\n"
    );
}

#[test]
fn a_head_in_pieces_is_parsed_once_complete_and_leaves_the_body() {
    let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";
    for cut in 1..whole.len() - 5 {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert!(
            parse(&mut buf, &mut Vec::new(), &mut 0, false)
                .unwrap()
                .is_none(),
            "cut at {cut}"
        );
    }
    let mut buf = BytesMut::from(&whole[..]);
    let head = parse(&mut buf, &mut Vec::new(), &mut 0, false)
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.status, StatusCode::OK);
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["x-a"], "1");
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.reusable);
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn a_reason_phrase_of_its_own_is_kept() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n"[..]);
    let head = parse(&mut buf, &mut Vec::new(), &mut 0, false)
        .unwrap()
        .unwrap();
    let reason = head.parts.extensions.get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Fine"[..]));
    assert_eq!(head.framing, Framing::Empty);
}

#[test]
fn an_empty_reason_phrase_is_kept_as_hypers_client_keeps_it() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n"[..]);
    let head = parse(&mut buf, &mut Vec::new(), &mut 0, false)
        .unwrap()
        .unwrap();
    let reason = head.parts.extensions.get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b""[..]));
}

#[test]
fn the_end_of_a_head_is_found_with_or_without_cr() {
    use super::head::has_end;
    assert!(has_end(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(has_end(b"HTTP/1.1 200 OK\n\n"));
    assert!(has_end(b"HTTP/1.1 200 OK\r\n\n"));
    assert!(has_end(b"\n\r\n"));
    assert!(!has_end(b"HTTP/1.1 200 OK\r\nx: y\r\n"));
    assert!(!has_end(b"\r\n"));
}

#[test]
fn eligibility_leaves_bodies_and_odd_targets_to_hyper() {
    let ok = |r: Request<()>| eligible(&r, true);
    assert!(ok(Request::get("/a").body(()).unwrap()));
    assert!(ok(Request::delete("/a").body(()).unwrap()));
    assert!(!ok(Request::get("http://x/a").body(()).unwrap()));
    assert!(!ok(Request::options("*").body(()).unwrap()));
    assert!(!ok(Request::connect("x:443").body(()).unwrap()));
    assert!(!ok(Request::get("/a")
        .version(Version::HTTP_10)
        .body(())
        .unwrap()));
    assert!(!eligible(&Request::post("/a").body(()).unwrap(), false));
    assert!(!ok(Request::get("/a")
        .header("transfer-encoding", "chunked")
        .body(())
        .unwrap()));
}
