//! Which session Leases are still renewed, judged on the janitor's own clock: a session is dead
//! when its `renewTime` has stood still for `leaseDurationSeconds + --grace`. It does not
//! remove anything (that is [`super::rounds`]).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use tokio::time::Instant;

/// When the janitor last saw each session Lease's `renewTime` change, on its own clock.
#[derive(Debug)]
pub struct Renewals {
    grace: Duration,
    /// Lease UID → (renewTime as written, when that value was first seen).
    seen: HashMap<String, (String, Instant)>,
}

pub(super) fn renew_mark(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

fn uid(lease: &Lease) -> String {
    lease.uid().unwrap_or_else(|| lease.name_any())
}

impl Renewals {
    pub fn new(grace: Duration) -> Renewals {
        Renewals {
            grace,
            seen: HashMap::new(),
        }
    }

    /// Records the Leases listed at `now`; forgets Leases that are gone.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut next = HashMap::with_capacity(leases.len());
        for l in leases {
            let mark = renew_mark(l);
            let since = match self.seen.get(&uid(l)) {
                Some((old, since)) if *old == mark => *since,
                _ => now,
            };
            next.insert(uid(l), (mark, since));
        }
        self.seen = next;
    }

    /// Alive unless its renewTime has stood still for its duration plus the grace. A Lease
    /// without a usable duration counts as [`crate::objects::lease::LEASE_DURATION`]. A Lease
    /// read later than the last [`Renewals::observe`] whose renewTime moved since is alive: a
    /// verdict of death always rests on a renewTime seen unchanged for the whole window, however
    /// long a round takes.
    pub fn alive(&self, lease: &Lease, now: Instant) -> bool {
        let Some((mark, since)) = self.seen.get(&uid(lease)) else {
            return true;
        };
        if *mark != renew_mark(lease) {
            return true;
        }
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(crate::objects::lease::LEASE_DURATION);
        now.saturating_duration_since(*since) < duration + self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::super::election::tests::lease;
    use super::*;

    #[test]
    fn a_session_is_dead_only_after_its_renewal_stood_still_long_enough() {
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        let l = lease("a", Some("alice"), 1_700_000_000);
        r.observe(std::slice::from_ref(&l), t0);
        // 15 s duration + 3 s grace, on the janitor's clock.
        assert!(r.alive(&l, t0 + Duration::from_secs(17)));
        assert!(!r.alive(&l, t0 + Duration::from_secs(18)));
        // A renewal seen at t0+10 restarts the count.
        let renewed = lease("a", Some("alice"), 1_700_000_005);
        r.observe(std::slice::from_ref(&renewed), t0 + Duration::from_secs(10));
        assert!(r.alive(&renewed, t0 + Duration::from_secs(27)));
        assert!(!r.alive(&renewed, t0 + Duration::from_secs(28)));
    }

    #[test]
    fn an_old_timestamp_alone_does_not_kill_a_session() {
        // A laptop whose clock is an hour behind writes old renewTimes; what counts is that
        // they change.
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        let l = lease("a", Some("alice"), 1_000);
        r.observe(std::slice::from_ref(&l), t0);
        assert!(r.alive(&l, t0 + Duration::from_secs(1)));
        // Unknown Leases (created after the last list) are alive.
        assert!(r.alive(&lease("b", None, 0), t0 + Duration::from_secs(100)));
    }

    #[test]
    fn a_renewal_read_after_the_last_observation_keeps_the_session_alive() {
        // A round that took long: the record is old, but the Lease read now was renewed since.
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        r.observe(&[lease("a", Some("alice"), 1_700_000_000)], t0);
        let renewed = lease("a", Some("alice"), 1_700_000_100);
        assert!(r.alive(&renewed, t0 + Duration::from_secs(100)));
        assert!(!r.alive(
            &lease("a", Some("alice"), 1_700_000_000),
            t0 + Duration::from_secs(100)
        ));
    }

    #[test]
    fn leases_that_are_gone_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::ZERO);
        r.observe(&[lease("a", None, 1), lease("b", None, 1)], t0);
        r.observe(&[lease("b", None, 1)], t0);
        assert_eq!(r.seen.len(), 1);
    }
}
