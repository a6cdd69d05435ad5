//! Errors of the request path, each tagged with the side that failed. The side picks the status
//! code the client sees and the `side` label of `ktx_router_upstream_errors_total`.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The downstream client sent something we cannot forward.
    Client,
    /// The default target (the original workload) failed.
    Upstream,
    /// A developer's session (its shadow) failed.
    Shadow,
    /// A bug or resource problem of the router itself.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Shadow => "shadow",
            Side::Internal => "internal",
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no ready endpoint for {target}")]
    NoEndpoint { side: Side, target: String },
    #[error("session '{session}' is not available: its shadow has no ready endpoint (is `ktx` still running on the developer's machine?)")]
    SessionUnavailable { session: String },
    #[error("session '{session}' is not reachable ({source}); is `ktx` still running on the developer's machine?")]
    SessionUnreachable {
        session: String,
        source: Box<ProxyError>,
    },
    #[error("connect to {addr}: {source}")]
    ConnectUpstream {
        side: Side,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: no answer within {after:?}")]
    ConnectTimeout {
        side: Side,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        side: Side,
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("HTTP/2 handshake with {addr}: {source}")]
    H2Handshake {
        side: Side,
        addr: SocketAddr,
        source: h2::Error,
    },
    /// The client's request body broke off or was malformed (a bad chunk-size line, say)
    /// while it was being sent upstream: the client's fault, answered 400.
    #[error("request body from the client: {source}")]
    ClientBody { source: hyper::Error },
    #[error("request to {addr} failed: {source}")]
    UpstreamRequest {
        side: Side,
        addr: SocketAddr,
        source: hyper::Error,
    },
    /// A stream of the router's own HTTP/2 client (`upstream/h2_client.rs`) failed.
    #[error("request to {addr} failed: {source}")]
    UpstreamStream {
        side: Side,
        addr: SocketAddr,
        source: h2::Error,
    },
    /// An exchange of the router's own HTTP/1.1 client (`upstream/raw_h1.rs`) failed.
    #[error("request to {addr} failed: {source}")]
    UpstreamExchange {
        side: Side,
        addr: SocketAddr,
        source: crate::upstream::raw_h1::RawError,
    },
    #[error("{addr}: every HTTP/2 stream slot of this client stayed busy for {after:?}")]
    NoStreamSlot {
        side: Side,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("{addr} sent no response headers within {after:?} (response header timeout)")]
    ResponseHeaderTimeout {
        side: Side,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("{addr} took none of the request body for {after:?} and sent no response (body idle timeout)")]
    RequestBodyNotTaken {
        side: Side,
        addr: SocketAddr,
        after: Duration,
    },
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::SessionUnavailable { .. } | ProxyError::SessionUnreachable { .. } => {
                Side::Shadow
            }
            ProxyError::ClientBody { .. } => Side::Client,
            ProxyError::NoEndpoint { side, .. }
            | ProxyError::ConnectUpstream { side, .. }
            | ProxyError::ConnectTimeout { side, .. }
            | ProxyError::Handshake { side, .. }
            | ProxyError::H2Handshake { side, .. }
            | ProxyError::UpstreamRequest { side, .. }
            | ProxyError::UpstreamStream { side, .. }
            | ProxyError::UpstreamExchange { side, .. }
            | ProxyError::NoStreamSlot { side, .. }
            | ProxyError::ResponseHeaderTimeout { side, .. }
            | ProxyError::RequestBodyNotTaken { side, .. } => *side,
        }
    }

    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoint { .. }
            | ProxyError::SessionUnavailable { .. }
            | ProxyError::SessionUnreachable { .. }
            | ProxyError::NoStreamSlot { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectTimeout { .. }
            | ProxyError::ResponseHeaderTimeout { .. }
            | ProxyError::RequestBodyNotTaken { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ConnectUpstream { .. }
            | ProxyError::Handshake { .. }
            | ProxyError::H2Handshake { .. }
            | ProxyError::UpstreamRequest { .. }
            | ProxyError::UpstreamStream { .. }
            | ProxyError::UpstreamExchange { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// True when nothing of the request reached the target, so it may be sent elsewhere.
    pub fn before_send(&self) -> bool {
        matches!(
            self,
            ProxyError::NoEndpoint { .. }
                | ProxyError::SessionUnavailable { .. }
                | ProxyError::SessionUnreachable { .. }
                | ProxyError::ConnectUpstream { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::Handshake { .. }
                | ProxyError::H2Handshake { .. }
                | ProxyError::NoStreamSlot { .. }
        )
    }
}

/// Errors that stop the router from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("read routes file {path}: {source}")]
    ReadRoutes {
        path: String,
        source: std::io::Error,
    },
    #[error("routes file {path}: {source}")]
    BadRoutes {
        path: String,
        source: ktx_rules::RulesError,
    },
    #[error("{0}")]
    Config(String),
}
