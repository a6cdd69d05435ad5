//! ktx touches only what it made (issue 12, findings 1 and 2), on the real cluster. In a
//! namespace where the team has its own Secret, Pod and Service named like a session's objects
//! (the Pod and Service even carry ktx's labels), and a Lease that anyone could make with ktx's
//! labels, named like the team's Secret:
//! - `ktx clean` removes the forged "session" and nothing of the team's;
//! - `ktx mesh tb --versionMark foobar` refuses, naming the Secret, and leaves the namespace as
//!   it was (the team's objects keep their UIDs);
//! - the chart's janitor, once the forged Lease stops being renewed, removes it and nothing else.
//!
//! The janitor image is `ktx.local/ktx:$KTX_E2E_JANITOR_TAG` (default: the tag of the other
//! images), so a run can load its own janitor beside a shared cluster's.

#[path = "support/chart.rs"]
mod chart;
#[path = "support/ktx.rs"]
mod support;

use std::time::Duration;

use chart::{chart_dir, helm_ok};
use ktx_e2e::{poll, secs, testbackend_image, testbackend_manifest, Cluster, Namespace};
use support::{ktx_run, service_fingerprint};

/// The objects of the team that a careless ktx would delete: (kind, name).
const TEAM: [(&str, &str); 5] = [
    ("secret", "tb-ktx-mesh-foobar"),
    ("pod", "tb-ktx-mesh-foobar"),
    ("service", "tb-ktx-mesh-foobar"),
    ("secret", "db-password"),
    ("pod", "db-password"),
];

fn team_objects(ns: &Namespace) {
    let image = testbackend_image();
    let pod = |name: &str, labels: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    team: shop{labels}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{ runAsNonRoot: true, runAsUser: 65532 }}
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    args: ["--listen", "0.0.0.0:8080", "--name", "team"]
"#
        )
    };
    // Copied from a ktx session's manifest, say: ktx's labels, but not made by ktx.
    let ktx_labels = "\n    app.kubernetes.io/managed-by: ktx\n    ktx.dev/service: tb\n    ktx.dev/role: shadow";
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: tb-ktx-mesh-foobar
  labels: {{ team: shop }}
stringData: {{ token: team-token }}
---
apiVersion: v1
kind: Secret
metadata:
  name: db-password
  labels: {{ team: shop }}
stringData: {{ password: hunter2 }}
---
{}---
{}---
apiVersion: v1
kind: Service
metadata:
  name: tb-ktx-mesh-foobar
  labels:
    team: shop{ktx_labels}
spec:
  selector: {{ app: tb }}
  ports: [{{ port: 8080 }}]
"#,
        pod("tb-ktx-mesh-foobar", ktx_labels),
        pod("db-password", ""),
    );
    ns.apply(&manifest);
}

/// A Lease with ktx's session labels that nobody renews, named like the team's Secret.
fn forged_lease(ns: &Namespace, duration_secs: u32) {
    ns.apply(&format!(
        r#"apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: db-password
  labels:
    app.kubernetes.io/managed-by: ktx
    ktx.dev/service: tb
    ktx.dev/role: session
spec:
  holderIdentity: mallory@somewhere
  leaseDurationSeconds: {duration_secs}
  acquireTime: "2020-01-01T00:00:00.000000Z"
  renewTime: "2020-01-01T00:00:00.000000Z"
"#
    ));
}

fn uid(ns: &Namespace, kind: &str, name: &str) -> Option<String> {
    ns.cluster()
        .kubectl(&[
            "-n",
            ns.name(),
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .ok()
        .filter(|u| !u.is_empty())
}

fn uids(ns: &Namespace) -> Vec<(String, Option<String>)> {
    TEAM.iter()
        .map(|(k, n)| (format!("{k}/{n}"), uid(ns, k, n)))
        .collect()
}

/// ktx objects other than the team's lookalikes (which carry ktx's labels).
fn ktx_made(ns: &Namespace) -> String {
    ns.kubectl(&[
        "get",
        "deployments,configmaps,leases,serviceaccounts,roles,rolebindings",
        "-l",
        "app.kubernetes.io/managed-by=ktx",
        "-o",
        "name",
    ])
    .trim()
    .to_string()
}

#[test]
fn ktx_clean_mesh_and_the_janitor_leave_the_teams_lookalikes_alone() {
    let Some(cluster) = Cluster::from_env("ownership") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ownership");
    ns.apply(&testbackend_manifest("tb", "original", 1));
    ns.wait_deployment("tb", secs(120));
    team_objects(&ns);
    let before = uids(&ns);
    assert!(before.iter().all(|(_, u)| u.is_some()), "{before:?}");
    let svc_before = service_fingerprint(&ns, "tb");

    // `ktx clean` with a forged, long-expired "session".
    forged_lease(&ns, 15);
    let (ok, out) = ktx_run(&ns, &["clean"], secs(120));
    assert!(ok, "ktx clean:\n{out}");
    assert!(out.contains("expired session db-password"), "{out}");
    assert_eq!(
        uids(&ns),
        before,
        "ktx clean deleted a team's object:\n{out}"
    );

    // `ktx mesh` whose session's names are taken by the team's objects.
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "tb",
            "--versionMark",
            "foobar",
            "--expose",
            "38080:8080",
        ],
        secs(240),
    );
    assert!(!ok, "mesh must refuse:\n{out}");
    let named = format!(
        "Secret {}/tb-ktx-mesh-foobar exists and was not made by ktx",
        ns.name()
    );
    assert!(
        out.contains(&named),
        "the refusal names the object ({named}):\n{out}"
    );
    assert_eq!(
        uids(&ns),
        before,
        "mesh's rollback deleted a team's object:\n{out}"
    );
    assert_eq!(service_fingerprint(&ns, "tb"), svc_before, "{out}");
    let left = poll(secs(60), || {
        let l = ktx_made(&ns);
        l.is_empty().then_some(())
    });
    assert!(left.is_some(), "mesh left: {}\n{out}", ktx_made(&ns));

    // The janitor, judging a forged Lease it watches stand still.
    let tag = std::env::var("KTX_E2E_JANITOR_TAG")
        .or_else(|_| std::env::var("KTX_E2E_IMAGE_TAG"))
        .unwrap_or_else(|_| "dev".into());
    forged_lease(&ns, 1);
    let chart = chart_dir().display().to_string();
    helm_ok(&[
        "install",
        "ktx",
        chart.as_str(),
        "--namespace",
        ns.name(),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--wait",
    ]);
    let gone = poll(secs(90), || {
        uid(&ns, "lease", "db-password").is_none().then_some(())
    });
    let logs = ns
        .cluster()
        .kubectl(&[
            "-n",
            ns.name(),
            "logs",
            "-l",
            "app.kubernetes.io/name=ktx-janitor",
            "--tail",
            "50",
        ])
        .unwrap_or_default();
    assert!(
        gone.is_some(),
        "the janitor did not act on the expired Lease within 90 s:\n{logs}"
    );
    // One more janitor round or two after that.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        uids(&ns),
        before,
        "the janitor deleted a team's object:\n{logs}"
    );
    assert_eq!(service_fingerprint(&ns, "tb"), svc_before);
    ktx_e2e::announce("ownership: clean, mesh (refused, naming the Secret) and the janitor left the team's Secret, Pod and Service alone");
}
