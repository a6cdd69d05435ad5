//! Purpose connect (protocol version 2), per stream: ktx's request names a destination, the
//! connect pod's response says whether it reached it.
//!
//! Request: `CONNECT` with `:authority` `IP:PORT`, an IP literal (IPv6 in brackets). Names are
//! resolved on ktx's side (from the API: a cluster need not run DNS), so the pod never resolves
//! anything. The request body is the local flow's bytes; END_STREAM is its half-close.
//! Response: `200` once the pod's connection to the destination is up, then its bytes. Errors
//! end the stream at once with `ktx-error` (text for people) and `ktx-reason` (a token for
//! programs): `400 bad-head`, `403 forbidden`, `502 refused`, `502 unreachable`, `504 timeout`.
//!
//! The pod refuses destinations on its own host ([`forbidden`]): its tunnel and admin ports
//! listen on the pod's loopback, and link-local addresses reach the node's and the cloud's
//! metadata services, none of which a developer's flow has any business reaching.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};

use super::stream_head::ERROR_HEADER;

/// Header carrying the machine-readable reason of an error response.
pub const REASON_HEADER: &str = "ktx-reason";

/// The checked head of one connect stream: where the pod should connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectHead {
    pub dest: SocketAddr,
}

/// A connect request the pod cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectHeadError {
    #[error("stream request uses method {0}, expected CONNECT")]
    Method(String),
    #[error("stream request's :authority {0:?} is not IP:PORT with a port above 0")]
    NotAnAddress(String),
}

impl ConnectHead {
    /// The request ktx sends to open this stream.
    pub fn to_request(&self) -> Request<()> {
        let uri = Uri::try_from(self.dest.to_string())
            .expect("a socket address (IPv6 in brackets) is a valid authority-form URI");
        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.uri_mut() = uri;
        req
    }

    /// Reads a connect request: only an IP literal and a non-zero port are accepted.
    pub fn from_request<B>(req: &Request<B>) -> Result<Self, ConnectHeadError> {
        if req.method() != Method::CONNECT {
            return Err(ConnectHeadError::Method(req.method().to_string()));
        }
        let authority = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
        match authority.parse::<SocketAddr>() {
            Ok(dest) if dest.port() != 0 => Ok(Self { dest }),
            _ => Err(ConnectHeadError::NotAnAddress(req.uri().to_string())),
        }
    }
}

/// Why the pod refuses to dial an address on its own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// 127.0.0.0/8, ::1: the pod's loopback, where its tunnel and admin ports listen.
    Loopback,
    /// 169.254.0.0/16 (the cloud metadata address 169.254.169.254 among them), fe80::/10.
    LinkLocal,
    /// 0.0.0.0, `::`: "this host".
    Unspecified,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::Loopback => "the connect pod's own loopback",
            Forbidden::LinkLocal => "link-local (node and cloud metadata services)",
            Forbidden::Unspecified => "the unspecified address (the connect pod itself)",
        })
    }
}

/// The deny rule: `Some` when the pod must not dial `ip`. IPv4 addresses written as IPv6
/// (`::ffff:127.0.0.1`) are judged as the IPv4 address they are.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_link_local() {
        Some(Forbidden::LinkLocal)
    } else if ip.is_unspecified() {
        Some(Forbidden::Unspecified)
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
        Some(Forbidden::LinkLocal)
    } else if ip.is_unspecified() {
        Some(Forbidden::Unspecified)
    } else {
        None
    }
}

/// Why a connect stream did not reach its destination; the pod's error response, and (read
/// back from it) ktx's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialFailure {
    /// The request could not be read (400).
    BadHead,
    /// The destination is on the pod's own host (403).
    Forbidden,
    /// The destination answered with a reset: nothing listens there (502).
    Refused,
    /// No route, host down, or another error while connecting (502).
    Unreachable,
    /// No answer within the pod's dial timeout (504).
    Timeout,
}

impl DialFailure {
    /// The token in `ktx-reason`, also the pod's metric label.
    pub fn label(self) -> &'static str {
        match self {
            DialFailure::BadHead => "bad-head",
            DialFailure::Forbidden => "forbidden",
            DialFailure::Refused => "refused",
            DialFailure::Unreachable => "unreachable",
            DialFailure::Timeout => "timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            DialFailure::BadHead => StatusCode::BAD_REQUEST,
            DialFailure::Forbidden => StatusCode::FORBIDDEN,
            DialFailure::Refused | DialFailure::Unreachable => StatusCode::BAD_GATEWAY,
            DialFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// From a response: the `ktx-reason` token when known, else the status alone.
    fn from_response(status: StatusCode, token: Option<&str>) -> Self {
        let all = [
            DialFailure::BadHead,
            DialFailure::Forbidden,
            DialFailure::Refused,
            DialFailure::Unreachable,
            DialFailure::Timeout,
        ];
        if let Some(f) = all.into_iter().find(|f| Some(f.label()) == token) {
            return f;
        }
        match status {
            StatusCode::BAD_REQUEST => DialFailure::BadHead,
            StatusCode::FORBIDDEN => DialFailure::Forbidden,
            StatusCode::GATEWAY_TIMEOUT => DialFailure::Timeout,
            _ => DialFailure::Unreachable,
        }
    }

    /// How a failed `connect(2)` reads on the wire.
    pub fn from_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => DialFailure::Refused,
            std::io::ErrorKind::TimedOut => DialFailure::Timeout,
            _ => DialFailure::Unreachable,
        }
    }
}

/// A connect stream that did not reach its destination, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DialRejected {
    pub failure: DialFailure,
    pub reason: String,
}

impl DialRejected {
    /// The error response the pod sends (with END_STREAM).
    pub fn to_response(&self) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = self.failure.status();
        // Reasons come from io errors and our own text; anything unprintable is replaced
        // rather than failing the response.
        let text: String = self
            .reason
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
        resp.headers_mut().insert(
            REASON_HEADER,
            HeaderValue::from_static(self.failure.label()),
        );
        resp
    }
}

/// ktx's reading of the pod's response.
pub fn check_connect_response<B>(resp: &Response<B>) -> Result<(), DialRejected> {
    if resp.status() == StatusCode::OK {
        return Ok(());
    }
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
    Err(DialRejected {
        failure: DialFailure::from_response(resp.status(), header(REASON_HEADER)),
        reason: header(ERROR_HEADER)
            .unwrap_or("the connect pod gave no reason")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_address_round_trips(ip in any::<IpAddr>(), port in 1u16..) {
            let head = ConnectHead { dest: SocketAddr::new(ip, port) };
            prop_assert_eq!(ConnectHead::from_request(&head.to_request()), Ok(head));
        }

        #[test]
        fn any_authority_is_read_without_panicking(authority in "\\PC{0,64}") {
            if let Ok(uri) = Uri::try_from(authority.as_str()) {
                let mut req = Request::new(());
                *req.method_mut() = Method::CONNECT;
                *req.uri_mut() = uri;
                if let Ok(head) = ConnectHead::from_request(&req) {
                    prop_assert!(head.dest.port() != 0);
                }
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn heads_round_trip_for_both_families() {
        for dest in ["10.96.0.10:80", "[fd00:10:96::a]:8443"] {
            let head = ConnectHead {
                dest: dest.parse().unwrap(),
            };
            let req = head.to_request();
            assert_eq!(req.method(), Method::CONNECT);
            assert_eq!(req.uri().to_string(), dest);
            assert_eq!(ConnectHead::from_request(&req), Ok(head));
        }
    }

    #[test]
    fn names_zero_ports_and_other_methods_are_bad_heads() {
        for authority in ["inventory.shop:80", "10.0.0.1:0", "10.0.0.1", "[::1]"] {
            let mut req = Request::new(());
            *req.method_mut() = Method::CONNECT;
            *req.uri_mut() = Uri::try_from(authority).unwrap();
            assert!(
                matches!(
                    ConnectHead::from_request(&req),
                    Err(ConnectHeadError::NotAnAddress(_))
                ),
                "{authority}"
            );
        }
        let mut req = ConnectHead {
            dest: "10.0.0.1:80".parse().unwrap(),
        }
        .to_request();
        *req.method_mut() = Method::GET;
        assert!(matches!(
            ConnectHead::from_request(&req),
            Err(ConnectHeadError::Method(_))
        ));
    }

    #[test]
    fn the_pods_own_host_is_forbidden_the_cluster_is_not() {
        for (addr, why) in [
            ("127.0.0.1", Forbidden::Loopback),
            ("127.0.0.2", Forbidden::Loopback),
            ("127.255.255.254", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("169.254.169.254", Forbidden::LinkLocal),
            ("169.254.0.1", Forbidden::LinkLocal),
            ("::ffff:169.254.169.254", Forbidden::LinkLocal),
            ("fe80::1", Forbidden::LinkLocal),
            ("febf::1", Forbidden::LinkLocal),
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
        ] {
            assert_eq!(forbidden(ip(addr)), Some(why), "{addr}");
        }
        for addr in [
            "10.96.0.1",
            "10.244.1.7",
            "192.168.1.1",
            "128.0.0.1",
            "169.253.255.255",
            "fd00:10:96::a",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert_eq!(forbidden(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn failures_survive_the_wire_with_their_kind_and_words() {
        for failure in [
            DialFailure::BadHead,
            DialFailure::Forbidden,
            DialFailure::Refused,
            DialFailure::Unreachable,
            DialFailure::Timeout,
        ] {
            let sent = DialRejected {
                failure,
                reason: format!("dial 10.0.0.1:80: {}", failure.label()),
            };
            let resp = sent.to_response();
            assert_eq!(resp.status(), failure.status());
            assert_eq!(check_connect_response(&resp), Err(sent));
        }
        // A peer that sends only a status still maps to a kind.
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        let err = check_connect_response(&resp).unwrap_err();
        assert_eq!(err.failure, DialFailure::Timeout);
        assert_eq!(err.reason, "the connect pod gave no reason");
        assert_eq!(check_connect_response(&Response::new(())), Ok(()));
    }
}
