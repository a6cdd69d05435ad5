//! `ktx status`: the sessions of the namespace — who, which Service, which rule, since when,
//! alive or expired — and the requests each rule has routed, summed over the router pods'
//! `/metrics` (read through the API server; a router that cannot be read shows `-`).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use ktx_names::{
    mode, role, ServiceNames, ANNOTATION_LOCAL_PROCESS, ANNOTATION_RULE, LABEL_MANAGED_BY,
    LABEL_MODE, LABEL_ROLE, LABEL_SERVICE, LABEL_SESSION, MANAGED_BY_VALUE,
};
use kube::ResourceExt;
use serde::Serialize;

use crate::cli::Output;
use crate::cluster::api::proxy;
use crate::cluster::router_admin;
use crate::error::Result;
use crate::lifecycle::flow::Ctx;
use crate::objects::lease::{freshness, holder_and_since, Freshness};

/// One session as `ktx status -o json` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub service: String,
    pub session: String,
    pub mode: String,
    pub holder: String,
    pub since: String,
    pub rule: String,
    pub alive: bool,
    /// When it expires (alive) or expired (not alive).
    pub until: Option<String>,
    /// Requests the router sent to this session's rule (mesh sessions; `None` if unknown).
    pub requests: Option<u64>,
    /// Whether the developer's process listens on its LOCAL ports, as its ktx last saw it (every
    /// 2 s): `listening` or `not listening on 127.0.0.1:PORT`; `None` from an older ktx.
    pub local_process: Option<String>,
}

fn row(l: &Lease, now: Timestamp) -> SessionRow {
    let labels = l.labels();
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let (holder, since) = holder_and_since(l);
    // No grace here: this is what the router sees.
    let f = freshness(l, now, std::time::Duration::ZERO);
    SessionRow {
        service: get(LABEL_SERVICE),
        session: get(LABEL_SESSION),
        mode: labels
            .get(LABEL_MODE)
            .cloned()
            .unwrap_or_else(|| mode::MESH.into()),
        holder,
        since,
        rule: l
            .annotations()
            .get(ANNOTATION_RULE)
            .cloned()
            .unwrap_or_default(),
        alive: f.is_alive(),
        until: match f {
            Freshness::Alive { until } => Some(until.to_string()),
            Freshness::Expired { since } => since.map(|s| s.to_string()),
        },
        requests: None,
        local_process: l.annotations().get(ANNOTATION_LOCAL_PROCESS).cloned(),
    }
}

/// Requests per rule of Service `service`, summed over its router pods.
async fn requests_by_rule(ctx: &Ctx, service: &str) -> Option<BTreeMap<String, u64>> {
    let names = ServiceNames::new(service);
    let pods = router_admin::router_pods(&ctx.kube, &names).await.ok()?;
    if pods.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for pod in &pods {
        let text = router_admin::scrape(&ctx.kube, pod).await.ok()?;
        for line in text
            .lines()
            .filter(|l| l.starts_with("ktx_router_requests_total{"))
        {
            let Some(rule) = line
                .split("rule=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            let n = proxy::metric(line, "ktx_router_requests_total", &[]).unwrap_or(0.0);
            *out.entry(rule.to_string()).or_insert(0) += n as u64;
        }
    }
    Some(out)
}

pub async fn rows(ctx: &Ctx) -> Result<Vec<SessionRow>> {
    let sel = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_ROLE}={}",
        role::SESSION
    );
    let now = crate::cluster::clock::now();
    let mut rows: Vec<SessionRow> = ctx
        .kube
        .list::<Lease>(&sel)
        .await?
        .iter()
        .map(|l| row(l, now))
        .collect();
    rows.sort_by(|a, b| (&a.service, &a.session).cmp(&(&b.service, &b.session)));
    let mut cache: BTreeMap<String, Option<BTreeMap<String, u64>>> = BTreeMap::new();
    for r in rows.iter_mut().filter(|r| r.mode == mode::MESH) {
        if !cache.contains_key(&r.service) {
            let counts = requests_by_rule(ctx, &r.service).await;
            cache.insert(r.service.clone(), counts);
        }
        r.requests = cache[&r.service]
            .as_ref()
            .map(|c| c.get(&r.session).copied().unwrap_or(0));
    }
    Ok(rows)
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    let rows = rows(ctx).await?;
    match ctx.global.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "namespace": ctx.kube.namespace, "sessions": rows })
        ),
        Output::Text if rows.is_empty() => {
            println!("No ktx sessions in namespace {}.", ctx.kube.namespace)
        }
        Output::Text => {
            println!(
                "{:<20} {:<14} {:<9} {:<22} {:<8} {:<13} {:>8}  {:<25} RULE",
                "SERVICE", "SESSION", "MODE", "HOLDER", "STATE", "LOCAL", "REQUESTS", "SINCE"
            );
            let expired = rows.iter().filter(|r| !r.alive).count();
            for r in rows {
                let local = match r.local_process.as_deref() {
                    None => "-",
                    Some("listening") => "listening",
                    Some(_) => "NOT LISTENING",
                };
                println!(
                    "{:<20} {:<14} {:<9} {:<22} {:<8} {:<13} {:>8}  {:<25} {}",
                    r.service,
                    r.session,
                    r.mode,
                    r.holder,
                    if r.alive { "alive" } else { "expired" },
                    local,
                    r.requests.map_or("-".to_string(), |n| n.to_string()),
                    r.since,
                    r.rule
                );
            }
            if expired > 0 {
                println!(
                    "\n{expired} expired session(s): the next `ktx mesh`, `exchange` or `preview` of their Service cleans up after them, or now: `ktx -n {} clean`.",
                    ctx.kube.namespace
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ktx_names::ServiceNames;

    use super::*;
    use crate::objects::lease::{lease, LeaseParams};

    #[test]
    fn a_row_says_who_what_and_whether_alive() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let l = lease(
            &ServiceNames::new("orders"),
            "shop",
            &LeaseParams {
                name: "orders-ktx-mesh-foobar",
                session: "foobar",
                holder: "alice@laptop",
                mode: mode::MESH,
                rule: "VERSION: foobar",
            },
            t0,
        );
        let r = row(
            &l,
            t0.checked_add(std::time::Duration::from_secs(5)).unwrap(),
        );
        assert_eq!(
            (r.service.as_str(), r.session.as_str(), r.mode.as_str()),
            ("orders", "foobar", "mesh")
        );
        assert_eq!(r.holder, "alice@laptop");
        assert_eq!(r.rule, "VERSION: foobar");
        assert!(r.alive);
        let later = row(
            &l,
            t0.checked_add(std::time::Duration::from_secs(16)).unwrap(),
        );
        assert!(!later.alive, "no grace in status: what the router sees");
        let json = serde_json::to_value(&later).unwrap();
        assert_eq!(json["alive"], false);
        assert!(json["until"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13:35"));
        assert_eq!(json["localProcess"], serde_json::Value::Null, "unknown");
        let mut l = l;
        l.annotations_mut().insert(
            ANNOTATION_LOCAL_PROCESS.into(),
            "not listening on 127.0.0.1:3001".into(),
        );
        let json = serde_json::to_value(row(&l, t0)).unwrap();
        assert_eq!(json["localProcess"], "not listening on 127.0.0.1:3001");
    }
}
