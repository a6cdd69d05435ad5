//! `ktx exchange` and `ktx preview` against the real cluster: all traffic of a Service to the
//! developer's process and back, and a new Service that exists only during the session.

#[path = "support/ktx.rs"]
mod support;

use ktx_e2e::{image, secs, testbackend_manifest, Cluster, Namespace};
use support::{assert_nothing_left, ktx, ktx_run, local_backend, service_fingerprint, Proc};

fn wget_from_pod(ns: &Namespace, pod: &str, url: &str, expect: &str) {
    let script = format!(
        "for i in $(seq 1 60); do b=$(timeout 5 wget -q -O - {url} 2>&1); [ \"$b\" = '{expect}' ] && echo OK && exit 0; echo \"try $i: $b\"; sleep 1; done; exit 1"
    );
    let run = ns.run_pod(
        pod,
        &image("busybox"),
        &["/bin/sh", "-c", &script],
        secs(120),
    );
    assert_eq!(
        run.phase, "Succeeded",
        "{url} from pod {pod} did not answer {expect:?}:\n{}",
        run.logs
    );
}

#[test]
fn exchange_sends_all_traffic_to_the_developer_and_back() {
    let Some(cluster) = Cluster::from_env("exchange") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("exchange");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (_dev, port) = local_backend("developer");

    let mut ex = Proc::spawn(
        "ktx exchange",
        &mut ktx(
            &ns,
            &[
                "exchange",
                "orders",
                "--expose",
                &format!("{port}:8080"),
                "-o",
                "json",
            ],
        ),
    );
    ex.wait_line(true, "\"command\":\"exchange\"", secs(180));
    wget_from_pod(&ns, "during", &url, "developer");
    let (ok, out) = ktx_run(&ns, &["mesh", "orders", "--expose", "8080"], secs(60));
    assert!(!ok && out.contains("already in ktx exchange mode"), "{out}");

    ex.interrupt();
    let (ok, out) = ex.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    wget_from_pod(&ns, "after", &url, "original");
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn preview_creates_a_service_reachable_by_cluster_ip_for_the_session_only() {
    let Some(cluster) = Cluster::from_env("preview") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("preview");
    let (_dev, port) = local_backend("developer");
    let mut pv = Proc::spawn(
        "ktx preview",
        &mut ktx(
            &ns,
            &[
                "preview",
                "orders-dev",
                "--expose",
                &format!("{port}:80"),
                "-o",
                "json",
            ],
        ),
    );
    pv.wait_line(true, "\"command\":\"preview\"", secs(180));
    let url = format!("http://{}:80/", ns.cluster_ip("orders-dev"));
    wget_from_pod(&ns, "during", &url, "developer");

    pv.interrupt();
    let (ok, out) = pv.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert!(
        ns.kubectl(&["get", "services", "-o", "name"])
            .trim()
            .is_empty(),
        "the preview Service is still there"
    );
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn exchange_scale_mode_scales_the_workload_to_zero_and_back() {
    let Some(cluster) = Cluster::from_env("exchange_scale") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("exchange-scale");
    ns.apply(&testbackend_manifest("orders", "original", 2));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    // Replicas change through the scale subresource; the count to give back is saved on the
    // Service (the developer may not update the Deployment).
    let replicas = |ns: &Namespace| {
        let d = ns.kubectl(&[
            "get",
            "deployment",
            "orders",
            "-o",
            "jsonpath={.spec.replicas}/{.status.readyReplicas}",
        ]);
        let saved = ns.kubectl(&[
            "get",
            "service",
            "orders",
            "-o",
            "jsonpath={.metadata.annotations.ktx\\.dev/original-replicas}",
        ]);
        format!("{}|{}", d.trim(), saved.trim())
    };
    let (_dev, port) = local_backend("developer");
    let mut ex = Proc::spawn(
        "ktx exchange --mode scale",
        &mut ktx(
            &ns,
            &[
                "exchange",
                "orders",
                "--expose",
                &format!("{port}:8080"),
                "--mode",
                "scale",
                "-o",
                "json",
            ],
        ),
    );
    ex.wait_line(true, "\"command\":\"exchange\"", secs(180));
    let during = replicas(&ns);
    assert!(
        during.starts_with("0/") && during.contains(r#""replicas":2"#),
        "{during}"
    );
    wget_from_pod(
        &ns,
        "during",
        &format!("http://{}:8080/", ns.cluster_ip("orders")),
        "developer",
    );
    ex.interrupt();
    let (ok, out) = ex.wait_exit(secs(150));
    assert!(ok, "{out}");
    assert_eq!(replicas(&ns), "2/2|", "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(60));
}
