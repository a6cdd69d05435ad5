//! A session's life line: its Lease, created once and renewed every few seconds by a
//! background task for as long as the session runs. The router and `ktx clean` judge the
//! session by it, so the renewal must not stall behind anything else ktx does.
//!
//! Renewals that fail or hang for a third of the Lease are reported to the developer at once. If
//! the Lease disappears (someone ran `ktx recover`) or cannot be renewed for a whole lease
//! duration, the keeper reports the session as lost and the session ends itself rather than
//! pretend to be alive. All of it is timed on the monotonic clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::api::Kube;
use crate::error::{status_code, Error, Result};
use crate::objects::lease::{holder_and_since, LEASE_DURATION, RENEW_EVERY};
use crate::progress::Progress;

/// `user@host`: who holds a session or a lock, for other developers' messages.
pub fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "someone".to_string());
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{user}@{host}")
}

/// The name of this process's user in /etc/passwd (when $USER is not set: containers, CI).
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Keeps one Lease renewed until dropped (then the undo stack deletes the Lease).
#[derive(Debug)]
pub struct LeaseKeeper {
    name: String,
    uid: String,
    task: JoinHandle<()>,
    lost: watch::Receiver<Option<String>>,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaseKeeper {
    /// Creates `lease` and starts renewing it; renewal trouble is reported on `progress` as it
    /// happens. A Lease of the same name that already exists belongs to a running session:
    /// refused, naming its holder.
    pub async fn create(
        kube: &Kube,
        lease: &Lease,
        service: &str,
        progress: &Progress,
    ) -> Result<LeaseKeeper> {
        let name = lease.name_any();
        let created = match kube.api::<Lease>().create(&Default::default(), lease).await {
            Ok(l) => l,
            Err(e) if status_code(&e) == Some(409) => {
                let other = kube.get::<Lease>(&name).await?.unwrap_or_default();
                let (holder, since) = holder_and_since(&other);
                return Err(Error::SessionExists {
                    service: service.to_string(),
                    session: name,
                    holder,
                    since,
                });
            }
            Err(e) => {
                return Err(Error::Api {
                    action: format!(
                        "create leases.coordination.k8s.io {}/{name}",
                        kube.namespace
                    ),
                    hint: crate::error::hint_for(
                        status_code(&e),
                        "create",
                        "leases.coordination.k8s.io",
                        &kube.namespace,
                    ),
                    source: e,
                })
            }
        };
        let uid = created.uid().unwrap_or_default();
        let (tx, lost) = watch::channel(None);
        let what = format!("the session's Lease {}/{name}", kube.namespace);
        let api = kube.api::<Lease>();
        let lease_name = name.clone();
        let lease_uid = uid.clone();
        let renew = move || {
            let api = api.clone();
            let name = lease_name.clone();
            let uid = lease_uid.clone();
            async move {
                let now = MicroTime(crate::cluster::clock::now());
                // The UID makes the patch fail (409) on a Lease of the same name that is not
                // ours.
                let patch =
                    serde_json::json!({ "metadata": { "uid": uid }, "spec": { "renewTime": now } });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Renewal::Done,
                    Err(e) if matches!(status_code(&e), Some(404 | 409)) => Renewal::Gone,
                    Err(e) => Renewal::Failed(e.to_string()),
                }
            }
        };
        let progress = progress.clone();
        let task = tokio::spawn(keep_renewed(renew, what, tx, move |m| progress.warn(m)));
        Ok(LeaseKeeper {
            name,
            uid,
            task,
            lost,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Lease as owner of the session's objects.
    pub fn owner(&self) -> crate::plan::ownership::SessionOwner {
        crate::plan::ownership::SessionOwner {
            lease: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// The Lease as created (its UID).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Turns `Some(reason)` when the session can no longer be kept alive.
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }
}

/// What one renewal call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Done,
    /// The Lease is gone (`ktx recover`, or `ktx clean` elsewhere).
    Gone,
    Failed(String),
}

/// One renewal call may take this long; then it counts as failed and the next one starts.
pub const RENEW_CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// After a failed renewal, the next try comes this soon.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Renewals failing (or hanging) this long past their due time are reported to the developer
/// at once: a third of the Lease, which leaves the last third to act (network, VPN, expired
/// credentials) before the router stops sending requests here.
pub const REPORT_AFTER: Duration = Duration::from_secs(LEASE_DURATION.as_secs() / 3);
/// No renewal for this long: the router is about to see the Lease expire, and the developer is
/// told so (the session goes on, and resumes by itself once a renewal works).
pub const LOST_AFTER: Duration = Duration::from_secs(LEASE_DURATION.as_secs() - 1);

/// Calls `renew` every [`RENEW_EVERY`] (each call within [`RENEW_CALL_TIMEOUT`], retried every
/// [`RETRY_EVERY`] after a failure). Time is this process's monotonic clock only: a step of
/// the wall clock (NTP, a laptop waking) changes nothing here. When renewals have failed or
/// hung for [`REPORT_AFTER`] past their due time, `report` is told at once (also while a call
/// still hangs), again after [`LOST_AFTER`] (the Lease has expired for the router), and once
/// more when a renewal works again. Time alone never ends a session: a laptop that wakes or an
/// API server that comes back renews the same Lease and the session resumes by itself. Only a
/// Lease that is gone or replaced (cleaned up meanwhile) ends it: `lost` says why.
pub async fn keep_renewed<F, Fut>(
    mut renew: F,
    what: String,
    lost: watch::Sender<Option<String>>,
    report: impl Fn(String),
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Renewal>,
{
    let mut last_ok = Instant::now();
    let mut next = last_ok + RENEW_EVERY;
    let mut last_error = String::from("no answer yet");
    let mut reported = false;
    let mut expired_said = false;
    let trouble = |last_ok: Instant, last_error: &str| {
        format!(
            "{what} has not been renewed for {:?} (last error: {last_error}); if this lasts {LEASE_DURATION:?}, the router stops sending your requests here",
            last_ok.elapsed()
        )
    };
    loop {
        tokio::time::sleep_until(next).await;
        let report_at = last_ok + RENEW_EVERY + REPORT_AFTER;
        let call = tokio::time::timeout(RENEW_CALL_TIMEOUT, renew());
        tokio::pin!(call);
        let outcome = loop {
            tokio::select! {
                r = &mut call => break r.unwrap_or_else(|_| {
                    Renewal::Failed(format!("no answer within {RENEW_CALL_TIMEOUT:?}"))
                }),
                () = tokio::time::sleep_until(report_at), if !reported => {
                    reported = true;
                    report(trouble(last_ok, &last_error));
                }
            }
        };
        match outcome {
            Renewal::Done => {
                if reported {
                    report(format!(
                        "{what} is renewed again after {:?}",
                        last_ok.elapsed()
                    ));
                }
                reported = false;
                expired_said = false;
                last_ok = Instant::now();
                next = last_ok + RENEW_EVERY;
            }
            Renewal::Gone => {
                lost.send_replace(Some(format!(
                    "{what} was deleted or replaced (by `ktx recover` or `ktx clean` elsewhere?)"
                )));
                return;
            }
            Renewal::Failed(e) => {
                let silent_for = last_ok.elapsed();
                tracing::warn!(lease = %what, error = %e, ?silent_for, "could not renew the session's Lease; retrying");
                last_error = e;
                if !reported && Instant::now() >= report_at {
                    reported = true;
                    report(trouble(last_ok, &last_error));
                }
                if silent_for >= LOST_AFTER && !expired_said {
                    // Not the end: a laptop that wakes, an API server that returns, renews the
                    // same Lease and the session goes on by itself. Only a Lease that is gone
                    // or replaced (cleaned up meanwhile) ends it.
                    expired_said = true;
                    report(format!(
                        "{what} could not be renewed for {silent_for:?} ({last_error}): the router has stopped sending your requests here; ktx keeps trying, and the session resumes once a renewal works"
                    ));
                }
                next = Instant::now() + RETRY_EVERY;
            }
        }
    }
}

#[cfg(test)]
mod tests;
