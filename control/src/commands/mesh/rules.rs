//! This session's rule against the routes ConfigMap: refuse conditions a live session already
//! has (naming it), and append the rule with optimistic concurrency — checked again on every
//! attempt, since another developer may have added the same conditions in between.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use ktx_names::ServiceNames;
use ktx_rules::RuleSpec;
use kube::ResourceExt;

use crate::error::{Error, Result};
use crate::lifecycle::flow::Ctx;
use crate::objects::lease::holder_and_since;
use crate::objects::routes::{self, AddError};

/// The rules of `live` sessions (judged by [`crate::lifecycle::liveness`]) are kept; others' rules are
/// leftovers.
pub fn live_rule(live: &[Lease]) -> impl Fn(&RuleSpec) -> bool + '_ {
    move |r: &RuleSpec| {
        live.iter()
            .any(|l| Some(l.name_any().as_str()) == r.lease.as_deref())
    }
}

pub fn check_rule(
    names: &ServiceNames,
    cm: &ConfigMap,
    mine: &RuleSpec,
    leases: &[Lease],
) -> Result<()> {
    let spec = routes::read(names, cm)?;
    match routes::with_rule(&spec, mine.clone(), live_rule(leases)) {
        Ok(_) => Ok(()),
        Err(AddError::SameAs { session }) | Err(AddError::Covered { session }) => {
            let holder = spec
                .rules
                .iter()
                .find(|r| r.session == session)
                .and_then(|r| r.lease.as_deref())
                .and_then(|ln| leases.iter().find(|l| l.name_any() == ln))
                .map(|l| holder_and_since(l).0)
                .unwrap_or_else(|| "unknown".into());
            Err(Error::SameRule {
                service: names.service().to_string(),
                other_session: session,
                holder,
            })
        }
        Err(AddError::Invalid(e)) => Err(e.into()),
    }
}

/// Adds `rule` to the routes ConfigMap with optimistic concurrency, refusing it if a live
/// session got the same conditions in the meantime.
pub async fn add_rule(ctx: &Ctx, names: &ServiceNames, rule: &RuleSpec) -> Result<()> {
    let kube = &ctx.kube;
    let (leases, verdict) = crate::lifecycle::liveness::observe(kube, names.service()).await?;
    let leases: Vec<Lease> = leases.into_iter().filter(|l| verdict.alive(l)).collect();
    let written = kube
        .modify::<ConfigMap, _>(&names.routes(), |cm| {
            check_rule(names, cm, rule, &leases)?;
            let spec = routes::read(names, cm)?;
            let new = routes::with_rule(&spec, rule.clone(), live_rule(&leases)).map_err(|_| {
                Error::RouterRejected {
                    reason: "the route table changed while adding the rule".into(),
                }
            })?;
            routes::write(cm, &new);
            Ok(true)
        })
        .await?;
    if written.is_none() {
        return Err(Error::RouterRejected {
            reason: format!(
                "ConfigMap {}/{} disappeared (someone ran `ktx recover`?)",
                kube.namespace,
                names.routes()
            ),
        });
    }
    Ok(())
}
