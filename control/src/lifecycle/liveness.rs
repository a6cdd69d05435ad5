//! Which sessions are alive, judged by observed change, as the janitor judges them: a session is
//! dead only when its Lease's `renewTime` has stood still for the Lease's duration plus a grace,
//! timed on this process's monotonic clock. Wall clocks only pick the suspects: a Lease that
//! looks fresh on this machine's clock is alive (the safe side), one that looks expired is
//! watched until it either changes (alive: its holder's clock, or ours, was stepped — NTP, a
//! laptop waking) or stands still for the whole window. So a clock step during a session never
//! makes a live teammate's session look dead to `ktx clean`, the cleanup before a setup, the
//! last one out, or the rule check; the price is a wait of about one Lease duration when
//! something really has expired.
//!
//! It does not remove anything: callers act on the [`Verdict`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use tokio::time::Instant;

use crate::cluster::api::Kube;
use crate::error::Result;
use crate::objects::lease::{freshness, CLEAN_GRACE};
use crate::objects::{labels, selector_string};
use ktx_names::role;

/// Added to a Lease's duration before a renewTime that stood still counts as dead.
pub const GRACE: Duration = Duration::from_secs(2);
/// How often suspects are read again.
pub const POLL: Duration = Duration::from_secs(1);

/// How long a suspect is watched before it counts as dead, and how often it is read meanwhile.
/// [`Window::default`] is what every command uses; the fake-API tests shorten it so that a
/// crashed session is judged in milliseconds instead of a Lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `None`: each Lease's own `leaseDurationSeconds` (ktx writes 15 s).
    pub lease_duration: Option<Duration>,
    /// Added to the duration.
    pub grace: Duration,
    /// How often suspects are read again.
    pub poll: Duration,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            lease_duration: None,
            grace: GRACE,
            poll: POLL,
        }
    }
}

/// The dead sessions among the Leases read.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    dead: BTreeSet<String>,
}

fn key(l: &Lease) -> String {
    l.uid().unwrap_or_else(|| l.name_any())
}

impl Verdict {
    pub fn alive(&self, lease: &Lease) -> bool {
        !self.dead.contains(&key(lease))
    }
}

/// Reads the session Leases of `service` and judges them (see the module docs).
pub async fn observe(kube: &Kube, service: &str) -> Result<(Vec<Lease>, Verdict)> {
    observe_with(kube.liveness, || session_leases(kube, service), is_alive).await
}

/// [`observe`] over any way to list the Leases and any wall-clock test (for tests).
pub async fn observe_with<F, Fut>(
    window: Window,
    mut list: F,
    looks_alive: impl Fn(&Lease) -> bool,
) -> Result<(Vec<Lease>, Verdict)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Lease>>>,
{
    let first = list().await?;
    let mut suspects: BTreeSet<String> =
        first.iter().filter(|l| !looks_alive(l)).map(key).collect();
    if suspects.is_empty() {
        return Ok((first, Verdict::default()));
    }
    let poll = window.poll;
    let window = window.lease_duration.unwrap_or_else(|| {
        first
            .iter()
            .filter(|l| suspects.contains(&key(l)))
            .map(duration)
            .max()
            .unwrap_or(crate::objects::lease::LEASE_DURATION)
    }) + window.grace;
    let start = Instant::now();
    let mut last = first.clone();
    while !suspects.is_empty() && start.elapsed() < window {
        tokio::time::sleep(poll).await;
        let now = list().await?;
        // Renewed, gone, or replaced by a new Lease of that name: not a dead session.
        suspects.retain(|k| {
            now.iter()
                .find(|l| key(l) == *k)
                .is_some_and(|l| same_mark(&first, l))
        });
        last = now;
    }
    let dead = if start.elapsed() >= window {
        suspects
    } else {
        BTreeSet::new()
    };
    Ok((last, Verdict { dead }))
}

fn duration(l: &Lease) -> Duration {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(crate::objects::lease::LEASE_DURATION)
}

/// Whether `l` carries the renewTime it had in `before`.
fn same_mark(before: &[Lease], l: &Lease) -> bool {
    let mark = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
            .map(|t| t.0)
    };
    before
        .iter()
        .find(|b| key(b) == key(l))
        .is_some_and(|b| mark(b) == mark(l))
}

/// The session Leases whose `ktx.dev/service` is `service` (mesh and exchange sessions of S,
/// or the preview session of a preview Service S).
pub async fn session_leases(kube: &Kube, service: &str) -> Result<Vec<Lease>> {
    let sel = selector_string(&labels(service, role::SESSION, None));
    kube.list::<Lease>(&sel).await
}

/// Whether a Lease is alive now (with the cleanup grace).
pub fn is_alive(lease: &Lease) -> bool {
    freshness(lease, crate::cluster::clock::now(), CLEAN_GRACE).is_alive()
}

#[cfg(test)]
mod tests;
