//! The shadow objects of a session on a two-port Service where only one port is exposed.

use super::*;

fn targets() -> Vec<ListenPort> {
    vec![
        ListenPort {
            number: 8080,
            name: Some("http".into()),
        },
        ListenPort {
            number: 7766,
            name: None,
        },
    ]
}

fn exposed() -> Vec<ExposedPort> {
    vec![ExposedPort {
        local: 3001,
        port: 80,
        target: 8080,
    }]
}

fn with<R>(f: impl FnOnce(&ShadowParams<'_>) -> R) -> R {
    let t = targets();
    let e = exposed();
    f(&ShadowParams {
        pod: &PodSettings::default(),
        name: "orders-ktx-mesh-foobar",
        namespace: "shop",
        service: "orders",
        session: "foobar",
        mode: ktx_names::mode::MESH,
        image: "s:1",
        targets: &t,
        exposed: &e,
        not_taken: NotTaken::Fallback(vec![(8080, "10.96.0.9:80".parse().unwrap())]),
    })
}

#[test]
fn the_shadow_knows_the_rules_policy_and_where_the_original_is() {
    let show = |env: Vec<EnvVar>| -> String {
        env.iter()
            .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    with(|p| {
        assert_eq!(
            show(env(p)),
            "KTX_SHADOW_SESSION=foobar KTX_SHADOW_ON_UNAVAILABLE=fallback \
             KTX_SHADOW_FALLBACK=8080=10.96.0.9:80"
        );
        let reject = ShadowParams {
            not_taken: NotTaken::Reject,
            ..p.clone()
        };
        assert_eq!(
            show(env(&reject)),
            "KTX_SHADOW_SESSION=foobar KTX_SHADOW_ON_UNAVAILABLE=reject"
        );
        // Environment, not flags: an older shadow image ignores what it does not know.
        assert!(!args(p).iter().any(|a| a.contains("unavailable")));
    });
}

#[test]
fn ports_never_collide() {
    with(|p| {
        assert_eq!(p.tunnel_port(), 7767, "7766 is a target port here");
        assert_eq!(p.admin_port(), 9902);
        let a = args(p);
        assert_eq!(
            a[..2],
            ["--ports", "8080"],
            "only exposed ports are forwarded"
        );
        assert_eq!(a[2..4], ["--tunnel-port", "7767"]);
    });
}

#[test]
fn the_pod_mounts_its_secret_and_is_ready_only_with_a_tunnel() {
    let pod = with(pod);
    assert_eq!(pod.metadata.name.as_deref(), Some("orders-ktx-mesh-foobar"));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["ktx.dev/role"], "shadow");
    assert_eq!(labels["ktx.dev/mode"], "mesh");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let c = &spec.containers[0];
    let ports = c.ports.as_ref().unwrap();
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].container_port, 8080);
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .port,
        IntOrString::Int(9902)
    );
    assert_eq!(
        c.volume_mounts.as_ref().unwrap()[0].mount_path,
        CREDENTIALS_DIR
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, SHADOW_REQUEST.1);
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, SHADOW_LIMIT.0);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let vol = &spec.volumes.unwrap()[0];
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("orders-ktx-mesh-foobar")
    );
}

#[test]
fn the_service_lists_every_target_port_and_selects_only_this_session() {
    let svc = with(service);
    let spec = svc.spec.unwrap();
    let ports = spec.ports.unwrap();
    assert_eq!(
        ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        vec![8080, 7766]
    );
    let sel = spec.selector.unwrap();
    assert_eq!(sel["ktx.dev/session"], "foobar");
    assert_eq!(sel["ktx.dev/role"], "shadow");
    assert_eq!(sel["ktx.dev/service"], "orders");
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some("None"),
        "headless: kube-proxy leaves it alone"
    );
    assert_eq!(
        svc.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "ktx",
        "the router's Endpoints watch selects on this label"
    );
}

#[test]
fn the_secret_holds_the_key() {
    let data = BTreeMap::from([("tls.key".to_string(), b"k".to_vec())]);
    let s = with(|p| secret(p, data));
    assert_eq!(s.data.as_ref().unwrap()["tls.key"].0, b"k");
}

/// Pod Security "restricted", also when the exposed target port is below 1024: non-root, and
/// NET_BIND_SERVICE the only capability, on every port.
#[test]
fn the_pod_passes_pod_security_restricted_on_any_port() {
    for target in [8080, 80] {
        let t = [ListenPort {
            number: target,
            name: None,
        }];
        let e = [ExposedPort {
            local: 3001,
            port: 80,
            target,
        }];
        let pod = pod(&ShadowParams {
            pod: &PodSettings::default(),
            name: "orders-ktx-mesh-foobar",
            namespace: "shop",
            service: "orders",
            session: "foobar",
            mode: ktx_names::mode::MESH,
            image: "s:1",
            targets: &t,
            exposed: &e,
            not_taken: NotTaken::Reject,
        });
        let spec = pod.spec.unwrap();
        let v = crate::objects::pod_security::restricted_violations(&spec);
        assert!(v.is_empty(), "target port {target}: {v:#?}");
        let c = &spec.containers[0];
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError"),
            "a refused bind reaches ktx's error"
        );
        let sc = c.security_context.clone().unwrap();
        assert_ne!(sc.run_as_user, Some(0));
        // Always: the image's binary carries it as a file capability, which the kernel refuses
        // to exec unless the container can grant it (found on the e2e cluster).
        let add = sc.capabilities.unwrap().add.unwrap_or_default();
        assert_eq!(add, ["NET_BIND_SERVICE"], "port {target}");
    }
}
