//! W3C `baggage` header (https://www.w3.org/TR/baggage/): `key1=value1;prop,key2=value2`.
//! Values are percent-decoded before comparison; several `baggage` headers are one list.

use http::HeaderMap;

/// True when some `baggage` header has a member `key` whose decoded value is `value`.
pub fn has_member(headers: &HeaderMap, key: &str, value: &str) -> bool {
    headers
        .get_all("baggage")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .filter_map(parse_member)
        .any(|(k, v)| k == key && percent_eq(v, value))
}

/// Splits one list member into key and raw value, dropping its properties.
fn parse_member(member: &str) -> Option<(&str, &str)> {
    let kv = member.split(';').next()?;
    let (k, v) = kv.split_once('=')?;
    Some((k.trim(), v.trim()))
}

/// Compares a percent-encoded value with a plain one without allocating.
fn percent_eq(encoded: &str, plain: &str) -> bool {
    let enc = encoded.as_bytes();
    let mut plain = plain.bytes();
    let mut i = 0;
    while i < enc.len() {
        let b = if enc[i] == b'%' && i + 2 < enc.len() {
            match (hex(enc[i + 1]), hex(enc[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 3;
                    h << 4 | l
                }
                _ => {
                    i += 1;
                    b'%'
                }
            }
        } else {
            i += 1;
            enc[i - 1]
        };
        if plain.next() != Some(b) {
            return false;
        }
    }
    plain.next().is_none()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An RFC 7230 token, which is what a baggage key must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("baggage", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn members_properties_and_whitespace() {
        let h = headers(&["userId=alice, ktx = foobar ;ttl=30", "other=1"]);
        assert!(has_member(&h, "ktx", "foobar"));
        assert!(has_member(&h, "userId", "alice"));
        assert!(has_member(&h, "other", "1"));
        assert!(!has_member(&h, "ktx", "foo"));
        assert!(!has_member(&h, "ttl", "30"), "a property is not a member");
    }

    #[test]
    fn percent_decoding() {
        let h = headers(&["k=a%20b%2Cc"]);
        assert!(has_member(&h, "k", "a b,c"));
        assert!(!has_member(&h, "k", "a%20b%2Cc"));
        assert!(percent_eq("100%", "100%"));
        assert!(percent_eq("%4", "%4"));
        assert!(!percent_eq("ab", "abc"));
    }

    #[test]
    fn tokens() {
        assert!(is_token("user.id"));
        assert!(!is_token("a b"));
        assert!(!is_token(""));
    }
}
