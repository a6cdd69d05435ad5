//! The router's API credentials: with the namespace's `kube-root-ca.crt`, a projected volume
//! (token request, CA from the pod's annotation, namespace) in place of Kubernetes' default
//! mount, whose Secret or ConfigMap the kubelet must first be allowed to watch
//! (`objects/router.rs` `api_access`); without it, the default.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec};

use super::server::Fake;
use super::support::{meta, start, team_service, MESH};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/// Runs `ktx mesh tb` until it is up, returns the router's pod template, ends the session and
/// checks the namespace is as before.
async fn router_template(fake: &Fake) -> PodTemplateSpec {
    let before = fake.snapshot();
    let session = start(fake, MESH).await;
    let router: Deployment = fake.get("tb-ktx-router").expect("the router Deployment");
    session.end().await;
    assert_eq!(fake.snapshot(), before);
    router.spec.expect("a spec").template
}

#[tokio::test]
async fn with_the_cluster_ca_the_router_mounts_a_requested_token_and_the_ca() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    fake.seed(&ConfigMap {
        metadata: meta("kube-root-ca.crt", &[]),
        data: Some(BTreeMap::from([("ca.crt".to_string(), PEM.to_string())])),
        ..Default::default()
    });
    let template = router_template(&fake).await;
    let annotations = template.metadata.unwrap().annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("ktx.dev/kube-ca").map(String::as_str),
        Some(PEM)
    );
    let spec = template.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let volumes = spec.volumes.unwrap_or_default();
    assert_eq!(volumes.len(), 1, "{volumes:#?}");
    let sources = volumes[0].projected.clone().unwrap().sources.unwrap();
    assert!(sources[0].service_account_token.is_some(), "{sources:#?}");
    let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
    assert_eq!(
        mounts
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect::<Vec<_>>(),
        ["/var/run/secrets/kubernetes.io/serviceaccount"]
    );
}

#[tokio::test]
async fn without_the_cluster_ca_the_router_gets_the_default_mount() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    let template = router_template(&fake).await;
    let spec = template.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, None);
    assert!(spec.volumes.is_none(), "{:#?}", spec.volumes);
    let annotations = template.metadata.unwrap().annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("ktx.dev/kube-ca"),
        "{annotations:#?}"
    );
}
