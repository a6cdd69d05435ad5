//! Creating the router's PodDisruptionBudget on clusters of any age: `policy/v1` where the API
//! server serves it (1.21+), `policy/v1beta1` before (the test cluster runs 1.20). The object is
//! built once as `policy/v1` ([`crate::objects::router::disruption_budget`]); the fields ktx
//! sets (`maxUnavailable`, `selector`) mean the same in both versions.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::ResourceExt;

use crate::cluster::api::Kube;
use crate::error::{status_code, ApiContext, Result};

const RESOURCE: &str = "poddisruptionbudgets.policy";

/// The newest `policy` version this API server serves PodDisruptionBudgets in.
async fn version(kube: &Kube) -> &'static str {
    match kube.client.list_api_group_resources("policy/v1").await {
        Ok(list)
            if list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets") =>
        {
            "v1"
        }
        _ => "v1beta1",
    }
}

/// Creates `pdb`; one that already exists (a router made by an earlier session) counts as done.
pub async fn create(kube: &Kube, pdb: &PodDisruptionBudget) -> Result<()> {
    let name = pdb.name_any();
    let v = version(kube).await;
    let gvk = GroupVersionKind::gvk("policy", v, "PodDisruptionBudget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
    let mut obj: DynamicObject = serde_json::to_value(pdb)
        .and_then(serde_json::from_value)
        .expect("a PodDisruptionBudget serializes to a JSON object with metadata");
    obj.types = Some(kube::core::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), &kube.namespace, &ar);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e).ctx("create", RESOURCE, &kube.namespace, &name),
    }
}
