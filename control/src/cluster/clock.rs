//! The cluster's clock, as ktx reads it. Lease renewals and locks carry timestamps, and every
//! party judges them: this machine (`ktx clean`, the cleanup before a session), the router, the
//! janitor. A laptop whose clock runs ahead would write renewals from the future (its dead
//! session would look alive for longer) and would judge teammates' live sessions dead. So ktx
//! asks the API server for its time once (the `Date` header of `GET /version`) and, when the
//! two differ by more than [`TOLERANCE`], uses the API server's: [`now`] is this machine's
//! clock corrected by that offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::jiff::fmt::rfc2822::DateTimeParser;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Differences up to this are left alone (the `Date` header has one-second resolution).
pub const TOLERANCE: Duration = Duration::from_secs(2);

/// The API server's clock minus ours, in milliseconds (0 until [`sync`] found a difference).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Now, on the cluster's clock.
pub fn now() -> Timestamp {
    let offset = SignedDuration::from_millis(OFFSET_MS.load(Ordering::Relaxed));
    Timestamp::now()
        .checked_add(offset)
        .unwrap_or_else(|_| Timestamp::now())
}

/// The offset to use, given the server's `Date` header and our clock before and after the
/// request; `None` when it is within [`TOLERANCE`] or the header does not parse.
pub fn offset_from(date: &str, sent: Timestamp, received: Timestamp) -> Option<SignedDuration> {
    let server = DateTimeParser::new().parse_timestamp(date).ok()?;
    // The header is truncated to the second: its true value is half a second later on average.
    let server = server.checked_add(SignedDuration::from_millis(500)).ok()?;
    let middle = sent.checked_add(received.duration_since(sent) / 2).ok()?;
    let offset = server.duration_since(middle);
    (offset.unsigned_abs() > TOLERANCE).then_some(offset)
}

/// Reads the API server's time and remembers the offset; returns it when it is applied.
/// Failures leave this machine's clock in use (the command goes on; the next API call will
/// report an unreachable server properly).
pub async fn sync(client: &kube::Client) -> Option<SignedDuration> {
    let req = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .ok()?;
    let sent = Timestamp::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .ok()?
        .ok()?;
    let received = Timestamp::now();
    let date = resp.headers().get(http::header::DATE)?.to_str().ok()?;
    let offset = offset_from(date, sent, received)?;
    OFFSET_MS.store(
        i64::try_from(offset.as_millis()).unwrap_or(0),
        Ordering::Relaxed,
    );
    Some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_clock_a_minute_ahead_is_corrected() {
        let sent = at("2026-12-01T08:31:00Z");
        let received = at("2026-12-01T08:31:00.200Z");
        let off = offset_from("Tue, 01 Dec 2026 08:30:00 GMT", sent, received).unwrap();
        assert_eq!(off.as_millis(), -59_600);
    }

    #[test]
    fn small_differences_and_bad_headers_are_ignored() {
        let sent = at("2026-12-01T08:30:00.100Z");
        let received = at("2026-12-01T08:30:00.300Z");
        assert_eq!(
            offset_from("Tue, 01 Dec 2026 08:30:01 GMT", sent, received),
            None
        );
        assert_eq!(offset_from("yesterday", sent, received), None);
    }
}
