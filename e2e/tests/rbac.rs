//! The Role the README gives for developers without the chart, read from README.md itself so
//! the two cannot drift apart, on the real cluster as a ServiceAccount bound to nothing else:
//! - with one right taken away (`create` on pods: the shadow pod, after the Service's selector
//!   was switched and the session Lease written), `ktx mesh` fails naming the refusal and rolls
//!   back exactly, with only the rights it has;
//! - with the Role exactly as written, `ktx mesh` works (the router gets its own account and
//!   read-only Role) and Ctrl-C restores the Service.

#[path = "support/chart.rs"]
mod chart;
#[path = "support/ktx.rs"]
mod support;

use chart::{kubeconfig_for_service_account, readme_role};
use ktx_e2e::{secs, testbackend_manifest, Cluster};
use support::{
    assert_nothing_left, end_session, local_backend, mesh_cmd, service_fingerprint, Proc,
};

#[test]
fn the_readme_role_is_enough_and_a_missing_right_rolls_back() {
    let Some(cluster) = Cluster::from_env("rbac_readme_role") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("rbac-readme");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let role = readme_role();
    let pods_rule = "  resources: [pods]                    # the shadow pod; pods behind S; the router's pods\n  verbs: [get, list, watch, create, delete]   # watch: waiting for ktx's pods\n";
    assert!(
        role.contains(pods_rule),
        "the README's Role changed; update this test:\n{role}"
    );
    // Only pods lose `create`.
    let without_pod_create = role.replace(
        pods_rule,
        "  resources: [pods]\n  verbs: [get, list, watch, delete]\n",
    );
    ns.apply(&without_pod_create);
    ns.kubectl(&["create", "serviceaccount", "dev"]);
    ns.kubectl(&[
        "create",
        "rolebinding",
        "dev",
        "--role",
        "ktx-developer",
        &format!("--serviceaccount={}:dev", ns.name()),
    ]);
    let kc = kubeconfig_for_service_account(&ns, "dev");
    let before = service_fingerprint(&ns, "orders");
    let (_dev, port) = local_backend("developer");
    let expose = format!("{port}:8080");
    let mesh_as_dev = || {
        let mut cmd = mesh_cmd(&ns, "orders", &expose, "dev", &[]);
        cmd.arg("--kubeconfig").arg(&kc);
        Proc::spawn("ktx mesh (as dev)", &mut cmd)
    };

    let (ok, out) = mesh_as_dev().wait_exit(secs(180));
    assert!(
        !ok,
        "ktx mesh succeeded without the right to create pods:\n{out}"
    );
    assert!(
        out.contains("forbidden") || out.contains("Forbidden"),
        "the error does not say the API refused:\n{out}"
    );
    assert!(out.contains("pods"), "the error does not name pods:\n{out}");
    assert!(
        out.contains("you need permission to create pods"),
        "the error does not say what to do:\n{out}"
    );
    assert!(out.contains("rolling back"), "{out}");
    let tail: Vec<&str> = out.lines().rev().take(6).collect();
    eprintln!(
        "rbac: without pods create, ktx mesh said (last lines):\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(90));

    // The Role exactly as the README writes it.
    ns.apply(&role);
    let mut mesh = mesh_as_dev();
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    assert_ne!(service_fingerprint(&ns, "orders"), before);
    end_session(&ns, mesh, "orders", &before, secs(90));
}
