//! Leaving a Service: the steps shared by a session's teardown, `ktx clean` and `ktx recover`.
//!
//! Per-session objects (rule, shadow Pod/Service/Secret, Lease) are removed without the lock:
//! they belong to one session. The shared ones (S's selector, router, routes, stuntman) are
//! handled by [`last_one_out`] under the lock on S, and only when no live session of S remains;
//! S is restored before anything it may point at is deleted.
//!
//! Nothing is deleted by name: a session's objects only if they name the UID of the Lease being
//! removed, the shared ones only if ktx made them for S ([`crate::plan::ownership`]), each with its
//! UID as the delete's precondition. A Lease that someone else made with ktx's labels owns
//! nothing, so removing "its" session deletes at most that Lease.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ktx_names::{mode, ServiceNames, LABEL_MODE};
use ktx_rules::RuleSpec;
use kube::ResourceExt;

use crate::cluster::api::{Deleted, Kube};
use crate::error::{Error, Result};
use crate::objects::lease::holder_and_since;
use crate::objects::routes;
use crate::plan::ownership;
use crate::plan::takeover;
use crate::progress::Progress;

/// How long after restoring a meshed Service's selector the router and stuntman stay, so that
/// connections kube-proxy still sends to the router are answered (measured: one unmarked
/// request in 250 failed with 503 when the stuntman went at once).
pub const KUBE_PROXY_SETTLE: Duration = Duration::from_secs(2);

/// Gives Service `service` its original selector back (nothing to do if it is not taken over
/// or gone).
/// Restores S's original selector, but only while S still selects `ours` (the pods this
/// session switched it to): a session ended elsewhere (`ktx recover`, the janitor) whose ktx
/// notices late must leave alone a Service a teammate has taken since. Returns whether S
/// still selected `ours` (then it was restored).
pub async fn restore_selector_if_ours(
    kube: &Kube,
    service: &str,
    ours: &takeover::Selector,
) -> Result<bool> {
    let ns = kube.namespace.clone();
    let mut matched = false;
    kube.modify::<Service, _>(service, |svc| {
        matched = takeover::selects_exactly(svc, ours);
        match matched {
            true => takeover::restore(svc, &ns),
            false => Ok(false),
        }
    })
    .await?;
    Ok(matched)
}

pub async fn restore_selector(kube: &Kube, service: &str) -> Result<()> {
    let ns = kube.namespace.clone();
    kube.modify::<Service, _>(service, |svc| takeover::restore(svc, &ns))
        .await?;
    Ok(())
}

/// Removes the rules `drop` selects from S's routes ConfigMap; returns how many.
pub async fn remove_rules(
    kube: &Kube,
    names: &ServiceNames,
    drop: impl Fn(&RuleSpec) -> bool,
) -> Result<usize> {
    let mut removed = 0;
    kube.modify::<ConfigMap, _>(&names.routes(), |cm| {
        if !ownership::is_shared_of(&cm.metadata, names.service()) {
            removed = 0;
            return Ok(false);
        }
        let spec = routes::read(names, cm)?;
        match routes::without_dead(&spec, |r| !drop(r)) {
            Some(smaller) => {
                removed = spec.rules.len() - smaller.rules.len();
                routes::write(cm, &smaller);
                Ok(true)
            }
            None => {
                removed = 0;
                Ok(false)
            }
        }
    })
    .await?;
    Ok(removed)
}

/// Removes the rule of `session` (the first step of every teardown).
pub async fn remove_rule(kube: &Kube, service: &str, session: &str) -> Result<()> {
    remove_rules(kube, &ServiceNames::new(service), |r| r.session == session).await?;
    Ok(())
}

fn lease_mode(lease: &Lease) -> String {
    lease
        .labels()
        .get(LABEL_MODE)
        .cloned()
        .unwrap_or_else(|| mode::MESH.to_string())
}

/// Removes every object of the session that `lease` stands for, rule first, Lease last: each
/// only if it names this Lease's UID as its owner. The Secret is not read: it lists the Pod and
/// the Lease as owners, and the garbage collector deletes it with them.
pub async fn remove_session(kube: &Kube, names: &ServiceNames, lease: &Lease) -> Result<()> {
    let name = lease.name_any();
    let Some(uid) = lease.uid() else {
        return Ok(());
    };
    let mine = |m: &ObjectMeta| ownership::owned_by_session(m, &name, &uid);
    match lease_mode(lease).as_str() {
        mode::PREVIEW => {
            kube.delete_checked::<Service>(names.service(), |s| mine(&s.metadata))
                .await?;
        }
        mode::EXCHANGE | mode::CONNECT => {}
        _ => {
            remove_rules(kube, names, |r| r.lease.as_deref() == Some(name.as_str())).await?;
            kube.delete_checked::<Service>(&name, |s| mine(&s.metadata))
                .await?;
        }
    }
    kube.delete_checked::<Pod>(&name, |p| mine(&p.metadata))
        .await?;
    kube.delete_uid::<Lease>(&name, &uid).await?;
    Ok(())
}

/// Deletes the router (and its own account, if it had one), the routes ConfigMap and the
/// stuntman of S — each only if ktx made it for S. Only call when S no longer points at the
/// router.
pub async fn delete_shared(kube: &Kube, names: &ServiceNames, progress: &Progress) -> Result<()> {
    let ns = &kube.namespace;
    let service = names.service();
    let ours = |m: &ObjectMeta| ownership::is_shared_of(m, service);
    let mut kept = Vec::new();
    let mut note = |what: String, d: Deleted| {
        if d == Deleted::NotOurs {
            kept.push(what);
        }
    };
    let router = kube.get::<Deployment>(&names.router()).await?;
    let account = router.as_ref().and_then(|d| {
        d.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .service_account_name
            .clone()
    });
    if let Some(d) = &router {
        let done = match d.uid() {
            Some(uid) if ours(&d.metadata) => {
                kube.delete_uid::<Deployment>(&names.router(), &uid).await?
            }
            _ => Deleted::NotOurs,
        };
        note(format!("Deployment {ns}/{}", names.router()), done);
    }
    // A router that ran as the chart's shared account leaves no account of its own (and the
    // developer's Role from the chart has no rights on Roles); otherwise delete what exists.
    let own = account.is_none_or(|a| a == names.router_account())
        && kube
            .get::<ServiceAccount>(&names.router_account())
            .await?
            .is_some_and(|sa| ours(&sa.metadata));
    if own {
        let n = names.router_account();
        let d = kube
            .delete_checked::<RoleBinding>(&n, |o| ours(&o.metadata))
            .await?;
        note(format!("RoleBinding {ns}/{n}"), d);
        let d = kube
            .delete_checked::<Role>(&n, |o| ours(&o.metadata))
            .await?;
        note(format!("Role {ns}/{n}"), d);
        let d = kube
            .delete_checked::<ServiceAccount>(&n, |o| ours(&o.metadata))
            .await?;
        note(format!("ServiceAccount {ns}/{n}"), d);
    }
    progress.done(format!("Deleted router {ns}/{}", names.router()));
    let d = kube
        .delete_checked::<ConfigMap>(&names.routes(), |o| ours(&o.metadata))
        .await?;
    note(format!("ConfigMap {ns}/{}", names.routes()), d);
    let d = kube
        .delete_checked::<Service>(&names.stuntman(), |o| ours(&o.metadata))
        .await?;
    note(format!("Service {ns}/{}", names.stuntman()), d);
    progress.done(format!(
        "Deleted ConfigMap {ns}/{} and Service {ns}/{}",
        names.routes(),
        names.stuntman()
    ));
    if !kept.is_empty() {
        progress.warn(format!(
            "kept {}: named like ktx's objects of Service {ns}/{service}, but not made by ktx",
            kept.join(", ")
        ));
    }
    Ok(())
}

/// Whether any shared object of S exists (a setup that died before switching S leaves some).
pub async fn has_shared(kube: &Kube, names: &ServiceNames) -> Result<bool> {
    Ok(kube.get::<Deployment>(&names.router()).await?.is_some()
        || kube.get::<ConfigMap>(&names.routes()).await?.is_some()
        || kube.get::<Service>(&names.stuntman()).await?.is_some())
}

/// Last one out: under the lock on S, if no live session of S remains, removes the dead
/// sessions' leftovers, restores S, then deletes the shared objects.
pub async fn last_one_out(
    kube: &Kube,
    names: &ServiceNames,
    holder: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<()> {
    let (_, verdict) = crate::lifecycle::liveness::observe(kube, names.service()).await?;
    let judge = |l: &Lease| verdict.alive(l);
    leave_service(kube, names, holder, timeout, progress, Judge::With(&judge))
        .await
        .map(|_| ())
}

/// How [`leave_service`] decides which sessions are alive.
#[derive(Clone, Copy)]
pub enum Judge<'a> {
    /// [`crate::lifecycle::liveness::is_alive`]: renewTime + duration + grace against this machine's clock. Destructive
    /// decisions use [`crate::lifecycle::liveness`] instead (observed change).
    WallClock,
    /// Every session counts as dead (`ktx recover`).
    Force,
    /// The caller's own judgement (the janitor watches renewals on its own clock).
    With(&'a (dyn Fn(&Lease) -> bool + Sync)),
}

impl Judge<'_> {
    pub fn alive(&self, lease: &Lease) -> bool {
        match self {
            Judge::WallClock => crate::lifecycle::liveness::is_alive(lease),
            Judge::Force => false,
            Judge::With(f) => f(lease),
        }
    }
}

/// [`last_one_out`] with sessions judged by `judge` ([`Judge::Force`]: `ktx recover`).
/// Returns whether S was left (false: a live session keeps it).
pub async fn leave_service(
    kube: &Kube,
    names: &ServiceNames,
    holder: &str,
    timeout: Duration,
    progress: &Progress,
    judge: Judge<'_>,
) -> Result<bool> {
    let ns = &kube.namespace;
    let service = names.service();
    let lock = match crate::lifecycle::lock::acquire(kube, service, holder, timeout, progress).await
    {
        Ok(l) => Some(l),
        // S itself was deleted: nothing to restore, the rest can still go.
        Err(Error::ServiceNotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let result = async {
        let leases = crate::lifecycle::liveness::session_leases(kube, service).await?;
        let (live, dead): (Vec<Lease>, Vec<Lease>) =
            leases.into_iter().partition(|l| judge.alive(l));
        if !live.is_empty() {
            let who: Vec<String> = live
                .iter()
                .map(|l| format!("{} ({})", l.name_any(), holder_and_since(l).0))
                .collect();
            progress.done(format!(
                "Service {ns}/{service} stays taken over for {} live session(s): {}",
                live.len(),
                who.join(", ")
            ));
            return Ok(false);
        }
        for l in &dead {
            remove_session(kube, names, l).await?;
            progress.done(format!("Removed session {ns}/{}", l.name_any()));
        }
        let mut restored_mesh = false;
        if let Some(svc) = kube.get::<Service>(service).await? {
            if let Ok(takeover::State::Taken { mode: m, .. }) = takeover::state(&svc, ns) {
                if m == mode::EXCHANGE {
                    crate::lifecycle::scale::back_all(kube, service, timeout, progress).await?;
                }
                restore_selector(kube, service).await?;
                restored_mesh = m == mode::MESH;
                progress.done(format!("Restored the selector of Service {ns}/{service}"));
            }
        }
        if has_shared(kube, names).await? {
            if restored_mesh {
                // Nodes' kube-proxies follow the selector change within about a second; until
                // then new connections still reach the router, which sends unmarked requests
                // to the stuntman. Deleting the stuntman at once would fail those requests.
                tokio::time::sleep(KUBE_PROXY_SETTLE).await;
            }
            delete_shared(kube, names, progress).await?;
        }
        Ok(true)
    }
    .await;
    if let Some(lock) = lock {
        let released = lock.release().await;
        let left = result?;
        released.map(|_| left)
    } else {
        result
    }
}
