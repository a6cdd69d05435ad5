//! Issue 12, findings 1 and 2: ktx, `ktx clean` and the janitor delete only what ktx made for
//! the session at hand; a name clash is an error that names the object, never a delete.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret, Service, ServiceSpec};
use kube::ResourceExt;

use super::server::{Fake, NS};
use super::support::{self, cli, forged_lease, meta, team_secret, team_service, MESH};

const SHADOW_LABELS: [(&str, &str); 3] = [
    ("app.kubernetes.io/managed-by", "ktx"),
    ("ktx.dev/service", "foo"),
    ("ktx.dev/role", "shadow"),
];

/// A Pod and a Service of the team's that carry ktx's shadow labels (copied from a manifest, say)
/// but were not made by ktx: `ktx clean` used to remove them as "orphans".
fn labelled_lookalikes(fake: &Fake, name: &str) -> (String, String) {
    let pod = fake.seed(&Pod {
        metadata: meta(name, &SHADOW_LABELS),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("team/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    });
    let svc = fake.seed(&Service {
        metadata: meta(name, &SHADOW_LABELS),
        spec: Some(ServiceSpec::default()),
        status: None,
    });
    (pod, svc)
}

fn uid_of<K>(fake: &Fake, name: &str) -> Option<String>
where
    K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>,
{
    fake.get::<K>(name).and_then(|o| o.uid())
}

#[tokio::test]
async fn clean_with_a_forged_lease_deletes_none_of_the_teams_objects() {
    let fake = Fake::new();
    team_service(&fake, "foo");
    let secret = team_secret(&fake, "db-password");
    let pod = fake.seed(&Pod {
        metadata: meta("db-password", &[("team", "shop")]),
        spec: Some(PodSpec::default()),
        status: None,
    });
    let svc = fake.seed(&Service {
        metadata: meta("db-password", &[("team", "shop")]),
        spec: Some(ServiceSpec::default()),
        status: None,
    });
    let (look_pod, look_svc) = labelled_lookalikes(&fake, "foo-ktx-mesh-x");
    // Named and labelled like foo's shared routes, which "last one out" deletes.
    let routes = fake.seed(&k8s_openapi::api::core::v1::ConfigMap {
        metadata: meta(
            "foo-ktx-routes",
            &[
                ("app.kubernetes.io/managed-by", "ktx"),
                ("ktx.dev/service", "foo"),
                ("ktx.dev/role", "routes"),
            ],
        ),
        ..Default::default()
    });
    forged_lease(&fake, "db-password", "foo", 15);

    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    support::run(&fake, &cli(&["clean"]), &shutdown)
        .await
        .expect("clean runs");

    assert_eq!(
        uid_of::<Secret>(&fake, "db-password"),
        Some(secret),
        "the team's Secret"
    );
    assert_eq!(
        uid_of::<Pod>(&fake, "db-password"),
        Some(pod),
        "the team's Pod"
    );
    assert_eq!(
        uid_of::<Service>(&fake, "db-password"),
        Some(svc),
        "the team's Service"
    );
    assert_eq!(
        uid_of::<Pod>(&fake, "foo-ktx-mesh-x"),
        Some(look_pod),
        "a labelled Pod ktx did not make"
    );
    assert_eq!(
        uid_of::<Service>(&fake, "foo-ktx-mesh-x"),
        Some(look_svc),
        "a labelled Service ktx did not make"
    );
    assert_eq!(
        uid_of::<k8s_openapi::api::core::v1::ConfigMap>(&fake, "foo-ktx-routes"),
        Some(routes),
        "a labelled ConfigMap ktx did not make"
    );
}

#[tokio::test]
async fn the_janitor_with_a_forged_lease_deletes_none_of_the_teams_objects() {
    let fake = Fake::new();
    team_service(&fake, "foo");
    let secret = team_secret(&fake, "db-password");
    let (look_pod, look_svc) = labelled_lookalikes(&fake, "foo-ktx-mesh-x");
    // One second without renewal and the janitor judges it dead.
    forged_lease(&fake, "db-password", "foo", 1);

    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let janitor = cli(&[
        "janitor",
        "--metrics-addr",
        "127.0.0.1:0",
        "--interval",
        "100ms",
        "--grace",
        "0s",
        "--identity",
        "j-1",
    ]);
    let run = support::run(&fake, &janitor, &shutdown);
    // The janitor acts on the forged Lease (it is labelled and expired): wait until it did.
    let acted = async {
        fake.until(|objects| {
            !objects.contains_key(&("leases".to_string(), "db-password".to_string()))
        })
        .await;
        // One more round after that, to see that nothing else goes.
        let writes = fake.writes();
        fake.until(|_| fake.writes() > writes + 1).await;
        stop.fire();
    };
    let (r, ()) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(run, acted) })
        .await
        .expect("the janitor removes the expired Lease within 20 s");
    r.expect("the janitor stops cleanly");

    assert_eq!(
        uid_of::<Secret>(&fake, "db-password"),
        Some(secret),
        "the team's Secret"
    );
    assert_eq!(
        uid_of::<Pod>(&fake, "foo-ktx-mesh-x"),
        Some(look_pod),
        "a labelled Pod ktx did not make"
    );
    assert_eq!(
        uid_of::<Service>(&fake, "foo-ktx-mesh-x"),
        Some(look_svc),
        "a labelled Service ktx did not make"
    );
    assert!(fake.get::<Lease>("db-password").is_none());
}

#[tokio::test]
async fn mesh_refuses_a_name_clash_and_its_rollback_keeps_the_teams_secret() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    let secret = team_secret(&fake, "tb-ktx-mesh-foobar");
    let before = fake.snapshot();

    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let mesh = cli(MESH);
    let err = support::run(&fake, &mesh, &shutdown)
        .await
        .expect_err("the Secret's name is taken");

    assert_eq!(
        uid_of::<Secret>(&fake, "tb-ktx-mesh-foobar"),
        Some(secret),
        "the team's Secret"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("Secret {NS}/tb-ktx-mesh-foobar")) && msg.contains("not made by ktx"),
        "the error names the object: {msg}"
    );
    assert_eq!(
        fake.snapshot(),
        before,
        "the rollback left the namespace as it was"
    );
}

#[tokio::test]
async fn mesh_refuses_to_reuse_a_shared_name_it_did_not_make() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    // The team's own ConfigMap, even with ktx's labels: not made by ktx.
    let cm = fake.seed(&k8s_openapi::api::core::v1::ConfigMap {
        metadata: meta(
            "tb-ktx-routes",
            &[
                ("app.kubernetes.io/managed-by", "ktx"),
                ("ktx.dev/service", "tb"),
            ],
        ),
        ..Default::default()
    });
    let before = fake.snapshot();
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let mesh = cli(MESH);
    let err = support::run(&fake, &mesh, &shutdown)
        .await
        .expect_err("the routes ConfigMap's name is taken");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "ConfigMap {NS}/tb-ktx-routes exists and was not made by ktx"
        )),
        "{msg}"
    );
    assert_eq!(
        uid_of::<k8s_openapi::api::core::v1::ConfigMap>(&fake, "tb-ktx-routes"),
        Some(cm)
    );
    assert_eq!(
        fake.snapshot(),
        before,
        "the rollback left the namespace as it was"
    );
}

/// Paused time: the renewal's 5 s sleeps pass at once (the fake answers in memory).
#[tokio::test(start_paused = true)]
async fn a_session_whose_lease_was_replaced_is_lost_and_renews_nothing() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    let kube = ktx::cluster::api::Kube::new(fake.client(), NS);
    let names = ktx_names::ServiceNames::new("tb");
    let params = ktx::objects::lease::LeaseParams {
        name: "tb-ktx-mesh-foobar",
        session: "foobar",
        holder: "alice@laptop",
        mode: "mesh",
        rule: "VERSION: foobar",
    };
    let lease = ktx::objects::lease::lease(&names, NS, &params, ktx::cluster::clock::now());
    let keeper = ktx::lifecycle::session::LeaseKeeper::create(
        &kube,
        &lease,
        "tb",
        &ktx::progress::Progress::silent(),
    )
    .await
    .expect("the Lease is created");
    let mut lost = keeper.lost();
    // Someone deletes it and makes their own of that name (a forged Lease, say).
    let theirs = {
        let mut l: Lease = fake.get("tb-ktx-mesh-foobar").expect("created");
        l.metadata.uid = None;
        l.metadata.resource_version = None;
        l.spec.as_mut().expect("a spec").holder_identity = Some("mallory@somewhere".into());
        l
    };
    let uid = fake.replace(&theirs);
    let reason = tokio::time::timeout(Duration::from_secs(60), lost.wait_for(Option::is_some))
        .await
        .expect("the keeper notices within a renewal")
        .expect("the keeper runs")
        .clone()
        .expect("a reason");
    assert!(reason.contains("deleted or replaced"), "{reason}");
    let now: Lease = fake.get("tb-ktx-mesh-foobar").expect("theirs is there");
    assert_eq!(now.uid(), Some(uid));
    assert_eq!(
        now.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("mallory@somewhere"),
        "their Lease was not renewed as ours"
    );
}
