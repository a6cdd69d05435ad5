//! A session's life line: its Lease, created once and renewed every few seconds by a
//! background task for as long as the session runs. The router and `ktx clean` judge the
//! session by it, so the renewal must not stall behind anything else ktx does.
//!
//! If the Lease disappears (someone ran `ktx recover`) or cannot be renewed for a whole lease
//! duration, the keeper reports the session as lost and the session ends itself rather than
//! pretend to be alive.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{status_code, Error, Result};
use crate::kube::Kube;
use crate::objects::lease::{holder_and_since, LEASE_DURATION, RENEW_EVERY};

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
    /// Creates `lease` and starts renewing it. A Lease of the same name that already exists
    /// belongs to a running session: refused, naming its holder.
    pub async fn create(kube: &Kube, lease: &Lease, service: &str) -> Result<LeaseKeeper> {
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
        let task = tokio::spawn(renew_loop(kube.clone(), name.clone(), uid.clone(), tx));
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
    pub fn owner(&self) -> crate::ownership::SessionOwner {
        crate::ownership::SessionOwner {
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

async fn renew_loop(kube: Kube, name: String, uid: String, lost: watch::Sender<Option<String>>) {
    let api = kube.api::<Lease>();
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let now = MicroTime(crate::clock::now());
        // The UID makes the patch fail (409) on a Lease of the same name that is not ours.
        let patch = serde_json::json!({ "metadata": { "uid": uid }, "spec": { "renewTime": now } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => last_ok = Instant::now(),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => {
                lost.send_replace(Some(format!(
                    "the session's Lease {}/{name} was deleted or replaced (by `ktx recover` or `ktx clean` elsewhere?)",
                    kube.namespace
                )));
                return;
            }
            Err(e) => {
                let silent_for = last_ok.elapsed();
                tracing::warn!(lease = %name, error = %e, ?silent_for, "could not renew the session's Lease; retrying");
                if silent_for >= LEASE_DURATION - Duration::from_secs(1) {
                    lost.send_replace(Some(format!(
                        "the session's Lease {}/{name} could not be renewed for {silent_for:?} ({e}); the router has stopped sending requests here",
                        kube.namespace
                    )));
                }
            }
        }
    }
}
