//! `ktx exchange --mode scale`: the workloads behind Service S (Deployments and StatefulSets whose
//! pod template matches S's original selector) are scaled to 0 while exchanged, and back after.
//!
//! Replicas change only through the `scale` subresource: a developer's Role grants
//! `deployments/scale` and `statefulsets/scale`, never `update` on the workloads (an edit of the
//! pod template would run any code as any ServiceAccount). The counts to give back are saved on
//! Service S, in the annotation `ktx.dev/original-replicas` (a list of `{kind, name, replicas}`),
//! before the workload is scaled down — so `ktx clean` and the janitor can scale it back after a
//! crash. Scaling back waits (within the timeout) until the pods are Ready again, because S is
//! restored right after.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ktx_names::ANNOTATION_ORIGINAL_REPLICAS;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::api::{resource, Kind, Kube};
use crate::error::{status_code, ApiContext, Result};
use crate::progress::Progress;

/// The kinds of workloads ktx scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// One saved count, an element of the annotation's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub kind: WorkloadKind,
    pub name: String,
    pub replicas: i32,
}

/// What ktx needs of a workload object.
trait Workload: Kind {
    fn template_labels(&self) -> Option<&BTreeMap<String, String>>;
    fn ready(&self) -> i32;
}

macro_rules! workload {
    ($t:ty) => {
        impl Workload for $t {
            fn template_labels(&self) -> Option<&BTreeMap<String, String>> {
                self.spec
                    .as_ref()?
                    .template
                    .metadata
                    .as_ref()?
                    .labels
                    .as_ref()
            }
            fn ready(&self) -> i32 {
                self.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
            }
        }
    };
}
workload!(Deployment);
workload!(StatefulSet);

/// Whether pods made from `labels` are selected by `selector`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !selector.is_empty()
        && labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// The counts saved on Service S (its metadata).
pub fn saved(meta: &ObjectMeta) -> Vec<Saved> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ORIGINAL_REPLICAS))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

fn store(svc: &mut Service, list: &[Saved]) {
    let ann = svc
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if list.is_empty() {
        ann.remove(ANNOTATION_ORIGINAL_REPLICAS);
    } else {
        ann.insert(
            ANNOTATION_ORIGINAL_REPLICAS.to_string(),
            serde_json::to_string(list).expect("a list of kinds, names and numbers"),
        );
    }
    if ann.is_empty() {
        svc.metadata.annotations = None;
    }
}

/// Saves `s` on S unless a count for that workload is saved already (never 0 over the real
/// count). Returns whether it changed.
fn remember(svc: &mut Service, s: Saved) -> bool {
    let mut list = saved(&svc.metadata);
    if list.iter().any(|o| o.kind == s.kind && o.name == s.name) {
        return false;
    }
    list.push(s);
    store(svc, &list);
    true
}

/// Removes the saved count of one workload from S. Returns whether it changed.
fn forget(svc: &mut Service, kind: WorkloadKind, name: &str) -> bool {
    let mut list = saved(&svc.metadata);
    let before = list.len();
    list.retain(|o| !(o.kind == kind && o.name == name));
    if list.len() == before {
        return false;
    }
    store(svc, &list);
    true
}

async fn matching<W: Workload>(
    kube: &Kube,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    Ok(kube
        .list::<W>("")
        .await?
        .iter()
        .filter(|w| selects(selector, w.template_labels()))
        .map(|w| w.name_any())
        .collect())
}

/// The workloads behind `selector`.
pub async fn workloads(
    kube: &Kube,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<(WorkloadKind, String)>> {
    let mut out: Vec<(WorkloadKind, String)> = matching::<Deployment>(kube, selector)
        .await?
        .into_iter()
        .map(|n| (WorkloadKind::Deployment, n))
        .collect();
    out.extend(
        matching::<StatefulSet>(kube, selector)
            .await?
            .into_iter()
            .map(|n| (WorkloadKind::StatefulSet, n)),
    );
    Ok(out)
}

/// The workload's desired replicas, read through its `scale` subresource (`None`: gone).
async fn replicas_of<W: Workload>(kube: &Kube, name: &str) -> Result<Option<i32>> {
    match kube.api::<W>().get_scale(name).await {
        Ok(s) => Ok(Some(s.spec.and_then(|s| s.replicas).unwrap_or(0))),
        Err(e) if status_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e).ctx(
            "get",
            &format!("{}/scale", resource::<W>()),
            &kube.namespace,
            name,
        ),
    }
}

/// Sets the workload's replicas through its `scale` subresource; a workload that is gone is
/// left alone.
async fn set_replicas<W: Workload>(kube: &Kube, name: &str, n: i32) -> Result<()> {
    let patch = serde_json::json!({ "spec": { "replicas": n } });
    match kube
        .api::<W>()
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e).ctx(
            "patch",
            &format!("{}/scale", resource::<W>()),
            &kube.namespace,
            name,
        ),
    }
}

async fn down_one<W: Workload>(
    kube: &Kube,
    kind: WorkloadKind,
    name: &str,
    service: &str,
) -> Result<()> {
    let Some(replicas) = replicas_of::<W>(kube, name).await? else {
        return Ok(());
    };
    if replicas == 0 {
        return Ok(());
    }
    let s = Saved {
        kind,
        name: name.to_string(),
        replicas,
    };
    kube.modify::<Service, _>(service, |svc| Ok(remember(svc, s.clone())))
        .await?;
    set_replicas::<W>(kube, name, 0).await
}

/// Scales one workload to 0 for `service`, after saving its count on the Service.
pub async fn down(kube: &Kube, kind: WorkloadKind, name: &str, service: &str) -> Result<()> {
    match kind {
        WorkloadKind::Deployment => down_one::<Deployment>(kube, kind, name, service).await,
        WorkloadKind::StatefulSet => down_one::<StatefulSet>(kube, kind, name, service).await,
    }
}

async fn back_one<W: Workload>(
    kube: &Kube,
    kind: WorkloadKind,
    name: &str,
    service: &str,
    timeout: Duration,
    p: &Progress,
) -> Result<()> {
    let Some(svc) = kube.get::<Service>(service).await? else {
        return Ok(());
    };
    let Some(want) = saved(&svc.metadata)
        .into_iter()
        .find(|s| s.kind == kind && s.name == name)
        .map(|s| s.replicas)
    else {
        return Ok(());
    };
    set_replicas::<W>(kube, name, want).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let Some(w) = kube.get::<W>(name).await? else {
            break;
        };
        let ready = w.ready();
        if ready >= want {
            break;
        }
        if Instant::now() >= deadline {
            p.warn(format!("{name}: {ready} of {want} pods Ready after scaling back; restoring the Service anyway"));
            break;
        }
        p.waiting(format!(
            "waiting for {name} to be back: {ready} of {want} pods Ready"
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    kube.modify::<Service, _>(service, |svc| Ok(forget(svc, kind, name)))
        .await?;
    Ok(())
}

/// Scales one workload back to the count saved on `service` and waits for it (within
/// `timeout`), then forgets the count.
pub async fn back(
    kube: &Kube,
    kind: WorkloadKind,
    name: &str,
    service: &str,
    timeout: Duration,
    p: &Progress,
) -> Result<()> {
    match kind {
        WorkloadKind::Deployment => {
            back_one::<Deployment>(kube, kind, name, service, timeout, p).await
        }
        WorkloadKind::StatefulSet => {
            back_one::<StatefulSet>(kube, kind, name, service, timeout, p).await
        }
    }
}

/// Scales back every workload ktx scaled down for `service` (after a crash: `ktx clean`).
pub async fn back_all(kube: &Kube, service: &str, timeout: Duration, p: &Progress) -> Result<()> {
    let Some(svc) = kube.get::<Service>(service).await? else {
        return Ok(());
    };
    for s in saved(&svc.metadata) {
        back(kube, s.kind, &s.name, service, timeout, p).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_saved_on_the_service_once_and_forgotten_exactly() {
        let before = Service {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                annotations: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut svc = before.clone();
        let three = Saved {
            kind: WorkloadKind::Deployment,
            name: "orders".into(),
            replicas: 3,
        };
        assert!(remember(&mut svc, three.clone()));
        assert!(
            !remember(
                &mut svc,
                Saved {
                    replicas: 0,
                    ..three.clone()
                }
            ),
            "never saves 0 over the real count"
        );
        let db = Saved {
            kind: WorkloadKind::StatefulSet,
            name: "orders".into(),
            replicas: 1,
        };
        assert!(remember(&mut svc, db.clone()));
        assert_eq!(saved(&svc.metadata), [three, db]);
        assert!(forget(&mut svc, WorkloadKind::StatefulSet, "orders"));
        assert!(forget(&mut svc, WorkloadKind::Deployment, "orders"));
        assert!(!forget(&mut svc, WorkloadKind::Deployment, "orders"));
        assert_eq!(svc, before);
    }

    #[test]
    fn selection_by_template_labels() {
        let sel = BTreeMap::from([("app".to_string(), "orders".to_string())]);
        let mut labels = sel.clone();
        labels.insert("tier".into(), "web".into());
        assert!(selects(&sel, Some(&labels)));
        assert!(!selects(&sel, None));
        assert!(!selects(&BTreeMap::new(), Some(&labels)));
    }
}
