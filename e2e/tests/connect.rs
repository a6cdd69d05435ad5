//! `ktx connect` (issue 13) from a "laptop": a network namespace that reaches only the API
//! server (a veth pair and one host route to the node's address, which the API server's
//! certificate names), with no route to the Service or Pod ranges and a resolv.conf that knows
//! no cluster names. Everything the laptop does runs inside that namespace (`ip netns exec`,
//! which also gives it its own /etc/resolv.conf from /etc/netns/NAME/).

#[path = "support/ktx.rs"]
mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use ktx_e2e::{secs, two_port_manifest, Cluster, Namespace};
use support::{bin_dir, ktx_path, Proc};

/// The laptop namespace; removed (with its veth and files) on drop.
struct Laptop {
    name: String,
    host_if: String,
    dir: PathBuf,
    /// The admin kubeconfig, pointed at the node's address instead of 127.0.0.1.
    kubeconfig: PathBuf,
    /// ktx's state directory (the resolv.conf backup) for this laptop.
    state: PathBuf,
    /// The namespace's resolv.conf before ktx.
    resolv: String,
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    out
}

fn sh_ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Laptop {
    fn new(ns: &Namespace, tag: &str) -> Laptop {
        let node_ip = ns
            .cluster()
            .kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
            ])
            .expect("the node's address");
        let node_ip = node_ip.trim().to_string();
        let id = std::process::id() % 1000;
        let name = format!("ktx-lap-{tag}-{id}");
        let (host_if, ns_if) = (format!("kl{tag}{id}h"), format!("kl{tag}{id}n"));
        let octet = 100 + (id % 100);
        let (host_ip, ns_ip) = (format!("10.199.{octet}.1"), format!("10.199.{octet}.2"));
        let _ = sh(&["ip", "netns", "del", &name]);
        let dir = PathBuf::from(format!("/etc/netns/{name}"));
        fs::create_dir_all(&dir).unwrap();
        let resolv = format!("nameserver {host_ip}\noptions timeout:1 attempts:1\n");
        fs::write(dir.join("resolv.conf"), &resolv).unwrap();
        sh_ok(&["ip", "netns", "add", &name]);
        sh_ok(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh_ok(&["ip", "link", "set", &ns_if, "netns", &name]);
        sh_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        sh_ok(&["ip", "link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", &name];
            a.extend_from_slice(args);
            sh_ok(&a);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        inside(&["ip", "link", "set", &ns_if, "up"]);
        inside(&[
            "ip",
            "route",
            "add",
            &format!("{node_ip}/32"),
            "via",
            &host_ip,
        ]);
        let admin = fs::read_to_string(std::env::var("KUBECONFIG").expect("KUBECONFIG")).unwrap();
        // Not under /etc/netns/NAME: `ip netns exec` binds every file there over /etc.
        let work = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let kubeconfig = work.join("kubeconfig");
        let pointed = admin.replace("https://127.0.0.1:", &format!("https://{node_ip}:"));
        assert_ne!(pointed, admin, "the admin kubeconfig names 127.0.0.1");
        fs::write(&kubeconfig, pointed).unwrap();
        let state = work.join("ktx-state");
        Laptop {
            name,
            host_if,
            dir,
            kubeconfig,
            state,
            resolv,
        }
    }

    /// `CMD ARGS…` inside the laptop.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("KTX_STATE_DIR", &self.state)
            .env("KTX_LOG", "ktx=debug,ktx_netstack=debug,warn");
        c
    }

    fn ktx(&self, ns: &Namespace, args: &[&str]) -> Command {
        let ktx = ktx_path().display().to_string();
        let mut a = vec!["-n", ns.name()];
        a.extend_from_slice(args);
        self.cmd(&ktx, &a)
    }

    /// The testbackend client inside the laptop: `calls` to `addr`, answered by `expect`.
    fn ask(&self, addr: &str, calls: &[&str], expect: &str) -> Output {
        let client = bin_dir().join("ktx-testbackend").display().to_string();
        let mut a = vec!["client"];
        a.extend_from_slice(calls);
        a.extend([
            "--addr",
            addr,
            "--expect",
            expect,
            "--retry-for",
            "10s",
            "--timeout",
            "5s",
        ]);
        self.cmd(&client, &a).output().unwrap()
    }

    fn assert_asks(&self, addr: &str, calls: &[&str], expect: &str) {
        let out = self.ask(addr, calls, expect);
        assert!(
            out.status.success(),
            "{calls:?} to {addr} from the laptop:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn curl(&self, args: &[&str]) -> Output {
        let mut a = vec!["-sS", "--max-time", "5"];
        a.extend_from_slice(args);
        self.cmd("curl", &a).output().unwrap()
    }

    /// `url`'s body (curl, trimmed), asserting the request succeeded.
    fn get_body(&self, url: &str) -> String {
        let out = self.curl(&[url]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn routes(&self) -> String {
        sh_ok(&["ip", "-n", &self.name, "route", "show"])
    }

    fn resolv_now(&self) -> String {
        fs::read_to_string(self.dir.join("resolv.conf")).unwrap()
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(work) = self.kubeconfig.parent() {
            let _ = fs::remove_dir_all(work);
        }
    }
}

fn pod_ip(ns: &Namespace, app: &str) -> String {
    ns.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])
    .trim()
    .to_string()
}

#[test]
fn connect_from_a_laptop_reaches_services_by_name_and_address_and_cleans_up_after_kill_9() {
    let Some(cluster) = Cluster::from_env("connect") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("connect");
    ns.apply(&two_port_manifest("inventory", "inventory"));
    ns.wait_deployment("inventory", secs(120));
    let laptop = Laptop::new(&ns, "a");
    let n = ns.name();
    let by_name = format!("http://inventory.{n}/");
    // An ExternalName Service: an alias of another Service's name.
    ns.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: stock\nspec:\n  type: ExternalName\n  externalName: inventory.{n}.svc.cluster.local\n"
    ));

    // Before: no route and no name.
    let before = laptop.curl(&[&by_name]);
    assert!(
        !before.status.success(),
        "reached the cluster before ktx connect"
    );
    let routes_before = laptop.routes();

    let mut connect = Proc::spawn("ktx connect", &mut laptop.ktx(&ns, &["connect"]));
    connect.wait_line(true, "reaches namespace", secs(180));

    let ip = ns.cluster_ip("inventory");
    let pod = pod_ip(&ns, "inventory");
    assert_eq!(laptop.get_body(&by_name), "inventory");
    for addr in [
        format!("inventory.{n}:80"),
        format!("inventory.{n}.svc.cluster.local:80"),
        "inventory:80".to_string(),
        format!("{ip}:80"),
        format!("{pod}:8080"),
    ] {
        laptop.assert_asks(&addr, &["http1", "h2c", "grpc-unary"], "inventory");
    }
    laptop.assert_asks(&format!("inventory.{n}:9001"), &["tcp"], "inventory");
    laptop.assert_asks(&format!("{pod}:9000"), &["tcp"], "inventory");
    // The ExternalName Service resolves as cluster DNS answers it: its alias, then the
    // addresses of the name it stands for (it was NXDOMAIN).
    assert_eq!(laptop.get_body(&format!("http://stock.{n}/")), "inventory");

    // kill -9: the TUN device and its routes go with the process; resolv.conf is put back by
    // the next `ktx connect` (which then works) and the connect pod goes by `ktx clean`.
    connect.kill9();
    let routes_after = laptop.routes();
    assert_eq!(routes_after, routes_before, "routes left after kill -9");
    assert_ne!(
        laptop.resolv_now(),
        laptop.resolv,
        "ktx connect never managed resolv.conf"
    );
    let mut again = Proc::spawn("ktx connect (again)", &mut laptop.ktx(&ns, &["connect"]));
    again.wait_line(true, "reaches namespace", secs(180));
    assert_eq!(laptop.get_body(&by_name), "inventory", "after the restart");
    // `ktx clean` while a session runs leaves its resolv.conf alone (it put the original back
    // under the live session, whose names then stopped resolving).
    let managed = laptop.resolv_now();
    let out = laptop.ktx(&ns, &["clean"]).output().unwrap();
    assert!(out.status.success(), "ktx clean: {out:?}");
    assert_eq!(
        laptop.resolv_now(),
        managed,
        "ktx clean restored a live session's resolv.conf"
    );
    assert_eq!(laptop.get_body(&by_name), "inventory", "after ktx clean");
    again.interrupt();
    let (ok, out) = again.wait_exit(secs(60));
    assert!(ok, "ktx connect did not end cleanly:\n{out}");
    assert_eq!(
        laptop.resolv_now(),
        laptop.resolv,
        "resolv.conf not restored:\n{out}"
    );
    assert_eq!(laptop.routes(), routes_before);
    // The TUN device deleted under a session: the session ends and says why (it went on with
    // routes and names that led nowhere, and a warning in the log only), and restores.
    let mut third = Proc::spawn("ktx connect (third)", &mut laptop.ktx(&ns, &["connect"]));
    third.wait_line(true, "reaches namespace", secs(180));
    sh_ok(&["ip", "-n", &laptop.name, "link", "del", "ktx0"]);
    let (ok, out) = third.wait_exit(secs(60));
    assert!(!ok, "ktx connect went on without its TUN device:\n{out}");
    assert!(out.contains("TUN device ktx0 stopped working"), "{out}");
    assert_eq!(
        laptop.resolv_now(),
        laptop.resolv,
        "resolv.conf not restored:\n{out}"
    );
    assert_eq!(laptop.routes(), routes_before);
    // The killed session's pod: deleted once its Lease expired and `ktx clean` ran. A pod
    // being deleted counts as gone: how long the kubelet then takes to reap it is the node's
    // affair (this cluster's kubelet once kept one Terminating for over a minute after it
    // lost track of the container).
    let gone = ktx_e2e::poll(secs(90), || {
        let out = laptop.ktx(&ns, &["clean"]).output().unwrap();
        let left = ns.kubectl(&[
            "get",
            "pods",
            "-l",
            "ktx.dev/service=ktx-connect",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        // "NAME " for a pod nobody deleted yet, "NAME TIMESTAMP" for one being deleted.
        let undeleted = left
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_none())
            .count();
        (out.status.success() && undeleted == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "the killed session's connect pod was not deleted"
    );
}

#[test]
fn connect_without_root_serves_a_socks_and_http_proxy() {
    let Some(cluster) = Cluster::from_env("connect_socks") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("connect-socks");
    ns.apply(&two_port_manifest("inventory", "inventory"));
    ns.wait_deployment("inventory", secs(120));
    let laptop = Laptop::new(&ns, "b");
    let n = ns.name();
    let port = support::free_port();
    let proxy = format!("127.0.0.1:{port}");
    let mut connect = Proc::spawn(
        "ktx connect --socks",
        &mut laptop.ktx(&ns, &["connect", "--socks", &proxy]),
    );
    connect.wait_line(true, "through the proxy", secs(180));
    for args in [
        vec!["--socks5-hostname", &proxy, "http://inventory/"],
        vec![
            "--socks5-hostname",
            &proxy,
            &format!("http://inventory.{n}.svc.cluster.local/"),
        ],
        vec![
            "-x",
            &format!("http://{proxy}"),
            &format!("http://inventory.{n}/"),
        ],
        vec![
            "-p",
            "-x",
            &format!("http://{proxy}"),
            &format!("http://inventory.{n}/"),
        ],
    ] {
        let out = laptop.curl(&args);
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "inventory",
            "{args:?}"
        );
    }
    // A name that is not the cluster's is not the proxy's either.
    let out = laptop.curl(&["--socks5-hostname", &proxy, "http://nosuch.invalid/"]);
    assert!(!out.status.success());
    // Nothing was touched on the laptop.
    assert_eq!(laptop.resolv_now(), laptop.resolv);
    connect.interrupt();
    let (ok, out) = connect.wait_exit(secs(60));
    assert!(ok, "ktx connect --socks did not end cleanly:\n{out}");

    // `ktx connect -- CMD`: CMD runs with ALL_PROXY/HTTP_PROXY pointing at the proxy on a free
    // port; the session ends with it, and ktx exits with its status.
    let url = format!("http://inventory.{n}/");
    let out = laptop
        .ktx(
            &ns,
            &["connect", "--", "curl", "-sS", "--max-time", "10", &url],
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "ktx connect -- curl:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "inventory"),
        "curl's answer missing:\n{stdout}\n{stderr}"
    );
    let out = laptop
        .ktx(&ns, &["connect", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "ktx exits with CMD's status");
    assert_eq!(laptop.resolv_now(), laptop.resolv);
    support::assert_nothing_left(&ns, secs(60));
}

/// `curl` inside the laptop, printing `%{speed_download} %{size_download} %{time_total}`.
fn curl_stats(laptop: &Laptop, args: &[&str]) -> (f64, u64, f64) {
    let mut a = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{size_download} %{time_total}",
    ];
    a.extend_from_slice(args);
    let mut c = laptop.cmd("curl", &["-sS", "--max-time", "120"]);
    c.args(&a);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Vec<&str> = text.split_whitespace().collect();
    (
        v[0].parse::<f64>().unwrap() / (1024.0 * 1024.0),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The numbers e2e/README.md reports: a 100 MiB download from the same pod through `ktx
/// connect` and through `kubectl port-forward` (both from the laptop, over the same path to the
/// API server), three of each, alternating; and one small request's time through ktx connect
/// against the same request from the node straight to the pod.
#[test]
fn connect_download_and_latency_against_kubectl_port_forward() {
    let Some(cluster) = Cluster::from_env("connect_speed") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("connect-speed");
    ns.apply(&two_port_manifest("inventory", "inventory"));
    ns.wait_deployment("inventory", secs(120));
    let laptop = Laptop::new(&ns, "c");
    let n = ns.name().to_string();
    let pod_name = ns
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=inventory",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .trim()
        .to_string();
    let pod = pod_ip(&ns, "inventory");
    const MIB100: u64 = 100 * 1024 * 1024;
    let path = format!("/bytes?n={MIB100}");

    let mut connect = Proc::spawn("ktx connect", &mut laptop.ktx(&ns, &["connect"]));
    connect.wait_line(true, "reaches namespace", secs(180));
    let port = support::free_port();
    let kubectl = cluster.kubectl_program().to_string();
    let mut pf = Proc::spawn(
        "kubectl port-forward (laptop)",
        &mut laptop.cmd(
            &kubectl,
            &[
                "-n",
                &n,
                "port-forward",
                "--address",
                "127.0.0.1",
                &format!("pod/{pod_name}"),
                &format!("{port}:8080"),
            ],
        ),
    );
    pf.wait_line(true, "Forwarding from", secs(60));

    let (mut via_connect, mut via_pf) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (speed, size, _) = curl_stats(&laptop, &[&format!("http://{pod}:8080{path}")]);
        assert_eq!(size, MIB100, "through ktx connect");
        via_connect.push(speed);
        let (speed, size, _) = curl_stats(&laptop, &[&format!("http://127.0.0.1:{port}{path}")]);
        assert_eq!(size, MIB100, "through kubectl port-forward");
        via_pf.push(speed);
    }
    // One small request: through ktx connect (tunnel already up) vs from the node to the pod.
    let mut through = Vec::new();
    for _ in 0..20 {
        through.push(curl_stats(&laptop, &[&format!("http://{pod}:8080/hello")]).2 * 1e3);
    }
    let mut direct = Vec::new();
    for _ in 0..20 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{time_total}",
                &format!("http://{pod}:8080/hello"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        direct.push(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap()
                * 1e3,
        );
    }
    let (c, p) = (median(via_connect.clone()), median(via_pf.clone()));
    let (t, d) = (median(through), median(direct));
    eprintln!(
        "MEASURED 100 MiB download: ktx connect {c:.1} MiB/s (runs {via_connect:.1?}), kubectl port-forward {p:.1} MiB/s (runs {via_pf:.1?}), ratio {:.2}",
        c / p
    );
    eprintln!(
        "MEASURED one GET /hello (median of 20): through ktx connect {t:.2} ms, node to pod {d:.2} ms, added {:.2} ms",
        t - d
    );
    drop(pf);
    connect.interrupt();
    let (ok, out) = connect.wait_exit(secs(60));
    assert!(ok, "ktx connect did not end cleanly:\n{out}");
}

/// The developer's process of kt-connect's scenario: answers every GET with what it got from
/// `http://catalog:8080/` — a cluster Service, called by its short name, through `ktx connect`.
const LOCAL_INVENTORY: &str = r#"
import signal, sys, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        got = urllib.request.urlopen("http://catalog:8080/", timeout=10).read().decode().strip()
        body = ("local got: " + got).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// kt-connect's own scenario, from the laptop: `ktx connect`, then `ktx mesh inventory
/// --versionMark ci -- ./local-inventory`, where the local process calls another cluster
/// Service by name; a pod's request with `VERSION: ci` gets the local answer.
#[test]
fn kt_connects_scenario_connect_then_mesh_with_a_local_process_that_calls_the_cluster() {
    let Some(cluster) = Cluster::from_env("connect_ktconnect") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("connect-ktc");
    ns.apply(&two_port_manifest("inventory", "inventory"));
    ns.apply(&ktx_e2e::testbackend_manifest("catalog", "catalog", 1));
    ns.wait_deployment("inventory", secs(120));
    ns.wait_deployment("catalog", secs(120));
    let laptop = Laptop::new(&ns, "d");
    let mut connect = Proc::spawn("ktx connect", &mut laptop.ktx(&ns, &["connect"]));
    connect.wait_line(true, "reaches namespace", secs(180));

    let script = laptop.kubeconfig.with_file_name("local-inventory.py");
    fs::write(&script, LOCAL_INVENTORY).unwrap();
    let port = support::free_port();
    let script = script.display().to_string();
    let (expose, port_arg) = (format!("{port}:80"), port.to_string());
    let mut mesh = Proc::spawn(
        "ktx mesh -- local-inventory",
        &mut laptop.ktx(
            &ns,
            &[
                "mesh",
                "inventory",
                "--expose",
                &expose,
                "--versionMark",
                "ci",
                "--",
                "python3",
                &script,
                &port_arg,
            ],
        ),
    );
    mesh.wait_line(false, "Started python3", secs(180));
    // (Pods here have no cluster DNS: they call the ClusterIP.)
    let url = format!("http://{}/", ns.cluster_ip("inventory"));
    support::ask_from_pod(
        &ns,
        "ktc-scenario",
        &url,
        &[("VERSION: ci", "local got: catalog"), ("", "inventory")],
    );
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(ok, "ktx mesh -- CMD did not end cleanly:\n{out}");
    connect.interrupt();
    let (ok, out) = connect.wait_exit(secs(60));
    assert!(ok, "ktx connect did not end cleanly:\n{out}");
    support::assert_nothing_left(&ns, secs(60));
}
