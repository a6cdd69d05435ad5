//! The HTTP side of the proxy: `CONNECT host:port` and absolute-form requests.
//!
//! Only the request head is parsed, and only as far as the proxy needs (method, target,
//! version, header lines). An absolute-form request's headers are carried through except the
//! proxy's own and those its Connection header names; Host becomes the target's authority.
//! Header lines a proxy must not pass on as they are (folded, malformed) get a 400. Everything
//! after the head is spliced untouched, so bodies, chunking, Upgrade and TLS inside CONNECT
//! work unchanged.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{connect, ConnectError};
use crate::dial::{Dial, DialError};
use crate::names::NameTable;

/// The status line for a failed connect.
pub fn status(err: &ConnectError) -> &'static str {
    match err {
        ConnectError::NoSuchHost { .. } => "502 Bad Gateway",
        ConnectError::Dial(DialError::Refused { .. }) => "502 Bad Gateway",
        ConnectError::Dial(DialError::Unreachable { .. }) => "504 Gateway Timeout",
        ConnectError::Dial(DialError::Forbidden { .. }) => "403 Forbidden",
        ConnectError::Dial(DialError::Down { .. }) => "503 Service Unavailable",
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// `CONNECT host:port`
    Connect { host: String, port: u16 },
    /// `METHOD http://host[:port]/path VERSION`: `head` is the rewritten origin-form head (Host
    /// from the target, hop-by-hop headers dropped, `Connection: close`).
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// Why a head is refused, with the status that says so.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than the limit")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    fn status(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "431 Request Header Fields Too Large",
            HeadError::Malformed(_) => "400 Bad Request",
        }
    }
}

/// Parses a complete head (up to and including the blank line). Never panics.
pub fn parse_head(head: &[u8]) -> Result<Head, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let (request_line, rest) = text
        .split_once("\r\n")
        .ok_or(HeadError::Malformed("no request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Malformed("version"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target, None)?;
        return Ok(Head::Connect { host, port });
    }
    let after_scheme = target
        .strip_prefix("http://")
        .ok_or(HeadError::Malformed("not an http:// absolute-form target"))?;
    let (authority, path) = match after_scheme.find(['/', '?']) {
        Some(i) => after_scheme.split_at(i),
        None => (after_scheme, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if authority.contains('@') {
        return Err(HeadError::Malformed("userinfo in target"));
    }
    let (host, port) = split_host_port(authority, Some(80))?;
    let lines: Vec<&str> = rest.split("\r\n").filter(|l| !l.is_empty()).collect();
    let fields = lines
        .iter()
        .map(|l| field(l).map(|(name, value)| (name, value, *l)))
        .collect::<Result<Vec<_>, _>>()?;
    // Hop-by-hop: the proxy's own headers, and those the client's Connection header names
    // (but never the body's framing: the body after the head is passed on as it is).
    let mut hop: Vec<&str> = vec![
        "proxy-connection",
        "proxy-authorization",
        "connection",
        "keep-alive",
        // Replaced by the target's authority (RFC 9112 §3.2.2).
        "host",
    ];
    for (name, value, _) in &fields {
        if name.eq_ignore_ascii_case("connection") {
            hop.extend(value.split(',').map(str::trim).filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("content-length")
                    && !t.eq_ignore_ascii_case("transfer-encoding")
            }));
        }
    }
    let mut out = format!("{method} {path} {version}\r\nHost: {authority}\r\n");
    for (name, _, line) in fields {
        if !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    // One request per proxied connection: the next one may be for another host.
    out.push_str("Connection: close\r\n\r\n");
    Ok(Head::Forward {
        host,
        port,
        head: out.into_bytes(),
    })
}

/// A header line's name and value. Refused (RFC 9112 §5.1, §5.2), as a proxy must not pass
/// them on as they are: an obsolete folded line, whitespace before the colon, no colon, a bare
/// CR or LF, a name that is not a token.
fn field(line: &str) -> Result<(&str, &str), HeadError> {
    if line.contains(['\r', '\n']) {
        return Err(HeadError::Malformed("bare CR or LF in a header line"));
    }
    if line.starts_with([' ', '\t']) {
        return Err(HeadError::Malformed("obsolete line folding"));
    }
    let (name, value) = line
        .split_once(':')
        .ok_or(HeadError::Malformed("header line without a colon"))?;
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(HeadError::Malformed("header name"));
    }
    Ok((name, value))
}

fn split_host_port(authority: &str, default: Option<u16>) -> Result<(String, u16), HeadError> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port = match (port, default) {
        (Some(p), _) => p.parse().map_err(|_| HeadError::Malformed("port"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(HeadError::Malformed("CONNECT target without port")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(HeadError::Malformed("empty host"));
    }
    Ok((host.to_owned(), port))
}

/// The client's request head, read whole.
enum HeadRead {
    Head {
        buf: Vec<u8>,
        end: usize,
        parsed: Head,
    },
    /// Answered with this status and no dial.
    Refuse(&'static str),
    /// The client closed first.
    Closed,
}

/// Reads the head (within `deadline`: the client's bytes only), connects (bounded by the
/// dial's own timeout), answers; `None` when the client got an error status.
pub async fn handshake<D: Dial>(
    conn: &mut TcpStream,
    dial: &D,
    names: &NameTable,
    max_head: usize,
    deadline: tokio::time::Instant,
) -> std::io::Result<Option<D::Stream>> {
    let read = tokio::time::timeout_at(deadline, read_head(conn, max_head))
        .await
        .map_err(|_| super::handshake_timed_out())??;
    let (buf, head_end, parsed) = match read {
        HeadRead::Head { buf, end, parsed } => (buf, end, parsed),
        HeadRead::Refuse(status) => return refuse::<D>(conn, status).await,
        HeadRead::Closed => return Ok(None),
    };
    let early = &buf[head_end..];
    let (host, port) = match &parsed {
        Head::Connect { host, port } | Head::Forward { host, port, .. } => (host, *port),
    };
    let mut remote = match connect(dial, names, host, port).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%host, port, error = %e, "http proxy: connect failed");
            return refuse::<D>(conn, status(&e)).await;
        }
    };
    match &parsed {
        Head::Connect { .. } => {
            conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Head::Forward { head, .. } => remote.write_all(head).await?,
    }
    // Bytes the client sent after the head (a body, a TLS ClientHello) go first.
    remote.write_all(early).await?;
    Ok(Some(remote))
}

async fn read_head(conn: &mut TcpStream, max_head: usize) -> std::io::Result<HeadRead> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = find_blank_line(&buf) {
            break i;
        }
        if buf.len() >= max_head {
            return Ok(HeadRead::Refuse(HeadError::TooLarge.status()));
        }
        let mut chunk = vec![0u8; (max_head - buf.len()).min(4096)];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    match parse_head(&buf[..end]) {
        Ok(parsed) => Ok(HeadRead::Head { buf, end, parsed }),
        Err(e) => Ok(HeadRead::Refuse(e.status())),
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

async fn refuse<D: Dial>(conn: &mut TcpStream, status: &str) -> std::io::Result<Option<D::Stream>> {
    let body = format!("ktx proxy: {status}\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes()).await?;
    // Closing with unread input makes the kernel send RST, which can destroy the answer before
    // the client reads it: send FIN, then discard what the client still sends, briefly.
    conn.shutdown().await?;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(None)
}

/// How long and how much a refused client's leftover input is read before closing.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_form() {
        assert_eq!(
            parse_head(b"CONNECT inventory.shop:8080 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Head::Connect {
                host: "inventory.shop".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_head(b"CONNECT [fd00::1]:443 HTTP/1.1\r\n\r\n"),
            Ok(Head::Connect {
                host: "fd00::1".into(),
                port: 443
            })
        );
        let Ok(Head::Forward { host, port, head }) = parse_head(
            b"GET http://inventory.shop/items?q=1 HTTP/1.1\r\nHost: inventory.shop\r\nProxy-Connection: Keep-Alive\r\nAccept: */*\r\n\r\n",
        ) else {
            panic!("absolute-form not parsed");
        };
        assert_eq!((host.as_str(), port), ("inventory.shop", 80));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /items?q=1 HTTP/1.1\r\nHost: inventory.shop\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    /// RFC 9112 §3.2.2: a proxy replaces the Host header with the target's authority. The
    /// client's Host went upstream as it was (another host's name, or none at all), and so did
    /// the headers its Connection header named (hop-by-hop, for the proxy alone).
    #[test]
    fn the_target_names_the_host_and_hop_by_hop_headers_stay_here() {
        for (asked, sent) in [
            (
                "GET http://inventory.shop:8080/x HTTP/1.1\r\nHost: other.example\r\nAccept: */*\r\n\r\n",
                "GET /x HTTP/1.1\r\nHost: inventory.shop:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            ),
            (
                "GET http://[fd00::1]/ HTTP/1.0\r\n\r\n",
                "GET / HTTP/1.0\r\nHost: [fd00::1]\r\nConnection: close\r\n\r\n",
            ),
            (
                "GET http://a/ HTTP/1.1\r\nConnection: X-Hop, keep-alive\r\nx-hop: 1\r\nHOST: a\r\nX-End: 2\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-End: 2\r\nConnection: close\r\n\r\n",
            ),
            // The body's framing stays whatever Connection names: the body after the head is
            // passed on as it is, and without them the server would misread it.
            (
                "POST http://a/ HTTP/1.1\r\nConnection: content-length, Transfer-Encoding\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            ),
        ] {
            let Ok(Head::Forward { head, .. }) = parse_head(asked.as_bytes()) else {
                panic!("{asked:?} not parsed");
            };
            assert_eq!(String::from_utf8(head).unwrap(), sent, "{asked:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_proxy() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET https://x/ HTTP/1.1\r\n\r\n",
            b"CONNECT x HTTP/1.1\r\n\r\n",
            b"CONNECT x:99999 HTTP/1.1\r\n\r\n",
            b"CONNECT :80 HTTP/1.1\r\n\r\n",
            b"GET http://u@x/ HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"GET http://x/ HTTP/2\r\n\r\n",
            // Header lines a proxy must not pass on as they are (RFC 9112 5.1, 5.2): an
            // obsolete folded line (it would join the Host put before it), whitespace before
            // the colon, no colon, a bare CR or LF inside a line, a name that is no token.
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n evil\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nA: 1\r\n\tb\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nA: 1\nB: 2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nA: 1\rB: 2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nA(b): 1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n: 1\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
