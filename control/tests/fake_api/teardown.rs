//! Teardown on the fake cluster: the rule goes first, the Service is restored before anything
//! it may point at is deleted, scaled workloads are back before the Service is restored, and
//! the shared objects stay while any session of the Service is alive (last one out, with 2, 1
//! and 0 live sessions, a crashed one among them).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use serde_json::{json, Value};

use super::server::{Call, Fake};
use super::support::{self, cli, start, team_namespace, MESH};

fn writes(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| !matches!(c.verb, "get" | "list" | "watch"))
        // The session's own Lease patches (renewals, the local-process note) run beside the
        // steps, on their own beat: not steps of the teardown.
        .filter(|c| !(c.verb == "patch" && c.to_string().starts_with("patch leases/")))
        .collect()
}

/// Index of the first write matching `what` (`verb resource/name`) and `pred` on the result.
fn first(ws: &[&Call], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    ws.iter()
        .position(|c| c.to_string() == what && pred(&c.after))
        .unwrap_or_else(|| panic!("no write {what} in {:#?}", names(ws)))
}

fn names(ws: &[&Call]) -> Vec<String> {
    ws.iter().map(|c| c.to_string()).collect()
}

fn restored(v: &Value) -> bool {
    v["spec"]["selector"] == json!({ "app": "tb" })
        && v["metadata"]["annotations"]["ktx.dev/original-selector"].is_null()
}

#[tokio::test]
async fn mesh_teardown_removes_the_rule_first_and_restores_before_deleting() {
    let (fake, before) = team_namespace("tb");
    let s = start(&fake, MESH).await;
    let from = fake.calls().len();
    s.end().await;
    let calls = fake.calls();
    let ws = writes(&calls[from..]);
    assert_eq!(
        ws[0].to_string(),
        "update configmaps/tb-ktx-routes",
        "the rule goes first: {:#?}",
        names(&ws)
    );
    let rule_gone = |v: &Value| {
        !v["data"]["routes.yaml"]
            .as_str()
            .unwrap_or("")
            .contains("foobar")
    };
    assert!(rule_gone(&ws[0].after), "that update removed the rule");
    let shadow = first(&ws, "delete pods/tb-ktx-mesh-foobar", |_| true);
    let lease = first(&ws, "delete leases/tb-ktx-mesh-foobar", |_| true);
    let restore = first(&ws, "update services/tb", restored);
    assert!(
        shadow < lease && lease < restore,
        "rule → shadow → Lease → restore: {:#?}",
        names(&ws)
    );
    for shared in [
        "delete deployments/tb-ktx-router",
        "delete configmaps/tb-ktx-routes",
        "delete services/tb-ktx-stuntman",
    ] {
        assert!(
            restore < first(&ws, shared, |_| true),
            "restore before {shared}: {:#?}",
            names(&ws)
        );
    }
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn exchange_teardown_scales_back_then_restores_then_deletes_the_shadow() {
    let (fake, before) = team_namespace("tb");
    let s = start(
        &fake,
        &["exchange", "tb", "--mode", "scale", "--expose", "3001:80"],
    )
    .await;
    let scaled: Deployment = fake.get("tb").expect("the workload");
    assert_eq!(
        scaled.spec.and_then(|s| s.replicas),
        Some(0),
        "scaled to 0 while exchanged"
    );
    let from = fake.calls().len();
    s.end().await;
    let calls = fake.calls();
    let ws = writes(&calls[from..]);
    // Through the scale subresource: a patch of spec.replicas.
    let back = first(&ws, "patch deployments/tb", |v| {
        v["spec"]["replicas"] == json!(2)
    });
    let restore = first(&ws, "update services/tb", restored);
    let shadow = ws
        .iter()
        .position(|c| c.verb == "delete" && c.resource == "pods")
        .expect("the shadow pod is deleted");
    assert!(
        back < restore && restore < shadow,
        "scale back → restore → shadow: {:#?}",
        names(&ws)
    );
    assert_eq!(fake.snapshot(), before);
}

fn meshed(fake: &Fake) -> bool {
    let svc: Service = fake.get("tb").expect("Service tb");
    svc.spec
        .and_then(|s| s.selector)
        .is_some_and(|s| s.get("ktx.dev/role").map(String::as_str) == Some("router"))
        && fake.get::<Deployment>("tb-ktx-router").is_some()
}

/// An exchange whose session was ended elsewhere (`ktx recover`, or the janitor while the
/// laptop slept) finds, when its ktx notices, that a teammate has meshed the Service since: its
/// teardown leaves the Service and the workload as the teammate has them.
#[tokio::test]
async fn a_lost_exchange_leaves_a_service_a_teammate_took_since() {
    let (fake, _before) = team_namespace("tb");
    let a = start(
        &fake,
        &["exchange", "tb", "--mode", "scale", "--expose", "3001:80"],
    )
    .await;
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    support::run(&fake, &cli(&["recover", "tb"]), &shutdown)
        .await
        .expect("recover");
    let b = start(
        &fake,
        &["mesh", "tb", "--versionMark", "b", "--expose", "3002:80"],
    )
    .await;
    assert!(meshed(&fake), "the teammate's mesh is up");
    // A's ktx finds its Lease gone at its next renewal and tears down what it recorded.
    let _ = a.ended().await;
    assert!(
        meshed(&fake),
        "the lost exchange gave the Service back from under the mesh"
    );
    let workload: Deployment = fake.get("tb").expect("the workload");
    assert_eq!(workload.spec.and_then(|s| s.replicas), Some(2));
    b.end().await;
}

#[tokio::test]
async fn the_last_session_out_restores_the_service_and_not_before() {
    let (fake, before) = team_namespace("tb");
    let a = start(
        &fake,
        &["mesh", "tb", "--versionMark", "a", "--expose", "3001:80"],
    )
    .await;
    let b = start(
        &fake,
        &["mesh", "tb", "--versionMark", "b", "--expose", "3002:80"],
    )
    .await;
    // Two live sessions; one ends: the other keeps the router.
    b.end().await;
    assert!(
        meshed(&fake),
        "one live session left: the Service stays meshed"
    );
    assert!(
        fake.get::<Service>("tb-ktx-mesh-b").is_none()
            && fake.get::<Service>("tb-ktx-mesh-a").is_some()
    );
    // One live session; it ends: the Service is as it was.
    a.end().await;
    assert_eq!(
        fake.snapshot(),
        before,
        "the last one out restores everything"
    );
}

/// Makes the Lease of a crashed session old, as it would be 25 s after the crash.
fn expire(fake: &Fake, lease: &str) {
    fake.edit("leases", lease, |v| {
        v["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    });
}

#[tokio::test]
async fn a_crashed_session_does_not_keep_the_service_from_the_last_one_out() {
    let (fake, before) = team_namespace("tb");
    let a = start(
        &fake,
        &["mesh", "tb", "--versionMark", "a", "--expose", "3001:80"],
    )
    .await;
    let b = start(
        &fake,
        &["mesh", "tb", "--versionMark", "b", "--expose", "3002:80"],
    )
    .await;
    a.crash();
    expire(&fake, "tb-ktx-mesh-a");
    // b is the last live session: ending it removes a's leftovers and restores the Service.
    b.end().await;
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn clean_with_no_live_session_restores_the_service() {
    let (fake, before) = team_namespace("tb");
    let a = start(
        &fake,
        &["mesh", "tb", "--versionMark", "a", "--expose", "3001:80"],
    )
    .await;
    a.crash();
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    support::run(&fake, &cli(&["clean"]), &shutdown)
        .await
        .expect("clean runs");
    assert!(
        meshed(&fake),
        "a live (not yet expired) session is never touched by clean"
    );
    expire(&fake, "tb-ktx-mesh-a");
    support::run(&fake, &cli(&["clean"]), &shutdown)
        .await
        .expect("clean runs");
    assert_eq!(
        fake.snapshot(),
        before,
        "no live session left: clean restores everything"
    );
}

/// The shadow's key does not outlive its session's cleanup by as long as the kubelet takes to
/// remove the stopped shadow pod (more than a minute on this repository's test cluster): it
/// goes with the session's Lease.
#[tokio::test]
async fn clean_removes_the_shadow_key_while_its_pod_is_still_terminating() {
    let (fake, _before) = team_namespace("tb");
    fake.slow_kubelet();
    let a = start(
        &fake,
        &["mesh", "tb", "--versionMark", "a", "--expose", "3001:80"],
    )
    .await;
    assert!(fake.get::<Secret>("tb-ktx-mesh-a").is_some());
    a.crash();
    expire(&fake, "tb-ktx-mesh-a");
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    support::run(&fake, &cli(&["clean"]), &shutdown)
        .await
        .expect("clean runs");
    let pod = fake
        .get::<Pod>("tb-ktx-mesh-a")
        .expect("the kubelet is slow");
    assert!(
        pod.metadata.deletion_timestamp.is_some(),
        "clean deleted the shadow pod"
    );
    assert!(
        fake.get::<Secret>("tb-ktx-mesh-a").is_none(),
        "the shadow's Secret is left while its pod terminates"
    );
    fake.finish_terminating();
    assert!(!meshed(&fake));
}
