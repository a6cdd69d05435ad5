//! Session Leases → the set of sessions that are alive ("fresh").
//!
//! Like client-go's leader election, freshness is judged on the router's own monotonic clock,
//! never by comparing the Lease's `renewTime` (written by the developer's laptop) with the
//! router's wall clock: a Lease is fresh while the router has seen its `renewTime` change
//! within the last `leaseDurationSeconds`. Only a Lease seen for the first time (router start,
//! new session) is judged by wall clock, and then only to decide whether that first sighting
//! counts as a renewal; if not, the next renewal makes it fresh. A Lease without `renewTime` or
//! a positive `leaseDurationSeconds` is never fresh.
//!
//! A `resourceVersion` change alone is not a renewal: edits of labels or the holder change it
//! too, and every renewal changes `renewTime` anyway.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ::kube::runtime::watcher::Event;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;
use tokio::time::Instant;

use super::snapshot::Snapshot;
use super::{Events, Watched};

/// The parts of a Lease that freshness depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `spec.renewTime`, microseconds since the Unix epoch.
    pub renew_time_us: Option<i64>,
    /// `spec.leaseDurationSeconds`, if positive.
    pub duration: Option<Duration>,
}

impl Observation {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Observation {
            renew_time_us: spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.as_microsecond()),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
        }
    }

    /// Whether `renewTime` is within the lease duration of `wall_now`, either way (the
    /// laptop's clock may be ahead of the router's).
    fn recent_by_wall_clock(&self, wall_now: SystemTime) -> bool {
        let (Some(renew), Some(duration)) = (self.renew_time_us, self.duration) else {
            return false;
        };
        let window = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        unix_micros(wall_now).abs_diff(renew) <= window.unsigned_abs()
    }
}

fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// What the router knows of one Lease.
#[derive(Debug, Clone)]
struct Tracked {
    seen: Observation,
    /// When (router's clock) a renewal was last observed; `None`: never, as far as we know.
    renewed_at: Option<Instant>,
}

impl Tracked {
    fn observe(
        prev: Option<&Tracked>,
        seen: Observation,
        now: Instant,
        wall_now: SystemTime,
    ) -> Tracked {
        let renewed_at = match prev {
            Some(p) if p.seen.renew_time_us == seen.renew_time_us => p.renewed_at,
            Some(_) if seen.renew_time_us.is_some() => Some(now),
            Some(_) => None,
            None => seen.recent_by_wall_clock(wall_now).then_some(now),
        };
        Tracked { seen, renewed_at }
    }

    /// The first instant at which this Lease is no longer fresh; `None` if it is not fresh at
    /// all. The current duration applies, so a shortened lease takes effect at once.
    fn expires_at(&self) -> Option<Instant> {
        self.renewed_at?.checked_add(self.seen.duration?)
    }
}

/// The Leases of the namespace and when each was last seen renewed.
#[derive(Debug, Default)]
pub struct LeaseTracker {
    leases: Snapshot<Tracked>,
}

impl LeaseTracker {
    /// Applies one watcher event observed at `now` (monotonic) and `wall_now`.
    pub fn apply(&mut self, event: Event<Lease>, now: Instant, wall_now: SystemTime) {
        self.leases.apply(event, |lease, prev| {
            Tracked::observe(prev, Observation::of(lease), now, wall_now)
        });
    }

    /// True once the first list is complete; before that, nothing is known to be alive.
    pub fn listed(&self) -> bool {
        self.leases.listed()
    }

    /// Names of the Leases fresh at `now`.
    pub fn fresh(&self, now: Instant) -> HashSet<String> {
        self.leases
            .live()
            .iter()
            .filter(|(_, t)| t.expires_at().is_some_and(|e| now < e))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The soonest instant after `now` at which a fresh Lease expires.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.leases
            .live()
            .values()
            .filter_map(Tracked::expires_at)
            .filter(|e| now < *e)
            .min()
    }
}

/// Feeds the tracker and publishes the fresh set after the first list, on every event and at
/// each expiry instant (a timer, not a polling loop), whenever the set changes.
pub async fn run(
    mut events: Events<Lease>,
    watched: Watched,
    out: watch::Sender<Option<HashSet<String>>>,
) {
    let mut failing = false;
    let mut tracker = LeaseTracker::default();
    loop {
        let now = Instant::now();
        if tracker.listed() {
            publish(&out, tracker.fresh(now));
        }
        if out.is_closed() {
            return;
        }
        let wake = tracker.next_expiry(now);
        tokio::select! {
            r = events.next() => {
                let Some(r) = r else { return };
                if let Some(event) = watched.check(r, &mut failing) {
                    tracker.apply(event, Instant::now(), SystemTime::now());
                }
            }
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn publish(out: &watch::Sender<Option<HashSet<String>>>, fresh: HashSet<String>) {
    out.send_if_modified(|cur| {
        if cur.as_ref() == Some(&fresh) {
            return false;
        }
        let old = cur.take().unwrap_or_default();
        for name in fresh.difference(&old) {
            tracing::info!(lease = %name, "session Lease is fresh; its rules apply");
        }
        for name in old.difference(&fresh) {
            tracing::info!(lease = %name, "session Lease expired or deleted; its rules are ignored");
        }
        *cur = Some(fresh);
        true
    });
}

#[cfg(test)]
mod tests;
