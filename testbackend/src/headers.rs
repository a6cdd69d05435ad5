//! What `GET /headers` answers: the request as the backend received it.
//!
//! Tests through the router parse it back to check that `Host` was preserved and hop-by-hop
//! headers were dropped. Header values that are not UTF-8 are shown lossily.

use serde::{Deserialize, Serialize};

/// The request line and headers one request arrived with, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadersEcho {
    /// Name of the backend that answered.
    pub backend: String,
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target as received (origin form for HTTP/1.1, absolute for HTTP/2).
    pub uri: String,
    /// `:authority` for HTTP/2 requests, `None` for HTTP/1.1 (where it is the `host` header).
    pub authority: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header as `(lowercase name, value)`, repeated headers kept in order.
    pub headers: Vec<(String, String)>,
}

impl HeadersEcho {
    pub(crate) fn from_request<B>(backend: &str, req: &http::Request<B>) -> Self {
        HeadersEcho {
            backend: backend.to_owned(),
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            authority: req.uri().authority().map(ToString::to_string),
            version: format!("{:?}", req.version()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` (case-insensitive) arrived at all.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}
