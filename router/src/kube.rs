//! The router's Kubernetes sources (in-cluster mode): three watchers on the router's namespace
//! that feed the `watch` channels [`crate::routes::run_table`] and [`crate::upstream::Upstreams`]
//! read.
//!
//! - [`configmap`]: the routes ConfigMap → the route table text;
//! - [`endpoints`]: Endpoints of ktx's Services → ready addresses per Service and port;
//! - [`leases`]: session Leases → the names of the sessions that are alive.
//!
//! Each watcher retries with kube-runtime's default backoff and says at `warn` what a person
//! should check. This module owns the client and the watch streams; it does not parse route
//! tables (that is [`crate::routes`]) and never writes to the cluster.

pub mod configmap;
pub mod endpoints;
pub mod leases;
pub mod snapshot;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::Api;
use ::kube::runtime::utils::Backoff;
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::Resource;
use futures_util::stream::{BoxStream, StreamExt};
use k8s_openapi::serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::routes::RoutesText;
use crate::upstream::EndpointMap;
use crate::Config;

/// The channels the watchers publish on. `fresh` should start at `Some(empty)`: until the first
/// Lease list arrives, no session counts as alive.
#[derive(Debug)]
pub struct Outputs {
    pub texts: watch::Sender<Option<RoutesText>>,
    pub fresh: watch::Sender<Option<HashSet<String>>>,
    pub endpoints: watch::Sender<Arc<EndpointMap>>,
}

/// Why the Kubernetes sources could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeStartError {
    #[error("--routes-configmap is missing")]
    NoConfigMap,
    #[error("{what} {name:?} is not a valid Kubernetes name ({allowed})")]
    BadName {
        what: &'static str,
        name: String,
        allowed: &'static str,
    },
    #[error("create the Kubernetes client (in-cluster service account, or KUBECONFIG outside a cluster): {source}")]
    Client { source: ::kube::Error },
}

/// Connects to the API server and spawns the three watchers of `cfg`'s namespace (the pod's
/// namespace, or the kubeconfig context's, when `--namespace` is not given). Returns the
/// watcher tasks; they run until aborted or until nobody reads their channel.
pub async fn start(cfg: &Config, out: Outputs) -> Result<Vec<JoinHandle<()>>, KubeStartError> {
    let name = cfg
        .routes_configmap
        .clone()
        .ok_or(KubeStartError::NoConfigMap)?;
    check_name("ConfigMap", &name, true)?;
    if let Some(ns) = &cfg.namespace {
        check_name("namespace", ns, false)?;
    }
    // kube builds its TLS config on rustls' process-wide provider; should another crate in the
    // build enable a second one (ring), rustls could not choose and would panic. Pin aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = ::kube::Client::try_default()
        .await
        .map_err(|source| KubeStartError::Client { source })?;
    let namespace = match &cfg.namespace {
        Some(ns) => ns.clone(),
        None => client.default_namespace().to_string(),
    };
    tracing::info!(%namespace, configmap = %name, "watching the routes ConfigMap, Endpoints and Leases");

    let managed = format!(
        "{}={}",
        ktx_names::LABEL_MANAGED_BY,
        ktx_names::MANAGED_BY_VALUE
    );
    let cm = Watched::new("ConfigMap", "configmaps", &namespace);
    let ep = Watched::new("Endpoints", "endpoints", &namespace);
    let ls = Watched::new("Lease", "leases.coordination.k8s.io", &namespace);
    let tasks = vec![
        cm.spawn(configmap::run(
            cm.events(
                Api::namespaced(client.clone(), &namespace),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            ),
            cm.clone(),
            format!("configmap {namespace}/{name}"),
            out.texts,
        )),
        ep.spawn(endpoints::run(
            ep.events(
                Api::namespaced(client.clone(), &namespace),
                watcher::Config::default().labels(&managed),
            ),
            ep.clone(),
            out.endpoints,
        )),
        ls.spawn(leases::run(
            ls.events(
                Api::namespaced(client, &namespace),
                watcher::Config::default().labels(&managed),
            ),
            ls.clone(),
            out.fresh,
        )),
    ];
    Ok(tasks)
}

/// DNS-1123 label (namespace) or subdomain (ConfigMap). Checked so that a typo fails at start
/// rather than as a field selector the API server rejects on every retry.
fn check_name(what: &'static str, name: &str, dots: bool) -> Result<(), KubeStartError> {
    let max = if dots { 253 } else { 63 };
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() <= max
        && name.chars().all(ok_char)
        && edge(name.chars().next())
        && edge(name.chars().last())
    {
        Ok(())
    } else {
        Err(KubeStartError::BadName {
            what,
            name: name.to_string(),
            allowed: if dots {
                "up to 253 lower-case letters, digits, '-' and '.'"
            } else {
                "up to 63 lower-case letters, digits and '-'"
            },
        })
    }
}

/// Watcher events after backoff; errors are reported by [`Watched::check`].
pub type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// One watched collection: what the logs and error hints call it.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Object kind, e.g. `Lease`.
    pub kind: &'static str,
    /// Resource as RBAC spells it, e.g. `leases.coordination.k8s.io`.
    pub resource: &'static str,
    pub namespace: String,
}

impl Watched {
    pub fn new(kind: &'static str, resource: &'static str, namespace: &str) -> Self {
        Watched {
            kind,
            resource,
            namespace: namespace.to_string(),
        }
    }

    /// A watcher of `api` with kube-runtime's default backoff (0.8 s doubling to 30 s, with
    /// jitter), so a broken API server or missing RBAC is retried gently.
    pub fn events<K>(&self, api: Api<K>, config: watcher::Config) -> Events<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        watcher::watcher(api, config)
            .backoff(Patient(watcher::DefaultBackoff::default()))
            .boxed()
    }

    /// Spawns `task` inside a `watch{kind, namespace}` span.
    fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let span = tracing::info_span!("watch", kind = self.kind, namespace = %self.namespace);
        tokio::spawn(task.instrument(span))
    }

    /// Passes events through; logs an error with what to check (the watcher retries by itself)
    /// and notes when the watch works again. `failing` is the caller's state between calls.
    pub fn check<K>(
        &self,
        r: Result<Event<K>, watcher::Error>,
        failing: &mut bool,
    ) -> Option<Event<K>> {
        match r {
            Ok(ev) => {
                // `Init` comes before the list request, so it proves nothing.
                if !matches!(ev, Event::Init) && std::mem::take(failing) {
                    tracing::info!("watch works again");
                }
                Some(ev)
            }
            Err(e) => {
                let code = status_code(&e);
                if code == Some(410) {
                    // The watch's resource version expired: the watcher relists by itself.
                    tracing::debug!(error = %e, "watch expired; relisting");
                } else {
                    *failing = true;
                    tracing::warn!(error = %e, hint = %self.hint(code), "watch failed; retrying with backoff");
                }
                None
            }
        }
    }

    fn hint(&self, code: Option<u16>) -> String {
        let (resource, ns) = (self.resource, &self.namespace);
        match code {
            Some(401) => "the API server rejected the router's credentials: check its service account token (or KUBECONFIG outside a cluster)".to_string(),
            Some(403) => format!("the router's ServiceAccount needs get, list and watch on {resource} in namespace {ns} (a Role and RoleBinding)"),
            Some(404) => format!("the API server does not serve {resource}: check the cluster's Kubernetes version"),
            _ => "check that the API server is reachable from the router (network policies, DNS, proxy settings)".to_string(),
        }
    }
}

/// kube-runtime's default backoff, minus the reset on every successful item: the watcher
/// emits `Init` before each list attempt, so with the reset a list that keeps failing (say, on
/// RBAC) would be retried every 0.8 s forever. The inner backoff still starts over once no error
/// has happened for 2 minutes.
struct Patient(watcher::DefaultBackoff);

impl Iterator for Patient {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

impl Backoff for Patient {
    fn reset(&mut self) {}
}

/// The HTTP status of an API error, if the failure was one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(::kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(s))
        | watcher::Error::WatchFailed(::kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("ConfigMap", "orders-ktx-routes", true).is_ok());
        assert!(check_name("ConfigMap", "a.b-c", true).is_ok());
        assert!(check_name("namespace", "a.b", false).is_err());
        assert!(check_name("ConfigMap", "", true).is_err());
        assert!(check_name("ConfigMap", "-x", true).is_err());
        assert!(check_name("ConfigMap", "X", true).is_err());
        let e = check_name("ConfigMap", "a,metadata.namespace=b", true).unwrap_err();
        assert!(e.to_string().contains("not a valid Kubernetes name"), "{e}");
    }

    #[test]
    fn backoff_keeps_growing_across_the_init_events_between_failures() {
        let mut b = Patient(watcher::DefaultBackoff::default());
        let mut last = Duration::ZERO;
        for _ in 0..6 {
            last = b.next().expect("the default backoff never gives up");
            b.reset(); // what StreamBackoff does on the `Init` before each retry
        }
        assert!(last >= Duration::from_secs(20), "6th retry after {last:?}");
    }

    #[test]
    fn hints_name_the_permission() {
        let w = Watched::new("Lease", "leases.coordination.k8s.io", "dev");
        let h = w.hint(Some(403));
        assert!(
            h.contains("get, list and watch on leases.coordination.k8s.io in namespace dev"),
            "{h}"
        );
        assert!(w.hint(None).contains("reachable"));
    }
}
