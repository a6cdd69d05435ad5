//! `ktx clean`: for every Service that ktx objects refer to, removes what expired sessions left
//! behind and restores the Service when no live session is left ([`crate::lifecycle::expired`]).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use ktx_names::{ServiceNames, LABEL_MANAGED_BY, LABEL_SERVICE, MANAGED_BY_VALUE};
use kube::ResourceExt;

use crate::cli::{CleanArgs, Output};
use crate::error::Result;
use crate::lifecycle::expired::service;
use crate::lifecycle::flow::Ctx;

/// Every Service of the namespace that ktx objects refer to.
pub async fn services_in_use(ctx: &Ctx) -> Result<BTreeSet<String>> {
    let kube = &ctx.kube;
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let mut out = BTreeSet::new();
    let mut add = |l: &std::collections::BTreeMap<String, String>| {
        if let Some(s) = l.get(LABEL_SERVICE) {
            out.insert(s.clone());
        }
    };
    for l in kube.list::<Lease>(&managed).await? {
        add(l.labels());
    }
    for p in kube.list::<Pod>(&managed).await? {
        add(p.labels());
    }
    for d in kube.list::<Deployment>(&managed).await? {
        add(d.labels());
    }
    for s in kube.list::<Service>(&managed).await? {
        add(s.labels());
    }
    for s in kube.list::<Service>("").await? {
        if s.annotations()
            .contains_key(ktx_names::ANNOTATION_ORIGINAL_SELECTOR)
        {
            out.insert(s.name_any());
        }
    }
    Ok(out)
}

/// `ktx clean`.
pub async fn run(ctx: &Ctx, args: &CleanArgs) -> Result<()> {
    if !args.dry_run {
        crate::commands::connect::restore_dns(ctx, &args.state_dir);
    }
    let mut reports = Vec::new();
    for s in services_in_use(ctx).await? {
        reports.push(service(ctx, &ServiceNames::new(s), args.dry_run).await?);
    }
    match ctx.global.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "dryRun": args.dry_run, "services": reports })
        ),
        Output::Text => {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            let mut any = false;
            for r in &reports {
                for s in &r.expired_sessions {
                    any = true;
                    println!("{}: {verb} expired session {s}", r.service);
                }
                for o in &r.orphans {
                    any = true;
                    println!("{}: {verb} leftover {o}", r.service);
                }
                if r.restored {
                    any = true;
                    let verb = if args.dry_run {
                        "would restore"
                    } else {
                        "restored"
                    };
                    println!("{}: {verb} the Service and removed the router", r.service);
                }
                for s in &r.live_sessions {
                    println!("{}: kept live session {s}", r.service);
                }
            }
            if !any {
                println!("Nothing to clean in namespace {}.", ctx.kube.namespace);
            }
        }
    }
    Ok(())
}
