//! Reading a response head: httparse with hyper's limits and defaults (no obs-fold, no space
//! before the colon, no HTTP/0.9), interim 1xx answers skipped, and framing rules stricter
//! than hyper's wherever a lenient reading could take one response for two: both
//! `Transfer-Encoding` and `Content-Length`, a transfer coding other than `chunked`, or
//! `Content-Length` values that disagree, are refused (a 502), not guessed at.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::RawError;

/// hyper's limits: headers per message, bytes of one head.
const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEAD: usize = 408 * 1024;

/// Interim (1xx) responses skipped before the final one, at most.
const MAX_INTERIM: usize = 8;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug)]
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// Whether the connection may take another request once the body has been read.
    pub reusable: bool,
}

/// Whether `bytes` hold the blank line that ends a head (httparse also takes a bare LF).
pub fn has_end(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\r\n" && i > 0 && bytes[i - 1] == b'\n'))
}

/// Takes the final response head off the front of `buf`, or `None` if it is not complete yet.
/// `spans` is scratch space, kept by the connection so a response costs no allocation for it.
/// `interim` counts the 1xx answers skipped so far in this exchange.
pub fn parse(
    buf: &mut BytesMut,
    spans: &mut Vec<[usize; 4]>,
    interim: &mut usize,
    is_head: bool,
) -> Result<Option<Head>, RawError> {
    loop {
        // Uninitialised: writing 100 empty headers first cost more than parsing the head.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(RawError::Invalid("response head too large"))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(RawError::Invalid("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(RawError::Parse(e)),
        };
        let code = res.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| RawError::Invalid("status code"))?;
        let version = match res.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(RawError::Invalid(
                    "101 to a request that asked for no upgrade",
                ));
            }
            *interim += 1;
            if *interim > MAX_INTERIM {
                return Err(RawError::Invalid("too many interim (1xx) responses"));
            }
            buf.advance(len);
            continue;
        }
        let reason = res
            .reason
            .filter(|r| status.canonical_reason() != Some(*r))
            .map(|r| r.as_bytes().to_vec());
        // Where each name and value lies in the head, so both become slices of one buffer.
        let base = buf.as_ptr() as usize;
        spans.clear();
        spans.extend(res.headers.iter().map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            [name, name + h.name.len(), value, value + h.value.len()]
        }));
        let head = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(spans.len());
        // What framing needs, noted on the way (a lookup per name would hash each).
        let mut fields = Fields::default();
        for &[ns, ne, vs, ve] in spans.iter() {
            let name = HeaderName::from_bytes(&head[ns..ne])
                .map_err(|_| RawError::Invalid("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| RawError::Invalid("header value"))?;
            fields.note(&name, &value);
            map.append(name, value);
        }
        let (framing, reusable) = framing(status, version, &mut map, is_head, &fields)?;
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = map;
        if let Some(r) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            parts.extensions.insert(r);
        }
        return Ok(Some(Head {
            parts,
            framing,
            reusable,
        }));
    }
}

/// The fields of a head that decide its framing.
#[derive(Debug)]
struct Fields {
    /// A `Connection` line names `close`.
    close: bool,
    /// `Transfer-Encoding` lines, and whether there is exactly one, reading `chunked`.
    codings: usize,
    only_chunked: bool,
    /// The one length all `Content-Length` values (comma lists included) agree on, or why
    /// there is none.
    length: Result<Option<u64>, &'static str>,
    /// More than one `Content-Length` value (equal ones, if `length` is a number).
    lengths: usize,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            close: false,
            codings: 0,
            only_chunked: false,
            length: Ok(None),
            lengths: 0,
        }
    }
}

impl Fields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == CONNECTION {
            self.close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name == TRANSFER_ENCODING {
            self.codings += 1;
            self.only_chunked = self.codings == 1
                && value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked");
        } else if name == CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                self.lengths += 1;
                let n = length(part);
                self.length = match (self.length, n) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(Some(f)), Ok(n)) if f != n => Err("Content-Length values disagree"),
                    (_, Ok(n)) => Ok(Some(n)),
                };
            }
        }
    }
}

/// One `Content-Length` value: digits only, no sign, no overflow.
fn length(part: &[u8]) -> Result<u64, &'static str> {
    let digits = part.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("Content-Length is not a number");
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or("Content-Length too large")
}

/// The body's framing and whether the connection may be reused (RFC 9112 §6.3, strictly).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    is_head: bool,
    fields: &Fields,
) -> Result<(Framing, bool), RawError> {
    let keep_alive = version == Version::HTTP_11 && !fields.close;
    let chunked = fields.codings > 0;
    if is_head || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep_alive));
    }
    let length = fields.length.map_err(RawError::Invalid);
    if status == StatusCode::NO_CONTENT {
        // A 204 that announces a body may send one: its bytes must not be read as the next
        // response.
        let announces = chunked || length?.is_some_and(|n| n > 0);
        return Ok((Framing::Empty, keep_alive && !announces));
    }
    if chunked {
        if version != Version::HTTP_11 {
            return Err(RawError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        if fields.lengths > 0 {
            return Err(RawError::Invalid(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if !fields.only_chunked {
            return Err(RawError::Invalid("a transfer coding other than chunked"));
        }
        return Ok((Framing::Chunked, keep_alive));
    }
    match length? {
        Some(n) => {
            if fields.lengths > 1 {
                // Equal duplicates: pass one on.
                headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
            match n {
                0 => Ok((Framing::Empty, keep_alive)),
                n => Ok((Framing::Length(n), keep_alive)),
            }
        }
        None => Ok((Framing::Close, false)),
    }
}
