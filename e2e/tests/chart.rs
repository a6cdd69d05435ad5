//! The Helm chart `helm/ktx` with real Helm (v4, through `helm/ktx-helm.py` and PyPI's
//! helm-python-sdk) on the real cluster: lint and schema, the rendered manifests accepted by the
//! API server, install and uninstall, and a developer bound only to the chart's Role holding
//! exactly ktx's rights in its namespace and none in another.
//!
//! The janitor's behaviour is not tested here; its Deployment is installed with
//! `imagePullPolicy: Never`, so it never starts unless the `ktx` image is loaded.

#[path = "support/chart.rs"]
mod support;

use std::fs;

use ktx_e2e::{poll, secs, Cluster, Namespace};
use support::{can_i, chart_dir, helm_ok, helm_script, kubeconfig_for_service_account, kubectl_as};

/// Images of `e2e/images.sh`, never pulled.
const TEST_IMAGES: [&str; 4] = ["--set", "image.tag=dev", "--set", "image.pullPolicy=Never"];

fn chart() -> String {
    chart_dir().display().to_string()
}

/// `ns get KIND NAME` succeeds.
fn exists(ns: &Namespace, kind: &str, name: &str) -> bool {
    ns.cluster()
        .kubectl(&["-n", ns.name(), "get", kind, name, "-o", "name"])
        .is_ok()
}

#[test]
fn lint_passes_and_the_schema_refuses_typos_and_wrong_types() {
    let Some(_cluster) = Cluster::from_env("chart_lint") else {
        return;
    };
    let out = helm_ok(&["lint", &chart(), "--strict"]);
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let dir = std::env::temp_dir().join(format!("ktx-e2e-chart-values-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let typo = dir.join("typo.yaml");
    fs::write(&typo, "janitor:\n  replica: 2\n").expect("writing a values file");
    let typo = typo.display().to_string();

    let out = helm_script(&["lint", &chart(), "-f", &typo]);
    assert!(
        !out.success,
        "lint accepted janitor.replica:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("additional properties 'replica' not allowed"),
        "lint did not name the typo:\n{}{}",
        out.stdout,
        out.stderr
    );

    // The same refusals before anything is rendered or sent to a cluster.
    let out = helm_script(&["template", &chart(), "-f", &typo]);
    assert!(
        !out.success && out.stderr.contains("'replica' not allowed"),
        "{out:?}"
    );
    let out = helm_script(&["template", &chart(), "--set", "janitor.replicas=two"]);
    assert!(
        !out.success
            && out.stderr.contains("/janitor/replicas")
            && out.stderr.contains("want integer"),
        "{out:?}"
    );
    let out = helm_script(&[
        "template",
        &chart(),
        "--set-json",
        r#"developers.subjects=[{"kind":"User","name":"alice"}]"#,
    ]);
    assert!(
        !out.success && out.stderr.contains("apiGroup"),
        "a User subject without apiGroup was accepted: {out:?}"
    );
    let out = helm_script(&["template", "/nonexistent/chart"]);
    assert!(
        out.code == Some(2) && out.stderr.contains("not a chart directory"),
        "{out:?}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_rendered_chart_is_accepted_by_the_api_server() {
    let Some(cluster) = Cluster::from_env("chart_dry_run") else {
        return;
    };
    let ns = cluster.namespace("chart-dry-run");
    let subjects = format!(
        r#"developers.subjects=[{{"kind":"ServiceAccount","name":"dev","namespace":"{}"}},{{"kind":"Group","name":"devs","apiGroup":"rbac.authorization.k8s.io"}}]"#,
        ns.name()
    );
    let chart = chart();
    let mut args = vec![
        "template",
        &chart,
        "--namespace",
        ns.name(),
        "--set-json",
        &subjects,
    ];
    args.extend_from_slice(&TEST_IMAGES);
    let manifests = helm_ok(&args);
    for object in [
        "kind: Role\nmetadata:\n  name: ktx-developer",
        "kind: RoleBinding\nmetadata:\n  name: ktx-developer",
        "kind: ServiceAccount\nmetadata:\n  name: ktx-router",
        "kind: Role\nmetadata:\n  name: ktx-router",
        "kind: RoleBinding\nmetadata:\n  name: ktx-router",
        "kind: ServiceAccount\nmetadata:\n  name: ktx-janitor",
        "kind: Role\nmetadata:\n  name: ktx-janitor",
        "kind: RoleBinding\nmetadata:\n  name: ktx-janitor",
        "kind: Deployment\nmetadata:\n  name: ktx-janitor",
    ] {
        assert!(
            manifests.contains(object),
            "{object:?} not rendered:\n{manifests}"
        );
    }
    assert!(
        manifests.contains("image: \"ktx.local/ktx:dev\""),
        "{manifests}"
    );
    assert!(
        !manifests.contains("NOTES"),
        "NOTES.txt rendered as a manifest"
    );

    // Server-side dry run: schema validation, defaulting and admission, nothing stored.
    let applied = cluster
        .kubectl_in(
            &["-n", ns.name(), "apply", "--dry-run=server", "-f", "-"],
            Some(&manifests),
            secs(60),
        )
        .unwrap_or_else(|e| panic!("the API server refused the rendered chart: {e}"));
    for line in [
        "role.rbac.authorization.k8s.io/ktx-developer created (server dry run)",
        "rolebinding.rbac.authorization.k8s.io/ktx-developer created (server dry run)",
        "serviceaccount/ktx-router created (server dry run)",
        "deployment.apps/ktx-janitor created (server dry run)",
    ] {
        assert!(applied.contains(line), "{line:?} missing from:\n{applied}");
    }
    assert!(
        !exists(&ns, "role", "ktx-developer"),
        "the dry run stored objects"
    );

    // The other shape: no subjects (no developer binding), no janitor, router accounts allowed.
    let minimal = helm_ok(&[
        "template",
        &chart,
        "--namespace",
        ns.name(),
        "--set",
        "janitor.enabled=false,developers.allowRouterAccountCreation=true",
    ]);
    assert!(!minimal.contains("kind: RoleBinding\nmetadata:\n  name: ktx-developer"));
    assert!(!minimal.contains("ktx-janitor"), "{minimal}");
    assert!(minimal.contains("rolebindings"), "{minimal}");
    cluster
        .kubectl_in(
            &["-n", ns.name(), "apply", "--dry-run=server", "-f", "-"],
            Some(&minimal),
            secs(60),
        )
        .unwrap_or_else(|e| panic!("the API server refused the minimal chart: {e}"));
}

#[test]
fn the_chart_installs_into_a_namespace_and_uninstalls_cleanly() {
    let Some(cluster) = Cluster::from_env("chart_install") else {
        return;
    };
    let ns = cluster.namespace("chart-install");
    let chart = chart();
    let mut args = vec!["install", "ktx", &chart, "--namespace", ns.name()];
    args.extend_from_slice(&TEST_IMAGES);
    let out = helm_ok(&args);
    assert!(out.contains("revision 1, deployed"), "{out}");
    assert!(
        out.contains(&format!("ktx mesh SERVICE -n {}", ns.name())),
        "NOTES do not say what to run next:\n{out}"
    );

    let objects = [
        ("role", "ktx-developer"),
        ("serviceaccount", "ktx-router"),
        ("role", "ktx-router"),
        ("rolebinding", "ktx-router"),
        ("serviceaccount", "ktx-janitor"),
        ("role", "ktx-janitor"),
        ("rolebinding", "ktx-janitor"),
        ("deployment", "ktx-janitor"),
    ];
    for (kind, name) in objects {
        assert!(exists(&ns, kind, name), "{kind}/{name} was not installed");
    }
    // No subjects given: no developer binding.
    assert!(!exists(&ns, "rolebinding", "ktx-developer"));
    // ktx recognises the router account by this label.
    let part_of = ns.kubectl(&[
        "get",
        "serviceaccount",
        "ktx-router",
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/part-of}",
    ]);
    assert_eq!(part_of.trim(), "ktx");
    let security = ns.kubectl(&[
        "get",
        "deployment",
        "ktx-janitor",
        "-o",
        "jsonpath={.spec.template.spec.securityContext.runAsNonRoot} \
         {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} \
         {.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation} \
         {.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(security.trim(), "true true false ktx.local/ktx:dev");

    // A second install of the same release is refused with what to do instead.
    let again = helm_script(&args);
    assert!(
        !again.success && again.stderr.contains("upgrade"),
        "{again:?}"
    );

    let out = helm_ok(&["uninstall", "ktx", "--namespace", ns.name(), "--wait"]);
    assert!(out.contains("uninstalled release ktx"), "{out}");
    let left = poll(secs(60), || {
        let left: Vec<_> = objects
            .iter()
            .filter(|(kind, name)| exists(&ns, kind, name))
            .collect();
        left.is_empty().then_some(())
    });
    assert!(left.is_some(), "uninstall left chart objects behind");
    let releases = ns.kubectl(&["get", "secrets", "-l", "owner=helm", "-o", "name"]);
    assert!(
        releases.trim().is_empty(),
        "release records left: {releases}"
    );
}

/// Everything ktx does in its namespace, as `kubectl auth can-i` spells it (the chart's Role;
/// `control/src/cluster/permissions.rs` is the table its unit tests compare it with).
const DEVELOPER_NEEDS: &[(&str, &[&str])] = &[
    ("services", &["get", "list", "create", "update", "delete"]),
    ("configmaps", &["get", "create", "update", "delete"]),
    ("pods", &["get", "list", "watch", "create", "delete"]),
    ("secrets", &["create", "delete"]),
    ("serviceaccounts", &["get"]),
    ("pods/portforward", &["get", "create"]),
    ("pods/proxy", &["get"]),
    (
        "deployments.apps",
        &["get", "list", "watch", "create", "delete"],
    ),
    ("statefulsets.apps", &["get", "list"]),
    ("deployments.apps/scale", &["get", "patch"]),
    ("statefulsets.apps/scale", &["get", "patch"]),
    ("poddisruptionbudgets.policy", &["create"]),
    (
        "leases.coordination.k8s.io",
        &["get", "list", "create", "patch", "delete"],
    ),
];

#[test]
fn a_developer_bound_to_the_chart_role_can_run_ktx_here_and_nothing_elsewhere() {
    let Some(cluster) = Cluster::from_env("chart_developer_role") else {
        return;
    };
    let ns = cluster.namespace("chart-developer");
    let elsewhere = cluster.namespace("chart-elsewhere");
    ns.kubectl(&["create", "serviceaccount", "dev"]);
    let subjects = format!(
        r#"developers.subjects=[{{"kind":"ServiceAccount","name":"dev","namespace":"{}"}}]"#,
        ns.name()
    );
    let chart = chart();
    let install = [
        "install",
        "ktx",
        chart.as_str(),
        "--namespace",
        ns.name(),
        "--set",
        "janitor.enabled=false",
        "--set-json",
        &subjects,
    ];
    helm_ok(&install);
    let dev = kubeconfig_for_service_account(&ns, "dev");

    // RBAC is read from an informer cache: wait until the binding is seen.
    let bound = poll(secs(30), || {
        can_i(&dev, ns.name(), "create", "deployments.apps").then_some(())
    });
    assert!(bound.is_some(), "the developer binding never took effect");
    let mut missing = Vec::new();
    for (resource, verbs) in DEVELOPER_NEEDS {
        for verb in *verbs {
            if !can_i(&dev, ns.name(), verb, resource) {
                missing.push(format!("{verb} {resource}"));
            }
        }
    }
    assert!(missing.is_empty(), "the developer Role lacks: {missing:?}");

    // Not more than that here: no accounts or RBAC of its own, nothing cluster-wide.
    for (verb, resource) in [
        ("create", "serviceaccounts"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "pods/exec"),
        ("update", "deployments.apps/scale"),
        ("create", "statefulsets.apps"),
        // Reading keys, editing pod templates (= running code as any ServiceAccount).
        ("get", "secrets"),
        ("list", "secrets"),
        ("update", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("update", "statefulsets.apps"),
        ("patch", "pods"),
        ("list", "namespaces"),
        ("get", "nodes"),
    ] {
        assert!(
            !can_i(&dev, ns.name(), verb, resource),
            "the developer may {verb} {resource}"
        );
    }
    // Nothing in another namespace.
    let mut leaked = Vec::new();
    for (resource, verbs) in DEVELOPER_NEEDS {
        for verb in *verbs {
            if can_i(&dev, elsewhere.name(), verb, resource) {
                leaked.push(format!("{verb} {resource}"));
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "in another namespace the developer may: {leaked:?}"
    );

    // Real requests, not only reviews.
    let here = kubectl_as(&dev, &["-n", ns.name(), "create", "configmap", "probe"]);
    assert!(here.success, "{here:?}");
    let there = kubectl_as(
        &dev,
        &["-n", elsewhere.name(), "create", "configmap", "probe"],
    );
    assert!(
        !there.success && there.stderr.contains("forbidden"),
        "{there:?}"
    );

    // With allowRouterAccountCreation the developer may create a router account of its own.
    let mut upgrade = install.to_vec();
    upgrade[0] = "upgrade";
    upgrade.extend_from_slice(&["--set", "developers.allowRouterAccountCreation=true"]);
    helm_ok(&upgrade);
    let widened = poll(secs(30), || {
        can_i(&dev, ns.name(), "create", "serviceaccounts").then_some(())
    });
    assert!(
        widened.is_some(),
        "allowRouterAccountCreation did not widen the Role"
    );
    for resource in [
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
    ] {
        assert!(
            can_i(&dev, ns.name(), "create", resource),
            "create {resource}"
        );
    }
    assert!(!can_i(&dev, elsewhere.name(), "create", "serviceaccounts"));
}
