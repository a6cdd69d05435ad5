//! A response body read straight off the upstream connection: slices of the connection's
//! buffer, read with the polling task's own waker (nothing else drives the connection). At
//! the body's clean end the connection goes back to the pool, if the response allowed it and
//! nothing unread follows; dropped before that (the client went away, an error), it closes.
//!
//! Chunked decoding follows hyper's (`proto/h1/decode.rs`): CRLF line ends only, sizes
//! overflow-checked, extensions and trailers bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::head::Framing;
use super::{RawConn, RawError, READ_MIN};
use crate::body::BodyError;
use crate::upstream::Upstreams;

/// Largest read of a body; reads double up to it while they come back full.
const READ_MAX: usize = 256 * 1024;

/// Longest chunk-size line (with extensions), and most bytes and lines of trailers.
const MAX_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_LINES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `n` bytes to go.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// `n` bytes of chunk data to go, then CRLF.
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// The body of a response read by the router's own client.
#[derive(Debug)]
pub struct RawBody {
    /// `None` once the body has ended or failed.
    conn: Option<RawConn>,
    state: State,
    reusable: bool,
    pool: Arc<Upstreams>,
    /// Size of the next read.
    read: usize,
}

impl RawBody {
    pub(super) fn new(
        conn: RawConn,
        framing: Framing,
        reusable: bool,
        pool: Arc<Upstreams>,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = RawBody {
            conn: Some(conn),
            state,
            reusable,
            pool,
            read: READ_MIN,
        };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: the connection goes back to the pool if it may.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                conn.shrink(self.read > READ_MIN);
                self.pool.checkin_raw(conn);
            }
        }
    }

    fn fail(&mut self, e: RawError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(BodyError::Upstream(e))))
    }

    /// Reads more into the connection's buffer; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let conn = self
            .conn
            .as_mut()
            .expect("a body being read has its connection");
        let want = self.read;
        let n = {
            let fut = conn.read_more(want);
            ready!(std::pin::pin!(fut).poll(cx))?
        };
        if n >= want && self.read < READ_MAX {
            self.read *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// The next frame, or `Pending` once more bytes are needed (after asking for them).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.buf;
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) if !buf.is_empty() => {
                    let (data, left) = take(buf, left);
                    self.state = State::Length(left);
                    if left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                }
                State::ChunkData(left) if !buf.is_empty() => {
                    let (data, left) = take(buf, left);
                    self.state = match left {
                        0 => State::ChunkEnd,
                        n => State::ChunkData(n),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => match chunk_size(buf) {
                    Ok(Some(0)) => {
                        self.state = State::Trailers;
                        continue;
                    }
                    Ok(Some(n)) => {
                        self.state = State::ChunkData(n);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                },
                State::ChunkEnd if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return self.fail(RawError::Invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                    continue;
                }
                State::Trailers => match trailers(buf) {
                    Ok(Some(map)) => {
                        self.finish();
                        if map.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(map))));
                    }
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                },
                // Nothing (or not enough) buffered for this state: read.
                _ => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.state == State::Close => {
                    // The end of a close-delimited body: the connection is not reused.
                    self.state = State::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(RawError::ClosedInBody),
                Ok(_) => {}
                Err(e) => return self.fail(RawError::Read(e)),
            }
        }
    }
}

/// Takes what `buf` holds of the `left` bytes still due: those bytes, and how many are due after.
fn take(buf: &mut bytes::BytesMut, left: u64) -> (Bytes, u64) {
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    (buf.split_to(n).freeze(), left - n as u64)
}

/// Takes a complete chunk-size line off `buf`: its size, or `None` if the line is not
/// complete yet.
fn chunk_size(buf: &mut bytes::BytesMut) -> Result<Option<u64>, RawError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(RawError::Invalid("chunk-size line too long"));
        }
        if buf.contains(&b'\n') {
            return Err(RawError::Invalid("chunk-size line ends in a bare LF"));
        }
        return Ok(None);
    };
    if end > MAX_LINE {
        return Err(RawError::Invalid("chunk-size line too long"));
    }
    let line = &buf[..end];
    if line.contains(&b'\n') || line.contains(&b'\r') {
        return Err(RawError::Invalid("chunk-size line ends in a bare LF or CR"));
    }
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .map_or(line, |i| &line[..i]);
    let rest = &line[digits.len()..];
    // After the size: nothing, or (after optional whitespace) a `;` extension.
    let rest_ok = {
        let r = rest.trim_ascii_start();
        r.is_empty() || r[0] == b';'
    };
    if digits.is_empty() || !rest_ok {
        return Err(RawError::Invalid("invalid chunk-size line"));
    }
    let mut size = 0u64;
    for &d in digits {
        let v = u64::from((d as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(RawError::Invalid("chunk size too large"))?;
    }
    buf.advance(end + 2);
    Ok(Some(size))
}

/// Takes the trailer section (after the last chunk) off `buf`: its fields, or `None` if it
/// is not complete yet.
fn trailers(buf: &mut bytes::BytesMut) -> Result<Option<HeaderMap>, RawError> {
    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
        buf.advance(2);
        return Ok(Some(HeaderMap::new()));
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_TRAILERS {
            return Err(RawError::Invalid("trailers too large"));
        }
        return Ok(None);
    };
    let len = end + 4;
    if len > MAX_TRAILERS {
        return Err(RawError::Invalid("trailers too large"));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_LINES];
    let map = match httparse::parse_headers(&buf[..len], &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = http::HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| RawError::Invalid("trailer name"))?;
                let value = http::HeaderValue::from_bytes(f.value)
                    .map_err(|_| RawError::Invalid("trailer value"))?;
                map.append(name, value);
            }
            map
        }
        Ok(httparse::Status::Partial) => return Err(RawError::Invalid("invalid trailers")),
        Err(e) => return Err(RawError::Parse(e)),
    };
    buf.advance(len);
    Ok(Some(map))
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
