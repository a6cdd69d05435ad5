//! Port resolution scenarios: numeric, absent and named targetPorts, the exposes that name
//! them, and the errors a developer sees when `--expose` is given a targetPort by mistake.

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn sport(name: Option<&str>, port: i32, target: Option<IntOrString>) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        port,
        target_port: target,
        ..Default::default()
    }
}

fn pod(name: &str, ports: &[(&str, i32)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: Some(n.to_string()),
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ex(s: &str) -> Vec<Expose> {
    s.split(',').map(|i| i.parse().unwrap()).collect()
}

#[test]
fn numeric_and_absent_target_ports() {
    let ports = [
        sport(Some("http"), 80, Some(IntOrString::Int(8080))),
        sport(Some("admin"), 9000, None),
    ];
    let plan = resolve("orders", &ports, &[], &ex("3001:80,9000")).unwrap();
    assert_eq!(plan.ports[0].target, 8080);
    assert_eq!(plan.ports[1].target, 9000);
    assert_eq!(
        plan.exposed,
        vec![
            ExposedPort {
                local: 3001,
                port: 80,
                target: 8080
            },
            ExposedPort {
                local: 9000,
                port: 9000,
                target: 9000
            }
        ]
    );
    assert_eq!(plan.exposed_targets(), vec![8080, 9000]);
}

#[test]
fn named_target_ports_resolve_from_the_pods() {
    let ports = [
        sport(Some("web"), 80, Some(IntOrString::String("http".into()))),
        sport(Some("grpc"), 9090, Some(IntOrString::String("grpc".into()))),
    ];
    let pods = [
        pod("a", &[("http", 8080), ("grpc", 50051)]),
        pod("b", &[("http", 8080), ("grpc", 50051)]),
    ];
    let plan = resolve("orders", &ports, &pods, &ex("3001:web")).unwrap();
    assert_eq!(plan.ports[0].target, 8080);
    assert_eq!(plan.ports[0].target_name.as_deref(), Some("http"));
    assert_eq!(plan.ports[1].target, 50051);
    assert_eq!(plan.exposed[0].target, 8080);
    assert_eq!(
        plan.targets(),
        vec![
            ListenPort {
                number: 8080,
                name: Some("http".into())
            },
            ListenPort {
                number: 50051,
                name: Some("grpc".into())
            }
        ],
        "the router carries the same names so the Service's named targetPorts resolve to it"
    );
}

#[test]
fn named_target_port_errors_say_what_to_do() {
    let ports = [sport(None, 80, Some(IntOrString::String("http".into())))];
    let e = resolve("orders", &ports, &[], &ex("80")).unwrap_err();
    assert!(matches!(e, PortError::NoPods { .. }));
    assert!(e.to_string().contains("scale it up"), "{e}");

    let e = resolve("orders", &ports, &[pod("p1", &[("web", 8080)])], &ex("80")).unwrap_err();
    assert!(e.to_string().contains("no container of pod p1"), "{e}");

    let pods = [pod("a", &[("http", 8080)]), pod("b", &[("http", 8081)])];
    let e = resolve("orders", &ports, &pods, &ex("80")).unwrap_err();
    assert!(e.to_string().contains("8080 in some pods and 8081"), "{e}");
}

#[test]
fn a_target_port_given_as_remote_is_explained() {
    let ports = [sport(Some("http"), 80, Some(IntOrString::Int(8080)))];
    let e = resolve("orders", &ports, &[], &ex("3001:8080")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("8080 is the targetPort of Service port 80")
            && msg.contains("use --expose 3001:80"),
        "{msg}"
    );
    let e = resolve("orders", &ports, &[], &ex("81")).unwrap_err();
    assert!(
        e.to_string()
            .contains("its ports are: 80 (http) → targetPort 8080"),
        "{e}"
    );
}

#[test]
fn non_tcp_and_empty_services_are_refused() {
    let mut udp = sport(Some("dns"), 53, None);
    udp.protocol = Some("UDP".into());
    let e = resolve("dns", &[udp], &[], &ex("53")).unwrap_err();
    assert!(e.to_string().contains("is UDP; ktx routes TCP only"), "{e}");
    assert!(matches!(
        resolve("x", &[], &[], &ex("80")),
        Err(PortError::NoPorts { .. })
    ));
    assert!(matches!(
        resolve("x", &[sport(None, 0, None)], &[], &ex("80")),
        Err(PortError::OutOfRange { .. })
    ));
}

#[test]
fn ports_that_would_collide_are_refused() {
    let ports = [
        sport(Some("a"), 80, Some(IntOrString::Int(8080))),
        sport(Some("b"), 81, Some(IntOrString::Int(8080))),
        sport(Some("c"), 82, None),
    ];
    let e = resolve("s", &ports, &[], &ex("3001:80,3001:82")).unwrap_err();
    assert!(
        matches!(e, PortError::LocalTwice { local: 3001, .. }),
        "{e}"
    );
    let e = resolve("s", &ports, &[], &ex("3001:80,3002:81")).unwrap_err();
    assert!(
        matches!(e, PortError::TargetTwice { target: 8080, .. }),
        "{e}"
    );
    // Two Service ports on one target: the router listens once.
    let plan = resolve("s", &ports, &[], &ex("3001:80")).unwrap();
    assert_eq!(plan.targets().len(), 2);
}

#[test]
fn a_new_service_uses_each_number_for_both_sides() {
    let plan = PortPlan::for_new_service(&ex("3001:80,8080")).unwrap();
    assert_eq!(plan.ports[0].port, 80);
    assert_eq!(plan.ports[0].target, 80);
    assert_eq!(plan.exposed[0].local, 3001);
    assert_eq!(plan.exposed[1].local, 8080);
    assert!(PortPlan::for_new_service(&ex("3001:http")).is_err());
}

/// The router's `--http-ports`: targets that only Service ports declaring HTTP (by
/// `appProtocol`, else by name, Istio's way) lead to. A target shared with an undeclared port,
/// or a port whose `appProtocol` says otherwise, keeps the plain-TCP passthrough of silent
/// clients (a server that speaks first may be behind it).
#[test]
fn http_targets_are_the_ones_only_declared_http_ports_reach() {
    let with_protocol = |name: Option<&str>, port, proto: Option<&str>| ServicePort {
        app_protocol: proto.map(str::to_string),
        ..sport(name, port, None)
    };
    let ports = [
        with_protocol(Some("http"), 80, None),
        with_protocol(Some("grpc-api"), 9090, None),
        with_protocol(Some("web"), 81, Some("kubernetes.io/h2c")),
        with_protocol(Some("http-db"), 5432, Some("postgresql")),
        with_protocol(Some("raw"), 9000, None),
        with_protocol(Some("httpx"), 9001, None),
        with_protocol(None, 9002, None),
    ];
    let plan = resolve("orders", &ports, &[], &ex("80")).unwrap();
    assert_eq!(plan.http_targets(), vec![80, 9090, 81]);

    // Two Service ports to one target: HTTP only if both say so.
    let shared = [
        sport(Some("http"), 80, Some(IntOrString::Int(8080))),
        sport(Some("metrics"), 8081, Some(IntOrString::Int(8080))),
    ];
    let plan = resolve("orders", &shared, &[], &ex("80")).unwrap();
    assert!(plan.http_targets().is_empty());
}
