//! The router of Service S: Deployment `S-ktx-router` and the ServiceAccount, Role and
//! RoleBinding (all `S-ktx-router`) that let it list and watch its routes ConfigMap,
//! Endpoints and Leases of its namespace — exactly what `router/src/kube.rs` watches.
//!
//! The router container listens on every target port of S and carries the container port NAMES
//! of the workload, so a Service whose targetPort is a name still resolves to the router. Its
//! flags are the router's own (`router/src/config.rs`); a test parses them with its parser.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, DownwardAPIProjection, DownwardAPIVolumeFile, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ServiceAccount,
    ServiceAccountTokenProjection, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ktx_names::{role, ServiceNames};

use super::pod_settings::{PodRole, PodSettings};
use super::{
    free_port, labels, meta, pod_security_context, resources, router_selector, security_context,
};
use crate::plan::ports::ListenPort;

/// The router's requests and limits (cpu, memory): a few MiB idle, about 3 KB per idle
/// connection; the CPU limit is one core so that a busy shared cluster cannot throttle it below
/// what one core of nginx would serve.
pub const ROUTER_REQUEST: (&str, &str) = ("50m", "32Mi");
pub const ROUTER_LIMIT: (&str, &str) = ("1", "256Mi");

/// Name of the router's admin container port.
pub const ADMIN_PORT_NAME: &str = "ktx-admin";
/// The router's admin port, unless S uses it as a target port.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;

/// What the router Deployment is made of.
#[derive(Debug, Clone)]
pub struct RouterParams<'a> {
    pub image: &'a str,
    pub namespace: &'a str,
    /// Every target port of S, with the container port name it must carry.
    pub targets: &'a [ListenPort],
    /// The targets only Service ports declaring HTTP lead to (`PortPlan::http_targets`).
    pub http_ports: &'a [u16],
    /// The ServiceAccount the router runs as: `S-ktx-router`, or the chart's shared
    /// [`ktx_names::SHARED_ROUTER_ACCOUNT`].
    pub account: &'a str,
    /// Pods of the Deployment (`--router-replicas`).
    pub replicas: u16,
    /// kt-connect's pod knobs (pull policy, pull secrets, placement, labels, quota).
    pub pod: &'a PodSettings,
    /// The cluster's CA certificate (PEM, from the namespace's `kube-root-ca.crt` ConfigMap):
    /// with it, the router's API credentials come without a Secret or ConfigMap for the kubelet
    /// to fetch ([`api_access`]); without it, Kubernetes mounts the account's token as usual.
    pub kube_ca: Option<&'a str>,
}

/// The pod annotation that carries the cluster's CA certificate into the router's
/// credentials volume.
pub const ANNOTATION_KUBE_CA: &str = "ktx.dev/kube-ca";
/// Where a pod's API credentials are read from (`token`, `ca.crt`, `namespace`), by the
/// router's client as by any in-cluster client.
pub const API_ACCESS_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Lifetime the router's token is asked for; the kubelet renews it at 80% and the router's
/// client reads the file again every minute.
const TOKEN_SECONDS: i64 = 3607;

/// The router's API credentials as one projected volume: a token the kubelet requests for
/// this pod (bound to it, expiring), the CA from the pod's own annotation, the namespace.
///
/// Why not the default: Kubernetes mounts the account's token Secret (before 1.21), or a
/// volume that includes the `kube-root-ca.crt` ConfigMap (1.21 on). The kubelet starts
/// watching such objects the moment a pod is admitted, and the API server refuses the node
/// that watch until its authorizer has seen the pod bound to it. When the kubelet asks first
/// the mount waits for the watch's retry, up to a one-second cache timeout and a 0.5 s backoff:
/// on the e2e cluster (Kubernetes 1.20) a router pod's sandbox once started 1.8 s after the
/// pod was created, against 0.3 s for the shadow pod created with it. A token request and the
/// downward API are read when the volume is mounted, from the token API and the pod itself:
/// nothing to watch, no such wait. The token is also bound to the pod and expires, where the
/// account's token Secret never does. (The shadow's Secret can still meet that wait.)
fn api_access(template: &mut PodTemplateSpec, ca: &str) {
    const VOLUME: &str = "kube-api-access";
    let field = |path: &str| ObjectFieldSelector {
        field_path: path.into(),
        ..Default::default()
    };
    if let Some(meta) = template.metadata.as_mut() {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_KUBE_CA.into(), ca.into());
    }
    let Some(spec) = template.spec.as_mut() else {
        return;
    };
    spec.automount_service_account_token = Some(false);
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![
                            DownwardAPIVolumeFile {
                                path: "ca.crt".into(),
                                field_ref: Some(field(&format!(
                                    "metadata.annotations['{ANNOTATION_KUBE_CA}']"
                                ))),
                                ..Default::default()
                            },
                            DownwardAPIVolumeFile {
                                path: "namespace".into(),
                                field_ref: Some(field("metadata.namespace")),
                                ..Default::default()
                            },
                        ]),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    });
    for c in &mut spec.containers {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: VOLUME.into(),
                mount_path: API_ACCESS_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            });
    }
}

/// The admin port for these targets (never one of them).
pub fn admin_port(targets: &[ListenPort]) -> u16 {
    let taken: Vec<u16> = targets.iter().map(|t| t.number).collect();
    free_port(DEFAULT_ADMIN_PORT, &taken)
}

/// The router's command line.
pub fn args(names: &ServiceNames, p: &RouterParams<'_>) -> Vec<String> {
    let listen: Vec<String> = p.targets.iter().map(|t| t.number.to_string()).collect();
    let mut args = vec![
        "--listen".into(),
        listen.join(","),
        "--admin".into(),
        format!("0.0.0.0:{}", admin_port(p.targets)),
        "--routes-configmap".into(),
        names.routes(),
        "--namespace".into(),
        p.namespace.to_string(),
        "--log-format".into(),
        "json".into(),
        // S is restored before the router is deleted, so little is in flight by then; but a
        // node's kube-proxy may still send new connections here for a moment.
        "--shutdown-delay".into(),
        "3s".into(),
        "--drain-timeout".into(),
        "5s".into(),
    ];
    if !p.http_ports.is_empty() {
        let http: Vec<String> = p.http_ports.iter().map(u16::to_string).collect();
        args.extend(["--http-ports".into(), http.join(",")]);
    }
    args
}

pub fn deployment(names: &ServiceNames, p: &RouterParams<'_>) -> Deployment {
    let pod_labels = labels(names.service(), role::ROUTER, None);
    let admin = admin_port(p.targets);
    let mut ports: Vec<ContainerPort> = p
        .targets
        .iter()
        .map(|t| ContainerPort {
            name: t.name.clone(),
            container_port: i32::from(t.number),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some(ADMIN_PORT_NAME.into()),
        container_port: i32::from(admin),
        protocol: Some("TCP".into()),
        ..Default::default()
    });
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(admin)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let mut deployment = Deployment {
        metadata: meta(&names.router(), p.namespace, pod_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::from(p.replicas)),
            selector: LabelSelector {
                match_labels: Some(router_selector(names.service())),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(p.account.to_string()),
                    termination_grace_period_seconds: Some(10),
                    security_context: Some(pod_security_context()),
                    // Soft: on a one-node cluster every replica still runs.
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".into(),
                        when_unsatisfiable: "ScheduleAnyway".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(router_selector(names.service())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    containers: vec![Container {
                        name: "router".into(),
                        image: Some(p.image.to_string()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        args: Some(args(names, p)),
                        ports: Some(ports),
                        readiness_probe: Some(probe("/readyz", 1)),
                        liveness_probe: Some(probe("/healthz", 10)),
                        resources: Some(resources(ROUTER_REQUEST, ROUTER_LIMIT)),
                        security_context: Some(security_context()),
                        // A bind refused (a port below 1024 with an image whose binary lacks
                        // the file capability) shows in ktx's error through the pod status.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    if let Some(spec) = deployment.spec.as_mut() {
        let template = &mut spec.template;
        if let Some(ca) = p.kube_ca {
            api_access(template, ca);
        }
        if let (Some(meta), Some(spec)) = (template.metadata.as_mut(), template.spec.as_mut()) {
            p.pod.apply(PodRole::Router, meta, spec);
        }
    }
    deployment
}

/// Lets an eviction (a node drain) take only one router pod at a time. Owned by the router
/// Deployment, so the garbage collector removes it with the router and no undo step or cleanup
/// has to. Built as `policy/v1`; [`crate::cluster::api::budget`] sends it as `policy/v1beta1` to
/// clusters older than 1.21 (same fields).
pub fn disruption_budget(
    names: &ServiceNames,
    namespace: &str,
    router_uid: &str,
) -> PodDisruptionBudget {
    let mut metadata = meta(
        &names.router(),
        namespace,
        labels(names.service(), role::ROUTER, None),
    );
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: names.router(),
        uid: router_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }]);
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(router_selector(names.service())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The router's own ServiceAccount; `--imagePullSecret` goes on it too, so that any pod of the
/// account can pull the image.
pub fn service_account(names: &ServiceNames, namespace: &str, pod: &PodSettings) -> ServiceAccount {
    let refs = pod.pull_secret_refs();
    ServiceAccount {
        metadata: meta(
            &names.router_account(),
            namespace,
            labels(names.service(), role::ROUTER, None),
        ),
        image_pull_secrets: (!refs.is_empty()).then_some(refs),
        ..Default::default()
    }
}

/// Read-only access to what the router watches (list + watch: kube-runtime's watchers), in
/// this namespace only; the ConfigMap by name (the router watches it with a `metadata.name`
/// field selector, which RBAC matches against `resourceNames`). Endpoints and Leases cannot be
/// named: they are the targets' and sessions', made later.
pub fn role(names: &ServiceNames, namespace: &str) -> Role {
    let read = || vec!["list".to_string(), "watch".to_string()];
    Role {
        metadata: meta(
            &names.router_account(),
            namespace,
            labels(names.service(), role::ROUTER, None),
        ),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![names.routes()]),
                verbs: read(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["endpoints".into()]),
                verbs: read(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: read(),
                ..Default::default()
            },
        ]),
    }
}

pub fn role_binding(names: &ServiceNames, namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(
            &names.router_account(),
            namespace,
            labels(names.service(), role::ROUTER, None),
        ),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: names.router_account(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names.router_account(),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn targets() -> Vec<ListenPort> {
        vec![
            ListenPort {
                number: 8080,
                name: Some("http".into()),
            },
            ListenPort {
                number: 9901,
                name: None,
            },
        ]
    }

    /// The router of `orders` in `shop` as most tests build it: these targets, no HTTP-only
    /// ports, two replicas, the given cluster CA.
    fn orders_router(targets: &[ListenPort], kube_ca: Option<&str>) -> Deployment {
        deployment(
            &ServiceNames::new("orders"),
            &RouterParams {
                pod: &PodSettings::default(),
                image: "r:1",
                namespace: "shop",
                targets,
                http_ports: &[],
                account: "orders-ktx-router",
                replicas: 2,
                kube_ca,
            },
        )
    }

    #[test]
    fn the_router_accepts_its_arguments() {
        let n = ServiceNames::new("orders");
        let t = targets();
        let p = RouterParams {
            pod: &PodSettings::default(),
            image: "r:1",
            namespace: "shop",
            targets: &t,
            http_ports: &[8080],
            account: "orders-ktx-router",
            replicas: 2,
            kube_ca: None,
        };
        let a = args(&n, &p);
        let cfg =
            ktx_router::Config::try_parse_from(std::iter::once("ktx-router".to_string()).chain(a))
                .unwrap();
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.listen[0].port(), 8080);
        assert_eq!(cfg.routes_configmap.as_deref(), Some("orders-ktx-routes"));
        assert_eq!(cfg.namespace.as_deref(), Some("shop"));
        assert_eq!(cfg.admin.port(), 9902, "9901 is a target port here");
        assert_eq!(cfg.http_ports, [8080]);
    }

    #[test]
    fn the_deployment_listens_on_named_target_ports() {
        let d = orders_router(&targets(), None);
        assert_eq!(d.metadata.name.as_deref(), Some("orders-ktx-router"));
        let spec = d.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        let tmpl_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(sel.iter().all(|(k, v)| tmpl_labels.get(k) == Some(v)));
        assert_eq!(tmpl_labels["app.kubernetes.io/managed-by"], "ktx");
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("orders-ktx-router")
        );
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let ports = c.ports.as_ref().unwrap();
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(ports[2].name.as_deref(), Some("ktx-admin"));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::Int(9902));
        let res = c.resources.as_ref().unwrap();
        for (want, got) in [
            (ROUTER_REQUEST, res.requests.as_ref().unwrap()),
            (ROUTER_LIMIT, res.limits.as_ref().unwrap()),
        ] {
            assert_eq!(got["cpu"].0, want.0);
            assert_eq!(got["memory"].0, want.1);
        }
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.run_as_non_root,
            Some(true),
            "no target port below 1024 here"
        );
    }

    #[test]
    fn rbac_grants_only_what_the_router_watches() {
        let n = ServiceNames::new("orders");
        let r = role(&n, "shop");
        let rules = r.rules.unwrap();
        let all_verbs: Vec<&String> = rules.iter().flat_map(|r| &r.verbs).collect();
        assert!(all_verbs
            .iter()
            .all(|v| ["list", "watch"].contains(&v.as_str())));
        assert_eq!(
            rules[2].resources.as_deref(),
            Some(&["leases".to_string()][..])
        );
        let b = role_binding(&n, "shop");
        assert_eq!(b.role_ref.name, "orders-ktx-router");
        assert_eq!(b.subjects.unwrap()[0].namespace.as_deref(), Some("shop"));
        assert_eq!(
            service_account(&n, "shop", &PodSettings::default())
                .metadata
                .name
                .as_deref(),
            Some("orders-ktx-router")
        );
    }

    /// With the cluster's CA, the router's credentials are one projected volume (a token the
    /// kubelet requests, the CA from the pod's annotation, the namespace) in place of the
    /// account's token Secret; without it, Kubernetes mounts its default as before.
    #[test]
    fn with_the_cluster_ca_the_credentials_need_no_secret_or_configmap() {
        let build = |kube_ca| orders_router(&targets(), kube_ca).spec.unwrap().template;
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let template = build(Some(pem));
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[ANNOTATION_KUBE_CA], pem);
        let spec = template.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let volumes = spec.volumes.clone().unwrap();
        assert_eq!(volumes.len(), 1);
        let sources = volumes[0].projected.clone().unwrap().sources.unwrap();
        assert!(
            sources
                .iter()
                .all(|s| s.secret.is_none() && s.config_map.is_none()),
            "nothing the kubelet must watch: {sources:#?}"
        );
        let token = sources[0].service_account_token.as_ref().unwrap();
        assert_eq!(token.path, "token");
        assert!(token.audience.is_none(), "the API server's own audience");
        let files = sources[1]
            .downward_api
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap();
        let fields: Vec<_> = files
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.field_ref.as_ref().unwrap().field_path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("ca.crt", "metadata.annotations['ktx.dev/kube-ca']"),
                ("namespace", "metadata.namespace")
            ]
        );
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].name, volumes[0].name);
        assert_eq!(mounts[0].mount_path, API_ACCESS_PATH);
        assert_eq!(mounts[0].read_only, Some(true));
        let v = crate::objects::pod_security::restricted_violations(&spec);
        assert!(v.is_empty(), "{v:#?}");

        let template = build(None);
        assert!(template.metadata.unwrap().annotations.is_none());
        let spec = template.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, None);
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].volume_mounts.is_none());
    }

    /// Pod Security "restricted", also when a target port is below 1024.
    #[test]
    fn the_router_pod_passes_pod_security_restricted_on_any_port() {
        for port in [8080, 80] {
            let t = [ListenPort {
                number: port,
                name: None,
            }];
            let d = orders_router(&t, None);
            let spec = d.spec.unwrap().template.spec.unwrap();
            let v = crate::objects::pod_security::restricted_violations(&spec);
            assert!(v.is_empty(), "target port {port}: {v:#?}");
        }
    }

    /// A drain or an eviction must not take the meshed Service down: two pods by default,
    /// spread across nodes, and a budget that lets only one go at a time.
    #[test]
    fn two_replicas_spread_across_nodes_under_a_disruption_budget() {
        let n = ServiceNames::new("orders");
        let d = orders_router(&targets(), None);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let spread = &spec
            .template
            .spec
            .unwrap()
            .topology_spread_constraints
            .unwrap()[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            spec.selector.match_labels
        );
        let b = disruption_budget(&n, "shop", "uid-1");
        assert_eq!(b.metadata.name.as_deref(), Some("orders-ktx-router"));
        let owner = &b.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "uid-1")
        );
        let bs = b.spec.unwrap();
        assert_eq!(bs.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            bs.selector.unwrap().match_labels,
            spec.selector.match_labels
        );
        let cli =
            crate::cli::Cli::try_parse_from(["ktx", "mesh", "orders", "--expose", "80"]).unwrap();
        let crate::cli::Command::Mesh(m) = cli.command else {
            panic!("not mesh")
        };
        assert_eq!(m.router_replicas, 2, "the default");
    }
}
