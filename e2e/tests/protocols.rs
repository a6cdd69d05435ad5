//! `ktx mesh` over every protocol, from pods through the Service's ClusterIP:
//! - h2c with the busybox image, which has no HTTP/2 client: the pod writes the frames itself
//!   with `printf` (connection preface, empty SETTINGS, one HEADERS frame with END_STREAM) and
//!   `nc` carries them; the answer's DATA frame holds the backend's name in clear text.
//! - gRPC (unary, server, client and bidi streaming) and WebSocket with real clients:
//!   `ktx-testbackend client` in a pod of the test backend's image (`support/clients.rs`).
//! - a two-port Service with named targetPorts whose numbers differ from the Service's ports:
//!   both meshed, HTTP is routed by header and the raw TCP port (server-first banner, then
//!   echo) passes through the router to the original workload untouched; both exchanged, both
//!   reach the developer's listeners.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/ktx.rs"]
mod support;

use std::net::SocketAddr;

use clients::{ask_from_pods, Ask};
use ktx_e2e::{http_get, image, secs, testbackend_manifest, two_port_manifest, Cluster, Namespace};
use support::{end_session, ktx, local_backend, mesh_cmd, service_fingerprint, Proc};

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

    end_session(&ns, mesh, "orders", &before, secs(60));
    ask_h2c_from_pod(&ns, "after", &ip, 8080, &[("foobar", "original")]);
}

/// `ktx mesh SERVICE --expose LOCAL:8080 --versionMark foobar`, once it says the session is up.
fn start_mesh(ns: &Namespace, service: &str, local: u16) -> Proc {
    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut mesh_cmd(ns, service, &format!("{local}:8080"), "foobar", &[]),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    mesh
}

/// Counter `name` of the local backend on `port` (`GET /_ktx/stats`).
fn local_counter(port: u16, name: &str) -> u64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stats = http_get(addr, "/_ktx/stats", secs(5))
        .unwrap_or_else(|e| panic!("stats of the local backend: {e}"));
    let key = format!("\"{name}\":");
    stats
        .body
        .split_once(&key)
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {name} in the local backend's stats: {}", stats.body))
}

const GRPC_AND_WS: &[&str] = &[
    "grpc-unary",
    "grpc-server-stream",
    "grpc-client-stream",
    "grpc-bidi",
    "ws",
];

#[test]
fn mesh_routes_grpc_streams_and_websockets_by_header() {
    let Some(cluster) = Cluster::from_env("protocols_grpc_ws") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("proto-grpc");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let addr = format!("{}:8080", ns.cluster_ip("orders"));
    let (_dev, port) = local_backend("developer");

    let mesh = start_mesh(&ns, "orders", port);
    // Marked calls reach the developer, unmarked and differently marked ones the original.
    ask_from_pods(
        &ns,
        &[
            Ask {
                pod: "marked",
                addr: &addr,
                calls: GRPC_AND_WS,
                header: Some("version=foobar"),
                expect: "developer",
            },
            Ask {
                pod: "unmarked",
                addr: &addr,
                calls: GRPC_AND_WS,
                header: None,
                expect: "original",
            },
            Ask {
                pod: "other-mark",
                addr: &addr,
                calls: GRPC_AND_WS,
                header: Some("version=other"),
                expect: "original",
            },
        ],
    );
    // The developer's process really served them, through the tunnel.
    assert!(local_counter(port, "grpc_calls") >= 4);
    assert!(local_counter(port, "websockets") >= 1);
    end_session(&ns, mesh, "orders", &before, secs(60));
}

#[test]
fn multi_port_named_target_ports_mesh_and_exchange() {
    let Some(cluster) = Cluster::from_env("protocols_multi_port") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("proto-tcp");
    // Service port 80 → targetPort `http` (8080), 9001 → `raw` (9000): the numbers a client
    // dials are not the ones the pods listen on.
    ns.apply(&two_port_manifest("orders", "original"));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let ip = ns.cluster_ip("orders");
    let (http_addr, raw_addr) = (format!("{ip}:80"), format!("{ip}:9001"));
    let (_dev, http, raw) = support::local_backend_with_raw("developer");
    let expose = format!("{http}:80,{raw}:9001");

    // Both ports meshed: HTTP is routed by header; the raw port is no HTTP, so the router passes
    // it through to the original (the raw client says nothing until the banner came, so the
    // router must give up sniffing, then sends bytes that are no HTTP and must come back).
    let mut mesh = Proc::spawn(
        "ktx mesh (two ports)",
        &mut mesh_cmd(&ns, "orders", &expose, "foobar", &[]),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    // The port named `http` is declared HTTP: silent clients there are never passed through
    // (a flood of them would open as many connections to the original); `raw` is not.
    let args = ns.kubectl(&[
        "get",
        "deployment",
        "orders-ktx-router",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    assert!(args.contains(r#""--http-ports","8080""#), "{args}");
    ask_from_pods(
        &ns,
        &[
            Ask {
                pod: "raw",
                addr: &raw_addr,
                calls: &["tcp"],
                header: None,
                expect: "original",
            },
            Ask {
                pod: "marked-http",
                addr: &http_addr,
                calls: &["http1", "h2c"],
                header: Some("version=foobar"),
                expect: "developer",
            },
            Ask {
                pod: "unmarked-http",
                addr: &http_addr,
                calls: &["http1"],
                header: None,
                expect: "original",
            },
        ],
    );
    let selector = ns.kubectl(&[
        "get",
        "service",
        "orders",
        "-o",
        "jsonpath={.spec.selector}",
    ]);
    assert!(
        selector.contains("\"router\""),
        "the raw port was asked while the router fronted the Service, selector: {selector}"
    );
    end_session(&ns, mesh, "orders", &before, secs(60));

    // Both ports exchanged: everything, HTTP and raw, reaches the developer's two listeners.
    let mut exchange = Proc::spawn(
        "ktx exchange (two ports)",
        &mut ktx(
            &ns,
            &["exchange", "orders", "--expose", &expose, "-o", "json"],
        ),
    );
    exchange.wait_line(true, "\"command\":\"exchange\"", secs(180));
    ask_from_pods(
        &ns,
        &[
            Ask {
                pod: "raw-exchanged",
                addr: &raw_addr,
                calls: &["tcp"],
                header: None,
                expect: "developer",
            },
            Ask {
                pod: "http-exchanged",
                addr: &http_addr,
                calls: &["http1", "h2c"],
                header: None,
                expect: "developer",
            },
        ],
    );
    end_session(&ns, exchange, "orders", &before, secs(60));
}
