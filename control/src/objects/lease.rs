//! The session Lease (`coordination.k8s.io/v1`): one per session, named like its shadow,
//! renewed every few seconds by ktx. The router ignores a rule whose Lease it has not seen
//! renewed within `leaseDurationSeconds`; `ktx clean` removes the objects of a session whose
//! Lease is expired by `renewTime + leaseDurationSeconds + grace`.
//!
//! This module builds and judges Leases; renewing them is [`crate::lifecycle::session::lease`]'s job.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use ktx_names::{role, ServiceNames, ANNOTATION_RULE, LABEL_MODE};

use super::{labels, meta};

/// How long a Lease stays fresh after a renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often ktx renews it (three renewals per duration: one lost write is harmless).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Extra time granted before a Lease counts as expired for cleanup: clocks of developers'
/// machines differ, and removing a live session is far worse than waiting a little longer.
pub const CLEAN_GRACE: Duration = Duration::from_secs(10);

/// Who holds a session and what it does.
#[derive(Debug, Clone)]
pub struct LeaseParams<'a> {
    /// The Lease's name (the session's shadow name, see [`ServiceNames`]).
    pub name: &'a str,
    pub session: &'a str,
    /// `user@host`.
    pub holder: &'a str,
    /// [`ktx_names::mode`] value.
    pub mode: &'a str,
    /// The rule in words, for `ktx status`.
    pub rule: &'a str,
}

pub fn lease(names: &ServiceNames, namespace: &str, p: &LeaseParams<'_>, now: Timestamp) -> Lease {
    let mut l = labels(names.service(), role::SESSION, Some(p.session));
    l.insert(LABEL_MODE.to_string(), p.mode.to_string());
    let mut metadata = meta(p.name, namespace, l);
    metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_RULE.to_string(),
        p.rule.to_string(),
    )]));
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(p.holder.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Sets `renewTime` to `now`.
pub fn renew(lease: &mut Lease, now: Timestamp) {
    lease.spec.get_or_insert_with(Default::default).renew_time = Some(MicroTime(now));
}

/// Whether a session is alive, judged by wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Renewed recently enough; expires at the given instant (grace included).
    Alive { until: Timestamp },
    /// Not renewed in time since the given instant (grace included), or never renewed.
    Expired { since: Option<Timestamp> },
}

impl Freshness {
    pub fn is_alive(&self) -> bool {
        matches!(self, Freshness::Alive { .. })
    }
}

/// Judges `lease` at `now`: alive while `now < renewTime + leaseDurationSeconds + grace`.
pub fn freshness(lease: &Lease, now: Timestamp, grace: Duration) -> Freshness {
    let spec = lease.spec.as_ref();
    let renewed = spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()));
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    let (Some(renewed), Some(secs)) = (renewed, duration) else {
        return Freshness::Expired { since: None };
    };
    let window = Duration::from_secs(secs) + grace;
    let Ok(until) = renewed.0.checked_add(window) else {
        return Freshness::Expired { since: None };
    };
    if now < until {
        Freshness::Alive { until }
    } else {
        Freshness::Expired { since: Some(until) }
    }
}

/// The holder and start of a session, for messages.
pub fn holder_and_since(lease: &Lease) -> (String, String) {
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_else(|| "someone".to_string());
    let since = spec
        .and_then(|s| s.acquire_time.as_ref())
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "an unknown time".to_string());
    (holder, since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn params() -> LeaseParams<'static> {
        LeaseParams {
            name: "orders-ktx-mesh-foobar",
            session: "foobar",
            holder: "alice@laptop",
            mode: ktx_names::mode::MESH,
            rule: "VERSION: foobar",
        }
    }

    #[test]
    fn a_lease_names_its_session_and_holder() {
        let l = lease(&ServiceNames::new("orders"), "shop", &params(), at(0));
        assert_eq!(l.metadata.name.as_deref(), Some("orders-ktx-mesh-foobar"));
        let labels = l.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["ktx.dev/role"], "session");
        assert_eq!(labels["ktx.dev/session"], "foobar");
        assert_eq!(labels["ktx.dev/mode"], "mesh");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ktx");
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("alice@laptop"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(holder_and_since(&l).0, "alice@laptop");
    }

    #[test]
    fn freshness_counts_duration_and_grace() {
        let mut l = lease(&ServiceNames::new("orders"), "shop", &params(), at(0));
        let g = Duration::from_secs(10);
        assert!(freshness(&l, at(24), g).is_alive());
        assert_eq!(
            freshness(&l, at(25), g),
            Freshness::Expired {
                since: Some(at(25))
            }
        );
        renew(&mut l, at(20));
        assert!(freshness(&l, at(44), g).is_alive());
        l.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
        assert_eq!(freshness(&l, at(20), g), Freshness::Expired { since: None });
        assert_eq!(
            freshness(&Lease::default(), at(0), g),
            Freshness::Expired { since: None }
        );
    }
}
