//! The harness itself: the test backend, deployed as a Deployment + Service, answers with its name
//! through its ClusterIP (from a pod, through kube-proxy) and through `kubectl port-forward` (from
//! this process). If this fails, no other end-to-end test can be trusted.

use ktx_e2e::{http_get, image, poll, secs, testbackend_manifest, Cluster};

#[test]
fn testbackend_answers_through_cluster_ip_and_port_forward() {
    let Some(cluster) =
        Cluster::from_env("testbackend_answers_through_cluster_ip_and_port_forward")
    else {
        return;
    };
    let ns = cluster.namespace("harness");
    let backend_name = format!("backend-of-{}", ns.name());

    ns.apply(&testbackend_manifest("backend", &backend_name, 1));
    ns.wait_deployment("backend", secs(120));
    let ip = ns.cluster_ip("backend");

    // From inside the cluster: a pod asks the ClusterIP (kube-proxy's rules) with busybox wget.
    let url = format!("http://{ip}:8080/");
    let script = format!(
        "for i in $(seq 1 20); do timeout 5 wget -q -O - {url} && exit 0; sleep 1; done; exit 1"
    );
    let probe = ns.run_pod(
        "probe",
        &image("busybox"),
        &["/bin/sh", "-c", &script],
        secs(120),
    );
    assert_eq!(
        probe.phase, "Succeeded",
        "wget {url} from a pod failed; its output:\n{}",
        probe.logs
    );
    assert!(
        probe.logs.lines().any(|l| l.trim() == backend_name),
        "wget {url} from a pod did not answer {backend_name:?}; its output:\n{}",
        probe.logs
    );

    // From outside: kubectl port-forward to the Service, and a plain HTTP/1.1 request.
    let forward = ns.port_forward("svc/backend", 8080);
    let mut last_error = String::new();
    let response = poll(secs(30), || {
        http_get(forward.local_addr(), "/", secs(5))
            .map_err(|e| last_error = e)
            .ok()
    })
    .unwrap_or_else(|| panic!("no answer through port-forward: {last_error}"));
    assert_eq!(response.status, 200, "through port-forward: {response:?}");
    assert_eq!(
        response.header("x-ktx-backend"),
        Some(backend_name.as_str()),
        "through port-forward: {response:?}"
    );
    assert_eq!(
        response.body.trim(),
        backend_name,
        "through port-forward: {response:?}"
    );
}
