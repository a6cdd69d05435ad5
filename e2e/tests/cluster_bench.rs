//! Measurements on the real path, run by `loadtests/cluster.sh` (ignored by a plain test run:
//! they take minutes and assert only that every transfer was complete and routed).
//!
//! - `tunnel_portforward_100mb`: 100 MiB GET, in one run, through a raw `kubectl port-forward`
//!   to a test backend pod (SPDY), through `ktx forward` over SPDY (its default, one port-forward
//!   per connection, the same way ktx's tunnel reaches the shadow) and over the API server's
//!   WebSocket (`KTX_PORT_FORWARD=websocket`), and as a marked request from
//!   a pod through router → shadow → tunnel → ktx to the local test backend, taking turns with
//!   `kubectl port-forward`'s 100 MiB POST (the figure it is judged against); plus the same GET
//!   from that pod straight to the original pod (the cluster's own network, for scale).
//! - `mesh_first_request`: from `ktx mesh` started to the first marked request answered by the
//!   local process, asked every 50 ms by a pod that runs before the mesh starts; with the time
//!   of each of ktx's progress lines, to see where the seconds go.
//!
//! Each writes JSON lines (`{"scenario":…,"subject":…,…}`) to `$KTX_BENCH_ROWS` (and stderr).
//! `KTX_BENCH_REPS` sets the repetitions (default 3). `KTX_BIN` / `KTX_TESTBACKEND_BIN` pick
//! release binaries for the local side.

#[path = "support/ktx.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use ktx_e2e::{
    image, poll, secs, testbackend_image, testbackend_manifest, yaml_string, Cluster, Namespace,
};
use support::{free_port, ktx, local_backend, mesh_cmd, uptime, Proc};

const MIB100: u64 = 100 * 1024 * 1024;

fn reps() -> usize {
    std::env::var("KTX_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Appends one row to `$KTX_BENCH_ROWS` and prints it.
fn row(fields: &str) {
    let line = format!("{{{fields}}}");
    eprintln!("ROW {line}");
    if let Ok(path) = std::env::var("KTX_BENCH_ROWS") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        writeln!(f, "{line}").expect("write a row");
    }
}

fn list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", items.join(","))
}

fn speed_row(subject: &str, direction: &str, runs: &[f64], note: &str) {
    row(&format!(
        r#""scenario":"tunnel-portforward-100mb","subject":"{subject}","mib_per_s":{:.1},"runs":{},"mib_per_s_all":{},"bytes":{MIB100},"direction":"{direction}","note":"{note}""#,
        median(runs),
        runs.len(),
        list(runs)
    ));
}

/// `curl` on this machine: MiB/s of a GET that must bring exactly 100 MiB.
fn curl_mib_per_s(url: &str) -> f64 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download}",
            url,
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(v[1].parse::<u64>().ok(), Some(MIB100), "size from {url}");
    v[0].parse::<f64>().expect("curl's speed") / (1024.0 * 1024.0)
}

/// `curl` on this machine: MiB/s of a POST of `file` (exactly 100 MiB) to `/sink`, which
/// answers the length it read.
fn curl_upload_mib_per_s(url: &str, file: &std::path::Path) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w", " %{speed_upload}"])
        .args([
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        v[0].parse::<u64>().ok(),
        Some(MIB100),
        "bytes {url} read: {text}"
    );
    v[1].parse::<f64>().expect("curl's speed") / (1024.0 * 1024.0)
}

/// A pod that asks `addr` (HOST:PORT) until `expect` answers `/` (with `header`, NAME=VALUE, if
/// any), then downloads 100 MiB from it `count` times with the test backend's client
/// (`download`: the body counted and dropped, like `curl -o /dev/null` on the node, timed from
/// the connect to the last byte, each exactly 100 MiB or the pod fails); MiB/s per download.
fn pod_downloads(
    ns: &Namespace,
    pod: &str,
    addr: &str,
    (header, expect): (&str, &str),
    count: usize,
) -> Vec<f64> {
    let bytes = MIB100.to_string();
    let mut command = vec![
        "/ktx-testbackend",
        "client",
        "--addr",
        addr,
        "--expect",
        expect,
        "--retry-for",
        "60s",
        "--timeout",
        "120s",
        "--bytes",
        &bytes,
    ];
    if !header.is_empty() {
        command.extend(["--header", header]);
    }
    command.push("http1");
    command.extend(std::iter::repeat_n("download", count));
    let run = ns.run_pod(pod, &testbackend_image(), &command, secs(600));
    assert_eq!(run.phase, "Succeeded", "{pod}: {}", run.logs);
    let speeds: Vec<f64> = run
        .logs
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("download: answered by {expect} (")))
        .map(|rest| {
            let seconds = rest
                .strip_prefix(&format!("{MIB100} bytes in "))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{pod}: not a download line: {rest}"));
            100.0 / seconds.max(1e-6)
        })
        .collect();
    assert_eq!(speeds.len(), count, "{pod}: {}", run.logs);
    speeds
}

fn first_pod(ns: &Namespace, app: &str) -> (String, String) {
    let out = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
    ]);
    let mut it = out.split_whitespace();
    (
        it.next().expect("a pod").to_string(),
        it.next().expect("a pod IP").to_string(),
    )
}

#[test]
#[ignore = "a measurement: run by loadtests/cluster.sh"]
fn tunnel_portforward_100mb() {
    let Some(cluster) = Cluster::from_env("bench_tunnel") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("bench-tunnel");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let (pod, pod_ip) = first_pod(&ns, "orders");
    let n = ns.name().to_string();

    // Raw SPDY port-forward and the two transports ktx speaks, alternating, same pod.
    let pf_port = free_port();
    let kubectl = cluster.kubectl_program().to_string();
    let mut pf = Proc::spawn(
        "kubectl port-forward",
        Command::new(&kubectl).args([
            "-n",
            &n,
            "port-forward",
            "--address",
            "127.0.0.1",
            &format!("pod/{pod}"),
            &format!("{pf_port}:8080"),
        ]),
    );
    pf.wait_line(true, "Forwarding from", secs(60));
    let ws_port = free_port();
    let mut fwd = Proc::spawn(
        "ktx forward (WebSocket)",
        ktx(&ns, &["forward", "orders", &format!("{ws_port}:8080")])
            .env("KTX_PORT_FORWARD", "websocket"),
    );
    fwd.wait_line(true, "127.0.0.1:", secs(60));
    let ktx_port = free_port();
    let mut ktx_fwd = Proc::spawn(
        "ktx forward (SPDY)",
        ktx(&ns, &["forward", "orders", &format!("{ktx_port}:8080")])
            .env("KTX_PORT_FORWARD", "spdy"),
    );
    ktx_fwd.wait_line(true, "127.0.0.1:", secs(60));
    let path = format!("/bytes?n={MIB100}");
    let (mut spdy, mut ws, mut ktx_spdy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps() {
        spdy.push(curl_mib_per_s(&format!("http://127.0.0.1:{pf_port}{path}")));
        ws.push(curl_mib_per_s(&format!("http://127.0.0.1:{ws_port}{path}")));
        ktx_spdy.push(curl_mib_per_s(&format!(
            "http://127.0.0.1:{ktx_port}{path}"
        )));
    }
    // The other way, laptop → pod: the direction of the marked download below. kubectl's
    // upload is measured beside the marked downloads, below.
    let file = std::env::temp_dir().join(format!("ktx-bench-{}.bin", std::process::id()));
    std::fs::write(&file, vec![b'x'; MIB100 as usize]).expect("write the upload file");
    let pf_url = format!("http://127.0.0.1:{pf_port}/sink");
    let (mut ws_up, mut ktx_spdy_up) = (Vec::new(), Vec::new());
    for _ in 0..reps() {
        let ws_url = format!("http://127.0.0.1:{ws_port}/sink");
        ws_up.push(curl_upload_mib_per_s(&ws_url, &file));
        let ktx_url = format!("http://127.0.0.1:{ktx_port}/sink");
        ktx_spdy_up.push(curl_upload_mib_per_s(&ktx_url, &file));
    }
    for f in [&mut fwd, &mut ktx_fwd] {
        f.interrupt();
        let _ = f.wait_exit(secs(30));
    }

    // The marked request from a pod, answered by the local process through the mesh, taking
    // turns with kubectl's upload to the original pod (which the mesh leaves running): the
    // two figures the goal compares, under the same load (the session's pods up) and the
    // same drift of this machine's speed, each first in every other turn. Then the same GET
    // unmarked from the same kind of pod straight to the original pod.
    let (_dev, port) = local_backend("developer");
    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut mesh_cmd(&ns, "orders", &format!("{port}:8080"), "bench", &[]),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    let marked = format!("{}:8080", ns.cluster_ip("orders"));
    let (mut meshed, mut spdy_up) = (Vec::new(), Vec::new());
    for turn in 0..reps() {
        let mut download = || {
            let pod = format!("marked-{turn}");
            meshed.extend(pod_downloads(
                &ns,
                &pod,
                &marked,
                ("version=bench", "developer"),
                1,
            ));
        };
        if turn % 2 == 0 {
            download();
            spdy_up.push(curl_upload_mib_per_s(&pf_url, &file));
        } else {
            spdy_up.push(curl_upload_mib_per_s(&pf_url, &file));
            download();
        }
    }
    let _ = std::fs::remove_file(&file);
    drop(pf);
    let direct = pod_downloads(
        &ns,
        "direct",
        &format!("{pod_ip}:8080"),
        ("", "original"),
        reps(),
    );
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(ok, "ktx mesh did not end cleanly:\n{out}");

    speed_row(
        "kubectl-port-forward",
        "pod-to-laptop",
        &spdy,
        "curl on the node through kubectl port-forward (SPDY) to the pod",
    );
    speed_row(
        "ws-port-forward",
        "pod-to-laptop",
        &ws,
        "curl on the node through ktx forward (WebSocket port-forward) to the pod",
    );
    speed_row(
        "spdy-port-forward",
        "pod-to-laptop",
        &ktx_spdy,
        "curl on the node through ktx forward (SPDY port-forward, ktx's default) to the pod",
    );
    speed_row(
        "kubectl-port-forward-upload",
        "laptop-to-pod",
        &spdy_up,
        "curl on the node POSTs 100 MiB through kubectl port-forward (SPDY) to the pod",
    );
    speed_row(
        "ws-port-forward-upload",
        "laptop-to-pod",
        &ws_up,
        "curl on the node POSTs 100 MiB through ktx forward (WebSocket port-forward)",
    );
    speed_row(
        "spdy-port-forward-upload",
        "laptop-to-pod",
        &ktx_spdy_up,
        "curl on the node POSTs 100 MiB through ktx forward (SPDY port-forward, ktx's default)",
    );
    speed_row(
        "ktx-mesh",
        "laptop-to-pod",
        &meshed,
        "the test backend's client in a pod, marked, via router, shadow, tunnel, ktx to the local backend",
    );
    speed_row(
        "pod-to-pod",
        "pod-to-pod",
        &direct,
        "the test backend's client in a pod straight to the original pod (no API server)",
    );
}

/// ktx's stderr lines with the seconds since `start` at which each arrived.
fn timed_lines(
    pipe: impl std::io::Read + Send + 'static,
    start: Instant,
) -> Arc<Mutex<Vec<(f64, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let t = start.elapsed().as_secs_f64();
            out.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((t, line));
        }
    });
    seen
}

#[test]
#[ignore = "a measurement: run by loadtests/cluster.sh"]
fn mesh_first_request() {
    let Some(cluster) = Cluster::from_env("bench_first") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("bench-first");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let ip = ns.cluster_ip("orders");
    let (_dev, port) = local_backend("developer");
    let mut all = Vec::new();
    for rep in 0..reps() {
        // The asking pod runs before ktx starts: the measurement holds no pod start of its own.
        // Each round its own mark, so no pod of the round before (terminating) is in the way.
        let asker = format!("asker-{rep}");
        let mark = format!("first{rep}");
        let script = format!(
            "for i in $(seq 1 1200); do b=$(timeout 2 wget -q -O - --header 'VERSION: {mark}' http://{ip}:8080/ 2>/dev/null); \
             if [ \"$b\" = developer ]; then echo \"FIRST $(cut -d' ' -f1 /proc/uptime)\"; exit 0; fi; sleep 0.05; done; exit 1"
        );
        let manifest = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {asker}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", {script}]
"#,
            image = image("busybox"),
            script = yaml_string(&script),
        );
        ns.apply(&manifest);
        let running = poll(secs(60), || {
            let phase = ns.kubectl(&["get", "pod", &asker, "-o", "jsonpath={.status.phase}"]);
            (phase.trim() == "Running").then_some(())
        });
        assert!(running.is_some(), "pod {asker} did not start");

        let t0 = uptime();
        let start = Instant::now();
        let mut cmd = mesh_cmd(&ns, "orders", &format!("{port}:8080"), &mark, &[]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ktx mesh");
        let stdout = timed_lines(child.stdout.take().expect("piped"), start);
        let stderr = timed_lines(child.stderr.take().expect("piped"), start);
        let done = poll(secs(120), || {
            let phase = ns.kubectl(&["get", "pod", &asker, "-o", "jsonpath={.status.phase}"]);
            matches!(phase.trim(), "Succeeded" | "Failed").then(|| phase.trim().to_string())
        });
        let logs = ns.kubectl(&["logs", &asker]);
        let up = stdout
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains("\"command\":\"mesh\""))
            .map(|(t, _)| *t);
        // Ctrl-C, and everything is gone before the next round.
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let ended = poll(secs(90), || child.try_wait().ok().flatten());
        let lines = stderr.lock().unwrap().clone();
        for (t, l) in &lines {
            eprintln!("  {t:6.2}s {l}");
        }
        assert!(
            ended.is_some_and(|s| s.success()),
            "ktx mesh did not end cleanly"
        );
        assert_eq!(done.as_deref(), Some("Succeeded"), "{asker}: {logs}");
        let first: f64 = logs
            .lines()
            .find_map(|l| l.strip_prefix("FIRST "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{asker} printed no FIRST line: {logs}"));
        let seconds = first - t0;
        eprintln!(
            "rep {rep}: session up {:.2}s, first marked request answered by the local process {seconds:.2}s after `ktx mesh` started",
            up.unwrap_or(f64::NAN)
        );
        all.push(seconds);
        support::assert_nothing_left(&ns, secs(120));
        // The next round starts on a namespace without the old router pods (terminating ones
        // would be listed while ktx waits for the new router).
        let gone = poll(secs(90), || {
            support::ktx_leftovers(&ns).is_empty().then_some(())
        });
        if gone.is_none() {
            eprintln!(
                "rep {rep}: pods still terminating: {}",
                support::ktx_leftovers(&ns)
            );
        }
    }
    row(&format!(
        r#""scenario":"mesh-first-request","subject":"ktx-mesh","seconds":{:.2},"runs":{},"seconds_all":{},"note":"ktx mesh start to the first VERSION-marked request (asked every 50 ms from a running pod) answered by the local process""#,
        median(&all),
        all.len(),
        list(&all)
    ));
}
