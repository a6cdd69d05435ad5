//! `ktx mesh` with HTTP/2 cleartext (prior knowledge) from a pod through the Service's
//! ClusterIP. The busybox image has no HTTP/2 client, so the pod writes the frames itself with
//! `printf` (connection preface, empty SETTINGS, one HEADERS frame with END_STREAM) and `nc`
//! carries them; the answer's DATA frame holds the backend's name in clear text.
//!
//! Not covered here: gRPC from a pod (no gRPC client in the existing images; the router's gRPC
//! path is covered by the loopback integration tests).

#[path = "support/ktx.rs"]
mod support;

use ktx_e2e::{image, secs, testbackend_manifest, Cluster, Namespace};
use support::{assert_nothing_left, ktx, local_backend, service_fingerprint, Proc};

/// A shell function `h2 HOST PORT [VERSION]` that sends one h2c GET / (with header
/// `version: VERSION` if given) and prints the raw response frames.
const H2_FN: &str = r#"h2() {
  hb="\202\206\204\101\011127.0.0.1"
  [ -n "$3" ] && hb="$hb\000\007version\\$(printf %03o ${#3})$3"
  len=$(printf "$hb" | wc -c)
  { printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\000\000\000\004\000\000\000\000\000'
    printf "\000\000\\$(printf %03o $len)\001\005\000\000\000\001"
    printf "$hb"
    sleep 1; } | timeout 5 nc -w 2 "$1" "$2"
}
"#;

/// Asks `ip:port` over h2c once per (version header, expected backend) case, retrying for up
/// to 60 s until every answer names the expected backend (and not the other one).
fn ask_h2c_from_pod(ns: &Namespace, pod: &str, ip: &str, port: u16, cases: &[(&str, &str)]) {
    let mut script = String::from(H2_FN);
    script.push_str("for try in $(seq 1 60); do ok=1; out=''; ");
    for (i, (version, expect)) in cases.iter().enumerate() {
        let other = if *expect == "developer" {
            "original"
        } else {
            "developer"
        };
        script.push_str(&format!(
            "r=$(h2 {ip} {port} '{version}' 2>&1 | tr -c 'a-z' ' '); \
             if echo \"$r\" | grep -q -w '{expect}' && ! echo \"$r\" | grep -q -w '{other}'; then out=\"$out {i}:{expect}\"; \
             else ok=0; out=\"$out {i}:[$r]\"; fi; "
        ));
    }
    script.push_str(
        "if [ $ok = 1 ]; then echo \"OK$out\"; exit 0; fi; echo \"try $try:$out\"; sleep 1; done; exit 1",
    );
    let run = ns.run_pod(
        pod,
        &image("busybox"),
        &["/bin/sh", "-c", &script],
        secs(150),
    );
    assert_eq!(
        run.phase, "Succeeded",
        "h2c requests from pod {pod} to {ip}:{port} did not get the expected answers {cases:?}:\n{}",
        run.logs
    );
    eprintln!("{pod}: {}", run.logs.lines().last().unwrap_or_default());
}

#[test]
fn mesh_routes_h2c_streams_by_header() {
    let Some(cluster) = Cluster::from_env("protocols_h2c") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("proto-h2c");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let ip = ns.cluster_ip("orders");
    let (_dev, port) = local_backend("developer");

    // Before the session: h2c reaches the original, header or not.
    ask_h2c_from_pod(
        &ns,
        "before",
        &ip,
        8080,
        &[("", "original"), ("foobar", "original")],
    );

    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut ktx(
            &ns,
            &[
                "mesh",
                "orders",
                "--expose",
                &format!("{port}:8080"),
                "--versionMark",
                "foobar",
                "-o",
                "json",
            ],
        ),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));

    ask_h2c_from_pod(
        &ns,
        "meshed",
        &ip,
        8080,
        &[
            ("foobar", "developer"),
            ("", "original"),
            ("other", "original"),
        ],
    );

    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(ok, "ktx mesh did not end cleanly after Ctrl-C:\n{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before);
    assert_nothing_left(&ns, secs(60));
    ask_h2c_from_pod(&ns, "after", &ip, 8080, &[("foobar", "original")]);
}
