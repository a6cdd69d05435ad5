//! Least privilege and Pod Security on the real cluster:
//! - a developer bound only to the README's Role meshes a Service, and may not read Secrets
//!   (nor edit workloads);
//! - the router and shadow pods, as stored by the API server, satisfy Pod Security "restricted"
//!   rule by rule (this cluster runs no PodSecurity admission), also for a Service whose
//!   targetPort is 80, which they serve as user 65532;
//! - deleting one of the two router pods during a request loop fails no unmarked request.

#[path = "support/chart.rs"]
mod chart;
#[path = "support/clients.rs"]
mod clients;
#[path = "support/ktx.rs"]
mod support;

use std::thread;

use chart::{can_i, kubeconfig_for_service_account, readme_role};
use clients::{ask_from_pods, Ask};
use ktx_e2e::{image, poll, secs, testbackend_image, testbackend_manifest, Cluster, Namespace};
use support::{end_session, local_backend, mesh_cmd, service_fingerprint, Proc};

/// `kubectl get pod POD -o jsonpath=PATH`, trimmed.
fn pod_field(ns: &Namespace, pod: &str, path: &str) -> String {
    ns.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .trim()
        .to_string()
}

/// Volume types "restricted" allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every rule of Pod Security "restricted" (Kubernetes 1.25+, "baseline" included) that the pod
/// as stored breaks; empty when it passes.
fn restricted_violations(ns: &Namespace, pod: &str) -> Vec<String> {
    let mut v = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod_field(ns, pod, &format!("{{.spec.{host}}}")) == "true" {
            v.push(format!("{host} is true"));
        }
    }
    let sysctls = pod_field(ns, pod, "{.spec.securityContext.sysctls[*].name}");
    if !sysctls.is_empty() {
        v.push(format!("sysctls {sysctls}"));
    }
    let pod_non_root = pod_field(ns, pod, "{.spec.securityContext.runAsNonRoot}");
    let pod_user = pod_field(ns, pod, "{.spec.securityContext.runAsUser}");
    let pod_seccomp = pod_field(ns, pod, "{.spec.securityContext.seccompProfile.type}");
    if pod_user == "0" {
        v.push("pod runAsUser 0".into());
    }
    // Volume types: every key of each volume but its name.
    let volumes = ns.kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "go-template={{range .spec.volumes}}{{range $k, $v := .}}{{$k}} {{end}};{{end}}",
    ]);
    for vol in volumes.split(';').filter(|s| !s.trim().is_empty()) {
        for key in vol.split_whitespace().filter(|k| *k != "name") {
            if !ALLOWED_VOLUMES.contains(&key) {
                v.push(format!("volume type {key}"));
            }
        }
    }
    let containers = pod_field(
        ns,
        pod,
        "{range .spec.initContainers[*]}{.name}|{.securityContext.privileged}|{.securityContext.allowPrivilegeEscalation}|{.securityContext.runAsNonRoot}|{.securityContext.runAsUser}|{.securityContext.seccompProfile.type}|{.securityContext.capabilities.drop}|{.securityContext.capabilities.add}|{.securityContext.procMount}|{.ports[*].hostPort}{\"\\n\"}{end}\
         {range .spec.containers[*]}{.name}|{.securityContext.privileged}|{.securityContext.allowPrivilegeEscalation}|{.securityContext.runAsNonRoot}|{.securityContext.runAsUser}|{.securityContext.seccompProfile.type}|{.securityContext.capabilities.drop}|{.securityContext.capabilities.add}|{.securityContext.procMount}|{.ports[*].hostPort}{\"\\n\"}{end}",
    );
    for line in containers.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 10, "unexpected jsonpath output: {line}");
        let name = f[0];
        if f[1] == "true" {
            v.push(format!("{name}: privileged"));
        }
        if f[2] != "false" {
            v.push(format!("{name}: allowPrivilegeEscalation is {:?}", f[2]));
        }
        let non_root = if f[3].is_empty() { &pod_non_root } else { f[3] };
        if non_root != "true" {
            v.push(format!("{name}: runAsNonRoot is {non_root:?}"));
        }
        if f[4] == "0" {
            v.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = if f[5].is_empty() { &pod_seccomp } else { f[5] };
        if !matches!(seccomp, "RuntimeDefault" | "Localhost") {
            v.push(format!("{name}: seccompProfile {seccomp:?}"));
        }
        if !f[6].contains("\"ALL\"") {
            v.push(format!("{name}: capabilities drop {:?}", f[6]));
        }
        let added = f[7]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .filter(|c| !c.is_empty() && *c != "NET_BIND_SERVICE")
            .collect::<Vec<_>>();
        if !added.is_empty() {
            v.push(format!("{name}: adds capabilities {added:?}"));
        }
        if !f[8].is_empty() && f[8] != "Default" {
            v.push(format!("{name}: procMount {}", f[8]));
        }
        if f[9].split_whitespace().any(|p| p != "0") {
            v.push(format!("{name}: hostPort {}", f[9]));
        }
    }
    v
}

fn pods_with(ns: &Namespace, selector: &str) -> Vec<String> {
    ns.kubectl(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ])
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect()
}

#[test]
fn a_developer_bound_only_to_the_readme_role_meshes_and_cannot_read_secrets() {
    let Some(cluster) = Cluster::from_env("hardening_role") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("hardening-role");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    ns.apply(&readme_role());
    ns.kubectl(&["create", "serviceaccount", "dev"]);
    ns.kubectl(&[
        "create",
        "rolebinding",
        "dev",
        "--role",
        "ktx-developer",
        &format!("--serviceaccount={}:dev", ns.name()),
    ]);
    let kc = kubeconfig_for_service_account(&ns, "dev");
    let bound = poll(secs(30), || {
        can_i(&kc, ns.name(), "create", "deployments.apps").then_some(())
    });
    assert!(bound.is_some(), "the developer binding never took effect");
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("update", "statefulsets.apps"),
        ("patch", "pods"),
    ] {
        assert!(
            !can_i(&kc, ns.name(), verb, resource),
            "kubectl auth can-i {verb} {resource} is yes for the developer"
        );
    }

    let before = service_fingerprint(&ns, "orders");
    let (_dev, port) = local_backend("developer");
    let mut cmd = mesh_cmd(&ns, "orders", &format!("{port}:8080"), "hardened", &[]);
    cmd.arg("--kubeconfig").arg(&kc);
    let mut mesh = Proc::spawn("ktx mesh (as dev)", &mut cmd);
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    let addr = format!("{}:8080", ns.cluster_ip("orders"));
    ask_from_pods(
        &ns,
        &[
            Ask {
                pod: "marked",
                addr: &addr,
                calls: &["http1"],
                header: Some("version=hardened"),
                expect: "developer",
            },
            Ask {
                pod: "unmarked",
                addr: &addr,
                calls: &["http1"],
                header: None,
                expect: "original",
            },
        ],
    );
    end_session(&ns, mesh, "orders", &before, secs(90));
}

/// The original workload listens on port 80 as root (it is the team's, not ktx's); ktx's router
/// and shadow pods serve that port as user 65532 with only NET_BIND_SERVICE added.
fn port_80_manifest(name: &str) -> String {
    let image = testbackend_image();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 2
      securityContext:
        runAsUser: 0
      containers:
      - name: backend
        image: {image}
        imagePullPolicy: IfNotPresent
        args: ["--listen", "0.0.0.0:80", "--name", "original"]
        ports:
        - name: http
          containerPort: 80
        readinessProbe:
          tcpSocket:
            port: 80
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    targetPort: 80
"#
    )
}

#[test]
fn router_and_shadow_pods_are_restricted_and_serve_port_80_as_non_root() {
    let Some(cluster) = Cluster::from_env("hardening_restricted") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("hardening-restricted");
    ns.apply(&port_80_manifest("web"));
    ns.wait_deployment("web", secs(120));
    let before = service_fingerprint(&ns, "web");
    let (_dev, port) = local_backend("developer");
    let mut mesh = Proc::spawn(
        "ktx mesh web",
        &mut mesh_cmd(&ns, "web", &format!("{port}:80"), "low", &[]),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));

    let routers = pods_with(&ns, "ktx.dev/service=web,ktx.dev/role=router");
    let shadows = pods_with(&ns, "ktx.dev/service=web,ktx.dev/role=shadow");
    assert_eq!(
        routers.len(),
        2,
        "two router replicas by default: {routers:?}"
    );
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    // `ktx mesh` is up once one router replica is Ready (all it needs to route) and the shadow
    // is Ready; the other replica may still be starting.
    ns.wait_deployment("web-ktx-router", secs(60));
    for pod in routers.iter().chain(&shadows) {
        let v = restricted_violations(&ns, pod);
        assert!(
            v.is_empty(),
            "pod {pod} breaks Pod Security restricted: {v:#?}"
        );
        let users = pod_field(&ns, pod, "{.spec.containers[*].securityContext.runAsUser}");
        assert_eq!(users, "65532", "pod {pod}");
        let ready = pod_field(&ns, pod, "{.status.containerStatuses[*].ready}");
        assert_eq!(ready, "true", "pod {pod} serves port 80 as non-root");
    }
    // The routers reach the API server (they are Ready: /readyz waits for their first Endpoints
    // list) with a token the kubelet requested for them, not the account's token Secret, which
    // a kubelet may have to wait to be allowed to watch (objects/router.rs api_access).
    for pod in &routers {
        let secrets = pod_field(&ns, pod, "{.spec.volumes[*].secret.secretName}");
        assert_eq!(secrets, "", "router pod {pod} mounts no Secret");
        let token = pod_field(
            &ns,
            pod,
            "{.spec.volumes[*].projected.sources[*].serviceAccountToken.path}",
        );
        assert_eq!(token, "token", "router pod {pod} mounts a requested token");
    }
    let budget = ns.kubectl(&[
        "get",
        "poddisruptionbudgets",
        "-o",
        "jsonpath={.items[*].metadata.name}={.items[*].spec.maxUnavailable}",
    ]);
    assert_eq!(
        budget.trim(),
        "web-ktx-router=1",
        "the router's PodDisruptionBudget"
    );

    // Through port 80 both ways: marked to the developer (router, then shadow, both bound to
    // 80), unmarked to the original.
    let addr = format!("{}:80", ns.cluster_ip("web"));
    ask_from_pods(
        &ns,
        &[
            Ask {
                pod: "marked",
                addr: &addr,
                calls: &["http1"],
                header: Some("version=low"),
                expect: "developer",
            },
            Ask {
                pod: "unmarked",
                addr: &addr,
                calls: &["http1"],
                header: None,
                expect: "original",
            },
        ],
    );
    end_session(&ns, mesh, "web", &before, secs(90));
}

/// A pod that asks `url` without any header `n` times, 5 per second, one connection each,
/// printing `ok BODY` or `FAIL`; its logs once it ends.
fn client_loop(ns: &Namespace, pod: &str, url: &str, n: u32) -> String {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do \
           b=$(timeout 4 wget -q -O - {url} 2>&1) && echo \"ok $b\" || echo \"FAIL $i $b\"; \
           i=$((i+1)); sleep 0.2; done"
    );
    let run = ns.run_pod(
        pod,
        &image("busybox"),
        &["/bin/sh", "-c", &script],
        secs(u64::from(n) + 120),
    );
    assert_eq!(run.phase, "Succeeded", "client loop {pod}: {}", run.logs);
    run.logs
}

#[test]
fn deleting_one_router_pod_fails_no_unmarked_request() {
    let Some(cluster) = Cluster::from_env("hardening_router_ha") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("hardening-ha");
    ns.apply(&testbackend_manifest("orders", "original", 2));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let (_dev, port) = local_backend("developer");
    let mut mesh = Proc::spawn(
        "ktx mesh orders",
        &mut mesh_cmd(&ns, "orders", &format!("{port}:8080"), "ha", &[]),
    );
    mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    let routers = pods_with(&ns, "ktx.dev/service=orders,ktx.dev/role=router");
    assert_eq!(routers.len(), 2, "{routers:?}");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));

    let logs = thread::scope(|s| {
        // 30 s of requests, one connection each: before, during and after the deletion.
        let client = s.spawn(|| client_loop(&ns, "client", &url, 150));
        // The pod may not exist yet: ask without failing.
        let running = poll(secs(60), || {
            ns.cluster()
                .kubectl(&[
                    "-n",
                    ns.name(),
                    "get",
                    "pod",
                    "client",
                    "-o",
                    "jsonpath={.status.phase}",
                ])
                .is_ok_and(|p| p.trim() == "Running")
                .then_some(())
        });
        assert!(running.is_some(), "the client pod did not start");
        thread::sleep(secs(5));
        ns.kubectl(&["delete", "pod", &routers[0], "--wait=false"]);
        client.join().expect("client thread")
    });
    let ok = logs.lines().filter(|l| l.starts_with("ok ")).count();
    let failed: Vec<&str> = logs.lines().filter(|l| l.starts_with("FAIL")).collect();
    eprintln!(
        "hardening: router pod {} deleted during the loop: {ok} ok, {} failed",
        routers[0],
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests without the header failed:\n{logs}"
    );
    assert!(
        logs.lines()
            .filter(|l| l.starts_with("ok "))
            .all(|l| l == "ok original"),
        "an unmarked request reached someone else:\n{logs}"
    );
    end_session(&ns, mesh, "orders", &before, secs(90));
}
