//! `ktx exchange --mode scale`: the workloads behind Service S (Deployments and StatefulSets whose
//! pod template matches S's original selector) are scaled to 0 while exchanged, and back after.
//!
//! The replica count is saved on the workload itself, in the annotation
//! `ktx.dev/original-replicas` (`{"service": S, "replicas": N}`), in the same update that scales
//! it down — so `ktx clean` can scale it back after a crash. Scaling back waits (within the
//! timeout) until the pods are Ready again, because S is restored right after.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ktx_names::ANNOTATION_ORIGINAL_REPLICAS;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::Result;
use crate::kube::{Kind, Kube};
use crate::progress::Progress;

/// The kinds of workloads ktx scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// The annotation's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub service: String,
    pub replicas: i32,
}

/// What ktx needs of a workload object.
trait Workload: Kind {
    fn replicas(&self) -> Option<i32>;
    fn set_replicas(&mut self, n: i32);
    fn template_labels(&self) -> Option<&BTreeMap<String, String>>;
    fn ready(&self) -> i32;
}

macro_rules! workload {
    ($t:ty) => {
        impl Workload for $t {
            fn replicas(&self) -> Option<i32> {
                self.spec.as_ref().and_then(|s| s.replicas)
            }
            fn set_replicas(&mut self, n: i32) {
                self.spec.get_or_insert_with(Default::default).replicas = Some(n);
            }
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

/// The saved count on a workload, if ktx scaled it.
pub fn saved(meta: &ObjectMeta) -> Option<Saved> {
    meta.annotations
        .as_ref()?
        .get(ANNOTATION_ORIGINAL_REPLICAS)
        .and_then(|v| serde_json::from_str(v).ok())
}

/// Sets replicas to 0 and saves the count (unless already saved). Returns whether it changed.
fn scale_to_zero<W: Workload>(w: &mut W, service: &str) -> bool {
    if saved(w.meta()).is_some() || w.replicas() == Some(0) {
        return false;
    }
    let s = Saved {
        service: service.to_string(),
        replicas: w.replicas().unwrap_or(1),
    };
    w.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            ANNOTATION_ORIGINAL_REPLICAS.to_string(),
            serde_json::to_string(&s).expect("a Saved has a string and a number"),
        );
    w.set_replicas(0);
    true
}

/// Gives the saved count back and removes the annotation. Returns whether it changed.
fn restore_count<W: Workload>(w: &mut W) -> bool {
    let Some(s) = saved(w.meta()) else {
        return false;
    };
    w.set_replicas(s.replicas);
    if let Some(a) = w.meta_mut().annotations.as_mut() {
        a.remove(ANNOTATION_ORIGINAL_REPLICAS);
        if a.is_empty() {
            w.meta_mut().annotations = None;
        }
    }
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

/// Scales one workload to 0 for `service`.
pub async fn down(kube: &Kube, kind: WorkloadKind, name: &str, service: &str) -> Result<()> {
    match kind {
        WorkloadKind::Deployment => {
            kube.modify::<Deployment, _>(name, |w| Ok(scale_to_zero(w, service)))
                .await?;
        }
        WorkloadKind::StatefulSet => {
            kube.modify::<StatefulSet, _>(name, |w| Ok(scale_to_zero(w, service)))
                .await?;
        }
    }
    Ok(())
}

async fn back_one<W: Workload>(
    kube: &Kube,
    name: &str,
    timeout: Duration,
    p: &Progress,
) -> Result<()> {
    let Some(w) = kube.modify::<W, _>(name, |w| Ok(restore_count(w))).await? else {
        return Ok(());
    };
    let want = w.replicas().unwrap_or(1);
    let deadline = Instant::now() + timeout;
    loop {
        let ready = kube.get::<W>(name).await?.map_or(0, |w| w.ready());
        if ready >= want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            p.warn(format!("{name}: {ready} of {want} pods Ready after scaling back; restoring the Service anyway"));
            return Ok(());
        }
        p.waiting(format!(
            "waiting for {name} to be back: {ready} of {want} pods Ready"
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Scales one workload back to its saved count and waits for it (within `timeout`).
pub async fn back(
    kube: &Kube,
    kind: WorkloadKind,
    name: &str,
    timeout: Duration,
    p: &Progress,
) -> Result<()> {
    match kind {
        WorkloadKind::Deployment => back_one::<Deployment>(kube, name, timeout, p).await,
        WorkloadKind::StatefulSet => back_one::<StatefulSet>(kube, name, timeout, p).await,
    }
}

/// Scales back every workload ktx scaled down for `service` (after a crash: `ktx clean`).
pub async fn back_all(kube: &Kube, service: &str, timeout: Duration, p: &Progress) -> Result<()> {
    let mine = |m: &ObjectMeta| saved(m).is_some_and(|s| s.service == service);
    for d in kube.list::<Deployment>("").await? {
        if mine(&d.metadata) {
            back(kube, WorkloadKind::Deployment, &d.name_any(), timeout, p).await?;
        }
    }
    for s in kube.list::<StatefulSet>("").await? {
        if mine(&s.metadata) {
            back(kube, WorkloadKind::StatefulSet, &s.name_any(), timeout, p).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;

    use super::*;

    #[test]
    fn scaling_saves_the_count_and_gives_it_back_exactly() {
        let before = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = before.clone();
        assert!(scale_to_zero(&mut d, "orders"));
        assert_eq!(d.replicas(), Some(0));
        assert_eq!(
            saved(&d.metadata),
            Some(Saved {
                service: "orders".into(),
                replicas: 3
            })
        );
        assert!(
            !scale_to_zero(&mut d, "orders"),
            "never saves 0 over the real count"
        );
        assert!(restore_count(&mut d));
        assert_eq!(d, before);
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
