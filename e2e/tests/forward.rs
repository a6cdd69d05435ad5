//! `ktx forward SERVICE [LOCAL:]REMOTE` against the real cluster (issue 13): a local port that
//! reaches a Service's pods through the API server, follows them when the workload's pod is
//! replaced, and creates nothing in the namespace.

#[path = "support/ktx.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Instant;

use ktx_e2e::{http_get, poll, secs, testbackend_manifest, Cluster};
use support::{free_port, ktx, ktx_leftovers, Proc};

#[test]
fn forward_reaches_the_service_and_follows_a_replaced_pod() {
    let Some(cluster) = Cluster::from_env("forward") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("forward");
    ns.apply(&testbackend_manifest("inventory", "inventory", 1));
    ns.wait_deployment("inventory", secs(120));
    let first_pod = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=inventory",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let port = free_port();
    let mut fwd = Proc::spawn(
        "ktx forward",
        &mut ktx(&ns, &["forward", "inventory", &format!("{port}:8080")]),
    );
    let printed = fwd.wait_line(true, "127.0.0.1:", secs(60));
    let addr: SocketAddr = printed
        .trim()
        .parse()
        .expect("ktx forward prints ADDR:PORT");
    assert_eq!(addr.port(), port);

    let t = Instant::now();
    let answer = http_get(addr, "/", secs(10)).expect("a request through ktx forward");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-ktx-backend"), Some("inventory"));
    eprintln!(
        "first request through ktx forward: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    fwd.wait_line(false, &format!("pod={first_pod}"), secs(10));

    // The workload's pod is replaced: the next requests reach the new one, without restarting
    // ktx forward.
    ns.kubectl(&["delete", "pod", &first_pod, "--wait=true", "--timeout=60s"]);
    ns.wait_deployment("inventory", secs(120));
    let new_pod = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=inventory",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_ne!(new_pod, first_pod);
    let t = Instant::now();
    let ok = poll(secs(30), || {
        http_get(addr, "/", secs(5))
            .ok()
            .filter(|a| a.status == 200)
    });
    assert!(
        ok.is_some(),
        "no answer through ktx forward after the pod was replaced"
    );
    eprintln!(
        "answer from the replacement pod after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fwd.wait_line(false, &format!("pod={new_pod}"), secs(10));

    // Nothing of ktx's in the namespace, and Ctrl-C ends it cleanly.
    assert_eq!(ktx_leftovers(&ns), "", "ktx forward created objects");
    fwd.interrupt();
    let (ok, out) = fwd.wait_exit(secs(30));
    assert!(ok, "ktx forward did not end cleanly after Ctrl-C:\n{out}");
}
