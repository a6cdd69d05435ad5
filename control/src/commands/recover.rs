//! `ktx recover SERVICE`: gives a Service back its original selector and removes every ktx object
//! of it, live sessions included. For a Service that is stuck (a bug, a hand edit, a session that
//! cannot be reached); the developers whose sessions are cut see their Lease disappear and their
//! ktx ends by itself.

use ktx_names::ServiceNames;

use crate::cli::{Output, RecoverArgs};
use crate::error::Result;
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::teardown;

pub async fn run(ctx: &Ctx, args: &RecoverArgs) -> Result<()> {
    let names = ServiceNames::new(args.service.as_str());
    let leases = crate::lifecycle::liveness::session_leases(&ctx.kube, names.service()).await?;
    let live: Vec<String> = leases
        .iter()
        .filter(|l| crate::lifecycle::liveness::is_alive(l))
        .map(kube::ResourceExt::name_any)
        .collect();
    if !live.is_empty() {
        ctx.progress.warn(format!(
            "ending live session(s) {} of Service {}/{}",
            live.join(", "),
            ctx.kube.namespace,
            names.service()
        ));
    }
    teardown::leave_service(
        &ctx.kube,
        &names,
        &ctx.holder,
        ctx.global.timeout,
        &ctx.progress,
        teardown::Judge::Force,
    )
    .await?;
    match ctx.global.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "service": names.service(),
                "namespace": ctx.kube.namespace,
                "recovered": true,
                "endedSessions": live,
            })
        ),
        Output::Text => println!(
            "Service {}/{} is restored; no ktx object of it is left.",
            ctx.kube.namespace,
            names.service()
        ),
    }
    Ok(())
}
