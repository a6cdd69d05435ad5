//! The shadow of one session: a Pod running `ktx-shadow` on the Service's target ports, a
//! Service of the same name (the rule's target; mesh only) and the Secret with the shadow's
//! half of the tunnel credentials, owned by the Pod so it goes when the Pod goes.
//!
//! The shadow is not Ready while no tunnel is up, so its Service has no ready endpoint and the
//! router falls back; that is what makes a crashed session harmless.
//!
//! The shadow's flags ([`args`]) and the mount path of the credentials ([`CREDENTIALS_DIR`])
//! follow `shadow/src/config.rs` (a binary crate, so no test can parse them from here).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSpec, Probe, Secret,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use ktx_names::{mode, role, LABEL_MODE};

use super::pod_settings::{PodRole, PodSettings};
use super::{
    free_port, labels, meta, pod_security_context, resources, security_context, shadow_selector,
};
use crate::plan::ports::{ExposedPort, ListenPort};

/// The shadow's requests and limits (cpu, memory): one developer's traffic; the tunnel's TLS is
/// what uses CPU, the 16 MiB stream windows what uses memory under load.
pub const SHADOW_REQUEST: (&str, &str) = ("20m", "16Mi");
pub const SHADOW_LIMIT: (&str, &str) = ("1", "256Mi");

/// Where the Secret is mounted in the shadow container.
pub const CREDENTIALS_DIR: &str = "/var/run/ktx";
/// The tunnel port (reached by ktx through the API server's port-forward), unless taken.
pub const DEFAULT_TUNNEL_PORT: u16 = 7766;
/// The admin port (`/readyz`, `/metrics`), unless taken.
pub const DEFAULT_ADMIN_PORT: u16 = 9902;

/// What one shadow is made of.
#[derive(Debug, Clone)]
pub struct ShadowParams<'a> {
    /// Pod, Service and Secret name.
    pub name: &'a str,
    pub namespace: &'a str,
    /// The Service the session belongs to (label `ktx.dev/service`).
    pub service: &'a str,
    pub session: &'a str,
    /// [`ktx_names::mode`] value.
    pub mode: &'a str,
    pub image: &'a str,
    /// Every target port of the Service, with its container port name (so a named targetPort
    /// resolves to the shadow pod when the Service selects it directly: exchange, preview).
    pub targets: &'a [ListenPort],
    /// The ports the shadow forwards through the tunnel.
    pub exposed: &'a [ExposedPort],
    /// What the shadow does with a connection ktx does not take (the developer's process is
    /// down, or the laptop does not answer).
    pub not_taken: NotTaken,
    /// kt-connect's pod knobs (pull policy, pull secrets, account, placement, labels, quota).
    pub pod: &'a PodSettings,
}

/// The shadow's `--on-unavailable` policy: the rule's, as the shadow can apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTaken {
    /// To the original workload: per target port, the stuntman's ClusterIP and Service port.
    Fallback(Vec<(u16, std::net::SocketAddr)>),
    /// A 503 naming the session (exchange and preview have no original to fall back to).
    Reject,
}

impl ShadowParams<'_> {
    fn taken(&self) -> Vec<u16> {
        self.targets.iter().map(|t| t.number).collect()
    }

    /// The port ktx port-forwards to.
    pub fn tunnel_port(&self) -> u16 {
        free_port(DEFAULT_TUNNEL_PORT, &self.taken())
    }

    pub fn admin_port(&self) -> u16 {
        let mut taken = self.taken();
        taken.push(self.tunnel_port());
        free_port(DEFAULT_ADMIN_PORT, &taken)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = labels(self.service, role::SHADOW, Some(self.session));
        l.insert(LABEL_MODE.to_string(), self.mode.to_string());
        l
    }
}

/// The shadow's command line (`shadow/src/config.rs`).
pub fn args(p: &ShadowParams<'_>) -> Vec<String> {
    let listen: Vec<String> = p.exposed.iter().map(|e| e.target.to_string()).collect();
    // A connect pod listens on no service ports (an image without connect mode stops at the
    // unknown flag, and the pod's status shows why).
    let what = if p.mode == mode::CONNECT {
        ["--mode".to_string(), "connect".to_string()]
    } else {
        ["--ports".to_string(), listen.join(",")]
    };
    what.into_iter()
        .chain([
            "--tunnel-port".into(),
            p.tunnel_port().to_string(),
            "--admin".into(),
            format!("0.0.0.0:{}", p.admin_port()),
            "--tls-dir".into(),
            CREDENTIALS_DIR.into(),
            "--log-format".into(),
            "json".into(),
        ])
        .collect()
}

/// The shadow's settings that older shadow images do not know, as environment variables (an
/// image one release behind ignores them, where an unknown flag would stop it).
pub fn env(p: &ShadowParams<'_>) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![var("KTX_SHADOW_SESSION", p.session.to_string())];
    if p.mode == mode::CONNECT {
        return env;
    }
    match &p.not_taken {
        NotTaken::Reject => env.push(var("KTX_SHADOW_ON_UNAVAILABLE", "reject".into())),
        NotTaken::Fallback(routes) => {
            let routes: Vec<String> = routes.iter().map(|(t, to)| format!("{t}={to}")).collect();
            env.push(var("KTX_SHADOW_ON_UNAVAILABLE", "fallback".into()));
            env.push(var("KTX_SHADOW_FALLBACK", routes.join(",")));
        }
    }
    env
}

pub fn pod(p: &ShadowParams<'_>) -> Pod {
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
    for (name, port) in [
        ("ktx-tunnel", p.tunnel_port()),
        ("ktx-admin", p.admin_port()),
    ] {
        ports.push(ContainerPort {
            name: Some(name.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    let mut metadata = meta(p.name, p.namespace, p.labels());
    let mut spec = PodSpec {
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(2),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        containers: vec![Container {
            name: "shadow".into(),
            image: Some(p.image.to_string()),
            image_pull_policy: Some("IfNotPresent".into()),
            args: Some(args(p)),
            env: Some(env(p)),
            ports: Some(ports),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/readyz".into()),
                    port: IntOrString::Int(i32::from(p.admin_port())),
                    ..Default::default()
                }),
                period_seconds: Some(1),
                failure_threshold: Some(1),
                timeout_seconds: Some(1),
                ..Default::default()
            }),
            security_context: Some(security_context()),
            // A refused bind shows in ktx's error through the pod status.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            resources: Some(resources(SHADOW_REQUEST, SHADOW_LIMIT)),
            volume_mounts: Some(vec![VolumeMount {
                name: "tunnel-credentials".into(),
                mount_path: CREDENTIALS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }],
        volumes: Some(vec![Volume {
            name: "tunnel-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(p.name.to_string()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        security_context: Some(pod_security_context()),
        ..Default::default()
    };
    p.pod.apply(PodRole::Shadow, &mut metadata, &mut spec);
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The Service the router sends a session's requests to. It lists every target port of S (not
/// only the exposed ones): the router picks a target's endpoints by the port a request came in
/// on, and a single-port target would otherwise receive every port's traffic.
///
/// Headless: the router connects to the shadow pod's endpoint, read through the API, and
/// nothing needs a virtual IP. kube-proxy ignores a headless Service, so the shadow's pod
/// starting and turning Ready makes it rewrite no rules: kube-proxy rewrites at most twice in a
/// burst and then once a second (`minSyncPeriod`, 1 s), and those rewrites used to hold back
/// the one that matters, S switched to the router, by up to a second.
pub fn service(p: &ShadowParams<'_>) -> Service {
    Service {
        metadata: meta(p.name, p.namespace, p.labels()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("None".into()),
            selector: Some(shadow_selector(p.service, p.session)),
            ports: Some(
                p.targets
                    .iter()
                    .map(|t| ServicePort {
                        name: Some(format!("t{}", t.number)),
                        port: i32::from(t.number),
                        target_port: Some(IntOrString::Int(i32::from(t.number))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret with the shadow's credentials. Created before the pod (so the pod can mount it at
/// once); owned by the session's Lease, so it goes with the session even after a `kill -9`.
pub fn secret(p: &ShadowParams<'_>, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: meta(p.name, p.namespace, p.labels()),
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
