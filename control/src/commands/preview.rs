//! `ktx preview NAME`: the developer's process becomes Service NAME in the cluster for as long
//! as the session runs. Order: session Lease → shadow Secret and Pod → tunnel → shadow Ready →
//! Service NAME (so the Service never exists without something behind it). Teardown deletes the
//! Service first.

use k8s_openapi::api::core::v1::Service;
use ktx_names::{mode, ServiceNames};

use crate::cli::{External, PreviewArgs};
use crate::error::{Error, Result};
use crate::lifecycle::flow::{self, Ctx, Ready};
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::steps;
use crate::lifecycle::undo::{ObjKind, Undo};
use crate::objects::lease::LeaseParams;
use crate::objects::shadow::{NotTaken, ShadowParams};
use crate::objects::{check_name, preview};
use crate::plan::ports::PortPlan;

pub async fn run(ctx: &Ctx, args: &PreviewArgs, shutdown: &Shutdown) -> Result<()> {
    crate::plan::expose::check_list(&args.expose)?;
    let names = ServiceNames::new(args.name.as_str());
    check_name(&args.name)?;
    check_name(&names.preview())?;
    let plan = PortPlan::for_new_service(&args.expose)?;
    let undo = Undo::new();
    let setup = setup(ctx, &names, &plan, args.external, &undo);
    flow::session(ctx, shutdown, &undo, setup).await
}

async fn setup(
    ctx: &Ctx,
    names: &ServiceNames,
    plan: &PortPlan,
    external: Option<External>,
    undo: &Undo,
) -> Result<Ready> {
    let kube = &ctx.kube;
    let ns = kube.namespace.as_str();
    let service = names.service();

    // Leftovers of crashed sessions first (inside setup, so Ctrl-C can stop it).
    crate::lifecycle::expired::sweep(ctx, names).await;
    if kube.get::<Service>(service).await?.is_some() {
        return Err(Error::PreviewExists {
            namespace: ns.to_string(),
            name: service.to_string(),
        });
    }
    let session = crate::plan::rule::random_id();
    let name = names.preview();
    let lease = steps::session_lease(
        ctx,
        undo,
        names,
        &LeaseParams {
            name: &name,
            session: &session,
            holder: &ctx.holder,
            mode: mode::PREVIEW,
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
        session: &session,
        mode: mode::PREVIEW,
        image: &ctx.global.shadow_image,
        targets: &targets,
        exposed: &plan.exposed,
        not_taken: NotTaken::Reject,
        pod: &pod,
    };
    let tunnel = flow::start_shadow(ctx, undo, &sp, &lease.owner, false).await?;

    let svc = flow::create_own(
        ctx,
        undo,
        ObjKind::Service,
        false,
        preview::service(service, ns, &session, plan, external),
        Some(&lease.owner),
    )
    .await
    .map_err(|e| match e {
        Error::NotOurs { .. } => Error::PreviewExists {
            namespace: ns.to_string(),
            name: service.to_string(),
        },
        e => e,
    })?;
    ctx.progress.done(format!(
        "Created Service {ns}/{service} in front of your shadow pod"
    ));

    let outside = external
        .map(|_| outside_addresses(&svc))
        .unwrap_or_default();
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_else(|| "CLUSTER-IP".into());
    let mut text = vec![format!(
        "Service {ns}/{service} now exists and reaches this machine."
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
    for o in &outside {
        text.push(format!("  from outside the cluster: curl http://{o}/"));
    }
    if external == Some(External::NodePort) {
        text.push("  (NODE: any node's address, `kubectl get nodes -o wide`)".into());
    }
    let json = serde_json::json!({
        "external": outside,
        "command": "preview",
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

/// Where a LoadBalancer or NodePort Service is reached from outside: `HOST:PORT` per port,
/// with the load balancer's address when the cloud assigned one already, else `NODE`.
fn outside_addresses(svc: &Service) -> Vec<String> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| match &ingress {
            Some(host) => Some(format!("{host}:{}", p.port)),
            None => p.node_port.map(|n| format!("NODE:{n}")),
        })
        .collect()
}
