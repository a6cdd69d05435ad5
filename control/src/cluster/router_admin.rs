//! What the router pods of Service S report on their admin port (read through the API server's
//! pod proxy): the route table each one uses (`GET /routes`, a typed
//! [`AppliedTable`]), so ktx knows when a session's rule is applied, and requests per rule
//! (`/metrics`) for `ktx status`.
//!
//! "Applied" means: every router pod Ready before the rule was written lists a rule of this
//! session in the table it uses, and none refused a route-table update since.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use ktx_names::ServiceNames;
use ktx_rules::applied::{AppliedTable, ROUTES_PATH};
use kube::ResourceExt;
use tokio::time::Instant;

use crate::cluster::api::{proxy, wait, Kube};
use crate::error::{Error, Result};
use crate::objects::router::{ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT};
use crate::objects::{router_selector, selector_string};
use crate::progress::Progress;

/// Where one router pod stands on a session's rule, compared with its table before the rule
/// was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    NotYet,
    /// It refused a route-table update since `before`.
    Refused,
}

/// Judges `now` against `before` for `session`.
pub fn judge(before: &AppliedTable, now: &AppliedTable, session: &str) -> Applied {
    if now.rejected > before.rejected {
        Applied::Refused
    } else if now.has_session(session) {
        Applied::Yes
    } else {
        Applied::NotYet
    }
}

/// A Ready router pod and its admin port.
#[derive(Debug, Clone)]
pub struct RouterPod {
    pub name: String,
    pub admin_port: u16,
}

fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_ADMIN_PORT)
}

/// The Ready router pods of S.
pub async fn router_pods(kube: &Kube, names: &ServiceNames) -> Result<Vec<RouterPod>> {
    let pods = kube
        .list::<Pod>(&selector_string(&router_selector(names.service())))
        .await?;
    Ok(pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| wait::blocker(p, wait::Goal::Ready).is_none())
        .map(|p| RouterPod {
            name: p.name_any(),
            admin_port: admin_port(p),
        })
        .collect())
}

/// `/metrics` of one router pod.
pub async fn scrape(kube: &Kube, pod: &RouterPod) -> Result<String> {
    proxy::get(kube, &pod.name, pod.admin_port, "/metrics").await
}

/// The route table one router pod uses (`GET /routes`).
pub async fn applied(kube: &Kube, pod: &RouterPod) -> Result<AppliedTable> {
    let text = proxy::get(kube, &pod.name, pod.admin_port, ROUTES_PATH).await?;
    serde_json::from_str(&text).map_err(|e| Error::RouterAnswer {
        pod: pod.name.clone(),
        path: ROUTES_PATH,
        reason: e.to_string(),
    })
}

/// Each Ready router pod's table now (pods that cannot be read are left out).
pub async fn table_states(
    kube: &Kube,
    names: &ServiceNames,
) -> Result<Vec<(RouterPod, AppliedTable)>> {
    let mut out = Vec::new();
    for pod in router_pods(kube, names).await? {
        match applied(kube, &pod).await {
            Ok(table) => out.push((pod, table)),
            Err(e) => {
                tracing::debug!(pod = %pod.name, error = %e, "cannot read the router's table")
            }
        }
    }
    Ok(out)
}

/// Waits until every router pod in `before` uses a rule of `session`. Returns `Ok(false)` when
/// that could not be confirmed in `timeout` (the caller warns and goes on: the rule is written,
/// and the router applies what it can read), and an error if a router refused the table.
pub async fn wait_applied(
    kube: &Kube,
    before: &[(RouterPod, AppliedTable)],
    session: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<bool> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut pending: Vec<&(RouterPod, AppliedTable)> = before.iter().collect();
    while !pending.is_empty() {
        progress.waiting(format!(
            "waiting for router pod {} to apply the rule",
            pending[0].0.name
        ));
        let mut still = Vec::new();
        for entry in pending {
            let (pod, was) = entry;
            match applied(kube, pod)
                .await
                .map(|now| judge(was, &now, session))
            {
                Ok(Applied::Refused) => {
                    return Err(Error::RouterRejected {
                        reason: format!(
                            "router pod {} refused the new route table; see `kubectl -n {} logs {}`",
                            pod.name, kube.namespace, pod.name
                        ),
                    });
                }
                Ok(Applied::Yes) => {}
                Ok(Applied::NotYet) | Err(_) => still.push(entry),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        // Fast at first: a router applies a table within milliseconds of seeing the change.
        tokio::time::sleep(if started.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(200)
        })
        .await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use ktx_rules::applied::AppliedRule;

    use super::*;

    fn table(generation: u64, rejected: u64, sessions: &[&str]) -> AppliedTable {
        AppliedTable {
            generation,
            rejected,
            rules: sessions
                .iter()
                .map(|s| AppliedRule {
                    session: s.to_string(),
                    lease: Some(format!("orders-ktx-mesh-{s}")),
                })
                .collect(),
        }
    }

    #[test]
    fn applied_means_this_sessions_rule_is_in_the_table_in_use() {
        let before = table(3, 0, &["bob"]);
        // A Lease blip of bob's bumps the generation: not our rule.
        assert_eq!(
            judge(&before, &table(4, 0, &["bob"]), "alice"),
            Applied::NotYet
        );
        // Another session's rule arriving first is not ours either.
        assert_eq!(
            judge(&before, &table(5, 0, &["bob", "carol"]), "alice"),
            Applied::NotYet
        );
        assert_eq!(
            judge(&before, &table(6, 0, &["bob", "alice"]), "alice"),
            Applied::Yes
        );
        assert_eq!(
            judge(&before, &table(6, 1, &["bob"]), "alice"),
            Applied::Refused
        );
    }

    #[test]
    fn reads_the_routers_json() {
        let json = r#"{"generation":2,"rejected":0,"rules":[{"session":"alice","lease":"orders-ktx-mesh-alice"}]}"#;
        let t: AppliedTable = serde_json::from_str(json).unwrap();
        assert_eq!(judge(&AppliedTable::default(), &t, "alice"), Applied::Yes);
    }
}
