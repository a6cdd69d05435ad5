//! `ktx exchange SERVICE`: all traffic of the Service goes to the developer's process.
//!
//! Selector mode: lock S → validate (S free) → session Lease → shadow Secret and Pod (its
//! container ports carry S's target port names) → tunnel → shadow Ready → switch S's selector to
//! the shadow pod (original saved in the same update) → unlock. The switch comes last so S never
//! points at a pod that cannot answer. Teardown restores S first, then removes the rest.
//!
//! Scale mode (`--mode scale`) also scales the workloads behind S to 0 after the switch, and
//! back (waiting for them) before S is restored.

use k8s_openapi::api::core::v1::Service;
use ktx_names::{mode, ServiceNames};

use crate::cli::{ExchangeArgs, ExchangeMode};
use crate::error::{Error, Result};
use crate::lifecycle::command::LocalCommand;
use crate::lifecycle::flow::{self, Ctx, Ready};
use crate::lifecycle::lock;
use crate::lifecycle::scale;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::steps;
use crate::lifecycle::undo::{Step, Undo};
use crate::lifecycle::workload_env;
use crate::objects::lease::{holder_and_since, LeaseParams};
use crate::objects::shadow::{NotTaken, ShadowParams};
use crate::objects::{check_name, shadow_selector};
use crate::plan::takeover::{self, State};

pub async fn run(ctx: &Ctx, args: &ExchangeArgs, shutdown: &Shutdown) -> Result<()> {
    crate::plan::expose::check_list(&args.expose.expose)?;
    let service = args.service.resolve(&ctx.kube).await?;
    let names = ServiceNames::new(service.as_str());
    let session = crate::plan::rule::random_id();
    check_name(&service)?;
    check_name(&names.exchange(&session))?;
    let env = workload_env::prepare(ctx, &service, &args.workload, shutdown).await?;
    let command = LocalCommand::of(&args.workload, env);
    let undo = Undo::new();
    flow::session_with(
        ctx,
        shutdown,
        &undo,
        setup(ctx, &names, args, &session, &undo),
        command,
    )
    .await
}

async fn setup(
    ctx: &Ctx,
    names: &ServiceNames,
    args: &ExchangeArgs,
    session: &str,
    undo: &Undo,
) -> Result<Ready> {
    let kube = &ctx.kube;
    let ns = kube.namespace.as_str();
    let service = names.service();
    let p = &ctx.progress;
    let timeout = ctx.global.timeout;

    // Leftovers of crashed sessions first (inside setup, so Ctrl-C can stop it).
    crate::lifecycle::expired::sweep(ctx, names).await;

    let the_lock = lock::acquire(kube, service, &ctx.holder, timeout, p).await?;
    let token = the_lock.token().to_string();
    undo.push(Step::Unlock(the_lock));

    let svc = steps::service(ctx, service).await?;
    let original = match takeover::state(&svc, ns)? {
        State::Free { selector } => selector,
        State::Taken { mode: m, .. } => {
            let holder = crate::lifecycle::liveness::session_leases(kube, service)
                .await?
                .iter()
                .find(|l| crate::lifecycle::liveness::is_alive(l))
                .map(|l| holder_and_since(l).0)
                .unwrap_or_else(|| "a session that has ended (run `ktx clean`)".into());
            return Err(Error::TakenOver {
                namespace: ns.to_string(),
                service: service.to_string(),
                mode: m,
                holder,
            });
        }
    };
    let plan = steps::ports(ctx, &svc, &original, &args.expose.expose).await?;

    let name = names.exchange(session);
    let lease = steps::session_lease(
        ctx,
        undo,
        names,
        &LeaseParams {
            name: &name,
            session,
            holder: &ctx.holder,
            mode: mode::EXCHANGE,
            rule: "all traffic",
        },
    )
    .await?;

    let targets = plan.targets();
    steps::check_local_ports(ctx, &plan.exposed, "get a 503 naming your session").await;
    let pod = ctx.global.pod_settings();
    let sp = ShadowParams {
        name: &name,
        namespace: ns,
        service,
        session,
        mode: mode::EXCHANGE,
        image: &ctx.global.shadow_image,
        targets: &targets,
        exposed: &plan.exposed,
        not_taken: NotTaken::Reject,
        pod: &pod,
    };
    let tunnel = flow::start_shadow(ctx, undo, &sp, &lease.owner, false).await?;

    let ours = shadow_selector(service, session);
    undo.push(Step::RestoreSelector {
        service: service.to_string(),
        ours: ours.clone(),
    });
    kube.modify::<Service, _>(service, |svc| {
        lock::ensure_ours(svc, service, &token)?;
        takeover::switch(svc, &ours, mode::EXCHANGE, ns)
    })
    .await?;
    p.done(format!(
        "Service {ns}/{service} now selects your shadow pod"
    ));
    if args.mode == ExchangeMode::Scale {
        for (kind, name) in scale::workloads(kube, &original).await? {
            undo.push(Step::ScaleBack {
                kind,
                name: name.clone(),
                service: service.to_string(),
                ours: ours.clone(),
            });
            scale::down(kube, kind, &name, service).await?;
            p.done(format!(
                "Scaled {kind:?} {ns}/{name} to 0 (scaled back when the session ends)"
            ));
        }
    }
    if let Some(l) = undo.take_lock() {
        l.release().await?;
    }

    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_else(|| "CLUSTER-IP".into());
    let mut text = vec![format!(
        "All requests to Service {ns}/{service} now reach this machine."
    )];
    let mut curls = Vec::new();
    for e in &plan.exposed {
        let curl = format!("curl http://{ip}:{}/", e.port);
        text.push(format!(
            "  local 127.0.0.1:{} — from a pod: {curl}",
            e.local
        ));
        curls.push(curl);
    }
    let json = serde_json::json!({
        "command": "exchange",
        "namespace": ns,
        "service": service,
        "session": session,
        "clusterIP": ip,
        "curl": curls,
    });
    Ok(Ready {
        text,
        json,
        lost: lease.lost.clone(),
        tunnel,
        local: lease.local(plan.exposed.clone()),
    })
}
