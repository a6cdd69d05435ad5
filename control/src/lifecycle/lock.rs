//! A lock on Service S, held around the steps that must not interleave between developers:
//! "create the shared objects and switch the selector" (setup) and "last one out restores"
//! (teardown, `ktx clean`, `ktx recover`).
//!
//! The lock is the annotation `ktx.dev/lock` on S: `{"holder", "token", "expires"}`. It is
//! taken with a `resourceVersion`-checked update (two takers cannot both succeed), renewed in
//! the background while held, and may be taken over by anyone once expired — so a ktx killed
//! while holding it blocks others for at most [`TTL`]. Per-session objects need no lock.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use ktx_names::ANNOTATION_LOCK;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::api::Kube;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// How long a lock lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(500);
/// Attempts at releasing the lock before giving up (it then expires after [`TTL`]).
const RELEASE_ATTEMPTS: u32 = 3;

/// The annotation's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub holder: String,
    pub token: String,
    /// RFC 3339.
    pub expires: String,
}

impl LockRecord {
    /// Whether the record still holds at `now`. An unreadable expiry counts as expired: a
    /// lock nobody can judge must not block everyone forever.
    pub fn is_held(&self, now: Timestamp) -> bool {
        self.expires
            .parse::<Timestamp>()
            .is_ok_and(|expires| now < expires)
    }
}

/// The lock record on `svc`, if any (unreadable records count as none).
pub fn record(svc: &Service) -> Option<LockRecord> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_LOCK)
        .and_then(|v| serde_json::from_str(v).ok())
}

/// Inside a modify of `svc` (Service `service`): fails with [`Error::Locked`] unless the lock on
/// it is still the one taken with `token` (it may have expired and been taken by someone else).
pub fn ensure_ours(svc: &Service, service: &str, token: &str) -> Result<()> {
    if record(svc).is_none_or(|r| r.token != token) {
        return Err(Error::Locked {
            service: service.to_string(),
            holder: "someone else (our lock expired)".into(),
            until: "now".into(),
        });
    }
    Ok(())
}

fn set_record(svc: &mut Service, rec: Option<&LockRecord>) {
    let ann = svc
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match rec {
        Some(r) => {
            let text = serde_json::to_string(r).expect("a LockRecord has only strings");
            ann.insert(ANNOTATION_LOCK.to_string(), text);
        }
        None => {
            ann.remove(ANNOTATION_LOCK);
        }
    }
    if ann.is_empty() {
        svc.metadata.annotations = None;
    }
}

/// A held lock. Release it with [`Lock::release`]; dropping it only stops the renewal, and the
/// lock then expires by itself.
#[derive(Debug)]
pub struct Lock {
    kube: Kube,
    service: String,
    token: String,
    renew: JoinHandle<()>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

fn fresh_record(holder: &str, token: &str) -> LockRecord {
    let expires = crate::cluster::clock::now()
        .checked_add(TTL)
        .unwrap_or_else(|_| crate::cluster::clock::now());
    LockRecord {
        holder: holder.to_string(),
        token: token.to_string(),
        expires: expires.to_string(),
    }
}

/// Takes the lock on Service `service`, waiting up to `timeout` while someone else holds it.
pub async fn acquire(
    kube: &Kube,
    service: &str,
    holder: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<Lock> {
    let token = crate::random::id(16);
    let deadline = Instant::now() + timeout;
    loop {
        let taken = kube
            .modify::<Service, _>(service, |svc| {
                if let Some(r) = record(svc) {
                    if r.token != token && r.is_held(crate::cluster::clock::now()) {
                        return Err(Error::Locked {
                            service: service.to_string(),
                            holder: r.holder,
                            until: r.expires,
                        });
                    }
                }
                set_record(svc, Some(&fresh_record(holder, &token)));
                Ok(true)
            })
            .await;
        match taken {
            Ok(Some(_)) => break,
            Ok(None) => {
                return Err(Error::ServiceNotFound {
                    namespace: kube.namespace.clone(),
                    service: service.to_string(),
                })
            }
            Err(Error::Locked { holder: other, .. }) if Instant::now() < deadline => {
                progress.waiting(format!(
                    "waiting for the lock on Service {}/{service}, held by {other}",
                    kube.namespace
                ));
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
    let renew = tokio::spawn(renew_loop(
        kube.clone(),
        service.to_string(),
        holder.to_string(),
        token.clone(),
    ));
    Ok(Lock {
        kube: kube.clone(),
        service: service.to_string(),
        token,
        renew,
    })
}

async fn renew_loop(kube: Kube, service: String, holder: String, token: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let r = kube
            .modify::<Service, _>(&service, |svc| {
                if record(svc).is_some_and(|r| r.token == token) {
                    set_record(svc, Some(&fresh_record(&holder, &token)));
                    Ok(true)
                } else {
                    Ok(false)
                }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(service, error = %e, "could not renew the lock; it expires in {TTL:?} unless a later renewal works");
        }
    }
}

impl Lock {
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Removes the lock (if it is still ours; a lock taken over after expiry is left alone).
    /// A failed write is retried a few times: a lock left behind blocks every teammate (and
    /// this session's own teardown) until it expires.
    pub async fn release(self) -> Result<()> {
        self.renew.abort();
        let token = self.token.clone();
        let mut attempt = 0;
        loop {
            let r = self
                .kube
                .modify::<Service, _>(&self.service, |svc| {
                    if record(svc).is_some_and(|r| r.token == token) {
                        set_record(svc, None);
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if attempt + 1 < RELEASE_ATTEMPTS => {
                    tracing::debug!(service = %self.service, attempt, error = %e, "could not release the lock; retrying");
                    tokio::time::sleep(RETRY * (1 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_expire_and_unreadable_ones_do_not_block() {
        let r = fresh_record("alice@laptop", "t1");
        let now = crate::cluster::clock::now();
        assert!(r.is_held(now));
        assert!(!r.is_held(now.checked_add(TTL + Duration::from_secs(1)).unwrap()));
        let bad = LockRecord {
            expires: "soon".into(),
            ..r.clone()
        };
        assert!(!bad.is_held(now));
    }

    #[test]
    fn the_annotation_round_trips_and_leaves_no_empty_map() {
        let mut svc = Service::default();
        let r = fresh_record("alice@laptop", "t1");
        set_record(&mut svc, Some(&r));
        assert_eq!(record(&svc), Some(r));
        set_record(&mut svc, None);
        assert!(svc.metadata.annotations.is_none(), "restores exactly");
        svc.metadata.annotations = Some([(ANNOTATION_LOCK.to_string(), "{".to_string())].into());
        assert_eq!(record(&svc), None);
    }
}
