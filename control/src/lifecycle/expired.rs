//! Expired sessions of one Service: what they left behind is removed and the Service restored
//! when no live session is left. A session is expired when its Lease has not been renewed for
//! `leaseDurationSeconds` plus a grace; a live session is never touched. `ktx clean` runs this
//! for every Service ktx touched, the janitor with its own judgement, and `mesh`, `exchange` and
//! `preview` run [`sweep`] on the Service they are about to use, so leftovers of a crash
//! disappear on the next use.
//!
//! Order matters against sessions starting concurrently: shadows and rules are listed BEFORE
//! the Leases, so any shadow or rule seen belongs to a Lease that already existed when the
//! Leases were listed (setup creates the Lease first) — nothing new is mistaken for an orphan.
//!
//! An orphan is an object that names, as its owner, the UID of a session Lease that no longer
//! exists ([`crate::plan::ownership`]). Objects with ktx's labels but no such owner — a team's copy of
//! a manifest, objects of an older ktx — are left alone and logged.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ktx_names::{role, ServiceNames};
use kube::ResourceExt;
use serde::Serialize;

use crate::error::Result;
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::teardown::{self, Judge};
use crate::objects::{labels, routes, selector_string};
use crate::plan::ownership;
use crate::plan::takeover;

/// What a clean of one Service did (or would do, in a dry run).
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub service: String,
    pub expired_sessions: Vec<String>,
    pub orphans: Vec<String>,
    pub live_sessions: Vec<String>,
    /// Whether S was restored and the shared objects deleted.
    pub restored: bool,
}

/// Cleans expired leftovers of `names` before another command uses it; failures only warn.
///
/// Only that Service: sessions are judged here on this machine's clock, and a laptop whose
/// clock runs ahead must not be able to end teammates' sessions all over the namespace (the
/// janitor judges on its own observations instead, and `ktx clean` is asked for explicitly).
pub async fn sweep(ctx: &Ctx, names: &ServiceNames) {
    match service(ctx, names, false).await {
        Ok(r) if !r.expired_sessions.is_empty() || !r.orphans.is_empty() || r.restored => {
            ctx.progress.done(format!(
                "Cleaned up after expired sessions of Service {}/{}",
                ctx.kube.namespace,
                names.service()
            ))
        }
        Ok(_) => {}
        Err(e) => ctx.progress.warn(format!(
            "could not clean up expired sessions of Service {}/{}: {e}",
            ctx.kube.namespace,
            names.service()
        )),
    }
}

/// Cleans one Service, judging sessions by this machine's clock (with the cleanup grace).
pub async fn service(ctx: &Ctx, names: &ServiceNames, dry_run: bool) -> Result<Report> {
    let (_, verdict) = crate::lifecycle::liveness::observe(&ctx.kube, names.service()).await?;
    service_judged(ctx, names, dry_run, Judge::With(&|l| verdict.alive(l))).await
}

/// Cleans one Service, judging which sessions are alive with `judge`.
pub async fn service_judged(
    ctx: &Ctx,
    names: &ServiceNames,
    dry_run: bool,
    judge: Judge<'_>,
) -> Result<Report> {
    let kube = &ctx.kube;
    let s = names.service();
    let mut report = Report {
        service: s.to_string(),
        ..Default::default()
    };
    // Listed before the Leases: see the module docs.
    let shadow_sel = selector_string(&labels(s, role::SHADOW, None));
    let shadows: Vec<Pod> = kube.list::<Pod>(&shadow_sel).await?;
    let shadow_svcs: Vec<Service> = kube.list::<Service>(&shadow_sel).await?;
    let rules = match kube.get::<ConfigMap>(&names.routes()).await? {
        Some(cm) => routes::read(names, &cm)
            .map(|r| r.rules)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let leases = crate::lifecycle::liveness::session_leases(kube, s).await?;
    let exists = |name: &str| leases.iter().any(|l| l.name_any() == name);
    let lease_uids: BTreeSet<String> = leases.iter().filter_map(|l| l.uid()).collect();
    // An orphan names a session Lease that is gone; without an owner, it is not ktx's to judge.
    let orphaned = |m: &ObjectMeta| match ownership::session_uid(m) {
        Some(uid) => !lease_uids.contains(uid),
        None => {
            tracing::info!(name = ?m.name, "left alone: ktx's labels but no session owner");
            false
        }
    };

    for l in &leases {
        if judge.alive(l) {
            report.live_sessions.push(l.name_any());
        } else {
            report.expired_sessions.push(l.name_any());
            if !dry_run {
                teardown::remove_session(kube, names, l).await?;
            }
        }
    }
    // Pods already on their way out are not leftovers.
    let pods: Vec<&Pod> = shadows
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && orphaned(&p.metadata))
        .collect();
    let svcs: Vec<&Service> = shadow_svcs
        .iter()
        .filter(|s| orphaned(&s.metadata))
        .collect();
    let orphan_names: BTreeSet<String> = pods
        .iter()
        .map(|p| p.name_any())
        .chain(svcs.iter().map(|s| s.name_any()))
        .collect();
    report
        .orphans
        .extend(orphan_names.iter().map(|n| format!("shadow {n}")));
    if !dry_run {
        // Their Secrets are owned by the (gone) Lease: the garbage collector has taken them.
        for svc in svcs {
            if let Some(uid) = svc.uid() {
                kube.delete_uid::<Service>(&svc.name_any(), &uid).await?;
            }
        }
        for pod in pods {
            if let Some(uid) = pod.uid() {
                kube.delete_uid::<Pod>(&pod.name_any(), &uid).await?;
            }
        }
    }
    let orphan_rules: Vec<String> = rules
        .iter()
        .filter(|r| r.lease.as_deref().is_none_or(|l| !exists(l)))
        .map(|r| r.session.clone())
        .collect();
    if !orphan_rules.is_empty() {
        report
            .orphans
            .extend(orphan_rules.iter().map(|r| format!("rule of session {r}")));
        if !dry_run {
            teardown::remove_rules(kube, names, |r| orphan_rules.contains(&r.session)).await?;
        }
    }

    if report.live_sessions.is_empty() {
        let taken = match kube.get::<Service>(s).await? {
            Some(svc) => matches!(
                takeover::state(&svc, &kube.namespace),
                Ok(takeover::State::Taken { .. })
            ),
            None => false,
        };
        if taken || teardown::has_shared(kube, names).await? {
            // A dry run says what would happen; a real one what did (a session that started
            // meanwhile keeps S).
            report.restored = true;
            if !dry_run {
                report.restored = teardown::leave_service(
                    kube,
                    names,
                    &ctx.holder,
                    ctx.global.timeout,
                    &ctx.progress,
                    judge,
                )
                .await?;
            }
        }
    }
    Ok(report)
}
