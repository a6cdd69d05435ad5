//! One round after another: list the session Leases, record their renewals and, while this
//! replica leads, clean every Service whose sessions all stopped renewing.

use k8s_openapi::api::coordination::v1::Lease;
use ktx_names::{role, ServiceNames, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY_VALUE};
use tokio::time::Instant;

use super::election::{leadership_lost, leads, Leadership};
use super::metrics::Metrics;
use super::renewals::Renewals;
use crate::cli::JanitorArgs;
use crate::commands::clean;
use crate::lifecycle::expired;
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::teardown::Judge;

/// One round as the leader: clean every Service that ktx objects refer to, judging sessions
/// by `renewals`; stops before the next Service when our leadership may have passed.
async fn act(ctx: &Ctx, renewals: &Renewals, leadership: &Leadership, metrics: &Metrics) {
    let services = match clean::services_in_use(ctx).await {
        Ok(s) => s,
        Err(e) => {
            metrics.errors.inc();
            tracing::warn!(error = %e, "could not list ktx objects; retrying");
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
        match expired::service_judged(ctx, &names, false, Judge::With(&alive)).await {
            Ok(r) => {
                metrics
                    .sessions_removed
                    .inc_by(r.expired_sessions.len() as u64);
                metrics.orphans_removed.inc_by(r.orphans.len() as u64);
                if !r.expired_sessions.is_empty() || !r.orphans.is_empty() {
                    tracing::info!(
                        service = %s,
                        sessions = ?r.expired_sessions,
                        leftovers = ?r.orphans,
                        "removed expired sessions and leftovers"
                    );
                }
                if r.restored {
                    metrics.restorations.inc();
                    tracing::info!(service = %s, "restored the Service: no live session left");
                }
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::warn!(service = %s, error = %e, "could not clean up; retrying next round");
            }
        }
        // One Service done (or given up on) is progress: a round of many slow ones is not
        // stuck (`/healthz`).
        metrics.progressed(Instant::now());
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
        metrics.rounds.inc();
        metrics
            .leader
            .set(i64::from(leads(&leadership, Instant::now())));
        match ctx.kube.list::<Lease>(&sessions).await {
            Ok(leases) => {
                let now = Instant::now();
                renewals.observe(&leases, now);
                let live = leases.iter().filter(|l| renewals.alive(l, now)).count();
                metrics.set_sessions(live, leases.len() - live);
                if leads(&leadership, Instant::now()) {
                    tokio::select! {
                        () = act(ctx, &renewals, &leadership, metrics) => {}
                        () = leadership_lost(&leadership) => tracing::warn!(
                            "leadership may have passed to another replica; stopping this round"
                        ),
                        // Cut rather than be killed mid-way by the kubelet without releasing.
                        _ = shutdown.reached(1) => return,
                    }
                }
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::warn!(error = %e, "could not list session Leases; retrying");
            }
        }
        metrics.progressed(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = shutdown.reached(1) => return,
        }
    }
}
