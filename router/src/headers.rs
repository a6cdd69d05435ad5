//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so they are not
//! forwarded. Removing the client's `Connection: close` is what keeps a pooled upstream
//! connection open when one client hangs up. A `Connection` header cannot remove what every
//! hop needs (`Host`, the message framing): that would turn one request into another.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers a `Connection` option never removes: the request's target host and its framing.
const NEVER_NOMINATED: [HeaderName; 3] = [HOST, CONTENT_LENGTH, TRANSFER_ENCODING];

/// True for an HTTP/1.1 Upgrade request (`Connection: upgrade` plus an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

/// True when the client wants the connection closed after this exchange, as hyper reads it:
/// HTTP/1.0 without `Connection: keep-alive`, or `Connection: close`.
pub fn client_closes<B>(req: &http::Request<B>) -> bool {
    match req.version() {
        http::Version::HTTP_10 => !connection_has(req.headers(), "keep-alive"),
        _ => connection_has(req.headers(), "close"),
    }
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The headers that are hop-by-hop whatever `Connection` names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those named by `Connection`. When `upgrade` is true
/// the `Upgrade` header and `Connection: upgrade` are kept, since the upgrade is forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names (a few) says so, where a
    // lookup per hop-by-hop name hashes each of them.
    if !headers.keys().any(is_hop_by_hop) {
        if upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if let Some(first) = headers.get(CONNECTION) {
        // Fast path: a lone `keep-alive`/`close` names no other header.
        let simple = headers.get_all(CONNECTION).iter().count() == 1
            && (first.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                || first.as_bytes().eq_ignore_ascii_case(b"close"));
        if !simple {
            let named: Vec<HeaderName> = headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .collect();
            for n in named {
                let kept = NEVER_NOMINATED.contains(&n) || (upgrade && n == UPGRADE);
                if !kept {
                    headers.remove(n);
                }
            }
        }
        headers.remove(CONNECTION);
    }
    if headers.contains_key(KEEP_ALIVE) {
        headers.remove(KEEP_ALIVE);
    }
    if headers.contains_key(PROXY_CONNECTION) {
        headers.remove(PROXY_CONNECTION);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(TRANSFER_ENCODING);
    }
    if headers.contains_key(TE) {
        headers.remove(TE);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if headers.contains_key(UPGRADE) {
        headers.remove(UPGRADE);
    }
}

/// RFC 9112 §3.2.2: a request in absolute-form (`GET http://a/x`) names its host in the target
/// and its `Host` header is to be ignored. Upstreams disagree on which one they read, so the
/// request is forwarded in origin-form (`GET /x`) with `Host` set from the target: one host.
/// `CONNECT` (authority-form) and origin-form requests are left as they are.
pub fn to_origin_form<B>(req: &mut http::Request<B>) {
    if req.method() == http::Method::CONNECT || req.uri().scheme().is_none() {
        return;
    }
    let Some(authority) = req.uri().authority() else {
        return;
    };
    // Without any userinfo (`user@`), which is not part of a Host.
    let host = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_owned(),
    };
    let Ok(host) = HeaderValue::from_str(&host) else {
        return;
    };
    // The path is `/` when the target has none (`http://a?q=1`): a bare `?q=1` is no target.
    let path = match req.uri().path() {
        "" => "/",
        p => p,
    };
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}").parse::<http::Uri>(),
        None => path.parse::<http::Uri>(),
    };
    if let Ok(target) = target {
        *req.uri_mut() = target;
        req.headers_mut().insert(HOST, host);
    }
}

/// True when a request's `Transfer-Encoding` is anything but exactly one `chunked`: other
/// transfer codings (`gzip, chunked`, or codings split over several field lines) are refused
/// rather than forwarded, since upstreams disagree on how to read them.
pub fn has_unsupported_transfer_coding(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some(),
    }
}

/// [`strip_hop_by_hop`] for a request read by hyper's HTTP/1.1 server: a chunked request keeps
/// `Transfer-Encoding: chunked`, so the upstream gets the body whatever the method (hyper's
/// client sends a `GET` with no framing header as bodiless). hyper's server drops a
/// `Content-Length` beside it, and other codings are refused before
/// ([`has_unsupported_transfer_coding`]), so what is kept is one unambiguous framing.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    strip_hop_by_hop(headers, upgrade);
    if chunked {
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn removes_connection_and_named_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("host", "orders"),
            ("version", "foobar"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "version"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_keeps_every_header() {
        let pairs = [
            ("host", "orders"),
            ("content-length", "3"),
            ("x-a", "1"),
            ("x-a", "2"),
        ];
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&pairs));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.len(), pairs.len() + 1);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "upgrade",
        ] {
            let mut h = map(&[("host", "orders"), (name, "x")]);
            strip_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, vec!["host"], "{name}");
        }
    }

    #[test]
    fn connection_never_removes_host_or_framing() {
        let mut h = map(&[
            ("connection", "host, content-length, transfer-encoding, x-a"),
            ("host", "orders"),
            ("content-length", "4"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-length", "host"]);
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let mut r = http::Request::get("http://user@evil:81/x?q=1")
            .header("host", "orders")
            .body(())
            .unwrap();
        to_origin_form(&mut r);
        assert_eq!(r.uri(), "/x?q=1");
        assert_eq!(
            r.headers().get_all("host").iter().collect::<Vec<_>>(),
            ["evil:81"]
        );
        let mut r = http::Request::get("/y")
            .header("host", "a")
            .body(())
            .unwrap();
        to_origin_form(&mut r);
        assert_eq!(r.uri(), "/y");
        assert_eq!(r.headers()["host"], "a");
    }

    #[test]
    fn only_a_lone_chunked_coding_is_supported() {
        for (te, refused) in [
            (&["chunked"][..], false),
            (&[" Chunked "], false),
            (&["gzip, chunked"], true),
            (&["gzip", "chunked"], true),
            (&["chunked", "chunked"], true),
            (&["chunked,"], true),
            (&["identity"], true),
        ] {
            let mut h = HeaderMap::new();
            for v in te {
                h.append(TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(has_unsupported_transfer_coding(&h), refused, "{te:?}");
        }
        assert!(!has_unsupported_transfer_coding(&HeaderMap::new()));
    }

    #[test]
    fn requests_keep_chunked_framing() {
        let mut h = map(&[
            ("transfer-encoding", "chunked"),
            ("connection", "transfer-encoding"),
        ]);
        strip_request_hop_by_hop(&mut h, false);
        let te: Vec<_> = h.get_all("transfer-encoding").iter().collect();
        assert_eq!(te, vec!["chunked"]);
        let mut h = map(&[("transfer-encoding", "chunked")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "responses are re-framed by hyper");
    }

    #[test]
    fn keeps_upgrade_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "k");
        let mut plain = map(&[("upgrade", "h2c")]);
        assert!(!is_upgrade(&plain));
        strip_hop_by_hop(&mut plain, false);
        assert!(plain.is_empty());
    }
}
