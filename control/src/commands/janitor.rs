//! `ktx janitor`: the in-cluster mode the Helm chart runs, one Deployment per namespace. It
//! looks at the namespace's session Leases every `--interval` and, once every session of a
//! Service has stopped renewing, does what `ktx clean` would: removes the dead sessions'
//! objects, scales back `exchange --mode scale` workloads, restores the Service's selector and
//! deletes the router, routes and stuntman — so a laptop that dies mid-session leaves a
//! working Service within about 20 seconds, without anyone running `ktx clean`.
//!
//! Two judgements are made on the janitor's own clock, never on the timestamps a developer's
//! machine wrote (laptop clocks drift):
//! - a session is dead when the janitor has not seen its Lease's `renewTime` change for
//!   `leaseDurationSeconds + --grace` ([`Renewals`]); a Lease it has not seen yet is alive;
//! - replicas elect one leader through the Lease [`JANITOR_ELECTION_LEASE`] ([`Election`]);
//!   only the leader acts, the others keep watching so that a takeover starts with history.
//!
//! `/metrics` (Prometheus text) and `/healthz` are served on `--metrics-addr` by the admin
//! server router and shadow share ([`ktx_telemetry::admin`]); logs go through `tracing`.

mod election;
mod metrics;
mod renewals;
mod rounds;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use election::{campaign, release};
use rounds::rounds;

pub use election::{Claim, Election, ELECTION_DURATION};
pub use metrics::{stuck_after, Metrics, STUCK_AFTER};
pub use renewals::Renewals;

use crate::cli::JanitorArgs;
use crate::error::{Error, Result};
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::shutdown::Shutdown;

/// `ktx janitor`: runs until SIGTERM.
pub async fn run(ctx: &Ctx, args: &JanitorArgs, shutdown: &Shutdown) -> Result<()> {
    let kube = &ctx.kube;
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| Error::BadName {
            what: format!("--metrics-addr {}", args.metrics_addr),
            reason: format!("cannot listen there ({e}); pick a free address, e.g. 0.0.0.0:9090"),
        })?;
    let (metrics, registry) =
        Metrics::registered(&kube.namespace, metrics::stuck_after(ctx.global.timeout));
    let started = tokio::time::Instant::now();
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ktx_telemetry::admin::serve(
        listener,
        ktx_telemetry::admin::Limits {
            header_timeout: args.admin_header_timeout,
        },
        {
            let metrics = Arc::clone(&metrics);
            let registry = std::sync::Mutex::new(registry);
            move |req: &http::Request<_>| metrics::respond(req, &metrics, &registry, started)
        },
        async move {
            let _ = admin_stopped.await;
        },
    ));
    // Two janitors started by hand on one machine must not share a name (both would "renew").
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{:04x}",
            crate::lifecycle::session::holder(),
            crate::random::below(0x10000)
        )
    });
    let mut election = Election::new(identity.clone());
    tracing::info!(
        identity,
        namespace = kube.namespace,
        interval = ?args.interval,
        metrics = %args.metrics_addr,
        "janitor watching the namespace"
    );
    let (publish, leadership) = watch::channel(None);
    tokio::select! {
        () = campaign(ctx, &mut election, args.interval, publish, &metrics) => {}
        () = rounds(ctx, args, leadership, &metrics, shutdown) => {}
    }
    // Whatever the last attempt returned (a reply lost to the cancel, a claim 7.5–15 s old):
    // `release` gives the Lease up only if it still names us.
    release(kube, &election).await;
    let _ = stop_admin.send(());
    let _ = server.await;
    tracing::info!(identity, "janitor stopped");
    Ok(())
}
