//! A namespace per test, deleted when the test ends (also when it fails: then its objects, events
//! and pod logs are printed first), and what tests do in it: apply manifests, wait for
//! Deployments, run pods to their end, port-forward.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::manifest::yaml_string;
use crate::process::read_all;
use crate::{announce, poll, secs, Cluster};

/// A namespace that lives as long as this guard.
#[derive(Debug)]
pub struct Namespace {
    cluster: Cluster,
    name: String,
}

/// How a pod that runs to its end ended.
#[derive(Debug, Clone)]
pub struct PodRun {
    pub phase: String,
    pub logs: String,
}

impl Namespace {
    pub(crate) fn new(cluster: Cluster, name: String) -> Namespace {
        Namespace { cluster, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// kubectl in this namespace; panics with kubectl's error.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl apply` of a YAML manifest (several documents allowed) in this namespace.
    pub fn apply(&self, manifest: &str) {
        self.cluster
            .kubectl_in(
                &["-n", &self.name, "apply", "-f", "-"],
                Some(manifest),
                secs(60),
            )
            .unwrap_or_else(|e| panic!("apply in {}: {e}\n{manifest}", self.name));
    }

    /// Waits until Deployment `name` has all its replicas available.
    pub fn wait_deployment(&self, name: &str, timeout: Duration) {
        let t = format!("--timeout={}s", timeout.as_secs());
        let target = format!("deployment/{name}");
        if let Err(e) = self.cluster.kubectl_in(
            &["-n", &self.name, "rollout", "status", &target, &t],
            None,
            timeout + secs(30),
        ) {
            panic!(
                "deployment {name} in {} did not become available within {timeout:?}: {e}",
                self.name
            );
        }
    }

    /// The ClusterIP of Service `name`.
    pub fn cluster_ip(&self, name: &str) -> String {
        let ip = self.kubectl(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"]);
        assert!(
            !ip.trim().is_empty() && ip.trim() != "None",
            "service {name} has no ClusterIP"
        );
        ip.trim().to_owned()
    }

    /// Runs a pod to its end (`restartPolicy: Never`) and returns its phase and logs.
    pub fn run_pod(&self, name: &str, image: &str, command: &[&str], timeout: Duration) -> PodRun {
        let command_yaml: String = command
            .iter()
            .map(|c| format!("\n    - {}", yaml_string(c)))
            .collect();
        let manifest = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app.kubernetes.io/created-by: ktx-e2e
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command:{command_yaml}
"#
        );
        self.apply(&manifest);
        let phase = poll(timeout, || {
            let phase = self
                .cluster
                .kubectl(&[
                    "-n",
                    &self.name,
                    "get",
                    "pod",
                    name,
                    "-o",
                    "jsonpath={.status.phase}",
                ])
                .ok()?;
            matches!(phase.trim(), "Succeeded" | "Failed").then(|| phase.trim().to_owned())
        });
        let logs = self
            .cluster
            .kubectl(&["-n", &self.name, "logs", name])
            .unwrap_or_else(|e| format!("(no logs: {e})"));
        let phase = phase.unwrap_or_else(|| {
            panic!(
                "pod {name} in {} did not finish within {timeout:?}; logs so far:\n{logs}",
                self.name
            )
        });
        PodRun { phase, logs }
    }

    /// `kubectl port-forward` to `target` (`svc/NAME`, `pod/NAME`, ...) on a free local port.
    pub fn port_forward(&self, target: &str, remote_port: u16) -> PortForward {
        let mut child = Command::new(self.cluster.kubectl_program())
            .args([
                "-n",
                &self.name,
                "port-forward",
                "--address",
                "127.0.0.1",
                target,
                &format!(":{remote_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kubectl port-forward: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = read_all(child.stderr.take().expect("stderr is piped"));
        // "Forwarding from 127.0.0.1:34567 -> 8080"
        let deadline = Instant::now() + secs(30);
        let local = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                        let port: u16 = rest
                            .split_whitespace()
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"));
                        break SocketAddr::from(([127, 0, 0, 1], port));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "kubectl port-forward {target} did not start within 30s: {}",
                        stderr.join().unwrap_or_default()
                    );
                }
            }
        };
        // Keep draining stdout ("Handling connection for ...") so the child never blocks.
        thread::spawn(move || while rx.recv().is_ok() {});
        PortForward { child, local }
    }

    fn dump_diagnostics(&self) {
        let ns = self.name.as_str();
        let mut report = format!("===== diagnostics of namespace {ns} =====\n");
        for args in [
            vec!["-n", ns, "get", "all,endpoints", "-o", "wide"],
            vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
            vec!["-n", ns, "describe", "pods"],
            vec![
                "-n",
                ns,
                "logs",
                "--all-containers",
                "--prefix",
                "--tail=50",
                "-l",
                "app.kubernetes.io/created-by=ktx-e2e",
            ],
        ] {
            report.push_str(&format!("$ kubectl {}\n", args.join(" ")));
            match self.cluster.kubectl(&args) {
                Ok(out) => report.push_str(&out),
                Err(e) => report.push_str(&e),
            }
            report.push('\n');
        }
        announce(&report);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_diagnostics();
        }
        if std::env::var("KTX_E2E_KEEP_NAMESPACES").is_ok_and(|v| v == "1") {
            announce(&format!(
                "keeping namespace {} (KTX_E2E_KEEP_NAMESPACES=1)",
                self.name
            ));
            return;
        }
        if let Err(e) = self.cluster.kubectl_in(
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
            secs(60),
        ) {
            announce(&format!("could not delete namespace {}: {e}", self.name));
        }
    }
}

/// A running `kubectl port-forward`, stopped when dropped.
#[derive(Debug)]
pub struct PortForward {
    child: Child,
    local: SocketAddr,
}

impl PortForward {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
