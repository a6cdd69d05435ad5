//! `ktx mesh SERVICE`: requests that match this session's rule go to the developer's process,
//! everything else keeps reaching the original workload.
//!
//! Setup follows DESIGN.md's order, each step recorded on the undo stack before it acts:
//! lock S → validate → stuntman → routes + router → session Lease → two branches at once:
//! (router Ready → switch S's selector, original saved in the same update) and (shadow Secret,
//! Pod, Service → tunnel → shadow Ready) → (unlock) → add the rule → wait until the router
//! applied it → print how to reach it. The shadow does not wait for the router: the rule, which
//! is what sends requests to it, goes in only once both branches are done.
//! Teardown is the undo stack: rule → tunnel → shadow → Lease → last one out restores S and
//! deletes the shared objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use ktx_names::{mode, ServiceNames, LABEL_SERVICE, SHARED_ROUTER_ACCOUNT};
use ktx_rules::OnUnavailable;
use kube::ResourceExt;

use crate::cli::{MeshArgs, MeshMode};
use crate::cluster::api::{wait, Kind};
use crate::cluster::router_admin;
use crate::error::{Error, Result};
use crate::lifecycle::command::LocalCommand;
use crate::lifecycle::flow::{self, Ctx, Ready};
use crate::lifecycle::lock;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::steps;
use crate::lifecycle::teardown;
use crate::lifecycle::undo::{ObjKind, Step, Undo};
use crate::lifecycle::workload_env;
use crate::objects::lease::{holder_and_since, LeaseParams};
use crate::objects::router::{self, RouterParams};
use crate::objects::routes;
use crate::objects::shadow::{NotTaken, ShadowParams};
use crate::objects::{check_name, router_selector, selector_string, stuntman};
use crate::plan::ownership;
use crate::plan::ports::ExposedPort;
use crate::plan::rule::{self, RulePlan};
use crate::plan::takeover::{self, State};

pub mod manual;
mod report;
mod rules;

pub async fn run(ctx: &Ctx, args: &MeshArgs, shutdown: &Shutdown) -> Result<()> {
    if args.apply_istio && args.mode != MeshMode::Manual {
        return Err(Error::Unsupported(
            "--apply-istio goes with --mode manual (Istio routes the mark to your shadow pod); --mode auto uses ktx's router and needs no Istio objects".into(),
        ));
    }
    let plan = rule::plan(&args.rule, rule::random_id)?;
    crate::plan::expose::check_list(&args.expose.expose)?;
    let service = args.service.resolve(&ctx.kube).await?;
    let names = ServiceNames::new(service.as_str());
    for n in [
        service.clone(),
        names.stuntman(),
        names.router(),
        names.shadow(&plan.session),
    ] {
        check_name(&n)?;
    }
    let env = workload_env::prepare(ctx, &service, &args.workload, shutdown).await?;
    let command = LocalCommand::of(&args.workload, env);
    let undo = Undo::new();
    match args.mode {
        MeshMode::Auto => {
            let setup = setup(ctx, &names, args, &plan, &undo);
            flow::session_with(ctx, shutdown, &undo, setup, command).await
        }
        MeshMode::Manual => {
            let setup = manual::setup(ctx, &names, args, &plan, &undo);
            flow::session_with(ctx, shutdown, &undo, setup, command).await
        }
    }
}

/// Reuses the shared object `obj` if ktx made it for this Service, or creates it (recording
/// its deletion first), and returns it as the API server has it. An object of that name that ktx
/// did not make is an error, not reused.
async fn ensure<K: Kind>(ctx: &Ctx, undo: &Undo, kind: ObjKind, obj: &K) -> Result<K> {
    let name = obj.name_any();
    let ns = &ctx.kube.namespace;
    let service = obj.labels().get(LABEL_SERVICE).cloned().unwrap_or_default();
    if let Some(existing) = ctx.kube.get::<K>(&name).await? {
        if !ownership::is_shared_of(existing.meta(), &service) {
            return Err(Error::NotOurs {
                kind: kind.to_string(),
                namespace: ns.to_string(),
                name,
                for_what: String::new(),
            });
        }
        ctx.progress.done(format!("Reusing {kind} {ns}/{name}"));
        return Ok(existing);
    }
    let created = flow::create_own(ctx, undo, kind, true, obj.clone(), None).await?;
    ctx.progress.done(format!("Created {kind} {ns}/{name}"));
    Ok(created)
}

async fn setup(
    ctx: &Ctx,
    names: &ServiceNames,
    args: &MeshArgs,
    plan: &RulePlan,
    undo: &Undo,
) -> Result<Ready> {
    let kube = &ctx.kube;
    let ns = kube.namespace.as_str();
    let service = names.service();
    let p = &ctx.progress;
    let timeout = ctx.global.timeout;

    // Leftovers of crashed sessions first (inside setup, so Ctrl-C can stop it).
    crate::lifecycle::expired::sweep(ctx, names).await;

    // Lock S.
    let the_lock = lock::acquire(kube, service, &ctx.holder, timeout, p).await?;
    let token = the_lock.token().to_string();
    undo.push(Step::Unlock(the_lock));

    // Validate.
    let svc = steps::service(ctx, service).await?;
    // Judged by observed change: a teammate whose clock was stepped is not taken for dead.
    let (leases, verdict) = crate::lifecycle::liveness::observe(kube, service).await?;
    let state = takeover::state(&svc, ns)?;
    let (original, already_meshed) = match state {
        State::Free { selector } => (selector, false),
        State::Taken { mode: m, original } if m == mode::MESH => (original, true),
        State::Taken { mode: m, .. } => {
            let holder = leases
                .iter()
                .find(|l| verdict.alive(l))
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
    let lease_name = names.lease(&plan.session);
    if let Some(mine) = leases.iter().find(|l| l.name_any() == lease_name) {
        if verdict.alive(mine) {
            let (holder, since) = holder_and_since(mine);
            return Err(Error::SessionExists {
                service: service.to_string(),
                session: plan.session.clone(),
                holder,
                since,
            });
        }
        teardown::remove_session(kube, names, mine).await?;
        p.done(format!("Removed the expired session {ns}/{lease_name}"));
    }
    let my_rule = routes::rule(
        names,
        &plan.session,
        plan.matches.clone(),
        plan.on_unavailable,
    );
    if let Some(cm) = kube.get::<ConfigMap>(&names.routes()).await? {
        let live: Vec<_> = leases
            .iter()
            .filter(|l| verdict.alive(l))
            .cloned()
            .collect();
        rules::check_rule(names, &cm, &my_rule, &live)?;
    }
    let plan_ports = steps::ports(ctx, &svc, &original, &args.expose.expose).await?;
    let spec = svc.spec.clone().unwrap_or_default();
    p.done(format!(
        "Service {ns}/{service}: {}; original selector {}",
        report::describe_ports(&plan_ports),
        selector_string(&original)
    ));

    // Shared objects: stuntman, routes, router.
    let stuntman = ensure(
        ctx,
        undo,
        ObjKind::Service,
        &stuntman::stuntman(names, ns, &original, spec.ports.as_deref().unwrap_or(&[])),
    )
    .await?;
    ensure(
        ctx,
        undo,
        ObjKind::ConfigMap,
        &routes::configmap(names, ns, &routes::initial(names)),
    )
    .await?;
    let targets = plan_ports.targets();
    // The team's chart installs one router account for the namespace; without it, each router
    // gets its own account, Role and RoleBinding (which needs rights to create them).
    let account = if steps::shared_router_account(kube).await {
        p.done(format!(
            "Router runs as ServiceAccount {ns}/{SHARED_ROUTER_ACCOUNT} (installed by the ktx chart)"
        ));
        SHARED_ROUTER_ACCOUNT.to_string()
    } else {
        ensure(
            ctx,
            undo,
            ObjKind::ServiceAccount,
            &router::service_account(names, ns, &ctx.global.pod_settings()),
        )
        .await?;
        ensure::<Role>(ctx, undo, ObjKind::Role, &router::role(names, ns)).await?;
        ensure::<RoleBinding>(
            ctx,
            undo,
            ObjKind::RoleBinding,
            &router::role_binding(names, ns),
        )
        .await?;
        names.router_account()
    };
    let router_pod = ctx.global.pod_settings();
    let http_ports = plan_ports.http_targets();
    let kube_ca = steps::cluster_ca(kube).await;
    let rp = RouterParams {
        image: &ctx.global.router_image,
        namespace: ns,
        targets: &targets,
        http_ports: &http_ports,
        account: &account,
        replicas: args.router_replicas,
        pod: &router_pod,
        kube_ca: kube_ca.as_deref(),
    };
    ensure::<Deployment>(
        ctx,
        undo,
        ObjKind::Deployment,
        &router::deployment(names, &rp),
    )
    .await?;
    if let Some(uid) = kube
        .get::<Deployment>(&names.router())
        .await?
        .and_then(|d| d.metadata.uid)
    {
        crate::cluster::api::budget::create(kube, &router::disruption_budget(names, ns, &uid))
            .await?;
    }
    // The session's Lease now, so that its shadow (owned by the Lease) starts while the router
    // comes up. The lock stays held, and the shared objects stay this run's to undo, until S
    // selects the router.
    let rule_text = rule::describe(&plan.matches);
    let lease = steps::session_lease(
        ctx,
        undo,
        names,
        &LeaseParams {
            name: &lease_name,
            session: &plan.session,
            holder: &ctx.holder,
            mode: mode::MESH,
            rule: &rule_text,
        },
    )
    .await?;

    // Router Ready → switch S; meanwhile shadow → tunnel → shadow Ready. Independent objects:
    // the switch waits for the router alone, the rule (below) for both. Either failing drops
    // the other mid-step; every object is on the undo stack before it is created.
    let switch = async {
        wait::deployment(
            kube,
            &names.router(),
            "router",
            &selector_string(&router_selector(service)),
            timeout,
            p,
        )
        .await?;
        p.done(format!("Router {ns}/{} is Ready", names.router()));

        // Switch S to the router, saving the original selector in the same update.
        if !already_meshed {
            undo.push(Step::RestoreSelector {
                service: service.to_string(),
                ours: router_selector(service),
            });
        }
        kube.modify::<Service, _>(service, |svc| {
            lock::ensure_ours(svc, service, &token)?;
            takeover::switch(svc, &router_selector(service), mode::MESH, ns)
        })
        .await?;
        p.done(format!("Service {ns}/{service} now selects the router"));
        Ok::<_, Error>(())
    };
    let exposed = plan_ports.exposed.clone();
    let pod = ctx.global.pod_settings();
    let shadow = async {
        let meanwhile = match plan.on_unavailable {
            OnUnavailable::Fallback => "go to the original workload",
            OnUnavailable::Reject => "get a 503 naming your session",
        };
        steps::check_local_ports(ctx, &exposed, meanwhile).await;
        let not_taken = match plan.on_unavailable {
            OnUnavailable::Reject => NotTaken::Reject,
            OnUnavailable::Fallback => NotTaken::Fallback(fallback_routes(&stuntman, &exposed)),
        };
        let sp = ShadowParams {
            name: &lease_name,
            namespace: ns,
            service,
            session: &plan.session,
            mode: mode::MESH,
            image: &ctx.global.shadow_image,
            targets: &targets,
            exposed: &exposed,
            not_taken,
            pod: &pod,
        };
        flow::start_shadow(ctx, undo, &sp, &lease.owner, true).await
    };
    let ((), tunnel) = tokio::try_join!(switch, shadow)?;

    // From here on the shared objects belong to "last one out".
    if let Some(l) = undo.settle_shared(service) {
        l.release().await?;
    }

    // The rule, last.
    let before = router_admin::table_states(kube, names).await?;
    undo.push(Step::RemoveRule {
        service: service.to_string(),
        session: plan.session.clone(),
    });
    rules::add_rule(ctx, names, &my_rule).await?;
    p.done(format!("Added the rule {rule_text} → {lease_name}"));
    let confirm = std::time::Duration::from_secs(15).min(timeout);
    if !router_admin::wait_applied(kube, &before, &plan.session, confirm, p).await? {
        p.warn("could not confirm that every router pod applied the rule yet; it should within seconds");
    } else {
        p.done("The router applied the rule");
    }

    let (text, json) = report::report(ctx, &svc, plan, &plan_ports, &rule_text);
    Ok(Ready {
        text,
        json,
        lost: lease.lost.clone(),
        tunnel,
        local: lease.local(exposed.clone()),
    })
}

/// Where the shadow sends a connection that the developer's process never saw: the stuntman
/// (the original workload) at its ClusterIP, on the Service port of each exposed target port.
/// A stuntman without a ClusterIP (a headless Service) gets no routes: the shadow then resets
/// such connections, and the router's fallback still applies whenever the shadow is down.
fn fallback_routes(
    stuntman: &Service,
    exposed: &[ExposedPort],
) -> Vec<(u16, std::net::SocketAddr)> {
    let ip = stuntman
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    match ip {
        Some(ip) => exposed
            .iter()
            .map(|e| (e.target, std::net::SocketAddr::new(ip, e.port)))
            .collect(),
        None => Vec::new(),
    }
}
