//! Preamble frames: the few messages exchanged inside TLS before HTTP/2 starts, their byte
//! encoding, and a decoder that says exactly how many bytes it still needs.
//!
//! The decoder never asks for more than one frame, so the driver can read with `read_exact` and
//! leave the HTTP/2 preface that follows untouched in the stream. This framing is frozen for all
//! protocol versions (see PROTOCOL.md): an old peer must always be able to read a new peer's
//! `Hello` to say "incompatible" in words. New information goes into new TLV tags, which older
//! decoders skip.

use std::fmt;

use super::{InvalidRange, VersionRange};

/// First bytes of every preamble frame; anything else is not a ktx tunnel peer.
pub const MAGIC: [u8; 4] = *b"KTXT";
/// Magic, kind (1 byte), body length (2 bytes, big endian).
pub const HEADER_LEN: usize = 7;
/// Largest body a peer may send; the preamble is tiny, so a bigger length is garbage.
pub const MAX_BODY_LEN: usize = 1024;
/// Text values (software version, refusal message) are at most this many bytes on the wire.
pub const MAX_TEXT_LEN: usize = 255;

const KIND_HELLO: u8 = 1;
const KIND_ACCEPT: u8 = 2;
const KIND_REFUSE: u8 = 3;

const HELLO_ROLE: u8 = 1;
const HELLO_PROTOCOL: u8 = 2;
const HELLO_SOFTWARE: u8 = 3;
const HELLO_PURPOSE: u8 = 4;
const ACCEPT_VERSION: u8 = 1;
const REFUSE_CODE: u8 = 1;
const REFUSE_MESSAGE: u8 = 2;

/// One preamble frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Accept(Accept),
    Refuse(Refuse),
}

/// Which end of the tunnel sent a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The developer's side (TLS client, HTTP/2 server).
    Ktx,
    /// The pod's side (TLS server, HTTP/2 client).
    Shadow,
}

/// What a session is for (tag 4 of `Hello`, protocol version 2). A peer that sends no purpose
/// means [`Purpose::Serve`]: every version-1 peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The pod opens a stream per in-cluster connection; ktx connects it to a local port
    /// (`ktx mesh`, `ktx exchange`).
    Serve,
    /// ktx opens a stream per local flow; the pod dials its destination (`ktx connect`).
    Connect,
    /// A purpose this build does not know (from a newer peer); refused as a wrong purpose.
    Other(u8),
}

impl Purpose {
    fn to_wire(self) -> u8 {
        match self {
            Purpose::Serve => 1,
            Purpose::Connect => 2,
            Purpose::Other(p) => p,
        }
    }

    fn from_wire(p: u8) -> Self {
        match p {
            1 => Purpose::Serve,
            2 => Purpose::Connect,
            p => Purpose::Other(p),
        }
    }
}

/// First frame of each side: who it is and which protocol versions it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub role: Role,
    pub protocol: VersionRange,
    /// Human-readable build, e.g. `ktx 0.1.0`; only used in messages.
    pub software: String,
    /// What the session is for; `None` (not sent) means [`Purpose::Serve`].
    pub purpose: Option<Purpose>,
}

impl Hello {
    /// The purpose this hello asks for or offers, absent meaning serve.
    pub fn purpose(&self) -> Purpose {
        self.purpose.unwrap_or(Purpose::Serve)
    }
}

/// The shadow's "yes": the protocol version both sides now speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub version: u16,
}

/// The shadow's "no", with a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pub code: RefuseCode,
    pub message: String,
}

/// Why the shadow refused a session. Codes unknown to this build are kept as `Other` so a
/// newer shadow's refusal still reaches the developer with its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// No protocol version in common.
    Incompatible,
    /// Another ktx session holds the tunnel.
    Busy,
    /// The peer's preamble made no sense.
    BadPreamble,
    /// The session's purpose is not what this pod is for (a mesh shadow asked to connect, a
    /// connect pod asked to serve).
    WrongPurpose,
    Other(u8),
}

impl RefuseCode {
    fn to_wire(self) -> u8 {
        match self {
            RefuseCode::Incompatible => 1,
            RefuseCode::Busy => 2,
            RefuseCode::BadPreamble => 3,
            RefuseCode::WrongPurpose => 4,
            RefuseCode::Other(c) => c,
        }
    }

    fn from_wire(c: u8) -> Self {
        match c {
            1 => RefuseCode::Incompatible,
            2 => RefuseCode::Busy,
            3 => RefuseCode::BadPreamble,
            4 => RefuseCode::WrongPurpose,
            c => RefuseCode::Other(c),
        }
    }
}

/// Result of feeding bytes to [`decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, which used the first `consumed` bytes of the buffer.
    Complete { frame: Frame, consumed: usize },
    /// Call again once the buffer holds `needed` bytes in total.
    Incomplete { needed: usize },
}

/// Bytes that are not a valid preamble frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the peer is not a ktx tunnel endpoint (first bytes {0:02x?})")]
    BadMagic(Vec<u8>),
    #[error("unknown preamble frame kind {0}")]
    UnknownKind(u8),
    #[error("preamble frame body of {0} bytes is larger than the limit of {MAX_BODY_LEN}")]
    TooLong(usize),
    #[error("{frame} frame: field {tag} is cut short")]
    Truncated { frame: &'static str, tag: u8 },
    #[error("{frame} frame: field `{field}` is missing")]
    Missing {
        frame: &'static str,
        field: &'static str,
    },
    #[error("{frame} frame: field `{field}` appears twice")]
    Duplicate {
        frame: &'static str,
        field: &'static str,
    },
    #[error("{frame} frame: field `{field}`: {reason}")]
    BadValue {
        frame: &'static str,
        field: &'static str,
        reason: String,
    },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ktx => "ktx",
            Role::Shadow => "shadow",
        })
    }
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Accept(_) => "Accept",
            Frame::Refuse(_) => "Refuse",
        }
    }

    /// Encodes the frame. Text longer than [`MAX_TEXT_LEN`] bytes is cut at a character
    /// boundary, so encoding cannot fail.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        let kind = match self {
            Frame::Hello(h) => {
                let role = match h.role {
                    Role::Ktx => 1,
                    Role::Shadow => 2,
                };
                put_tlv(&mut body, HELLO_ROLE, &[role]);
                let mut range = [0u8; 4];
                range[..2].copy_from_slice(&h.protocol.min().to_be_bytes());
                range[2..].copy_from_slice(&h.protocol.max().to_be_bytes());
                put_tlv(&mut body, HELLO_PROTOCOL, &range);
                put_tlv(&mut body, HELLO_SOFTWARE, clip(&h.software).as_bytes());
                if let Some(p) = h.purpose {
                    put_tlv(&mut body, HELLO_PURPOSE, &[p.to_wire()]);
                }
                KIND_HELLO
            }
            Frame::Accept(a) => {
                put_tlv(&mut body, ACCEPT_VERSION, &a.version.to_be_bytes());
                KIND_ACCEPT
            }
            Frame::Refuse(r) => {
                put_tlv(&mut body, REFUSE_CODE, &[r.code.to_wire()]);
                put_tlv(&mut body, REFUSE_MESSAGE, clip(&r.message).as_bytes());
                KIND_REFUSE
            }
        };
        debug_assert!(body.len() <= MAX_BODY_LEN, "{} body fits", self.name());
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.push(kind);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Longest prefix of `s` that fits in [`MAX_TEXT_LEN`] bytes and ends on a char boundary.
fn clip(s: &str) -> &str {
    if s.len() <= MAX_TEXT_LEN {
        return s;
    }
    let mut end = MAX_TEXT_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    debug_assert!(value.len() <= u8::MAX as usize, "TLV values are clipped");
    out.push(tag);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// Decodes the first frame in `buf`, or says how many bytes are needed to do so.
pub fn decode(buf: &[u8]) -> Result<Decoded, FrameError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf[..magic_seen] != MAGIC[..magic_seen] {
        return Err(FrameError::BadMagic(buf[..magic_seen].to_vec()));
    }
    if buf.len() < HEADER_LEN {
        return Ok(Decoded::Incomplete { needed: HEADER_LEN });
    }
    let kind = buf[4];
    let len = u16::from_be_bytes([buf[5], buf[6]]) as usize;
    if len > MAX_BODY_LEN {
        return Err(FrameError::TooLong(len));
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(Decoded::Incomplete { needed: total });
    }
    let body = &buf[HEADER_LEN..total];
    let frame = match kind {
        KIND_HELLO => Frame::Hello(decode_hello(body)?),
        KIND_ACCEPT => Frame::Accept(decode_accept(body)?),
        KIND_REFUSE => Frame::Refuse(decode_refuse(body)?),
        k => return Err(FrameError::UnknownKind(k)),
    };
    Ok(Decoded::Complete {
        frame,
        consumed: total,
    })
}

/// Walks the TLV fields of a body, calling `field` for each; unknown tags are the callee's
/// to skip.
fn each_tlv<'a>(
    frame: &'static str,
    mut body: &'a [u8],
    mut field: impl FnMut(u8, &'a [u8]) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    while !body.is_empty() {
        let tag = body[0];
        let Some(&len) = body.get(1) else {
            return Err(FrameError::Truncated { frame, tag });
        };
        let end = 2 + len as usize;
        let Some(value) = body.get(2..end) else {
            return Err(FrameError::Truncated { frame, tag });
        };
        field(tag, value)?;
        body = &body[end..];
    }
    Ok(())
}

/// Stores a field's value once; a second occurrence is an error rather than a silent override.
fn once<T>(
    slot: &mut Option<T>,
    value: T,
    frame: &'static str,
    field: &'static str,
) -> Result<(), FrameError> {
    if slot.replace(value).is_some() {
        return Err(FrameError::Duplicate { frame, field });
    }
    Ok(())
}

fn fixed<const N: usize>(
    value: &[u8],
    frame: &'static str,
    field: &'static str,
) -> Result<[u8; N], FrameError> {
    value.try_into().map_err(|_| FrameError::BadValue {
        frame,
        field,
        reason: format!("expected {N} bytes, got {}", value.len()),
    })
}

fn text(value: &[u8], frame: &'static str, field: &'static str) -> Result<String, FrameError> {
    String::from_utf8(value.to_vec()).map_err(|_| FrameError::BadValue {
        frame,
        field,
        reason: "not UTF-8".into(),
    })
}

fn decode_hello(body: &[u8]) -> Result<Hello, FrameError> {
    const F: &str = "Hello";
    let (mut role, mut protocol, mut software, mut purpose) = (None, None, None, None);
    each_tlv(F, body, |tag, v| match tag {
        HELLO_ROLE => {
            let r = match fixed::<1>(v, F, "role")?[0] {
                1 => Role::Ktx,
                2 => Role::Shadow,
                other => {
                    return Err(FrameError::BadValue {
                        frame: F,
                        field: "role",
                        reason: format!("unknown role {other}"),
                    })
                }
            };
            once(&mut role, r, F, "role")
        }
        HELLO_PROTOCOL => {
            let b = fixed::<4>(v, F, "protocol")?;
            let range = VersionRange::new(
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
            .map_err(|e: InvalidRange| FrameError::BadValue {
                frame: F,
                field: "protocol",
                reason: e.to_string(),
            })?;
            once(&mut protocol, range, F, "protocol")
        }
        HELLO_SOFTWARE => once(&mut software, text(v, F, "software")?, F, "software"),
        HELLO_PURPOSE => {
            let p = Purpose::from_wire(fixed::<1>(v, F, "purpose")?[0]);
            once(&mut purpose, p, F, "purpose")
        }
        _ => Ok(()),
    })?;
    Ok(Hello {
        role: role.ok_or(FrameError::Missing {
            frame: F,
            field: "role",
        })?,
        protocol: protocol.ok_or(FrameError::Missing {
            frame: F,
            field: "protocol",
        })?,
        software: software.unwrap_or_else(|| "unknown".into()),
        purpose,
    })
}

fn decode_accept(body: &[u8]) -> Result<Accept, FrameError> {
    const F: &str = "Accept";
    let mut version = None;
    each_tlv(F, body, |tag, v| match tag {
        ACCEPT_VERSION => {
            let b = fixed::<2>(v, F, "version")?;
            once(&mut version, u16::from_be_bytes(b), F, "version")
        }
        _ => Ok(()),
    })?;
    let version = version.ok_or(FrameError::Missing {
        frame: F,
        field: "version",
    })?;
    Ok(Accept { version })
}

fn decode_refuse(body: &[u8]) -> Result<Refuse, FrameError> {
    const F: &str = "Refuse";
    let (mut code, mut message) = (None, None);
    each_tlv(F, body, |tag, v| match tag {
        REFUSE_CODE => {
            let c = RefuseCode::from_wire(fixed::<1>(v, F, "code")?[0]);
            once(&mut code, c, F, "code")
        }
        REFUSE_MESSAGE => once(&mut message, text(v, F, "message")?, F, "message"),
        _ => Ok(()),
    })?;
    Ok(Refuse {
        code: code.ok_or(FrameError::Missing {
            frame: F,
            field: "code",
        })?,
        message: message.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
