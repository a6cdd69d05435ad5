//! Leader election among janitor replicas through the Lease
//! [`ktx_names::JANITOR_ELECTION_LEASE`], judged on this replica's clock, and the campaign that
//! keeps the claim fresh on its own beat. Only the leader acts; what it does is
//! [`super::rounds`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use ktx_names::{JANITOR_ELECTION_LEASE, LABEL_PART_OF, LABEL_ROLE, PART_OF_VALUE};
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use super::renewals::renew_mark;
use crate::cluster::api::Kube;
use crate::error::{status_code, Error, Result};
use crate::lifecycle::flow::Ctx;
use crate::objects::meta;

/// How long the leader's claim lasts without renewal; a standby takes over after seeing no
/// renewal for this long.
pub const ELECTION_DURATION: Duration = Duration::from_secs(15);
/// What this replica should do about the election Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No Lease yet: create it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, and they stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else's, still renewed.
    Standby { leader: String },
}

/// Leader election through one Lease, judged on this replica's clock.
#[derive(Debug)]
pub struct Election {
    identity: String,
    /// The other holder's (holder, renewTime) and when it was first seen unchanged.
    other: Option<((String, String), Instant)>,
    /// When our claim was last written successfully.
    renewed: Option<Instant>,
}

impl Election {
    pub fn new(identity: impl Into<String>) -> Election {
        Election {
            identity: identity.into(),
            other: None,
            renewed: None,
        }
    }

    /// Decides from the Lease as read at `now`.
    pub fn decide(&mut self, lease: Option<&Lease>, now: Instant) -> Claim {
        let Some(lease) = lease else {
            return Claim::Create;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder == self.identity {
            return Claim::Renew;
        }
        self.renewed = None;
        if holder.is_empty() {
            return Claim::TakeOver;
        }
        let key = (holder.clone(), renew_mark(lease));
        let since = match &self.other {
            Some((k, since)) if *k == key => *since,
            _ => now,
        };
        self.other = Some((key, since));
        if now.saturating_duration_since(since) >= ELECTION_DURATION {
            Claim::TakeOver
        } else {
            Claim::Standby { leader: holder }
        }
    }

    /// Records a successful write of our claim at `at`.
    pub fn claimed(&mut self, at: Instant) {
        self.renewed = Some(at);
        self.other = None;
    }

    /// Records a failed write (someone else won, or the API failed).
    pub fn lost(&mut self) {
        self.renewed = None;
    }

    /// Whether we may act at `now`: our claim was written within half its duration, so no
    /// standby can have taken over yet.
    pub fn leading(&self, now: Instant) -> bool {
        claim_fresh(self.renewed, now)
    }

    /// When our claim was last written, if we hold it.
    pub fn renewed(&self) -> Option<Instant> {
        self.renewed
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// A claim written at `renewed` lets us act until half the election's duration has passed, so
/// no standby can have taken over yet.
fn claim_fresh(renewed: Option<Instant>, now: Instant) -> bool {
    renewed.is_some_and(|at| now.saturating_duration_since(at) < ELECTION_DURATION / 2)
}
pub(super) fn election_lease(namespace: &str, identity: Option<&str>, now: Timestamp) -> Lease {
    let labels = [
        (LABEL_PART_OF.to_string(), PART_OF_VALUE.to_string()),
        (LABEL_ROLE.to_string(), "janitor".to_string()),
    ]
    .into_iter()
    .collect();
    Lease {
        metadata: meta(JANITOR_ELECTION_LEASE, namespace, labels),
        spec: Some(LeaseSpec {
            holder_identity: identity.map(str::to_string),
            lease_duration_seconds: Some(ELECTION_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// One round of the election: read the Lease, decide, write. Returns whether we lead now.
async fn elect(kube: &Kube, election: &mut Election) -> Result<bool> {
    let api = kube.api::<Lease>();
    let current = kube.get::<Lease>(JANITOR_ELECTION_LEASE).await?;
    let started = Instant::now();
    let claim = election.decide(current.as_ref(), started);
    let now = Timestamp::now();
    let written = match (&claim, current) {
        (Claim::Standby { .. }, _) => return Ok(false),
        (Claim::Create, _) | (_, None) => api
            .create(
                &PostParams::default(),
                &election_lease(&kube.namespace, Some(election.identity()), now),
            )
            .await
            .map(|_| ()),
        (Claim::Renew | Claim::TakeOver, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if claim == Claim::TakeOver {
                spec.holder_identity = Some(election.identity().to_string());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(ELECTION_DURATION.as_secs() as i32);
            spec.renew_time = Some(MicroTime(now));
            // The replace carries the resourceVersion read: of two replicas taking over at
            // once, exactly one write succeeds.
            api.replace(JANITOR_ELECTION_LEASE, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match written {
        Ok(()) => {
            election.claimed(started);
            if claim != Claim::Renew {
                tracing::info!(identity = election.identity(), "became the leader");
            }
            Ok(true)
        }
        Err(e) if status_code(&e) == Some(409) => {
            election.lost();
            Ok(false)
        }
        Err(e) => {
            election.lost();
            Err(e).map_err(|source| Error::Api {
                action: format!(
                    "write leases.coordination.k8s.io {}/{JANITOR_ELECTION_LEASE}",
                    kube.namespace
                ),
                hint: crate::error::hint_for(
                    status_code(&source),
                    "update",
                    "leases.coordination.k8s.io",
                    &kube.namespace,
                ),
                source,
            })
        }
    }
}
/// Gives the leadership up on shutdown, so a standby takes over at once.
pub(super) async fn release(kube: &Kube, election: &Election) {
    if let Ok(Some(mut lease)) = kube.get::<Lease>(JANITOR_ELECTION_LEASE).await {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(election.identity()) {
            spec.holder_identity = None;
            let _ = kube
                .api::<Lease>()
                .replace(JANITOR_ELECTION_LEASE, &PostParams::default(), &lease)
                .await;
        }
    }
}

/// When our claim on the election Lease was last written, as [`campaign`] publishes it.
pub(super) type Leadership = watch::Receiver<Option<Instant>>;

/// Whether we may act at `now` (see [`Election::leading`]).
pub(super) fn leads(leadership: &Leadership, now: Instant) -> bool {
    claim_fresh(*leadership.borrow(), now)
}

/// Resolves once our leadership may have passed to a standby.
pub(super) async fn leadership_lost(leadership: &Leadership) {
    while leads(leadership, Instant::now()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The election, on its own beat so that a long round never lets the claim lapse: every
/// `interval`, read and write the election Lease and publish when we last held it.
pub(super) async fn campaign(
    ctx: &Ctx,
    election: &mut Election,
    interval: Duration,
    publish: watch::Sender<Option<Instant>>,
    metrics: &Metrics,
) {
    // The leader gauge is the rounds' to set: they read the claim this publishes.
    let mut was_leading = false;
    loop {
        // Bounded: the client has no read timeout, and a hung write must not freeze the claim
        // we publish (it only goes stale, which stops the rounds from acting).
        match tokio::time::timeout(ELECTION_DURATION / 4, elect(&ctx.kube, election)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics.errors.inc();
                tracing::warn!(error = %e, "leader election failed");
            }
            Err(_) => {
                metrics.errors.inc();
                tracing::warn!(
                    waited = ?(ELECTION_DURATION / 4),
                    "leader election: no answer from the API server"
                );
            }
        }
        publish.send_replace(election.renewed());
        // What the rounds will see, not what this attempt returned: a failed read keeps a
        // claim that is still fresh.
        let leading = election.leading(Instant::now());
        if leading != was_leading {
            if leading {
                tracing::info!(
                    identity = election.identity(),
                    "leads: acting on expired sessions"
                );
            } else {
                tracing::info!(
                    identity = election.identity(),
                    "stands by (another replica leads, or the election failed)"
                );
            }
            was_leading = leading;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An election-shaped Lease with `uid`, renewed at `renewed_at` (seconds), for the janitor's
    /// tests (the renewals' tests use it too).
    pub(in crate::commands::janitor) fn lease(
        uid: &str,
        holder: Option<&str>,
        renewed_at: i64,
    ) -> Lease {
        let mut l = election_lease("shop", holder, Timestamp::from_second(renewed_at).unwrap());
        l.metadata.uid = Some(uid.to_string());
        l
    }

    #[test]
    fn election_creates_renews_waits_and_takes_over() {
        let t0 = Instant::now();
        let mut e = Election::new("j-1");
        assert_eq!(e.decide(None, t0), Claim::Create);
        assert_eq!(
            e.decide(Some(&lease("x", Some("j-1"), 5)), t0),
            Claim::Renew
        );
        let other = lease("x", Some("j-2"), 5);
        assert_eq!(
            e.decide(Some(&other), t0),
            Claim::Standby {
                leader: "j-2".into()
            }
        );
        assert_eq!(
            e.decide(
                Some(&other),
                t0 + ELECTION_DURATION - Duration::from_secs(1)
            ),
            Claim::Standby {
                leader: "j-2".into()
            }
        );
        // A renewal by the leader restarts the wait.
        let renewed = lease("x", Some("j-2"), 6);
        assert!(matches!(
            e.decide(Some(&renewed), t0 + ELECTION_DURATION),
            Claim::Standby { .. }
        ));
        assert_eq!(
            e.decide(Some(&renewed), t0 + ELECTION_DURATION * 2),
            Claim::TakeOver
        );
        // A released Lease is taken over at once.
        assert_eq!(e.decide(Some(&lease("x", None, 6)), t0), Claim::TakeOver);
    }

    #[test]
    fn a_leader_stops_acting_well_before_a_standby_may_take_over() {
        let t0 = Instant::now();
        let mut e = Election::new("j-1");
        assert!(!e.leading(t0));
        e.claimed(t0);
        assert!(e.leading(t0 + ELECTION_DURATION / 2 - Duration::from_millis(1)));
        assert!(!e.leading(t0 + ELECTION_DURATION / 2));
        e.lost();
        assert!(!e.leading(t0));
    }

    #[tokio::test]
    async fn a_round_stops_once_the_published_claim_is_stale() {
        let now = Instant::now();
        let (publish, leadership) = watch::channel(Some(now));
        assert!(leads(&leadership, now));
        let still = tokio::time::timeout(Duration::from_millis(20), leadership_lost(&leadership));
        assert!(still.await.is_err(), "a fresh claim keeps the round going");
        // The election loop last held the Lease half its duration ago: stop at once.
        publish.send_replace(now.checked_sub(ELECTION_DURATION / 2));
        leadership_lost(&leadership).await;
        publish.send_replace(None);
        leadership_lost(&leadership).await;
        assert!(!leads(&leadership, now));
    }
}
