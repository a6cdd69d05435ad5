//! Protocol detection from a connection's first bytes: the HTTP/2 client preface means h2c, an
//! HTTP/1 request line means HTTP/1.1, anything else (TLS, a database protocol) is plain TCP.
//! Pure, so every case is a unit test; the socket side lives in [`crate::listener`].

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method we wait for before deciding (`OPTIONS `, `CONNECT `, plus slack).
const MAX_METHOD: usize = 16;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Http1,
    H2c,
    Tcp,
    /// Too few bytes to tell yet; read more.
    NeedMore,
}

/// Decides from the bytes read so far. Never answers `NeedMore` for 24 bytes or more.
pub fn sniff(buf: &[u8]) -> Sniffed {
    if buf.is_empty() {
        return Sniffed::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Sniffed::H2c
        } else {
            Sniffed::NeedMore
        };
    }
    // An HTTP/1 request line starts with a method token (upper-case letters here, as every
    // registered method is) followed by a space.
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => continue,
            b' ' if i > 0 => return Sniffed::Http1,
            _ => return Sniffed::Tcp,
        }
    }
    if buf.len() >= MAX_METHOD {
        Sniffed::Tcp
    } else {
        Sniffed::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_protocol() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"M-SEARCH * HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(H2_PREFACE), Sniffed::H2c);
        assert_eq!(
            sniff(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Sniffed::Tcp,
            "TLS ClientHello"
        );
        assert_eq!(sniff(b"\0\0\0\x08"), Sniffed::Tcp);
        assert_eq!(
            sniff(b"get / HTTP/1.1"),
            Sniffed::Tcp,
            "methods are case-sensitive"
        );
        assert_eq!(sniff(b" GET"), Sniffed::Tcp);
    }

    #[test]
    fn waits_for_enough_bytes() {
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI "), Sniffed::NeedMore, "a prefix of the preface");
        assert_eq!(
            sniff(b"PRIX"),
            Sniffed::NeedMore,
            "could still be a method PRIX"
        );
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQRST"), Sniffed::Tcp);
    }

    use proptest::prelude::*;

    fn starts() -> impl Strategy<Value = Vec<u8>> {
        let tail = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            tail.clone(),
            (0..=H2_PREFACE.len(), tail.clone()).prop_map(|(n, t)| [&H2_PREFACE[..n], &t].concat()),
            (
                prop::sample::select(vec!["GET ", "PRI ", "M-SEARCH ", "OPTIONS", "X"]),
                tail
            )
                .prop_map(|(m, t)| [m.as_bytes(), &t].concat()),
        ]
    }

    proptest! {
        /// Bounded fuzzing: any bytes, read in any split, get a decision by 24 bytes, and a
        /// decision never changes as more bytes arrive (the listener re-sniffs after each read).
        #[test]
        fn decides_within_24_bytes_and_never_changes_its_mind(bytes in starts()) {
            let mut decided = None;
            for n in 0..=bytes.len() {
                let d = sniff(&bytes[..n]);
                if n >= H2_PREFACE.len() {
                    prop_assert_ne!(d, Sniffed::NeedMore, "{:?}", &bytes[..n]);
                }
                match (decided, d) {
                    (None, Sniffed::NeedMore) => {}
                    (None, d) => decided = Some(d),
                    (Some(first), d) => prop_assert_eq!(first, d, "{:?}", &bytes[..n]),
                }
            }
        }
    }
}
