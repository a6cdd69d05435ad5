//! The router's own HTTP/1.1 client for the common exchange: a request without a body
//! (GET, HEAD, DELETE, `Content-Length: 0`) on a pooled keep-alive connection. It writes the
//! request head in one write, reads the response head into the connection's buffer, and hands
//! the response body out as slices of that buffer; the connection goes back to the pool when
//! the body has been read to its end ([`RawBody`]).
//!
//! Why not hyper's client here: its per-exchange machinery (a channel between the request
//! sender and the connection's state machine, the state machine's own polling, a new read
//! buffer per response) was about a third of the router's user-space time per request.
//! Requests with a body, Upgrades and anything else unusual still go through hyper
//! (`Upstreams::h1`, `h1_fresh`), on connections of their own.
//!
//! It owns: which requests may take this path ([`eligible`]), writing the head, reading and
//! checking the response head (`raw_h1/head.rs`: strict framing, so a response can never be
//! read as two or two as one), the body (`raw_h1/body.rs`). It does not own pooling
//! (`upstream.rs`), timeouts (`proxy.rs` bounds the head, `body.rs` the body's pauses) or
//! hop-by-hop headers (`headers.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::{Method, Request, Response, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Side;

mod body;
mod head;

pub use body::RawBody;

use super::Upstreams;

/// First read of a response, and the least spare room a read asks for.
const READ_MIN: usize = 8 * 1024;

/// A pooled connection's buffer above this size is given back when it returns to the pool
/// (a large download grew it; an idle connection should not keep that).
const KEEP_BUF: usize = 16 * 1024;

/// An upstream HTTP/1.1 connection of the router's own client. Invariant while pooled: no
/// exchange in flight and no unread bytes.
#[derive(Debug)]
pub struct RawConn {
    pub addr: SocketAddr,
    pub side: Side,
    /// When it was opened.
    pub born: Instant,
    stream: TcpStream,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// Where the response head's fields lie (scratch space of `head::parse`).
    spans: Vec<[usize; 4]>,
}

/// Why an exchange on a [`RawConn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("sending the request: {0}")]
    Write(std::io::Error),
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("the connection closed before a complete response head")]
    ClosedBeforeHead,
    #[error("the connection closed before the end of the response body")]
    ClosedInBody,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

impl RawError {
    /// The target took the request and the exchange broke off before a complete response
    /// head, rather than answering something unreadable.
    pub fn unanswered(&self) -> bool {
        matches!(
            self,
            RawError::Write(_) | RawError::Read(_) | RawError::ClosedBeforeHead
        )
    }
}

impl RawConn {
    pub fn new(addr: SocketAddr, side: Side, stream: TcpStream) -> Self {
        RawConn {
            addr,
            side,
            born: Instant::now(),
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Whether an idle connection can take another request: nothing to read (a closed
    /// connection reads its end, a reset an error, and an upstream that sent something
    /// unasked is not to be trusted with the next exchange). Costs no system call unless the
    /// socket became readable.
    pub fn is_reusable(&self) -> bool {
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Ready for the pool (`buf` is empty then): a buffer that large reads or a large head
    /// grew is given back. (`BytesMut::capacity` counts only the room after what was handed
    /// out, so the reads' size says it.)
    pub fn shrink(&mut self, grew: bool) {
        if grew || self.buf.capacity() > KEEP_BUF {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > KEEP_BUF {
            self.out = Vec::new();
        }
    }

    /// Reads more of the response into `buf`; `Ok(0)` at the end of the connection.
    async fn read_more(&mut self, at_least: usize) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < at_least {
            self.buf.reserve(at_least);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

/// Whether `req` may take the router's own client: HTTP/1.1, origin-form, no body (nothing
/// to stream, so no early answer can leave a half-sent request behind), no
/// `Transfer-Encoding`, no `CONNECT`. Upgrades are sorted out before (`proxy.rs`).
/// `bodyless`: the request's body is known to be empty.
pub fn eligible<B>(req: &Request<B>, bodyless: bool) -> bool {
    bodyless
        && req.version() == Version::HTTP_11
        && req.method() != Method::CONNECT
        && req.uri().scheme().is_none()
        && req.uri().authority().is_none()
        && req.uri().path().starts_with('/')
        && !req.headers().contains_key(http::header::TRANSFER_ENCODING)
}

/// Sends `req`'s head on `conn` and reads the response head. The body is read as the
/// response's body is polled; at its end the connection goes back to `pool`, if it may.
pub async fn exchange<B>(
    mut conn: RawConn,
    req: &Request<B>,
    pool: &Arc<Upstreams>,
) -> Result<Response<RawBody>, RawError> {
    conn.out.clear();
    encode_head(req, &mut conn.out);
    conn.stream
        .write_all(&conn.out)
        .await
        .map_err(RawError::Write)?;
    let is_head = req.method() == Method::HEAD;
    let mut interim = 0;
    // Bytes already known to hold no blank line: a head that comes a byte at a time is not
    // parsed again from its start for each byte.
    let mut scanned: usize = 0;
    loop {
        if head::has_end(&conn.buf[scanned.saturating_sub(3)..]) {
            let before = conn.buf.len();
            let parsed = head::parse(&mut conn.buf, &mut conn.spans, &mut interim, is_head)?;
            if let Some(head) = parsed {
                let body = RawBody::new(conn, head.framing, head.reusable, Arc::clone(pool));
                return Ok(Response::from_parts(head.parts, body));
            }
            // Interim answers taken off the front: look at what is left afresh.
            scanned = if conn.buf.len() == before { before } else { 0 };
            if scanned == 0 {
                continue;
            }
        } else {
            scanned = conn.buf.len();
        }
        // No end in sight past hyper's limit: read no further (an upstream that sends header
        // bytes without end must not fill the router's memory until the header timeout).
        if conn.buf.len() > head::MAX_HEAD {
            return Err(RawError::Invalid("response head too large"));
        }
        match conn.read_more(READ_MIN).await {
            Ok(0) => return Err(RawError::ClosedBeforeHead),
            Ok(_) => {}
            Err(e) => return Err(RawError::Read(e)),
        }
    }
}

/// The request head as hyper's client writes it (lower-case names, headers in map order),
/// for a request without a body.
fn encode_head<B>(req: &Request<B>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
