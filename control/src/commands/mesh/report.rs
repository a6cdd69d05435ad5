//! What `ktx mesh` prints once the session is up: the rule, and for each exposed port the curl
//! line that reaches the developer's process from a pod (by ClusterIP: clusters without DNS,
//! like the test cluster, are common in CI), plus the DNS form.

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::lifecycle::flow::Ctx;
use crate::plan::ports::PortPlan;
use crate::plan::rule::{self, RulePlan};

pub fn describe_ports(plan: &PortPlan) -> String {
    plan.exposed
        .iter()
        .map(|e| {
            format!(
                "port {} → targetPort {} → local {}",
                e.port, e.target, e.local
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn report(
    ctx: &Ctx,
    svc: &Service,
    plan: &RulePlan,
    ports: &PortPlan,
    rule_text: &str,
) -> (Vec<String>, serde_json::Value) {
    let ns = &ctx.kube.namespace;
    let service = svc.name_any();
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_else(|| "CLUSTER-IP".into());
    let (args, path, note) = rule::curl_parts(&plan.matches);
    let mut text = vec![format!(
        "Requests to Service {ns}/{service} matching {rule_text} now reach this machine; all others reach the original workload."
    )];
    let mut curls = Vec::new();
    for e in &ports.exposed {
        let curl = format!("curl {} http://{ip}:{}{path}", args.join(" "), e.port);
        text.push(format!(
            "  local 127.0.0.1:{} — from a pod: {curl}",
            e.local
        ));
        text.push(format!(
            "    (with cluster DNS: http://{service}.{ns}:{}{path})",
            e.port
        ));
        curls.push(curl);
    }
    if let Some(n) = note {
        text.push(format!("  note: {n}"));
    }
    let json = serde_json::json!({
        "command": "mesh",
        "namespace": ns,
        "service": service,
        "session": plan.session,
        "rule": rule_text,
        "clusterIP": ip,
        "curl": curls,
        "ports": ports.exposed.iter().map(|e| serde_json::json!({
            "local": e.local, "port": e.port, "targetPort": e.target
        })).collect::<Vec<_>>(),
    });
    (text, json)
}
