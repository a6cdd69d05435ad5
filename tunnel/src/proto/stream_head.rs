//! Protocol version 1, per stream: the shadow's request names the target port, ktx's response
//! says whether the local connection was made.
//!
//! Request: `CONNECT` with `:authority` `shadow:PORT` (PORT = the shadow port the connection
//! arrived on) and optionally `ktx-peer: IP:PORT` (the in-cluster client, for logs). The
//! request body is the client's bytes; END_STREAM is the client's half-close.
//! Response: `200` once ktx is connected to the local port, then the local bytes; `404` if no
//! local port is mapped; `502` if connecting failed; `400` for a request ktx cannot read. Error
//! responses carry `ktx-error` with the reason and end the stream.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};

/// Header carrying the in-cluster client's address.
pub const PEER_HEADER: &str = "ktx-peer";
/// Header carrying the reason of an error response.
pub const ERROR_HEADER: &str = "ktx-error";

/// The checked head of one tunnel stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    /// The shadow port the connection arrived on; ktx maps it to a local address.
    pub port: u16,
    /// The in-cluster client, when the shadow said.
    pub peer: Option<SocketAddr>,
}

/// A request head ktx cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("stream request uses method {0}, expected CONNECT")]
    Method(String),
    #[error("stream request has no target port in :authority ({0:?})")]
    NoPort(String),
}

impl StreamHead {
    /// The request the shadow sends to open this stream.
    pub fn to_request(&self) -> Request<()> {
        let uri = Uri::try_from(format!("shadow:{}", self.port))
            .expect("`shadow:PORT` is a valid authority-form URI");
        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.uri_mut() = uri;
        if let Some(peer) = self.peer {
            let v = HeaderValue::try_from(peer.to_string())
                .expect("a socket address is a valid header value");
            req.headers_mut().insert(PEER_HEADER, v);
        }
        req
    }

    /// Reads a stream request. A `ktx-peer` that does not parse is dropped: it is only for
    /// logs, and a stream must not fail over it.
    pub fn from_request<B>(req: &Request<B>) -> Result<Self, HeadError> {
        if req.method() != Method::CONNECT {
            return Err(HeadError::Method(req.method().to_string()));
        }
        let port = req
            .uri()
            .authority()
            .and_then(|a| a.port_u16())
            .filter(|p| *p != 0)
            .ok_or_else(|| HeadError::NoPort(req.uri().to_string()))?;
        let peer = req
            .headers()
            .get(PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        Ok(Self { port, peer })
    }
}

/// Why ktx did not connect a stream; becomes the error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefusal {
    #[error("no local port is mapped for shadow port {0}")]
    NoMapping(u16),
    #[error("connect to {addr}: {reason}")]
    ConnectFailed { addr: SocketAddr, reason: String },
    #[error(transparent)]
    BadHead(#[from] HeadError),
}

impl StreamRefusal {
    pub fn status(&self) -> StatusCode {
        match self {
            StreamRefusal::NoMapping(_) => StatusCode::NOT_FOUND,
            StreamRefusal::ConnectFailed { .. } => StatusCode::BAD_GATEWAY,
            StreamRefusal::BadHead(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The response ktx sends (with END_STREAM).
    pub fn to_response(&self) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = self.status();
        // Reasons come from io errors and our own text; anything unprintable is replaced
        // rather than failing the response.
        let text: String = self
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::try_from(text) {
            resp.headers_mut().insert(ERROR_HEADER, v);
        }
        resp
    }
}

/// The response ktx sends once the local connection is up.
pub fn connected_response() -> Response<()> {
    Response::new(())
}

/// ktx answered a stream with an error instead of connecting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ktx answered {status}: {reason}")]
pub struct StreamRejected {
    pub status: StatusCode,
    pub reason: String,
}

/// The shadow's reading of ktx's response.
pub fn check_response<B>(resp: &Response<B>) -> Result<(), StreamRejected> {
    if resp.status() == StatusCode::OK {
        return Ok(());
    }
    let reason = resp
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no reason given")
        .to_string();
    Err(StreamRejected {
        status: resp.status(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips() {
        let head = StreamHead {
            port: 8080,
            peer: Some("10.1.2.3:41000".parse().unwrap()),
        };
        let req = head.to_request();
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(req.uri().to_string(), "shadow:8080");
        assert_eq!(StreamHead::from_request(&req), Ok(head));
    }

    #[test]
    fn bad_heads_are_refused_and_bad_peers_dropped() {
        let mut req = StreamHead {
            port: 1,
            peer: None,
        }
        .to_request();
        req.headers_mut()
            .insert(PEER_HEADER, HeaderValue::from_static("nonsense"));
        assert_eq!(StreamHead::from_request(&req).unwrap().peer, None);

        *req.method_mut() = Method::POST;
        assert!(matches!(
            StreamHead::from_request(&req),
            Err(HeadError::Method(_))
        ));

        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.uri_mut() = Uri::from_static("shadow");
        assert!(matches!(
            StreamHead::from_request(&req),
            Err(HeadError::NoPort(_))
        ));
    }

    #[test]
    fn refusals_become_readable_responses() {
        let r = StreamRefusal::ConnectFailed {
            addr: "127.0.0.1:3000".parse().unwrap(),
            reason: "Connection refused (os error 111)".into(),
        };
        let resp = r.to_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let err = check_response(&resp).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ktx answered 502 Bad Gateway: connect to 127.0.0.1:3000: Connection refused (os error 111)"
        );
        assert_eq!(check_response(&connected_response()), Ok(()));
        assert_eq!(StreamRefusal::NoMapping(9).status(), StatusCode::NOT_FOUND);
    }
}
