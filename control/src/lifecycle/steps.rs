//! Setup steps that `mesh` (both modes), `exchange` and `preview` share, one function each, so
//! the commands are sequences of steps rather than copies of them: find the Service, resolve its
//! ports, start the session's Lease, warn about local ports nothing listens on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use ktx_names::{ServiceNames, LABEL_PART_OF, PART_OF_VALUE, SHARED_ROUTER_ACCOUNT};
use kube::ResourceExt;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::lifecycle::flow::{self, Ctx};
use crate::lifecycle::local::LocalReport;
use crate::lifecycle::undo::{Step, Undo};
use crate::objects::lease::{self as lease_obj, LeaseParams};
use crate::objects::selector_string;
use crate::plan::expose::Expose;
use crate::plan::ownership::SessionOwner;
use crate::plan::ports::{self, ExposedPort, PortPlan};

/// Service `service` of the namespace, or [`Error::ServiceNotFound`] naming it.
pub async fn service(ctx: &Ctx, service: &str) -> Result<Service> {
    ctx.kube
        .get::<Service>(service)
        .await?
        .ok_or_else(|| Error::ServiceNotFound {
            namespace: ctx.kube.namespace.clone(),
            service: service.to_string(),
        })
}

/// `svc`'s ports resolved against `--expose` and the pods `selector` (its own, or the original
/// one it had before ktx took it over) selects: named targetPorts are read from those pods.
pub async fn ports(
    ctx: &Ctx,
    svc: &Service,
    selector: &BTreeMap<String, String>,
    expose: &[Expose],
) -> Result<PortPlan> {
    let pods = ctx.kube.list::<Pod>(&selector_string(selector)).await?;
    let spec = svc.spec.clone().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    Ok(ports::resolve(
        name,
        spec.ports.as_deref().unwrap_or(&[]),
        &pods,
        expose,
    )?)
}

/// What a session keeps of its Lease once the keeper is on the undo stack.
pub struct SessionLease {
    /// What the session's objects name as their owner.
    pub owner: SessionOwner,
    /// Says why when the Lease is lost (deleted, or taken by someone else).
    pub lost: watch::Receiver<Option<String>>,
    name: String,
    uid: String,
}

impl SessionLease {
    /// What the session reports about the developer's local ports, under this Lease.
    pub fn local(&self, exposed: Vec<ExposedPort>) -> LocalReport {
        LocalReport {
            lease: self.name.clone(),
            uid: self.uid.clone(),
            exposed,
        }
    }
}

/// Creates the session's Lease `name` for Service `names.service()` and starts renewing it; the
/// keeper goes on `undo` (ending the Lease is the last undo of a session's own objects).
pub async fn session_lease(
    ctx: &Ctx,
    undo: &Undo,
    names: &ServiceNames,
    params: &LeaseParams<'_>,
) -> Result<SessionLease> {
    let lease = lease_obj::lease(
        names,
        &ctx.kube.namespace,
        params,
        crate::cluster::clock::now(),
    );
    let keeper = flow::start_lease(ctx, undo, lease, names.service()).await?;
    let started = SessionLease {
        owner: keeper.owner(),
        lost: keeper.lost(),
        name: keeper.name().to_string(),
        uid: keeper.uid().to_string(),
    };
    undo.push(Step::EndLease(keeper));
    Ok(started)
}

/// Warns (and goes on) when nothing listens on an exposed local port, saying what requests get
/// `meanwhile`; `--skip-port-checking` turns it off.
pub async fn check_local_ports(ctx: &Ctx, exposed: &[ExposedPort], meanwhile: &str) {
    if !ctx.global.skip_port_checking {
        crate::lifecycle::local::warn_if_not_listening(&ctx.progress, exposed, meanwhile).await;
    }
}

/// Whether the namespace has the router ServiceAccount the ktx chart installs (checked by name
/// and the chart's `app.kubernetes.io/part-of: ktx` label). Unreadable counts as absent: ktx
/// then makes the router its own account, as without the chart.
pub async fn shared_router_account(kube: &crate::cluster::api::Kube) -> bool {
    match kube.get::<ServiceAccount>(SHARED_ROUTER_ACCOUNT).await {
        Ok(Some(sa)) => sa.labels().get(LABEL_PART_OF).map(String::as_str) == Some(PART_OF_VALUE),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the shared router account; not using it");
            false
        }
    }
}

/// The ConfigMap Kubernetes (1.20 on) publishes in every namespace with the cluster's CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The cluster's CA certificate, from [`ROOT_CA_CONFIGMAP`], for the router's credentials
/// (`objects/router.rs` `api_access`). Absent or unreadable (an older cluster, a Role that
/// names its ConfigMaps) counts as none: the router then gets Kubernetes' default mount.
pub async fn cluster_ca(kube: &crate::cluster::api::Kube) -> Option<String> {
    match kube.get::<ConfigMap>(ROOT_CA_CONFIGMAP).await {
        Ok(cm) => cm
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove("ca.crt"))
            .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----")),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read {ROOT_CA_CONFIGMAP}; the router gets the default token mount");
            None
        }
    }
}
