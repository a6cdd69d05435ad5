//! What `mesh` and `exchange` act on, as kt-connect spells it: `NAME`, `svc/NAME`,
//! `service/NAME`, `deployment/NAME` or `deploy/NAME`. A Deployment stands for the one Service
//! whose selector matches its pod labels; none or several is an error that lists them.
//!
//! It does not own the checks of the Service itself (selector, ports, takeover): the commands do.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::cluster::api::Kube;
use crate::error::{Error, Result};
use crate::plan::takeover::{self, State};
use ktx_names::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Service(String),
    Deployment(String),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (Some(k), n),
            None => (None, s),
        };
        if name.is_empty() {
            return Err(format!(
                "{s:?} names no object: use NAME, svc/NAME or deployment/NAME"
            ));
        }
        match kind {
            None | Some("svc" | "service" | "services") => Ok(Target::Service(name.to_string())),
            Some("deploy" | "deployment" | "deployments") => {
                Ok(Target::Deployment(name.to_string()))
            }
            Some(k) => Err(format!(
                "{k:?} is not a kind ktx can target: use svc/NAME (or service/NAME) for a Service, deployment/NAME (or deploy/NAME) for a Deployment"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(n) => write!(f, "svc/{n}"),
            Target::Deployment(n) => write!(f, "deployment/{n}"),
        }
    }
}

impl Target {
    /// The Service name when the target names it without a cluster lookup.
    pub fn service_name(&self) -> Option<&str> {
        match self {
            Target::Service(n) => Some(n),
            Target::Deployment(_) => None,
        }
    }

    /// The Service this target stands for.
    pub async fn resolve(&self, kube: &Kube) -> Result<String> {
        let name = match self {
            Target::Service(n) => return Ok(n.clone()),
            Target::Deployment(n) => n,
        };
        let deployment =
            kube.get::<Deployment>(name)
                .await?
                .ok_or_else(|| Error::DeploymentNotFound {
                    namespace: kube.namespace.clone(),
                    name: name.clone(),
                })?;
        let pod_labels = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let services = kube.list::<Service>("").await?;
        one_service(&kube.namespace, name, &pod_labels, &services)
    }
}

/// The one Service (not made by ktx) whose selector matches `pod_labels`.
pub fn one_service(
    namespace: &str,
    deployment: &str,
    pod_labels: &BTreeMap<String, String>,
    services: &[Service],
) -> Result<String> {
    let matching: Vec<String> = services
        .iter()
        .filter(|s| s.labels().get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE))
        .filter(|s| {
            selector_of(s).is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
            })
        })
        .map(|s| s.name_any())
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::TargetService {
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            found: "is selected by no Service".into(),
        }),
        several => Err(Error::TargetService {
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            found: format!("is selected by several Services: {}", several.join(", ")),
        }),
    }
}

/// The selector the Service had before ktx: a Service taken over by ktx selects ktx's pods, so
/// its saved original counts.
fn selector_of(s: &Service) -> Option<BTreeMap<String, String>> {
    match takeover::state(s, "") {
        Ok(State::Free { selector }) => Some(selector),
        Ok(State::Taken { original, .. }) => Some(original),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests;
