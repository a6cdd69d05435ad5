//! `ktx mesh S --mode manual` (kt-connect's Istio mode): only the developer's shadow pod, with
//! the labels of S's workload plus `KEY: MARK` of `--versionMark`, so that a service mesh routes
//! the mark to it. No router, no stuntman, no routes, and S is not touched; ktx prints the Istio
//! DestinationRule and VirtualService that do the routing ([`crate::objects::istio`]).
//!
//! Order: validate S → session Lease → shadow Secret and Pod → tunnel → shadow Ready. The
//! shadow's objects carry the Lease as owner, so undo, `ktx clean` and the janitor remove them
//! like any mesh session's; like an auto session, the last session of S to leave restores S
//! and removes the router if an auto session left them behind for it.
//!
//! The shadow pod carries S's selector labels, so S itself (and a mesh's default route) also
//! sends it unmarked requests: the printed routes send unmarked traffic to S's host; give the
//! original pods a subset of their own to keep them off the shadow (as with kt-connect).

use std::collections::BTreeMap;

use ktx_names::{mode, ServiceNames};

use crate::cli::MeshArgs;
use crate::error::{Error, Result};
use crate::lifecycle::flow::{self, Ctx, Ready};
use crate::lifecycle::steps;
use crate::lifecycle::undo::{ObjKind, Undo};
use crate::objects::istio::{self, IstioParams};
use crate::objects::lease::LeaseParams;
use crate::objects::pod_settings::{parse_key_value, PairKind};
use crate::objects::shadow::{NotTaken, ShadowParams};
use crate::plan::rule::RulePlan;
use crate::plan::takeover::{self, State};

/// The label `KEY: MARK` of a manual session: the rule must be one exact header (the
/// `--versionMark`), whose key and value are a valid label (the key in lower case, as Istio
/// matches header names).
pub fn mark_label(plan: &RulePlan) -> Result<(String, String)> {
    let m = &plan.matches;
    let one = match (
        m.headers.as_slice(),
        m.baggage.is_empty(),
        &m.path_prefix,
        &m.method,
    ) {
        ([h], true, None, None) => h.exact.as_ref().map(|v| (h.name.to_ascii_lowercase(), v)),
        _ => None,
    };
    let Some((key, mark)) = one else {
        return Err(Error::Unsupported(
            "--mode manual routes by one label, KEY: MARK of --versionMark; richer rules (--header, --baggage, --path-prefix, --method) need --mode auto".into(),
        ));
    };
    parse_key_value(&format!("{key}={mark}"), PairKind::Label).map_err(|why| {
        Error::Unsupported(format!(
            "--mode manual puts --versionMark on the shadow pod as a label: {why}"
        ))
    })
}

/// The shadow's extra labels: S's selector (so the mesh sees it as one of S's pods), then the
/// mark.
pub fn shadow_labels(
    selector: &BTreeMap<String, String>,
    key: &str,
    mark: &str,
) -> BTreeMap<String, String> {
    let mut l = selector.clone();
    l.insert(key.to_string(), mark.to_string());
    l
}

/// `--apply-istio`: creates the DestinationRule and the VirtualService, each recorded on `undo`
/// first and owned by the session's Lease (the garbage collector removes them after a crash).
async fn apply_istio(
    ctx: &Ctx,
    undo: &Undo,
    ip: &IstioParams<'_>,
    session: &str,
    owner: &crate::plan::ownership::SessionOwner,
) -> Result<()> {
    let labels = crate::objects::labels(ip.service, ktx_names::role::SHADOW, Some(session));
    let dr = istio::DestinationRule::from_printed(istio::destination_rule(ip), labels.clone());
    let vs = istio::VirtualService::from_printed(istio::virtual_service(ip), labels);
    let not_installed = |e: Error| {
        match &e {
        Error::Api { source, .. } if crate::error::status_code(source) == Some(404) => {
            Error::Unsupported(format!(
                "this cluster does not serve {}/{} (Istio is not installed): run without --apply-istio and apply the printed objects where Istio runs",
                istio::GROUP,
                istio::VERSION
            ))
        }
        _ => e,
    }
    };
    flow::create_own(ctx, undo, ObjKind::DestinationRule, false, dr, Some(owner))
        .await
        .map_err(not_installed)?;
    flow::create_own(ctx, undo, ObjKind::VirtualService, false, vs, Some(owner))
        .await
        .map_err(not_installed)?;
    ctx.progress.done(format!(
        "Created DestinationRule and VirtualService {}/{}",
        ip.namespace, ip.name
    ));
    Ok(())
}

pub async fn setup(
    ctx: &Ctx,
    names: &ServiceNames,
    args: &MeshArgs,
    plan: &RulePlan,
    undo: &Undo,
) -> Result<Ready> {
    let kube = &ctx.kube;
    let ns = kube.namespace.as_str();
    let service = names.service();
    let _p = &ctx.progress;
    let (key, mark) = mark_label(plan)?;

    crate::lifecycle::expired::sweep(ctx, names).await;
    let svc = steps::service(ctx, service).await?;
    let selector = match takeover::state(&svc, ns)? {
        State::Free { selector } => selector,
        State::Taken { mode: m, .. } => {
            return Err(Error::TakenOver {
                namespace: ns.to_string(),
                service: service.to_string(),
                mode: m,
                holder: "another ktx session (`ktx status` says whose)".into(),
            })
        }
    };
    let plan_ports = steps::ports(ctx, &svc, &selector, &args.expose.expose).await?;

    let name = names.shadow(&plan.session);
    let rule_text = format!("label {key}={mark} (Istio, --mode manual)");
    let lease = steps::session_lease(
        ctx,
        undo,
        names,
        &LeaseParams {
            name: &name,
            session: &plan.session,
            holder: &ctx.holder,
            mode: mode::MESH,
            rule: &rule_text,
        },
    )
    .await?;
    // Last one out: when an auto session of S ended while this one was live, S's router and
    // selector are still waiting for the last session of S to leave.
    if let Some(l) = undo.settle_shared(service) {
        l.release().await?;
    }

    let targets = plan_ports.targets();
    let exposed = plan_ports.exposed.clone();
    steps::check_local_ports(ctx, &exposed, "get a 503 naming your session").await;
    let mut pod = ctx.global.pod_settings();
    pod.labels.extend(shadow_labels(&selector, &key, &mark));
    let sp = ShadowParams {
        name: &name,
        namespace: ns,
        service,
        session: &plan.session,
        mode: mode::MESH,
        image: &ctx.global.shadow_image,
        targets: &targets,
        exposed: &exposed,
        // No stuntman to fall back to: S itself may route back to this pod.
        not_taken: NotTaken::Reject,
        pod: &pod,
    };
    let tunnel = flow::start_shadow(ctx, undo, &sp, &lease.owner, false).await?;

    let ip = IstioParams {
        name: &name,
        namespace: ns,
        service,
        key: &key,
        mark: &mark,
    };
    let manifest = istio::yaml(&ip);
    let mut text = vec![format!("Shadow pod {ns}/{name} carries {key}={mark} and the labels of Service {service}'s pods; Service {service} is unchanged.")];
    if args.apply_istio {
        apply_istio(ctx, undo, &ip, &plan.session, &lease.owner).await?;
        text.push(format!("Istio routes the mark to it: DestinationRule and VirtualService {ns}/{name} (deleted when the session ends; unmarked traffic keeps going to {service}, give the original pods a subset of their own to keep it off this pod):"));
    } else {
        text.push(format!("Route the mark to it with Istio (`kubectl apply -f -`, or run with --apply-istio; unmarked traffic keeps going to {service}, give the original pods a subset of their own to keep it off this pod):"));
    }
    text.extend(manifest.lines().map(str::to_string));
    let json = serde_json::json!({
        "command": "mesh",
        "mode": "manual",
        "namespace": ns,
        "service": service,
        "session": plan.session,
        "pod": name,
        "labels": shadow_labels(&selector, &key, &mark),
        "destinationRule": istio::destination_rule(&ip),
        "virtualService": istio::virtual_service(&ip),
    });
    Ok(Ready {
        text,
        json,
        lost: lease.lost.clone(),
        tunnel,
        local: lease.local(exposed),
    })
}

#[cfg(test)]
mod tests;
