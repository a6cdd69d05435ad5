//! The Service that `ktx preview NAME` creates: NAME, selecting the session's shadow pod, with
//! the exposed ports (each number is both the Service port and the shadow's target port).
//! `--external` makes it a LoadBalancer or a NodePort Service (kt-connect's flag).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ktx_names::{role, LABEL_MODE};

use super::{labels, meta, shadow_selector};
use crate::cli::External;
use crate::plan::ports::PortPlan;

pub fn service(
    name: &str,
    namespace: &str,
    session: &str,
    plan: &PortPlan,
    external: Option<External>,
) -> Service {
    let type_ = match external {
        None => "ClusterIP",
        Some(External::LoadBalancer) => "LoadBalancer",
        Some(External::NodePort) => "NodePort",
    };
    let mut l = labels(name, role::PREVIEW, Some(session));
    l.insert(LABEL_MODE.to_string(), ktx_names::mode::PREVIEW.to_string());
    Service {
        metadata: meta(name, namespace, l),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(shadow_selector(name, session)),
            ports: Some(
                plan.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: i32::from(p.port),
                        target_port: Some(IntOrString::Int(i32::from(p.target))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_the_shadow_and_carries_the_ports() {
        let exposes: Vec<crate::plan::expose::Expose> = vec!["3001:80".parse().unwrap()];
        let plan = PortPlan::for_new_service(&exposes).unwrap();
        let s = service("orders-dev", "shop", "abcde", &plan, None);
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["ktx.dev/role"], "preview");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ktx");
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap()["ktx.dev/session"], "abcde");
        let p = &spec.ports.unwrap()[0];
        assert_eq!(
            (p.port, p.target_port.clone()),
            (80, Some(IntOrString::Int(80)))
        );
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    }

    #[test]
    fn external_makes_a_load_balancer_or_a_node_port() {
        let exposes: Vec<crate::plan::expose::Expose> = vec!["8080".parse().unwrap()];
        let plan = PortPlan::for_new_service(&exposes).unwrap();
        for (external, want) in [
            (External::LoadBalancer, "LoadBalancer"),
            (External::NodePort, "NodePort"),
        ] {
            let s = service("t", "shop", "abcde", &plan, Some(external));
            assert_eq!(s.spec.unwrap().type_.as_deref(), Some(want));
        }
    }
}
