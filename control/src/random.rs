//! Small random values (session ids, lock tokens, jitter) from the standard library's randomly
//! keyed hasher: unpredictable enough for names and backoff, and no extra dependency. Nothing
//! here is used for secrets (the tunnel's keys come from its own crate).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits.
pub fn u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.finish()
}

/// A number in `0..n` (`0` when `n` is 0).
pub fn below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        u64() % n
    }
}

/// `len` lower-case letters and digits, starting with a letter: valid in every object name.
pub fn id(len: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| {
            let set = if i == 0 { LETTERS } else { ALNUM };
            set[below(set.len() as u64) as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_name_safe_and_differ() {
        let a = id(6);
        assert_eq!(a.len(), 6);
        assert!(a.starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(id(12), id(12));
        assert!(below(10) < 10);
        assert_eq!(below(0), 0);
    }
}
