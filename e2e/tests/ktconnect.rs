//! kt-connect's command lines against the real cluster, `ktctl` replaced by `ktx`: the three
//! of its integration script (`testing/integration/go.sh` of v0.3.7) check what that script
//! checks — the shadow pod Ready, the Service answering the original without the header and the
//! developer with `VERSION: ci` (mesh), the developer for every request (exchange), the new
//! Service answering the developer (preview). Then `mesh --mode manual` (a labelled shadow, no
//! router) and `preview --external=nodeport` (reachable on the node).
//!
//! One change to the script's lines: its `-f` (imagePullPolicy Always) is left out of the mesh
//! and exchange lines, because this cluster has no registry (its images are imported into
//! containerd, a pull of `ktx.local/...` cannot succeed). What `-f` does is checked apart: the
//! pod asks for `Always`, the pull fails, and ktx rolls back and leaves nothing.

#[path = "support/ktx.rs"]
mod support;

use std::process::Command;

use ktx_e2e::{image, secs, testbackend_manifest, Cluster, Namespace};
use support::{
    ask_from_pod, assert_nothing_left, end_session, ktx_path, ktx_run, local_backend,
    local_backend_on, service_fingerprint, Proc,
};

const DEMO_V1: &str = "kt-connect demo v1";
const LOCAL_V2: &str = "kt-connect local v2";

/// The script's `tomcat` Deployment and Service (port 8080), answering "kt-connect demo v1".
fn deploy_tomcat(ns: &Namespace) {
    ns.apply(&testbackend_manifest("tomcat", DEMO_V1, 1));
    ns.wait_deployment("tomcat", secs(120));
}

/// The developer's "local tomcat" answering "kt-connect local v2", on 8080 as in the script
/// when that port is free here (then `--expose 8080` is the script's own), else on a free
/// port with `--expose PORT:8080`.
fn local_tomcat() -> (Proc, String) {
    if std::net::TcpListener::bind(("127.0.0.1", 8080)).is_ok() {
        (local_backend_on(LOCAL_V2, 8080), "8080".to_string())
    } else {
        let (p, port) = local_backend(LOCAL_V2);
        eprintln!("127.0.0.1:8080 is taken on this machine; exposing {port}:8080 instead");
        (p, format!("{port}:8080"))
    }
}

/// `ktx ARGS...` exactly as given (no `-n` added: the lines carry their own).
fn ktx_line(name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(ktx_path());
    cmd.args(args).env("KTX_LOG", "ktx=debug,warn");
    Proc::spawn(name, &mut cmd)
}

/// The script's `wait_for_pod NAME 1`: the pod's one container is ready.
fn assert_pod_ready(ns: &Namespace, pod: &str) {
    let ready = ns.kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[*].ready}",
    ]);
    assert_eq!(ready.trim(), "true", "pod {pod} is not ready");
}

#[test]
fn kt_connects_integration_lines_run_unchanged() {
    let Some(cluster) = Cluster::from_env("ktconnect-lines") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ktc-lines");
    let nsn = ns.name().to_string();
    deploy_tomcat(&ns);
    let before = service_fingerprint(&ns, "tomcat");
    let url = format!("http://{}:8080/", ns.cluster_ip("tomcat"));
    let (_local, expose) = local_tomcat();
    let (shadow, router) = (image("ktx-shadow"), image("ktx-router"));

    // test_ktctl_mesh
    let mut mesh = ktx_line(
        "ktx mesh (kt-connect's line)",
        &[
            "-d",
            "-n",
            &nsn,
            "-i",
            &shadow,
            "mesh",
            "tomcat",
            "--mode",
            "auto",
            "--expose",
            &expose,
            "--versionMark",
            "ci",
            "--routerImage",
            &router,
        ],
    );
    mesh.wait_line(true, "now reach this machine", secs(180));
    assert_pod_ready(&ns, "tomcat-ktx-mesh-ci");
    ask_from_pod(
        &ns,
        "mesh-verify",
        &url,
        &[("", DEMO_V1), ("VERSION: ci", LOCAL_V2)],
    );
    end_session(&ns, mesh, "tomcat", &before, secs(60));

    // test_ktctl_exchange
    let mut exchange = ktx_line(
        "ktx exchange (kt-connect's line)",
        &[
            "-d",
            "-n",
            &nsn,
            "-i",
            &shadow,
            "exchange",
            "deployment/tomcat",
            "--mode",
            "scale",
            "--expose",
            &expose,
        ],
    );
    exchange.wait_line(true, "now reach this machine", secs(180));
    let replicas = |ns: &Namespace| {
        ns.kubectl(&[
            "get",
            "deployment",
            "tomcat",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
    };
    assert_eq!(
        replicas(&ns).trim(),
        "0",
        "--mode scale scales the workload down"
    );
    ask_from_pod(&ns, "exchange-verify", &url, &[("", LOCAL_V2)]);
    end_session(&ns, exchange, "tomcat", &before, secs(120));
    assert_eq!(replicas(&ns).trim(), "1", "scaled back after the session");

    // test_ktctl_preview (the line, with --external)
    let mut preview = ktx_line(
        "ktx preview (kt-connect's line)",
        &[
            "-n",
            &nsn,
            "preview",
            "tomcat-preview",
            "--expose",
            &expose,
            "--external",
        ],
    );
    let line = preview.wait_line(true, "from outside the cluster", secs(180));
    eprintln!("preview printed: {line}");
    let kind = ns.kubectl(&[
        "get",
        "service",
        "tomcat-preview",
        "-o",
        "jsonpath={.spec.type}",
    ]);
    assert_eq!(kind.trim(), "LoadBalancer");
    let preview_url = format!("http://{}:8080/", ns.cluster_ip("tomcat-preview"));
    ask_from_pod(&ns, "preview-verify", &preview_url, &[("", LOCAL_V2)]);
    preview.interrupt();
    let (ok, out) = preview.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn manual_mesh_makes_a_labelled_shadow_and_no_router() {
    let Some(cluster) = Cluster::from_env("ktconnect-manual") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ktc-manual");
    let nsn = ns.name().to_string();
    deploy_tomcat(&ns);
    let before = service_fingerprint(&ns, "tomcat");
    let (_local, port) = local_backend(LOCAL_V2);
    let expose = format!("{port}:8080");
    let mut mesh = ktx_line(
        "ktx mesh --mode manual",
        &[
            "-n",
            &nsn,
            "mesh",
            "tomcat",
            "--mode",
            "manual",
            "--expose",
            &expose,
            "--versionMark",
            "ci",
            "-o",
            "json",
        ],
    );
    let line = mesh.wait_line(true, "\"mode\":\"manual\"", secs(180));
    // The printed routes (-o json: one line, keys sorted).
    for want in [
        "\"kind\":\"VirtualService\"",
        "\"headers\":{\"version\":{\"exact\":\"ci\"}}",
        "\"kind\":\"DestinationRule\"",
        "\"subsets\":[{\"labels\":{\"version\":\"ci\"},\"name\":\"ktx-ci\"}]",
    ] {
        assert!(line.contains(want), "{want} missing in {line}");
    }

    let pod = "tomcat-ktx-mesh-ci";
    assert_pod_ready(&ns, pod);
    let labels = ns.kubectl(&["get", "pod", pod, "-o", "jsonpath={.metadata.labels}"]);
    for want in [
        "\"app\":\"tomcat\"",
        "\"version\":\"ci\"",
        "\"app.kubernetes.io/managed-by\":\"ktx\"",
    ] {
        assert!(labels.contains(want), "{want} missing in {labels}");
    }
    let routers = ns.kubectl(&[
        "get",
        "deployments",
        "-l",
        "ktx.dev/role=router",
        "-o",
        "name",
    ]);
    assert_eq!(routers.trim(), "", "manual mode makes no router");
    assert_eq!(
        service_fingerprint(&ns, "tomcat"),
        before,
        "the Service is untouched"
    );
    // The shadow reaches the developer: what a mesh routing the mark to it would get.
    let ip = ns.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
    ask_from_pod(
        &ns,
        "manual-verify",
        &format!("http://{}:8080/", ip.trim()),
        &[("", LOCAL_V2)],
    );
    end_session(&ns, mesh, "tomcat", &before, secs(60));
}

/// `--apply-istio` on a cluster without Istio (this one): refused with what to do, and the setup
/// rolls back to nothing. The objects it creates where Istio runs are tested on the fake API
/// (`control/tests/fake_api/rollback.rs`): this cluster cannot store custom resources — its API
/// server (Kubernetes 1.20 built with Go 1.19) crashes decoding one (the vendored reflect2's
/// map iteration), which took the whole e2e tier down when tried.
#[test]
fn apply_istio_without_istio_is_refused_and_leaves_nothing() {
    let Some(cluster) = Cluster::from_env("ktconnect-apply-istio") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ktc-istio");
    deploy_tomcat(&ns);
    let before = service_fingerprint(&ns, "tomcat");
    let (_local, port) = local_backend(LOCAL_V2);
    let expose = format!("{port}:8080");
    let served = cluster
        .kubectl(&[
            "get",
            "crd",
            "virtualservices.networking.istio.io",
            "-o",
            "name",
        ])
        .is_ok();
    assert!(!served, "this test needs a cluster without Istio's CRDs");
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "tomcat",
            "--mode",
            "manual",
            "--apply-istio",
            "--expose",
            &expose,
            "--versionMark",
            "ci",
            "-o",
            "json",
        ],
        secs(180),
    );
    assert!(!ok, "--apply-istio without Istio's CRDs succeeded:\n{out}");
    assert!(out.contains("Istio is not installed"), "{out}");
    assert!(
        !out.contains("left behind"),
        "the rollback left something:\n{out}"
    );
    assert_nothing_left(&ns, secs(60));
    assert_eq!(service_fingerprint(&ns, "tomcat"), before);
}

#[test]
fn preview_external_nodeport_is_reachable_on_the_node() {
    let Some(cluster) = Cluster::from_env("ktconnect-nodeport") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ktc-nodeport");
    let nsn = ns.name().to_string();
    let (_local, port) = local_backend(LOCAL_V2);
    let mut preview = ktx_line(
        "ktx preview --external=nodeport",
        &[
            "-n",
            &nsn,
            "preview",
            "web",
            "--expose",
            &format!("{port}:8080"),
            "--external=nodeport",
            "-o",
            "json",
        ],
    );
    let line = preview.wait_line(true, "\"command\":\"preview\"", secs(180));
    let node_port: u16 = line
        .split("\"external\":[\"NODE:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no NODE:PORT printed: {line}"));
    let node_ip = ns
        .cluster()
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .expect("kubectl get nodes");
    let node_ip: std::net::IpAddr = node_ip.trim().parse().expect("the node's InternalIP");
    let addr = std::net::SocketAddr::new(node_ip, node_port);
    let got = ktx_e2e::poll(secs(30), || {
        ktx_e2e::http_get(addr, "/", secs(3))
            .ok()
            .filter(|r| r.body.trim_end() == LOCAL_V2)
    });
    assert!(
        got.is_some(),
        "{addr} (the node, NodePort) did not answer {LOCAL_V2:?}"
    );
    preview.interrupt();
    let (ok, out) = preview.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn force_update_pulls_always_and_a_failed_pull_leaves_nothing() {
    let Some(cluster) = Cluster::from_env("ktconnect-force") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("ktc-force");
    let (_local, port) = local_backend(LOCAL_V2);
    // No registry here: `-f` (imagePullPolicy Always) makes the pull of the imported image fail.
    let (ok, out) = ktx_run(
        &ns,
        &[
            "-f",
            "--podCreationTimeout",
            "30",
            "preview",
            "pulled",
            "--expose",
            &format!("{port}:8080"),
        ],
        secs(120),
    );
    assert!(
        !ok,
        "a pull that cannot succeed must fail the command:\n{out}"
    );
    assert!(
        out.contains("ErrImagePull") || out.contains("ImagePullBackOff"),
        "the error names the failed pull:\n{out}"
    );
    assert_nothing_left(&ns, secs(60));
}
