//! What the router pods of Service S report on their admin port (read through the API server's
//! pod proxy): whether they have applied a route table change, and requests per rule for
//! `ktx status`.
//!
//! "Applied" is judged from `ktx_router_table_version` (bumped on every change of the table in
//! use) and `ktx_router_table_rules` (rules of live sessions in it): after this session's rule
//! is written, each router pod must show a newer version with more rules than before, and no
//! newly rejected update.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use ktx_names::ServiceNames;
use kube::ResourceExt;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::kube::{proxy, wait, Kube};
use crate::objects::router::{ADMIN_PORT_NAME, DEFAULT_ADMIN_PORT};
use crate::objects::{router_selector, selector_string};
use crate::progress::Progress;

/// One router pod's view of its route table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableState {
    pub version: f64,
    pub rules: f64,
    pub rejected: f64,
}

impl TableState {
    pub fn parse(metrics: &str) -> TableState {
        TableState {
            version: proxy::metric(metrics, "ktx_router_table_version", &[]).unwrap_or(0.0),
            rules: proxy::metric(metrics, "ktx_router_table_rules", &[]).unwrap_or(0.0),
            rejected: proxy::metric(
                metrics,
                "ktx_router_table_updates_total",
                &[("result", "rejected")],
            )
            .unwrap_or(0.0),
        }
    }

    /// Whether `self` (after a rule was added) shows the change relative to `before`.
    pub fn shows_added_rule(&self, before: &TableState) -> bool {
        self.version > before.version && self.rules > before.rules
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

/// Each Ready router pod's table state now (pods that cannot be read are left out).
pub async fn table_states(
    kube: &Kube,
    names: &ServiceNames,
) -> Result<Vec<(RouterPod, TableState)>> {
    let mut out = Vec::new();
    for pod in router_pods(kube, names).await? {
        match scrape(kube, &pod).await {
            Ok(text) => out.push((pod, TableState::parse(&text))),
            Err(e) => tracing::debug!(pod = %pod.name, error = %e, "cannot read router metrics"),
        }
    }
    Ok(out)
}

/// Waits until every router pod in `before` shows the added rule. Returns `Ok(false)` when that
/// could not be confirmed in `timeout` (the caller warns and goes on: the rule is written, and
/// the router applies what it can read), and an error if a router rejected the table.
pub async fn wait_applied(
    kube: &Kube,
    before: &[(RouterPod, TableState)],
    timeout: Duration,
    progress: &Progress,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&(RouterPod, TableState)> = before.iter().collect();
    while !pending.is_empty() {
        progress.waiting(format!(
            "waiting for router pod {} to apply the rule",
            pending[0].0.name
        ));
        let mut still = Vec::new();
        for entry in pending {
            let (pod, was) = entry;
            match scrape(kube, pod).await {
                Ok(text) => {
                    let now = TableState::parse(&text);
                    if now.rejected > was.rejected {
                        return Err(Error::RouterRejected {
                            reason: format!(
                                "router pod {} refused the new route table; see `kubectl -n {} logs {}`",
                                pod.name, kube.namespace, pod.name
                            ),
                        });
                    }
                    if !now.shows_added_rule(was) {
                        still.push(entry);
                    }
                }
                Err(_) => still.push(entry),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_rule_shows_as_newer_version_and_more_rules() {
        let before = TableState::parse(
            "ktx_router_table_version 3\nktx_router_table_rules 1\nktx_router_table_updates_total{result=\"applied\"} 3\n",
        );
        assert_eq!(before.version, 3.0);
        assert_eq!(before.rejected, 0.0);
        let lease_blip = TableState {
            version: 4.0,
            ..before
        };
        assert!(!lease_blip.shows_added_rule(&before));
        let added = TableState {
            version: 5.0,
            rules: 2.0,
            ..before
        };
        assert!(added.shows_added_rule(&before));
    }
}
