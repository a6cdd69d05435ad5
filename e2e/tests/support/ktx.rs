//! Running the real `ktx` binary (and a local test backend as the developer's process) from an
//! end-to-end test: build once, spawn, read its output line by line, send it SIGINT or SIGKILL,
//! and compare Services before and after.
//!
//! No dependencies, like the harness: processes, pipes and kubectl.

// Included by several test binaries; each uses a different part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use ktx_e2e::Namespace;

/// `<target>/debug`, where the test binaries' sibling binaries are.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // <target>/debug/deps/mesh-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds `ktx` and `ktx-testbackend` once per test binary (cheap when up to date).
pub fn build() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ktx", "-p", "ktx-testbackend"])
            .status()
            .expect("cannot run cargo to build ktx");
        assert!(
            status.success(),
            "cargo build -p ktx -p ktx-testbackend failed"
        );
    });
}

pub fn ktx_path() -> PathBuf {
    std::env::var_os("KTX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("ktx"))
}

/// The `ktx-testbackend` binary [`build`] made (or `$KTX_TESTBACKEND_BIN`, e.g. a release build
/// for a measurement): a developer's process a test starts itself.
pub fn testbackend_path() -> PathBuf {
    std::env::var_os("KTX_TESTBACKEND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("ktx-testbackend"))
}

/// A free local port for a process the test starts next. Picked in 20000-28999: below the
/// ephemeral range (32768+), so that no outgoing connection of this machine (kubectl,
/// port-forwards) can be given it between this check and the process binding it, and below
/// Kubernetes' NodePort range (30000-32767).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20000 + (n % 9000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free local port in 20000-28999")
}

/// A spawned process with its output delivered line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every line seen so far (stderr prefixed with `! `), for failure messages.
    pub seen: Vec<String>,
}

fn pump(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = pump(child.stdout.take().expect("stdout is piped"));
        let stderr = pump(child.stderr.take().expect("stderr is piped"));
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) -> Option<(bool, String)> {
        if let Ok(l) = self.stderr.try_recv() {
            self.seen.push(format!("! {l}"));
            return Some((false, l));
        }
        if let Ok(l) = self.stdout.try_recv() {
            self.seen.push(l.clone());
            return Some((true, l));
        }
        None
    }

    /// Waits for a line (stdout if `on_stdout`, else stderr) containing `needle`. Panics with
    /// everything seen if the process ends or `timeout` passes first.
    pub fn wait_line(&mut self, on_stdout: bool, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some((out, line)) = self.drain() {
                if out == on_stdout && line.contains(needle) {
                    return line;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Take what is still in the pipes before giving up.
                thread::sleep(Duration::from_millis(200));
                while let Some((out, line)) = self.drain() {
                    if out == on_stdout && line.contains(needle) {
                        return line;
                    }
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}; output:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` (e.g. `-STOP`, `-CONT`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {} failed", self.child.id());
    }

    /// Ctrl-C.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// kill -9: no cleanup at all.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Waits for the exit; returns whether it succeeded, and everything it printed.
    pub fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        thread::sleep(Duration::from_millis(200));
        while self.drain().is_some() {}
        (status.success(), self.seen.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ktx -n NS ARGS...` against the test cluster.
pub fn ktx(ns: &Namespace, args: &[&str]) -> Command {
    let mut cmd = Command::new(ktx_path());
    cmd.arg("-n").arg(ns.name()).args(args);
    cmd.env("KTX_LOG", "ktx=debug,warn");
    cmd
}

/// `ktx mesh SERVICE --expose EXPOSE --versionMark MARK -o json MORE...`, not started yet.
pub fn mesh_cmd(ns: &Namespace, service: &str, expose: &str, mark: &str, more: &[&str]) -> Command {
    let mut cmd = ktx(
        ns,
        &[
            "mesh",
            service,
            "--expose",
            expose,
            "--versionMark",
            mark,
            "-o",
            "json",
        ],
    );
    cmd.args(more);
    cmd
}

/// Ctrl-C to a session: it ends cleanly, `service` is exactly `before`, and no ktx object is
/// left within `within`.
pub fn end_session(ns: &Namespace, mut p: Proc, service: &str, before: &str, within: Duration) {
    p.interrupt();
    let (ok, out) = p.wait_exit(Duration::from_secs(90));
    assert!(ok, "{} did not end cleanly after Ctrl-C:\n{out}", p.name);
    assert_eq!(service_fingerprint(ns, service), before, "{out}");
    assert_nothing_left(ns, within);
}

/// Runs a ktx command to its end; (success, output).
pub fn ktx_run(ns: &Namespace, args: &[&str], timeout: Duration) -> (bool, String) {
    let mut p = Proc::spawn(&format!("ktx {}", args.join(" ")), &mut ktx(ns, args));
    p.wait_exit(timeout)
}

/// A local test backend answering with `name` on a free port: the developer's process.
pub fn local_backend(name: &str) -> (Proc, u16) {
    let port = free_port();
    let p = start_local_backend(name, &[port], &["--listen", &format!("127.0.0.1:{port}")]);
    (p, port)
}

/// [`local_backend`] on a given port: the developer's process started again after a rebuild.
pub fn local_backend_on(name: &str, port: u16) -> Proc {
    start_local_backend(name, &[port], &["--listen", &format!("127.0.0.1:{port}")])
}

/// [`local_backend`] with a raw TCP listener too (banner with its name, then echo): the
/// developer's process for a two-port Service. (process, HTTP port, raw port)
pub fn local_backend_with_raw(name: &str) -> (Proc, u16, u16) {
    let (http, raw) = (free_port(), free_port());
    let p = start_local_backend(
        name,
        &[http, raw],
        &[
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tcp-listen",
            &format!("127.0.0.1:{raw}"),
        ],
    );
    (p, http, raw)
}

fn start_local_backend(name: &str, ports: &[u16], listen: &[&str]) -> Proc {
    let mut p = Proc::spawn(
        "local ktx-testbackend",
        Command::new(testbackend_path())
            .args(listen)
            .args(["--name", name]),
    );
    // It is up once it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "the local backend did not start");
            let _ = p.drain();
            thread::sleep(Duration::from_millis(50));
        }
    }
    p
}

/// The parts of a Service that ktx must give back exactly: labels, annotations, selector,
/// ports, type, clusterIP.
pub fn service_fingerprint(ns: &Namespace, name: &str) -> String {
    ns.kubectl(&[
        "get",
        "service",
        name,
        "-o",
        "jsonpath={.metadata.labels}|{.metadata.annotations}|{.spec.selector}|{.spec.ports}|{.spec.type}|{.spec.clusterIP}",
    ])
}

/// Names of every ktx-managed object left in the namespace (pods that are already
/// terminating included: they must be gone too).
pub fn ktx_leftovers(ns: &Namespace) -> String {
    ns.kubectl(&[
        "get",
        "deployments,replicasets,pods,services,configmaps,secrets,leases,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
        "-l",
        "app.kubernetes.io/managed-by=ktx",
        "-o",
        "name",
    ])
    .trim()
    .to_string()
}

/// ktx-managed objects not yet deleted: like [`ktx_leftovers`], but a pod whose deletion has
/// begun (Terminating) counts as gone. This cluster's kubelet (1.20) sometimes takes more than
/// a minute to remove a stopped pod's object after its containers are gone; that is not ktx's
/// doing.
pub fn live_leftovers(ns: &Namespace) -> String {
    let out = ns.kubectl(&[
        "get",
        "deployments,replicasets,pods,services,configmaps,secrets,leases,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
        "-l",
        "app.kubernetes.io/managed-by=ktx",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until every ktx-managed object is deleted (pods at least Terminating); panics naming
/// what is left otherwise. Pods still terminating afterwards are reported, not failed on.
pub fn assert_nothing_left(ns: &Namespace, timeout: Duration) {
    let mut last = String::new();
    let gone = ktx_e2e::poll(timeout, || {
        last = live_leftovers(ns);
        last.is_empty().then_some(())
    });
    assert!(gone.is_some(), "ktx objects left in {}:\n{last}", ns.name());
    let terminating = ktx_leftovers(ns);
    if !terminating.is_empty() {
        eprintln!(
            "{}: deleted, still terminating: {}",
            ns.name(),
            terminating.replace('\n', " ")
        );
    }
}

/// This machine's uptime in seconds: the clock the pods' `/proc/uptime` shows too (one node).
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/uptime")
}

/// `ktx mesh SERVICE --expose PORT:8080 --versionMark MARK -o json MORE...`, waiting until the
/// session is up.
pub fn start_mesh_with(
    ns: &Namespace,
    service: &str,
    port: u16,
    mark: &str,
    more: &[&str],
) -> Proc {
    let mut p = Proc::spawn(
        &format!("ktx mesh ({mark})"),
        &mut mesh_cmd(ns, service, &format!("{port}:8080"), mark, more),
    );
    p.wait_line(true, "\"command\":\"mesh\"", Duration::from_secs(180));
    p
}

/// Requests from a pod to `url`: one per header set, each answered body on its own line
/// prefixed with the case's index (`0:original`), retried until `expect` holds or 60 s pass.
pub fn ask_from_pod(ns: &Namespace, pod: &str, url: &str, cases: &[(&str, &str)]) -> String {
    let mut script = String::from("for try in $(seq 1 60); do ok=1; out=''; ");
    for (i, (header, expect)) in cases.iter().enumerate() {
        let h = if header.is_empty() {
            String::new()
        } else {
            format!("--header '{header}'")
        };
        script.push_str(&format!(
            "b=$(timeout 5 wget -q -O - {h} {url} 2>&1); out=\"$out {i}:$b\"; [ \"$b\" = '{expect}' ] || ok=0; "
        ));
    }
    script.push_str("if [ $ok = 1 ]; then echo \"OK$out\"; exit 0; fi; echo \"try $try:$out\"; sleep 1; done; exit 1");
    let run = ns.run_pod(
        pod,
        &ktx_e2e::image("busybox"),
        &["/bin/sh", "-c", &script],
        ktx_e2e::secs(120),
    );
    assert_eq!(
        run.phase, "Succeeded",
        "requests from pod {pod} to {url} did not get the expected answers {cases:?}:\n{}",
        run.logs
    );
    run.logs
}
