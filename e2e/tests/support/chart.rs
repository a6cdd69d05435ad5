//! The ktx chart from an end-to-end test: running `helm/ktx-helm.py` (real Helm v4 through PyPI's
//! helm-python-sdk), and acting as a ServiceAccount through a kubeconfig of its own token.
//!
//! No dependencies, like the harness: processes, kubectl and files.

// Included by several test binaries; each uses a different part.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ktx_e2e::{poll, run, secs, Namespace, Output};

/// The repository's root (the e2e crate's parent).
pub fn repo_root() -> PathBuf {
    // At run time, not build time: a build shared between two checkouts would point into
    // the other one.
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .parent()
        .expect("the e2e crate lives in the repository")
        .to_path_buf()
}

/// `helm/ktx`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("helm").join("ktx")
}

/// Runs `python3 helm/ktx-helm.py ARGS` (KUBECONFIG inherited) to its end; the script installs
/// the pinned helm-python-sdk on first use, hence the generous deadline.
pub fn helm_script(args: &[&str]) -> Output {
    let python = std::env::var("KTX_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = repo_root().join("helm").join("ktx-helm.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).args(args);
    run(&mut cmd, None, secs(400)).unwrap_or_else(|e| panic!("ktx-helm.py {args:?}: {e}"))
}

/// Like [`helm_script`], panicking with its output unless it succeeds; its stdout.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm_script(args);
    assert!(
        out.success,
        "ktx-helm.py {} failed ({:?}):\n{}\n{}",
        args.join(" "),
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// A kubeconfig that authenticates as ServiceAccount `sa` of `ns` with its token (Kubernetes
/// 1.20 creates a token Secret per ServiceAccount), for the cluster of this test's
/// `KUBECONFIG`, default namespace `ns`. Waits for the token Secret. The file (mode 0600) is in
/// the temporary directory; its token dies with the namespace.
pub fn kubeconfig_for_service_account(ns: &Namespace, sa: &str) -> PathBuf {
    let cluster = ns.cluster();
    let name = ns.name();
    let secret = poll(secs(60), || {
        let out = cluster
            .kubectl(&[
                "-n",
                name,
                "get",
                "serviceaccount",
                sa,
                "-o",
                "jsonpath={.secrets[*].name}",
            ])
            .ok()?;
        out.split_whitespace()
            .find(|s| s.starts_with(&format!("{sa}-token-")))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("ServiceAccount {name}/{sa} got no token Secret within 60s"));
    let token = ns.kubectl(&[
        "get",
        "secret",
        &secret,
        "-o",
        "go-template={{.data.token | base64decode}}",
    ]);
    let ca = ns.kubectl(&["get", "secret", &secret, "-o", "jsonpath={.data.ca\\.crt}"]);
    let server = cluster
        .kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .unwrap_or_else(|e| panic!("reading the API server's address: {e}"));
    let (token, ca, server) = (token.trim(), ca.trim(), server.trim());
    assert!(
        !token.is_empty() && !ca.is_empty() && !server.is_empty(),
        "Secret {name}/{secret} or the admin kubeconfig lacks token, ca.crt or server"
    );
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {sa}
  user:
    token: {token}
contexts:
- name: {sa}@{name}
  context:
    cluster: e2e
    user: {sa}
    namespace: {name}
current-context: {sa}@{name}
"
    );
    let path = std::env::temp_dir().join(format!("ktx-e2e-kubeconfig-{name}-{sa}"));
    let _ = fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(kubeconfig.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// kubectl (the harness's) as the identity of `kubeconfig`, to its end.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let kubectl = std::env::var("KTX_E2E_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let mut cmd = Command::new(kubectl);
    cmd.env("KUBECONFIG", kubeconfig)
        .arg("--request-timeout=20s")
        .args(args);
    run(&mut cmd, None, secs(60)).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// `kubectl auth can-i VERB RESOURCE -n NS` as the identity of `kubeconfig`: yes or no; panics
/// when kubectl answers neither (e.g. the token is refused).
pub fn can_i(kubeconfig: &Path, ns: &str, verb: &str, resource: &str) -> bool {
    let mut args = vec!["auth", "can-i", verb];
    // "pods/portforward" is spelled as a subresource flag.
    let sub;
    match resource.split_once('/') {
        Some((res, subresource)) => {
            sub = format!("--subresource={subresource}");
            args.push(res);
            args.push(&sub);
        }
        None => args.push(resource),
    }
    args.extend_from_slice(&["-n", ns]);
    let out = kubectl_as(kubeconfig, &args);
    // "no", or "no - <reason>" when the authorizer gives one.
    match out.stdout.trim() {
        "yes" => true,
        no if no == "no" || no.starts_with("no ") => false,
        other => panic!(
            "kubectl {} answered neither yes nor no: {other:?} {}",
            args.join(" "),
            out.stderr.trim()
        ),
    }
}

/// The README's developer Role: the YAML block that starts with `kind: Role`.
pub fn readme_role() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("kind: Role\n") && yaml.contains("name: ktx-developer"))
        .expect("README.md has a ```yaml block with the developer Role (ktx-developer)")
        .to_string()
}
