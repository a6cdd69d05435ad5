//! The `S-ktx-stuntman` Service: S's original selector and ports under another name, so the
//! router (and anyone else) can still reach the original workload while S points at the router.
//! Its Endpoints carry the managed-by label, which is how the router's Endpoints watch finds it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use ktx_names::{role, ServiceNames};

use super::{labels, meta};

/// The stuntman of `names.service()`: `selector` is S's original selector, `ports` S's ports
/// (node ports dropped: they belong to S).
pub fn stuntman(
    names: &ServiceNames,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    ports: &[ServicePort],
) -> Service {
    Service {
        metadata: meta(
            &names.stuntman(),
            namespace,
            labels(names.service(), role::STUNTMAN, None),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector.clone()),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        target_port: p.target_port.clone(),
                        protocol: p.protocol.clone(),
                        app_protocol: p.app_protocol.clone(),
                        node_port: None,
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
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    #[test]
    fn keeps_selector_and_ports_drops_node_ports() {
        let sel = BTreeMap::from([("app".to_string(), "orders".to_string())]);
        let ports = [ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(IntOrString::String("http".into())),
            node_port: Some(30080),
            ..Default::default()
        }];
        let s = stuntman(&ServiceNames::new("orders"), "shop", &sel, &ports);
        assert_eq!(s.metadata.name.as_deref(), Some("orders-ktx-stuntman"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["ktx.dev/role"],
            "stuntman"
        );
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), sel);
        let p = &spec.ports.unwrap()[0];
        assert_eq!(p.port, 80);
        assert_eq!(p.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(p.node_port, None);
    }
}
