//! Port resolution: from the Service's ports, the pods it selects and `--expose`, the numbers
//! the router and the shadow listen on and where each exposed port goes.
//!
//! Kubernetes delivers traffic for Service port P to the targetPort T of the selected pods; T
//! is a number, a container port *name* resolved in each pod, or absent (then T = P). The
//! router takes over the selector, so it must listen on every T, and carry the same container
//! port names so named targetPorts still resolve to it; the shadow listens on the exposed Ts.
//! This module is pure: the caller fetches the Service and the pods.

use k8s_openapi::api::core::v1::{Pod, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::plan::expose::{Expose, Remote};

/// One port of the Service, with its targetPort resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPort {
    pub name: Option<String>,
    /// The Service port (what clients dial).
    pub port: u16,
    /// The number the selected pods listen on.
    pub target: u16,
    /// The container port name when the targetPort is a name.
    pub target_name: Option<String>,
    /// The Service port's `appProtocol`.
    pub app_protocol: Option<String>,
}

impl ResolvedPort {
    /// Whether the Service declares this port plain HTTP (HTTP/1.1, h2c or gRPC), by
    /// `appProtocol` or else by name (`http`, `http-web`, `grpc`, …: Istio's convention). The
    /// router then never passes silent clients of its target through as plain TCP.
    pub fn declares_http(&self) -> bool {
        const HTTP: [&str; 5] = ["http", "http2", "h2c", "grpc", "grpc-web"];
        if let Some(p) = &self.app_protocol {
            let p = p.to_ascii_lowercase();
            return HTTP.contains(&p.as_str())
                || matches!(p.as_str(), "kubernetes.io/h2c" | "kubernetes.io/ws");
        }
        self.name.as_deref().is_some_and(|n| {
            let n = n.to_ascii_lowercase();
            HTTP.iter()
                .any(|h| n == *h || n.strip_prefix(h).is_some_and(|rest| rest.starts_with('-')))
        })
    }
}

/// One exposed port: Service port → target port → local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposedPort {
    pub local: u16,
    pub port: u16,
    pub target: u16,
}

/// A port the router or the shadow listens on, with the container port name it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenPort {
    pub number: u16,
    pub name: Option<String>,
}

/// Every port of the Service resolved, and the exposed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    pub ports: Vec<ResolvedPort>,
    pub exposed: Vec<ExposedPort>,
}

/// Why the ports of a Service cannot be served as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("Service {service} has no ports; ktx needs at least one TCP port")]
    NoPorts { service: String },
    #[error("Service {service} port {port} is {protocol}; ktx routes TCP only (remove that port, or mesh a Service without it)")]
    NotTcp {
        service: String,
        port: i32,
        protocol: String,
    },
    #[error("Service {service} port {port} is out of range")]
    OutOfRange { service: String, port: i32 },
    #[error("Service {service} port {port} has the named targetPort {name:?}, but no pod matches the Service's selector to say which number that is; start the workload (scale it up), or give the Service a numeric targetPort")]
    NoPods {
        service: String,
        port: u16,
        name: String,
    },
    #[error("Service {service} port {port} has the named targetPort {name:?}, but no container of pod {pod} has a TCP port of that name; fix the Service or the workload")]
    NameNotFound {
        service: String,
        port: u16,
        name: String,
        pod: String,
    },
    #[error("Service {service} port {port}: the named targetPort {name:?} is {a} in some pods and {b} in others; ktx needs one number (finish the rollout first)")]
    NameAmbiguous {
        service: String,
        port: u16,
        name: String,
        a: u16,
        b: u16,
    },
    #[error("--expose {expose}: Service {service} has no port {remote}{hint}")]
    NotAServicePort {
        expose: String,
        service: String,
        remote: String,
        /// Extra help when the number is a targetPort (the usual confusion).
        hint: String,
    },
    #[error("--expose: local port {local} is given for two Service ports ({a} and {b}); give each its own local port")]
    LocalTwice { local: u16, a: u16, b: u16 },
    #[error("--expose: Service ports {a} and {b} both lead to targetPort {target}, so they cannot go to different local ports; expose only one of them")]
    TargetTwice { target: u16, a: u16, b: u16 },
}

fn to_port(service: &str, p: i32) -> Result<u16, PortError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(PortError::OutOfRange {
            service: service.to_string(),
            port: p,
        })
}

/// The number behind container port `name` in `pod`, if it has a TCP port of that name.
fn named_port(pod: &Pod, name: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        })
        .map(|p| p.container_port)
}

fn resolve_one(service: &str, sp: &ServicePort, pods: &[Pod]) -> Result<ResolvedPort, PortError> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    if protocol != "TCP" {
        return Err(PortError::NotTcp {
            service: service.to_string(),
            port: sp.port,
            protocol: protocol.to_string(),
        });
    }
    let port = to_port(service, sp.port)?;
    let (target, target_name) = match &sp.target_port {
        None => (port, None),
        Some(IntOrString::Int(t)) => (to_port(service, *t)?, None),
        // The API server turns a numeric string into Int, but a client may send "8080".
        Some(IntOrString::String(s)) if s.parse::<u16>().is_ok() => {
            (to_port(service, s.parse::<i32>().unwrap_or(0))?, None)
        }
        Some(IntOrString::String(name)) => {
            let mut found: Option<u16> = None;
            if pods.is_empty() {
                return Err(PortError::NoPods {
                    service: service.to_string(),
                    port,
                    name: name.clone(),
                });
            }
            for pod in pods {
                let Some(n) = named_port(pod, name) else {
                    return Err(PortError::NameNotFound {
                        service: service.to_string(),
                        port,
                        name: name.clone(),
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                    });
                };
                let n = to_port(service, n)?;
                match found {
                    Some(a) if a != n => {
                        return Err(PortError::NameAmbiguous {
                            service: service.to_string(),
                            port,
                            name: name.clone(),
                            a,
                            b: n,
                        })
                    }
                    _ => found = Some(n),
                }
            }
            (found.unwrap_or(port), Some(name.clone()))
        }
    };
    Ok(ResolvedPort {
        name: sp.name.clone(),
        port,
        target,
        target_name,
        app_protocol: sp.app_protocol.clone(),
    })
}

/// Resolves every port of Service `service` against the pods its (original) selector picks,
/// then maps each `--expose` item onto them.
pub fn resolve(
    service: &str,
    ports: &[ServicePort],
    pods: &[Pod],
    exposes: &[Expose],
) -> Result<PortPlan, PortError> {
    if ports.is_empty() {
        return Err(PortError::NoPorts {
            service: service.to_string(),
        });
    }
    let resolved = ports
        .iter()
        .map(|sp| resolve_one(service, sp, pods))
        .collect::<Result<Vec<_>, _>>()?;
    let mut exposed: Vec<ExposedPort> = Vec::with_capacity(exposes.len());
    for e in exposes {
        let hit = resolved.iter().find(|p| match &e.remote {
            Remote::Number(n) => p.port == *n,
            Remote::Name(name) => p.name.as_deref() == Some(name.as_str()),
        });
        let Some(p) = hit else {
            return Err(not_a_service_port(service, e, &resolved));
        };
        let x = ExposedPort {
            local: e.local.unwrap_or(p.port),
            port: p.port,
            target: p.target,
        };
        if let Some(other) = exposed.iter().find(|o| o.local == x.local) {
            return Err(PortError::LocalTwice {
                local: x.local,
                a: other.port,
                b: x.port,
            });
        }
        // The shadow only sees the target port a connection arrived on.
        if let Some(other) = exposed.iter().find(|o| o.target == x.target) {
            return Err(PortError::TargetTwice {
                target: x.target,
                a: other.port,
                b: x.port,
            });
        }
        exposed.push(x);
    }
    Ok(PortPlan {
        ports: resolved,
        exposed,
    })
}

fn not_a_service_port(service: &str, e: &Expose, resolved: &[ResolvedPort]) -> PortError {
    let list: Vec<String> = resolved
        .iter()
        .map(|p| match &p.name {
            Some(n) => format!("{} ({n}) → targetPort {}", p.port, p.target),
            None => format!("{} → targetPort {}", p.port, p.target),
        })
        .collect();
    let by_target = match &e.remote {
        Remote::Number(n) => resolved.iter().find(|p| p.target == *n),
        Remote::Name(_) => None,
    };
    let hint = match by_target {
        Some(p) => format!(
            "; {} is the targetPort of Service port {}, and --expose takes the Service port: use --expose {}:{}",
            p.target,
            p.port,
            e.local.unwrap_or(p.target),
            p.port
        ),
        None => format!("; its ports are: {}", list.join(", ")),
    };
    PortError::NotAServicePort {
        expose: e.to_string(),
        service: service.to_string(),
        remote: e.remote.to_string(),
        hint,
    }
}

impl PortPlan {
    /// The plan of a Service that does not exist yet (`ktx preview`): each exposed number is
    /// the Service port and the shadow's target port alike.
    pub fn for_new_service(exposes: &[Expose]) -> Result<PortPlan, PortError> {
        let mut plan = PortPlan {
            ports: Vec::new(),
            exposed: Vec::new(),
        };
        for e in exposes {
            let Remote::Number(n) = e.remote else {
                return Err(PortError::NotAServicePort {
                    expose: e.to_string(),
                    service: "(new)".to_string(),
                    remote: e.remote.to_string(),
                    hint: "; a new Service has no port names yet: give a number".to_string(),
                });
            };
            let local = e.local.unwrap_or(n);
            if let Some(other) = plan.exposed.iter().find(|o| o.local == local) {
                return Err(PortError::LocalTwice {
                    local,
                    a: other.port,
                    b: n,
                });
            }
            plan.ports.push(ResolvedPort {
                name: Some(format!("port-{n}")),
                port: n,
                target: n,
                target_name: None,
                app_protocol: None,
            });
            plan.exposed.push(ExposedPort {
                local,
                port: n,
                target: n,
            });
        }
        Ok(plan)
    }

    /// Distinct target numbers, each with the container port name it must carry (the first
    /// name given for it), in Service port order.
    pub fn targets(&self) -> Vec<ListenPort> {
        let mut out: Vec<ListenPort> = Vec::new();
        for p in &self.ports {
            match out.iter_mut().find(|l| l.number == p.target) {
                Some(l) if l.name.is_none() => l.name.clone_from(&p.target_name),
                Some(_) => {}
                None => out.push(ListenPort {
                    number: p.target,
                    name: p.target_name.clone(),
                }),
            }
        }
        out
    }

    /// Target numbers that only Service ports declaring HTTP lead to (`--http-ports` of the
    /// router), in Service port order.
    pub fn http_targets(&self) -> Vec<u16> {
        let mut out: Vec<u16> = Vec::new();
        for p in &self.ports {
            let all_http = self
                .ports
                .iter()
                .filter(|q| q.target == p.target)
                .all(ResolvedPort::declares_http);
            if all_http && !out.contains(&p.target) {
                out.push(p.target);
            }
        }
        out
    }

    /// The target numbers of the exposed ports (what the shadow forwards), deduplicated.
    pub fn exposed_targets(&self) -> Vec<u16> {
        let mut out: Vec<u16> = Vec::new();
        for e in &self.exposed {
            if !out.contains(&e.target) {
                out.push(e.target);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
