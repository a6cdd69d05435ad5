//! The Kubernetes side of ktx: one client and namespace ([`Kube`]), and the few operations the
//! orchestration needs, each turning API errors into [`Error::Api`] that name the object and the
//! permission involved.
//!
//! - [`Kube::modify`]: read-modify-replace with the object's `resourceVersion`, retried on 409
//!   Conflict — the optimistic concurrency that Service S and the routes ConfigMap rely on;
//! - [`Kube::delete_uid`] / [`Kube::delete_checked`]: a delete always carries the UID of the
//!   object ktx proved its own ([`crate::plan::ownership`]) as a precondition, so an object replaced
//!   by someone else in between is never deleted; 404 counts as done, so every undo step can
//!   be repeated. There is no delete by name alone.
//!
//! Waiting for pods lives in [`wait`]; reading a pod's admin port through the API server in
//! [`proxy`].

pub mod budget;
pub mod proxy;
pub mod wait;

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use std::sync::Arc;

use ktx_tunnel::client::Connector;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli::Global;
use crate::error::{status_code, ApiContext, Error, Result};

/// Bounds of the namespaced kinds ktx handles.
pub trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The resource as RBAC spells it: `services`, `leases.coordination.k8s.io`.
pub fn resource<K: Kind>() -> String {
    let group = K::group(&());
    if group.is_empty() {
        K::plural(&()).to_string()
    } else {
        format!("{}.{group}", K::plural(&()))
    }
}

/// How many times a conflicting update is retried before giving up.
const CONFLICT_ATTEMPTS: u32 = 20;

/// How ktx reaches a port of a pod: the API server's port-forward, unless a test gives another
/// way (an in-process shadow behind a fake API server).
pub trait Dialer: Send + Sync + 'static {
    fn connector(&self, pod: &str, port: u16) -> Arc<dyn Connector>;
}

/// A client and the namespace every command works in.
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    pub namespace: String,
    /// `None`: the API server's port-forward ([`crate::cluster::port_forward::PortForwardConnector`]).
    pub dialer: Option<Arc<dyn Dialer>>,
    /// How long a Lease that looks expired is watched before its session counts as dead.
    pub liveness: crate::lifecycle::liveness::Window,
    /// The API server's address as the kubeconfig gives it (`None` for a client made by hand).
    pub api_url: Option<http::Uri>,
}

/// What a checked delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object was ours and is deleted.
    Deleted,
    /// There was nothing to delete.
    Gone,
    /// An object of that name exists but is not the one ktx proved its own: left alone.
    NotOurs,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kube {
    /// Connects with `--kubeconfig` / `$KUBECONFIG` / `~/.kube/config` (or the in-cluster
    /// account), `--context` and `-n`.
    pub async fn connect(global: &Global) -> Result<Kube> {
        // kube builds its TLS on rustls' process-wide provider; pin aws-lc-rs (the tunnel's
        // too) so that a second provider enabled elsewhere in the build cannot make rustls panic.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let opts = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let bad = |reason: String| Error::Kubeconfig {
            context: global
                .context
                .as_ref()
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default(),
            reason,
        };
        let config = match (&global.kubeconfig, &global.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| bad(e.to_string()))?,
            (None, None) => Config::infer().await.map_err(|e| bad(e.to_string()))?,
        };
        let mut config = config;
        // No call may wait for minutes on a hung API server (kube's defaults are ~5 min): a
        // stuck Lease renewal would go unnoticed, a stuck teardown would hold the terminal.
        config.connect_timeout = Some(global.api_connect_timeout);
        config.read_timeout = Some(global.api_timeout);
        config.write_timeout = Some(global.api_timeout);
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let api_url = Some(config.cluster_url.clone());
        let client = Client::try_from(config).map_err(|e| bad(e.to_string()))?;
        let mut kube = Kube::new(client, namespace);
        kube.api_url = api_url;
        Ok(kube)
    }

    /// The API server's host (a name or an IP literal), if known.
    pub fn api_host(&self) -> Option<String> {
        let host = self.api_url.as_ref()?.host()?;
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
    }

    /// A client on `namespace`, reaching pods through the API server's port-forward.
    pub fn new(client: Client, namespace: impl Into<String>) -> Kube {
        Kube {
            client,
            namespace: namespace.into(),
            dialer: None,
            liveness: crate::lifecycle::liveness::Window::default(),
            api_url: None,
        }
    }

    pub fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn get<K: Kind>(&self, name: &str) -> Result<Option<K>> {
        self.api::<K>()
            .get_opt(name)
            .await
            .ctx("get", &resource::<K>(), &self.namespace, name)
    }

    pub async fn list<K: Kind>(&self, label_selector: &str) -> Result<Vec<K>> {
        let lp = ListParams::default().labels(label_selector);
        Ok(self
            .api::<K>()
            .list(&lp)
            .await
            .ctx("list", &resource::<K>(), &self.namespace, "")?
            .items)
    }

    pub async fn create<K: Kind>(&self, obj: &K) -> Result<K> {
        self.api::<K>()
            .create(&PostParams::default(), obj)
            .await
            .ctx("create", &resource::<K>(), &self.namespace, &obj.name_any())
    }

    /// Deletes `name` if it still has UID `uid` (its dependents in the background).
    pub async fn delete_uid<K: Kind>(&self, name: &str, uid: &str) -> Result<Deleted> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.api::<K>().delete(name, &dp).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) if status_code(&e) == Some(404) => Ok(Deleted::Gone),
            // The precondition failed: the object of that name is another one now.
            Err(e) if status_code(&e) == Some(409) => Ok(Deleted::NotOurs),
            Err(e) => Err(e).ctx("delete", &resource::<K>(), &self.namespace, name),
        }
    }

    /// Reads `name` and deletes it (with its UID as precondition) only if `ours` says it is
    /// ktx's; otherwise leaves it and says so.
    pub async fn delete_checked<K: Kind>(
        &self,
        name: &str,
        ours: impl Fn(&K) -> bool,
    ) -> Result<Deleted> {
        let Some(obj) = self.get::<K>(name).await? else {
            return Ok(Deleted::Gone);
        };
        match obj.uid() {
            Some(uid) if ours(&obj) => self.delete_uid::<K>(name, &uid).await,
            _ => {
                tracing::info!(
                    kind = K::kind(&()).as_ref(),
                    name,
                    "left alone: not made by ktx for this"
                );
                Ok(Deleted::NotOurs)
            }
        }
    }

    /// Read-modify-write of `name`: `f` edits the object and says whether it changed anything;
    /// the replace carries the `resourceVersion` read, and a 409 Conflict starts over with a
    /// fresh read. Returns the object as stored, or `None` if it does not exist.
    pub async fn modify<K, F>(&self, name: &str, mut f: F) -> Result<Option<K>>
    where
        K: Kind,
        F: FnMut(&mut K) -> Result<bool>,
    {
        let api = self.api::<K>();
        for attempt in 0..CONFLICT_ATTEMPTS {
            let Some(mut obj) = self.get::<K>(name).await? else {
                return Ok(None);
            };
            if !f(&mut obj)? {
                return Ok(Some(obj));
            }
            match api.replace(name, &PostParams::default(), &obj).await {
                Ok(k) => return Ok(Some(k)),
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(name, attempt, "conflicting update; reading again");
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(e).ctx("update", &resource::<K>(), &self.namespace, name);
                }
            }
        }
        Err(Error::Contended {
            what: format!("update {} {}/{name}", resource::<K>(), self.namespace),
            attempts: CONFLICT_ATTEMPTS,
        })
    }
}

/// A short, growing, jittered pause between conflicting attempts, so that twenty developers
/// updating one ConfigMap at once spread out instead of colliding again in lockstep.
fn conflict_backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(5);
    Duration::from_millis(base + crate::random::below(base))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Service;

    use super::*;

    #[test]
    fn resources_as_rbac_spells_them() {
        assert_eq!(resource::<Service>(), "services");
        assert_eq!(resource::<Lease>(), "leases.coordination.k8s.io");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(conflict_backoff(0) < Duration::from_millis(40));
        assert!(conflict_backoff(30) < Duration::from_millis(1280));
    }
}
