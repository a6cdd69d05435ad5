//! `ktx mesh`'s setup runs two branches at once after the session Lease: (router Ready → switch
//! the Service) and (shadow Secret, Pod, Service → tunnel → shadow Ready). The shadow comes up
//! while the router is still starting; the Service is switched only once the router is Ready;
//! the rule goes in only once both are done; and a failure in the shadow's branch while the
//! router's is still waiting rolls everything back.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::server::Call;
use super::support::{self, cli, team_namespace, MESH};

const PATIENCE: Duration = Duration::from_secs(30);

fn writes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !matches!(c.verb, "get" | "list" | "watch"))
        .map(|c| c.to_string())
        .collect()
}

fn switched(v: &Value) -> bool {
    !v["spec"]["selector"].is_null() && v["spec"]["selector"] != json!({ "app": "tb" })
}

/// Index of the first call that is `what` and whose stored result satisfies `pred` (a create
/// is `create RESOURCE/` and names its object in the result).
fn first(calls: &[Call], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    calls
        .iter()
        .position(|c| c.to_string() == what && pred(&c.after))
        .unwrap_or_else(|| panic!("no {what} in {:#?}", writes(calls)))
}

fn named(name: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["metadata"]["name"] == json!(name)
}

#[tokio::test]
async fn the_shadow_comes_up_while_the_router_starts_and_the_rule_waits_for_both() {
    let (fake, before) = team_namespace("tb");
    fake.hold_deployments();
    let cli = cli(MESH);
    let ctx = support::ctx(&fake, &cli);
    let progress = ctx.progress.clone();
    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let mut done = tokio::spawn(async move { support::run_ctx(&ctx, &cli, &shutdown).await });
    tokio::select! {
        () = progress.until(|l| l.contains("Shadow pod") && l.ends_with("is Ready")) => {}
        r = &mut done => panic!("mesh ended before its shadow was up: {r:?}\n{:#?}", progress.lines()),
        () = tokio::time::sleep(PATIENCE) => panic!("the shadow is up in time: {:#?}", progress.lines()),
    }
    // The router has no Ready pod: S still selects the team's pods, and no rule is written.
    let svc: Service = fake.get("tb").expect("Service tb");
    assert_eq!(
        serde_json::to_value(svc.spec.and_then(|s| s.selector)).unwrap(),
        json!({ "app": "tb" }),
        "S is switched only once the router is Ready"
    );
    let calls = fake.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.to_string() == "update configmaps/tb-ktx-routes"),
        "no rule before the router is Ready: {:#?}",
        writes(&calls)
    );
    assert!(
        !progress.lines().iter().any(|l| l.contains("Router")),
        "the router was not reported Ready: {:#?}",
        progress.lines()
    );

    fake.release_deployments();
    tokio::select! {
        () = progress.until(|l| l.contains("Session is up")) => {}
        r = &mut done => panic!("mesh ended before it was up: {r:?}\n{:#?}", progress.lines()),
        () = tokio::time::sleep(PATIENCE) => panic!("up in time: {:#?}", progress.lines()),
    }
    let calls = fake.calls();
    let shadow = first(&calls, "create pods/", named("tb-ktx-mesh-foobar"));
    let switch = first(&calls, "update services/tb", switched);
    let rule = first(&calls, "update configmaps/tb-ktx-routes", |v| {
        v["data"]["routes.yaml"]
            .as_str()
            .is_some_and(|r| r.contains("foobar"))
    });
    assert!(
        shadow < switch && switch < rule,
        "shadow pod, then the switch (router Ready), then the rule: {:#?}",
        writes(&calls)
    );

    stop.fire();
    tokio::time::timeout(PATIENCE, done)
        .await
        .expect("teardown in time")
        .expect("the session task ran")
        .expect("the session ends cleanly");
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn a_shadow_failing_while_the_router_starts_rolls_back_exactly() {
    let (fake, before) = team_namespace("tb");
    fake.hold_deployments();
    fake.forbid("pods", "create");
    let cli = cli(MESH);
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let r = tokio::time::timeout(PATIENCE, support::run(&fake, &cli, &shutdown))
        .await
        .expect("the setup fails in time");
    let err = format!("{}", r.expect_err("no shadow pod, no session"));
    assert!(err.contains("pods"), "{err}");
    let calls = fake.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.to_string() == "update services/tb" && switched(&c.after)),
        "the router never got Ready, so S was never switched: {:#?}",
        writes(&calls)
    );
    assert_eq!(fake.snapshot(), before, "{:#?}", writes(&calls));
}
