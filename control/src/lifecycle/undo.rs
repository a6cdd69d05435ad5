//! The undo stack: every setup step records how to undo it BEFORE it acts, so that whatever
//! stops a setup — an API error, a timeout, Ctrl-C in the middle of a request — the stack holds
//! at least everything that was done. Undoing runs the stack backwards; a normal session end is
//! the same run, so teardown and rollback cannot drift apart.
//!
//! A delete step deletes only what this run made: the UID its create returned (as a delete
//! precondition), or — when the create's answer never arrived — an object carrying this run's
//! token ([`crate::plan::ownership`]). An object of the same name that someone else made (the create
//! got 409) is never touched.
//!
//! Every step is idempotent (deleting a missing object, restoring a restored Service, removing
//! a rule that is not there all succeed). A failing step is retried, then reported, and the
//! rest still run — except that once restoring Service S has failed, the shared objects S may
//! still point at (router, routes, stuntman) are kept: restore before delete, always.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use ktx_names::ServiceNames;

use std::sync::{Arc, Mutex};

use crate::cluster::api::{Deleted, Kind, Kube};
use crate::error::{Error, Result};
use crate::lifecycle::link::Link;
use crate::lifecycle::lock::Lock;
use crate::lifecycle::session::LeaseKeeper;
use crate::plan::ownership;
use crate::progress::Progress;

/// Kinds of objects an undo step deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    Service,
    ConfigMap,
    Deployment,
    ServiceAccount,
    Role,
    RoleBinding,
    Pod,
    Secret,
    Lease,
    /// Istio's, made by `mesh --mode manual --apply-istio`.
    DestinationRule,
    VirtualService,
}

impl fmt::Display for ObjKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl ObjKind {
    /// Deletes `name` if it is what this run made: UID `uid` when known, else an object that
    /// carries `token`.
    pub async fn delete_made(
        self,
        kube: &Kube,
        name: &str,
        uid: Option<&str>,
        token: &str,
    ) -> Result<Deleted> {
        match self {
            ObjKind::Service => delete_made::<Service>(kube, name, uid, token).await,
            ObjKind::ConfigMap => delete_made::<ConfigMap>(kube, name, uid, token).await,
            ObjKind::Deployment => delete_made::<Deployment>(kube, name, uid, token).await,
            ObjKind::ServiceAccount => delete_made::<ServiceAccount>(kube, name, uid, token).await,
            ObjKind::Role => delete_made::<Role>(kube, name, uid, token).await,
            ObjKind::RoleBinding => delete_made::<RoleBinding>(kube, name, uid, token).await,
            ObjKind::Pod => delete_made::<Pod>(kube, name, uid, token).await,
            // Without the UID ktx does not read Secrets (no right to): a shadow's Secret lists
            // its session Lease as owner, and goes with it.
            ObjKind::Secret => match uid {
                Some(uid) => kube.delete_uid::<Secret>(name, uid).await,
                None => Ok(Deleted::Gone),
            },
            ObjKind::Lease => delete_made::<Lease>(kube, name, uid, token).await,
            ObjKind::DestinationRule => {
                delete_made::<crate::objects::istio::DestinationRule>(kube, name, uid, token).await
            }
            ObjKind::VirtualService => {
                delete_made::<crate::objects::istio::VirtualService>(kube, name, uid, token).await
            }
        }
    }
}

async fn delete_made<K: Kind>(
    kube: &Kube,
    name: &str,
    uid: Option<&str>,
    token: &str,
) -> Result<Deleted> {
    let deleted = match uid {
        Some(uid) => kube.delete_uid::<K>(name, uid).await,
        None => {
            kube.delete_checked::<K>(name, |o| ownership::created_by(o.meta(), token))
                .await
        }
    };
    match deleted {
        // A 404 that is not an object's NotFound: the cluster does not serve the kind at all
        // (Istio's, without Istio), so nothing of it was made.
        Err(Error::Api { source, .. }) if crate::error::status_code(&source) == Some(404) => {
            Ok(Deleted::Gone)
        }
        other => other,
    }
}

/// The UID of an object this run is creating, once its create has answered.
#[derive(Debug, Clone, Default)]
pub struct Made(Arc<Mutex<Option<String>>>);

impl Made {
    /// Records what the create returned.
    pub fn record<K: kube::Resource>(&self, obj: &K) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = obj.meta().uid.clone();
    }

    /// Records a UID known otherwise (a Lease created by its keeper).
    pub fn set(&self, uid: &str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(uid.to_string());
    }

    pub fn uid(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One thing to undo.
// A session records a dozen steps: the size of the largest (a Lock) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Release the lock on a Service.
    Unlock(Lock),
    /// Delete an object; `shared` marks objects Service S may depend on (kept if restoring S
    /// failed).
    Delete {
        kind: ObjKind,
        name: String,
        shared: bool,
        made: Made,
    },
    /// Give Service S its original selector back, if S still selects `ours` (what this
    /// session switched it to).
    RestoreSelector {
        service: String,
        ours: BTreeMap<String, String>,
    },
    /// Stop renewing the session's Lease (a `Delete` below it removes the Lease).
    EndLease(LeaseKeeper),
    /// Stop the tunnel.
    CloseTunnel(Link),
    /// Remove the session's rule from S's routes ConfigMap.
    RemoveRule { service: String, session: String },
    /// Scale a workload back to the count saved on Service S, and wait for it; only while S
    /// still selects `ours` (else whoever took S over since scaled it back, and may have
    /// scaled it down again for a session of their own).
    ScaleBack {
        kind: crate::lifecycle::scale::WorkloadKind,
        /// The Service whose annotation holds the saved count.
        service: String,
        name: String,
        ours: BTreeMap<String, String>,
    },
    /// Last one out: if no live session of S remains, restore S and delete the shared objects.
    LeaveShared { service: String },
    /// Undo something this machine set up for the session (`ktx connect`'s proxy, TUN device,
    /// DNS settings): runs `stop`.
    StopLocal(LocalStop),
}

/// What [`Step::StopLocal`] runs, and what it is called in messages.
pub struct LocalStop {
    pub what: String,
    pub stop: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>,
}

impl LocalStop {
    /// Stops a background task (a watch, a proxy, the TUN's flows) by aborting it.
    pub fn abort(what: impl Into<String>, task: tokio::task::AbortHandle) -> LocalStop {
        LocalStop {
            what: what.into(),
            stop: Box::new(move || Box::pin(async move { task.abort() })),
        }
    }
}

impl std::fmt::Debug for LocalStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStop")
            .field("what", &self.what)
            .finish()
    }
}

impl Step {
    fn describe(&self, ns: &str) -> String {
        match self {
            Step::Unlock(_) => "release the lock".into(),
            Step::Delete { kind, name, .. } => format!("delete {kind} {ns}/{name}"),
            Step::RestoreSelector { service, .. } => {
                format!("restore the selector of Service {ns}/{service}")
            }
            Step::EndLease(k) => format!("stop renewing the session Lease {ns}/{}", k.name()),
            Step::CloseTunnel(_) => "close the tunnel".into(),
            Step::StopLocal(l) => format!("stop {}", l.what),
            Step::RemoveRule { service, session } => format!(
                "remove the rule of session {session} from ConfigMap {ns}/{}",
                ServiceNames::new(service.as_str()).routes()
            ),
            Step::LeaveShared { service } => {
                format!("restore Service {ns}/{service} if no other session uses it")
            }
            Step::ScaleBack { kind, name, .. } => format!("scale {kind:?} {ns}/{name} back"),
        }
    }

    /// The same, once done.
    fn past(&self, ns: &str) -> String {
        match self {
            Step::Unlock(_) => "Released the lock".into(),
            Step::Delete { kind, name, .. } => format!("Deleted {kind} {ns}/{name}"),
            Step::RestoreSelector { service, .. } => {
                format!("Restored the selector of Service {ns}/{service}")
            }
            Step::EndLease(k) => format!("Stopped renewing the session Lease {ns}/{}", k.name()),
            Step::CloseTunnel(_) => "Closed the tunnel".into(),
            Step::StopLocal(l) => format!("Stopped {}", l.what),
            Step::RemoveRule { session, .. } => format!("Removed the rule of session {session}"),
            Step::LeaveShared { service } => format!("Left Service {ns}/{service}"),
            Step::ScaleBack { kind, name, .. } => format!("Scaled {kind:?} {ns}/{name} back"),
        }
    }

    fn is_shared_delete(&self) -> bool {
        matches!(self, Step::Delete { shared: true, .. })
    }
}

/// What undo steps need besides the cluster.
#[derive(Debug, Clone)]
pub struct UndoEnv {
    pub kube: Kube,
    /// The token every object this run creates carries.
    pub token: String,
    pub holder: String,
    pub timeout: Duration,
    pub progress: Progress,
}

/// The stack. Steps are pushed through a shared reference, so a setup future can record them
/// while the caller keeps the stack to run after that future is dropped (cancelled).
#[derive(Debug)]
pub struct Undo {
    steps: std::sync::Mutex<Vec<Step>>,
    token: String,
}

impl Default for Undo {
    fn default() -> Undo {
        Undo {
            steps: Default::default(),
            token: crate::random::id(16),
        }
    }
}

const ATTEMPTS: u32 = 3;

impl Undo {
    pub fn new() -> Undo {
        Undo::default()
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, Vec<Step>> {
        // No step panics while the lock is held (pushes and drains only).
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, step: Step) {
        self.steps().push(step);
    }

    /// The token this run marks its objects with ([`ownership::mark_created`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Records, before creating it, that `kind name` is to be deleted on undo; the returned
    /// slot takes the UID the create answers with.
    pub fn creating(&self, kind: ObjKind, name: &str, shared: bool) -> Made {
        let made = Made::default();
        self.push(Step::Delete {
            kind,
            name: name.to_string(),
            shared,
            made: made.clone(),
        });
        made
    }

    pub fn is_empty(&self) -> bool {
        self.steps().is_empty()
    }

    /// After a session's Lease exists, the shared objects are no longer this session's to
    /// delete: they are handed to "last one out" ([`Step::LeaveShared`], at the bottom, so it
    /// runs after everything of the session is gone). Returns the lock, for the caller to
    /// release now.
    pub fn settle_shared(&self, service: &str) -> Option<Lock> {
        let mut lock = None;
        let mut kept = vec![Step::LeaveShared {
            service: service.to_string(),
        }];
        let mut steps = self.steps();
        for s in steps.drain(..) {
            match s {
                Step::Unlock(l) => lock = Some(l),
                s if s.is_shared_delete() => {}
                Step::RestoreSelector { .. } => {}
                s => kept.push(s),
            }
        }
        *steps = kept;
        lock
    }

    /// Whether nothing but the lock was recorded (a setup refused during validation).
    pub fn holds_only_the_lock(&self) -> bool {
        self.steps().iter().all(|s| matches!(s, Step::Unlock(_)))
    }

    /// Takes the lock out of the stack (to release it early, keeping every other step).
    pub fn take_lock(&self) -> Option<Lock> {
        let mut steps = self.steps();
        let i = steps.iter().position(|s| matches!(s, Step::Unlock(_)))?;
        match steps.remove(i) {
            Step::Unlock(l) => Some(l),
            _ => None,
        }
    }

    /// Runs every step, last first. Returns [`Error::Leftovers`] naming what could not be
    /// undone (the rest was).
    pub async fn run(&self, env: &UndoEnv) -> Result<()> {
        let ns = env.kube.namespace.clone();
        let mut left: Vec<String> = Vec::new();
        let mut restore_failed = false;
        loop {
            let Some(step) = self.steps().pop() else {
                break;
            };
            let what = step.describe(&ns);
            let past = step.past(&ns);
            if restore_failed && step.is_shared_delete() {
                left.push(format!("{what} (kept: the Service still points at it)"));
                continue;
            }
            let is_restore = matches!(step, Step::RestoreSelector { .. });
            let quiet = matches!(step, Step::Unlock(_));
            if !quiet {
                env.progress.waiting(format!("undo: {what}"));
            }
            match run_step(step, env).await {
                Ok(()) if quiet => {}
                Ok(()) => env.progress.done(past),
                Err(e) => {
                    env.progress.warn(format!("could not {what}: {e}"));
                    restore_failed |= is_restore;
                    left.push(what);
                }
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::Leftovers {
                left: left.join("; "),
            })
        }
    }
}

async fn run_step(step: Step, env: &UndoEnv) -> Result<()> {
    let kube = &env.kube;
    match step {
        Step::Unlock(lock) => lock.release().await,
        Step::EndLease(keeper) => {
            // The Lease itself is deleted by the `Delete` step recorded before it was created.
            drop(keeper);
            Ok(())
        }
        Step::CloseTunnel(link) => {
            link.close().await;
            Ok(())
        }
        Step::StopLocal(l) => {
            (l.stop)().await;
            Ok(())
        }
        Step::Delete {
            kind, name, made, ..
        } => {
            let uid = made.uid();
            match retry(|| kind.delete_made(kube, &name, uid.as_deref(), &env.token)).await? {
                Deleted::NotOurs => env.progress.warn(format!(
                    "kept {kind} {}/{name}: it was not made by this session",
                    kube.namespace
                )),
                Deleted::Deleted | Deleted::Gone => {}
            }
            Ok(())
        }
        Step::RestoreSelector { service, ours } => {
            let restored = retry(|| {
                crate::lifecycle::teardown::restore_selector_if_ours(kube, &service, &ours)
            })
            .await?;
            if !restored {
                env.progress.warn(format!(
                    "kept Service {}/{service} as it is: it no longer selects this session's pods (another session holds it now)",
                    kube.namespace
                ));
            }
            Ok(())
        }
        Step::RemoveRule { service, session } => {
            retry(|| crate::lifecycle::teardown::remove_rule(kube, &service, &session)).await
        }
        Step::ScaleBack {
            kind,
            name,
            service,
            ours,
        } => {
            let still_ours = kube
                .get::<Service>(&service)
                .await?
                .is_some_and(|svc| crate::plan::takeover::selects_exactly(&svc, &ours));
            if !still_ours {
                env.progress.warn(format!(
                    "left {kind:?} {}/{name} as it is: Service {service} no longer selects this session's pods (whoever took it over scaled it back)",
                    kube.namespace
                ));
                return Ok(());
            }
            crate::lifecycle::scale::back(kube, kind, &name, &service, env.timeout, &env.progress)
                .await
        }
        Step::LeaveShared { service } => {
            crate::lifecycle::teardown::last_one_out(
                kube,
                &ServiceNames::new(service),
                &env.holder,
                env.timeout,
                &env.progress,
            )
            .await
        }
    }
}

/// Retries a failing step a few times with a short pause (API server hiccups).
async fn retry<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) => {
                tracing::debug!(attempt, error = %e, "undo step failed; retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
        }
    }
    Err(last.expect("the loop ran at least once"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn del(kind: ObjKind, name: &str, shared: bool) -> Step {
        Step::Delete {
            kind,
            name: name.into(),
            shared,
            made: Made::default(),
        }
    }

    fn shape(u: &Undo) -> Vec<String> {
        u.steps().iter().map(|s| s.describe("ns")).collect()
    }

    #[test]
    fn settling_hands_shared_objects_to_last_one_out() {
        let u = Undo::new();
        u.push(del(ObjKind::Service, "s-ktx-stuntman", true));
        u.push(del(ObjKind::Deployment, "s-ktx-router", true));
        u.push(Step::RestoreSelector {
            service: "s".into(),
            ours: BTreeMap::new(),
        });
        u.push(del(ObjKind::Lease, "s-ktx-mesh-a", false));
        assert!(u.settle_shared("s").is_none());
        assert_eq!(
            shape(&u),
            vec![
                "restore Service ns/s if no other session uses it".to_string(),
                "delete Lease ns/s-ktx-mesh-a".to_string(),
            ],
            "the session's own steps stay; last-one-out runs last"
        );
    }
}
