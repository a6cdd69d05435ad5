//! The cluster of `KUBECONFIG`, reached with kubectl; or the reason why a test is skipped.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{run, Output};
use crate::{announce, poll, secs, Namespace, ASKED_ENV, REQUIRED_ENV};

/// A reachable cluster, driven through kubectl.
#[derive(Debug, Clone)]
pub struct Cluster {
    kubectl: String,
}

impl Cluster {
    /// The cluster of `KUBECONFIG`, or `None` when the calling test must be skipped (after saying
    /// so). Panics instead of skipping when `KTX_E2E_REQUIRED=1`.
    pub fn from_env(test: &str) -> Option<Cluster> {
        let required = std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1" || v == "true");
        let asked = required || std::env::var(ASKED_ENV).is_ok_and(|v| v == "1" || v == "true");
        if !asked {
            // An exported KUBECONFIG alone never starts the tier: it may name a team's cluster.
            announce(&format!(
                "SKIPPED {test}: the end-to-end tier runs only when asked ({ASKED_ENV}=1, as \
                 `KTX_E2E=1 ./test.sh` and CI do)"
            ));
            return None;
        }
        let kubectl = std::env::var("KTX_E2E_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
        let problem = match std::env::var("KUBECONFIG") {
            Err(_) => Some("KUBECONFIG is not set".to_owned()),
            Ok(path) if path.is_empty() => Some("KUBECONFIG is empty".to_owned()),
            Ok(path) => {
                let cluster = Cluster {
                    kubectl: kubectl.clone(),
                };
                match cluster.kubectl_raw(&["get", "--raw", "/readyz"], None, secs(20)) {
                    Ok(out) if out.success && out.stdout.trim() == "ok" => {
                        return Some(cluster);
                    }
                    Ok(out) => Some(format!(
                        "the cluster of KUBECONFIG={path} is not ready: {} {}",
                        out.stdout.trim(),
                        out.stderr.trim()
                    )),
                    Err(e) => Some(format!(
                        "the cluster of KUBECONFIG={path} did not answer: {e}"
                    )),
                }
            }
        };
        let problem = problem.unwrap_or_default();
        if required {
            panic!(
                "{test}: no usable cluster and {REQUIRED_ENV}=1: {problem}. \
                 Start one with `e2e/cluster up` and export KUBECONFIG=/var/lib/ktx-e2e/admin.kubeconfig"
            );
        }
        announce(&format!(
            "SKIPPED {test}: {problem}. To run the end-to-end tests: sudo e2e/cluster up && \
             export KUBECONFIG=/var/lib/ktx-e2e/admin.kubeconfig (or any cluster, see e2e/README.md)"
        ));
        None
    }

    /// The kubectl program this cluster is driven with.
    pub fn kubectl_program(&self) -> &str {
        &self.kubectl
    }

    fn kubectl_raw(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<Output, String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--request-timeout=20s").args(args);
        run(&mut cmd, stdin, timeout)
    }

    /// Runs kubectl; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_in(args, None, secs(60))
    }

    /// Runs kubectl with input and a deadline; its stdout, or an error with its stderr.
    pub fn kubectl_in(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<String, String> {
        let out = self.kubectl_raw(args, stdin, timeout)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(format!(
                "kubectl {} failed ({:?}): {}{}",
                args.join(" "),
                out.code,
                out.stderr.trim(),
                if out.stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n{}", out.stdout.trim())
                }
            ))
        }
    }

    /// A new namespace for one test, named after it; deleted when the guard is dropped.
    pub fn namespace(&self, test: &str) -> Namespace {
        let base: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let base = base.trim_matches('-');
        let base = &base[..base.len().min(40)];
        let name = format!("ktx-e2e-{}-{}", base.trim_end_matches('-'), unique_suffix());
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/created-by: ktx-e2e\n"
        );
        self.kubectl_in(&["create", "-f", "-"], Some(&manifest), secs(60))
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // Pods cannot be created before the namespace's default ServiceAccount exists.
        let ready = poll(secs(60), || {
            self.kubectl(&[
                "-n",
                &name,
                "get",
                "serviceaccount",
                "default",
                "-o",
                "name",
            ])
            .is_ok()
            .then_some(())
        });
        if ready.is_none() {
            panic!("namespace {name}: its default ServiceAccount did not appear within 60s");
        }
        Namespace::new(self.clone(), name)
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!("{:06x}", mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_suffixes_differ() {
        let a = unique_suffix();
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, unique_suffix());
        assert_eq!(a.len(), 6);
    }
}
