//! One round after another: list the session Leases, record their renewals and, while this
//! replica leads, clean every Service whose sessions all stopped renewing.

use k8s_openapi::api::coordination::v1::Lease;
use ktx_names::{role, ServiceNames, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY_VALUE};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use super::election::{leadership_lost, leads, Leadership};
use super::metrics::Metrics;
use super::renewals::Renewals;
use crate::clean;
use crate::cli::JanitorArgs;
use crate::flow::Ctx;
use crate::leave::Judge;
use crate::shutdown::Shutdown;

/// One round as the leader: clean every Service that ktx objects refer to, judging sessions
/// by `renewals`; stops before the next Service when our leadership may have passed.
async fn act(ctx: &Ctx, renewals: &Renewals, leadership: &Leadership, metrics: &Metrics) {
    let services = match clean::services_in_use(ctx).await {
        Ok(s) => s,
        Err(e) => {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
            ctx.progress
                .warn(format!("could not list ktx objects: {e}; retrying"));
            return;
        }
    };
    for s in services {
        let now = Instant::now();
        if !leads(leadership, now) {
            return;
        }
        let alive = |l: &Lease| renewals.alive(l, now);
        let names = ServiceNames::new(s.clone());
        match clean::service_judged(ctx, &names, false, Judge::With(&alive)).await {
            Ok(r) => {
                let n = r.expired_sessions.len() as u64;
                metrics.sessions_removed.fetch_add(n, Ordering::Relaxed);
                metrics
                    .orphans_removed
                    .fetch_add(r.orphans.len() as u64, Ordering::Relaxed);
                if n > 0 || !r.orphans.is_empty() {
                    ctx.progress.done(format!(
                        "Service {}/{s}: removed expired session(s) [{}] and leftover(s) [{}]",
                        ctx.kube.namespace,
                        r.expired_sessions.join(", "),
                        r.orphans.join(", ")
                    ));
                }
                if r.restored {
                    metrics.restorations.fetch_add(1, Ordering::Relaxed);
                    ctx.progress.done(format!(
                        "Service {}/{s}: restored (no live session left)",
                        ctx.kube.namespace
                    ));
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.warn(format!(
                    "Service {}/{s}: could not clean up: {e}; retrying next round",
                    ctx.kube.namespace
                ));
            }
        }
    }
}

/// The janitor's rounds, until SIGTERM: watch the session Leases and, while leading, act. A
/// round is cut short the moment leadership may have passed (a scale-back can wait for
/// minutes); what it left half done is idempotent work for whoever leads next.
pub(super) async fn rounds(
    ctx: &Ctx,
    args: &JanitorArgs,
    leadership: Leadership,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let mut renewals = Renewals::new(args.grace);
    let sessions = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_ROLE}={}",
        role::SESSION
    );
    loop {
        metrics.rounds.fetch_add(1, Ordering::Relaxed);
        metrics.leader.store(
            u64::from(leads(&leadership, Instant::now())),
            Ordering::Relaxed,
        );
        match ctx.kube.list::<Lease>(&sessions).await {
            Ok(leases) => {
                let now = Instant::now();
                renewals.observe(&leases, now);
                let live = leases.iter().filter(|l| renewals.alive(l, now)).count();
                metrics.sessions_live.store(live as u64, Ordering::Relaxed);
                metrics
                    .sessions_expired
                    .store((leases.len() - live) as u64, Ordering::Relaxed);
                if leads(&leadership, Instant::now()) {
                    tokio::select! {
                        () = act(ctx, &renewals, &leadership, metrics) => {}
                        () = leadership_lost(&leadership) => ctx.progress.warn(
                            "leadership may have passed to another replica; stopping this round"
                        ),
                        // Cut rather than be killed mid-way by the kubelet without releasing.
                        _ = shutdown.reached(1) => return,
                    }
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress
                    .warn(format!("could not list session Leases: {e}; retrying"));
            }
        }
        metrics.round_done(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = shutdown.reached(1) => return,
        }
    }
}
