//! The workload's environment on the real cluster: `--env-file` holds what the container really
//! has for literals, `$(VAR)` references, ConfigMap refs and fieldRefs (compared with `env` run
//! inside the container), Secret refs only with `--env-secrets`; and `ktx mesh … -- CMD` runs
//! the developer's process with that environment and a marked request reaches it.

#[path = "support/ktx.rs"]
mod support;

use std::collections::BTreeMap;

use ktx_e2e::{image, secs, testbackend_image, Cluster, Namespace};
use support::{
    ask_from_pod, assert_nothing_left, free_port, ktx_run, mesh_cmd, service_fingerprint,
    testbackend_path, Proc,
};

/// ConfigMaps and a Secret the workload's environment refers to.
const OBJECTS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: { name: orders-settings }
data:
  db.host: db.shop
  greeting: hello from a ConfigMap
---
apiVersion: v1
kind: ConfigMap
metadata: { name: orders-common }
data:
  REGION: eu-west
  LOG_LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata: { name: orders-db }
stringData:
  password: hunter2
"#;

/// The container `env` of the workload, shared by both tests' Deployments.
const ENV: &str = r#"        envFrom:
        - configMapRef: { name: orders-common }
        env:
        - { name: MODE, value: "prod mode" }
        - name: DB_HOST
          valueFrom: { configMapKeyRef: { name: orders-settings, key: db.host } }
        - { name: DB_URL, value: "postgres://$(DB_HOST):5432/shop" }
        - name: GREETING
          valueFrom: { configMapKeyRef: { name: orders-settings, key: greeting } }
        - name: OPTIONAL
          valueFrom: { configMapKeyRef: { name: orders-settings, key: nope, optional: true } }
        - name: DB_PASSWORD
          valueFrom: { secretKeyRef: { name: orders-db, key: password } }
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
"#;

/// Deployment `orders` (1 replica of `image` running `args`) with [`ENV`], and its Service
/// (port 8080).
fn deploy(ns: &Namespace, image: &str, command: &str) {
    ns.apply(OBJECTS);
    ns.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{ name: orders }}
spec:
  replicas: 1
  selector: {{ matchLabels: {{ app: orders }} }}
  template:
    metadata: {{ labels: {{ app: orders }} }}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {{ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 }}
      containers:
      - name: main
        image: {image}
        imagePullPolicy: IfNotPresent
        {command}
        ports:
        - {{ name: http, containerPort: 8080 }}
{ENV}---
apiVersion: v1
kind: Service
metadata: {{ name: orders }}
spec:
  selector: {{ app: orders }}
  ports:
  - {{ name: http, port: 8080, targetPort: 8080 }}
"#
    ));
    ns.wait_deployment("orders", secs(120));
}

/// `KEY=value` lines of a dotenv file ktx wrote (bare or single-quoted values only here).
fn read_dotenv(path: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("ktx wrote the env file");
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn env_file_equals_the_containers_env_and_has_secrets_only_when_asked() {
    let Some(cluster) = Cluster::from_env("workload_env_file") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("workload-env-file");
    deploy(
        &ns,
        &image("busybox"),
        r#"command: ["sh", "-c", "exec sleep 100000"]"#,
    );
    let before = service_fingerprint(&ns, "orders");
    let pod = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=orders",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let actual: BTreeMap<String, String> = ns
        .kubectl(&["exec", pod.trim(), "--", "env"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(actual["DB_URL"], "postgres://db.shop:5432/shop");

    let dir = std::env::temp_dir().join(format!("ktx-e2e-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("plain.env");
    // The session ends when its command does: `true` ends it at once.
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "orders",
            "--expose",
            &format!("{}:8080", free_port()),
            "--versionMark",
            "env",
            "--env-file",
            plain.to_str().unwrap(),
            "--",
            "true",
        ],
        secs(240),
    );
    assert!(ok, "{out}");
    assert!(out.contains("Session is up"), "{out}");
    let file = read_dotenv(&plain);
    let expected = [
        "MODE",
        "DB_HOST",
        "DB_URL",
        "GREETING",
        "REGION",
        "LOG_LEVEL",
        "POD_NAME",
    ];
    assert_eq!(
        file.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut k = expected.to_vec();
            k.sort();
            k
        },
        "{out}"
    );
    for key in expected {
        assert_eq!(file[key], actual[key], "{key}: file vs container");
    }
    assert!(
        out.contains("from Secrets (add --env-secrets to include them): DB_PASSWORD"),
        "{out}"
    );
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");

    // With --env-secrets (the admin's kubeconfig may read Secrets), through exchange.
    let secret = dir.join("secret.env");
    let (ok, out) = ktx_run(
        &ns,
        &[
            "exchange",
            "orders",
            "--expose",
            &format!("{}:8080", free_port()),
            "--env-file",
            secret.to_str().unwrap(),
            "--env-secrets",
            "--",
            "true",
        ],
        secs(240),
    );
    assert!(ok, "{out}");
    let file = read_dotenv(&secret);
    assert_eq!(file["DB_PASSWORD"], "hunter2");
    assert_eq!(file["DB_PASSWORD"], actual["DB_PASSWORD"]);
    assert_eq!(file.len(), expected.len() + 1, "{file:?}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(60));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mesh_runs_the_command_with_the_workload_env_and_marked_requests_reach_it() {
    let Some(cluster) = Cluster::from_env("workload_env_command") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("workload-env-command");
    deploy(
        &ns,
        &testbackend_image(),
        r#"args: ["--listen", "0.0.0.0:8080", "--name", "original"]"#,
    );
    let before = service_fingerprint(&ns, "orders");
    let ip = ns.cluster_ip("orders");
    let port = free_port();
    // The developer's process answers with a variable of the workload's environment.
    let script = format!(
        "exec {} --listen 127.0.0.1:{port} --name \"local $REGION $GREETING\"",
        testbackend_path().display()
    );
    let mut mesh = Proc::spawn(
        "ktx mesh -- testbackend",
        &mut mesh_cmd(
            &ns,
            "orders",
            &format!("{port}:8080"),
            "cmd",
            &["--", "sh", "-c", &script],
        ),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    ask_from_pod(
        &ns,
        "client",
        &format!("http://{ip}:8080/"),
        &[
            ("VERSION: cmd", "local eu-west hello from a ConfigMap"),
            ("", "original"),
        ],
    );
    // Ctrl-C: the command gets SIGTERM and exits (0), then the session is torn down.
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(ok, "ktx did not end cleanly after Ctrl-C:\n{out}");
    assert!(out.contains("Stopping sh (SIGTERM)"), "{out}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the command is gone with the session"
    );
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(60));
}
