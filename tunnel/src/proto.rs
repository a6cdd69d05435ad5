//! The sans-io core of the tunnel protocol: pure types and functions, no sockets, no clocks.
//!
//! - [`frame`]: the preamble frames (`Hello`, `Accept`, `Refuse`) each side exchanges right
//!   after the TLS handshake, their byte encoding and a decoder that never over-reads.
//! - [`negotiate`]: picking a protocol version from two ranges, the shadow's verdict, and the
//!   readable message when the two sides cannot talk.
//! - [`stream_head`]: how protocol version 1 names the target port of an HTTP/2 stream, and the
//!   statuses ktx answers with (purpose serve).
//! - [`connect_head`]: how a connect stream (protocol version 2, purpose connect) names its
//!   destination, which destinations the pod refuses, and the statuses it answers with.
//! - [`backoff`]: the reconnect delay schedule.
//!
//! The async driver (TLS, HTTP/2, sockets) lives in the rest of the crate and only calls into
//! here. The compatibility rules these types implement are written down in `PROTOCOL.md`.

pub mod backoff;
pub mod connect_head;
pub mod frame;
pub mod negotiate;
pub mod stream_head;

use std::fmt;

/// Oldest tunnel protocol version this build speaks.
pub const PROTOCOL_MIN: u16 = 1;
/// Newest tunnel protocol version this build speaks.
pub const PROTOCOL_MAX: u16 = 2;
/// The first version with a purpose in the hello, and so with the connect purpose. A connect
/// session offers `CONNECT_MIN_VERSION..PROTOCOL_MAX`.
pub const CONNECT_MIN_VERSION: u16 = 2;

/// ALPN protocol id offered and required inside TLS, so a TLS server that is not a shadow
/// (or a shadow reached on the wrong port) fails the handshake instead of misreading bytes.
pub const ALPN: &[u8] = b"ktx-tunnel";

/// An inclusive range of tunnel protocol versions, `min <= max`, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: u16,
    max: u16,
}

/// A version range that cannot exist (`min > max`, or version 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid protocol version range {min}..{max} (need 1 <= min <= max)")]
pub struct InvalidRange {
    pub min: u16,
    pub max: u16,
}

impl VersionRange {
    /// The range this build speaks.
    pub const CURRENT: VersionRange = VersionRange {
        min: PROTOCOL_MIN,
        max: PROTOCOL_MAX,
    };

    /// The range a connect session offers: the versions that know the purpose.
    pub const CONNECT: VersionRange = VersionRange {
        min: CONNECT_MIN_VERSION,
        max: PROTOCOL_MAX,
    };

    pub fn new(min: u16, max: u16) -> Result<Self, InvalidRange> {
        if min == 0 || min > max {
            return Err(InvalidRange { min, max });
        }
        Ok(Self { min, max })
    }

    pub fn min(self) -> u16 {
        self.min
    }

    pub fn max(self) -> u16 {
        self.max
    }

    pub fn contains(self, v: u16) -> bool {
        self.min <= v && v <= self.max
    }
}

impl Default for VersionRange {
    fn default() -> Self {
        Self::CURRENT
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(VersionRange::new(0, 1).is_err());
        assert!(VersionRange::new(3, 2).is_err());
        let r = VersionRange::new(2, 4).unwrap();
        assert!(r.contains(2) && r.contains(4) && !r.contains(5) && !r.contains(1));
        assert_eq!(r.to_string(), "2..4");
    }
}
