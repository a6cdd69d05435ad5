//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so they are not
//! forwarded. Removing the client's `Connection: close` is what keeps a pooled upstream
//! connection open when one client hangs up.

use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True for an HTTP/1.1 Upgrade request (`Connection: upgrade` plus an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those named by `Connection`. When `upgrade` is true
/// the `Upgrade` header and `Connection: upgrade` are kept, since the upgrade is forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
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
                if !(upgrade && n == UPGRADE) {
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
