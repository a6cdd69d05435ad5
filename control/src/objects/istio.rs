//! What `ktx mesh --mode manual` prints for Istio (kt-connect's manual mesh): a DestinationRule
//! with a subset for the developer's shadow pod (label `KEY: MARK`) and a VirtualService that
//! sends requests with header `KEY: MARK` to that subset and the rest to the Service. The
//! developer applies or merges them into the team's own routes; with `--apply-istio` ktx
//! creates them itself ([`DestinationRule`], [`VirtualService`]: typed as far as ktx needs,
//! the spec kept as JSON), owned by the session's Lease like the shadow, and deletes them when
//! the session ends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The API group and version ktx writes (`networking.istio.io/v1beta1`: served by every Istio
/// since 1.8, beside v1 from 1.22).
pub const GROUP: &str = "networking.istio.io";
pub const VERSION: &str = "v1beta1";

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind_destination_rule() -> String {
    "DestinationRule".into()
}

fn kind_virtual_service() -> String {
    "VirtualService".into()
}

macro_rules! istio_kind {
    ($name:ident, $kind:literal, $kind_fn:literal, $plural:literal) => {
        #[doc = concat!("An Istio `", $kind, "`, as ktx creates and deletes it.")]
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub struct $name {
            /// Always sent: the API server refuses an object without it.
            #[serde(rename = "apiVersion", default = "api_version")]
            pub api_version: String,
            #[serde(default = $kind_fn)]
            pub kind: String,
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: Value,
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl $name {
            /// From the printed object (the same JSON `kubectl apply` would get), with `labels`.
            pub fn from_printed(
                mut v: Value,
                labels: std::collections::BTreeMap<String, String>,
            ) -> Self {
                let spec = v["spec"].take();
                $name {
                    api_version: api_version(),
                    kind: $kind.into(),
                    metadata: ObjectMeta {
                        name: v["metadata"]["name"].as_str().map(str::to_string),
                        namespace: v["metadata"]["namespace"].as_str().map(str::to_string),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    spec,
                }
            }
        }
    };
}

istio_kind!(
    DestinationRule,
    "DestinationRule",
    "kind_destination_rule",
    "destinationrules"
);
istio_kind!(
    VirtualService,
    "VirtualService",
    "kind_virtual_service",
    "virtualservices"
);

/// The names of the printed objects: those of the shadow pod.
pub struct IstioParams<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub service: &'a str,
    /// Label and header key (lower case, as Istio matches headers).
    pub key: &'a str,
    pub mark: &'a str,
}

impl IstioParams<'_> {
    fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.service, self.namespace)
    }

    fn subset(&self) -> String {
        format!("ktx-{}", self.mark)
    }
}

pub fn destination_rule(p: &IstioParams<'_>) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": { "name": p.name, "namespace": p.namespace },
        "spec": {
            "host": p.host(),
            "subsets": [ { "name": p.subset(), "labels": { p.key: p.mark } } ],
        },
    })
}

pub fn virtual_service(p: &IstioParams<'_>) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": { "name": p.name, "namespace": p.namespace },
        "spec": {
            "hosts": [p.host()],
            "http": [
                {
                    "match": [ { "headers": { p.key: { "exact": p.mark } } } ],
                    "route": [ { "destination": { "host": p.host(), "subset": p.subset() } } ],
                },
                { "route": [ { "destination": { "host": p.host() } } ] },
            ],
        },
    })
}

/// Both objects as one YAML stream for `kubectl apply -f -` (JSON is YAML; one document per
/// object, so it reads like any manifest).
pub fn yaml(p: &IstioParams<'_>) -> String {
    let mut out = String::new();
    for v in [destination_rule(p), virtual_service(p)] {
        out.push_str("---\n");
        out.push_str(&to_yaml(&v, 0));
    }
    out
}

/// A small YAML writer for JSON values (strings always quoted, as JSON strings).
fn to_yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{}:\n{}", quote(k), to_yaml(v, indent + 2)));
                    }
                    _ => out.push_str(&format!("{pad}{}: {}\n", quote(k), scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let inner = match item {
                    Value::Object(_) | Value::Array(_) => to_yaml(item, indent + 2),
                    _ => format!("{}  {}\n", pad, scalar(item)),
                };
                // "- " replaces the first line's indentation.
                let rest = inner.get(indent + 2..).unwrap_or("");
                out.push_str(&format!("{pad}- {rest}"));
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
    out
}

fn quote(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn scalar(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_objects_are_the_printed_ones_with_ktx_labels() {
        let p = params();
        let labels = std::collections::BTreeMap::from([("a".to_string(), "b".to_string())]);
        let vs = VirtualService::from_printed(virtual_service(&p), labels.clone());
        let mut back = serde_json::to_value(&vs).unwrap();
        assert_eq!(back["spec"], virtual_service(&p)["spec"]);
        assert_eq!(back["metadata"]["name"], "tomcat-ktx-mesh-ci");
        assert_eq!(back["metadata"]["labels"]["a"], "b");
        // The API server refuses an object without them ("Object 'Kind' is missing").
        assert_eq!(back["apiVersion"], "networking.istio.io/v1beta1");
        assert_eq!(back["kind"], "VirtualService");
        back["metadata"]["labels"].take();
        let dr = DestinationRule::from_printed(destination_rule(&p), labels);
        assert_eq!(
            <DestinationRule as kube::Resource>::api_version(&()),
            "networking.istio.io/v1beta1"
        );
        assert_eq!(
            <VirtualService as kube::Resource>::plural(&()),
            "virtualservices"
        );
        assert_eq!(
            serde_json::to_value(&dr).unwrap()["spec"]["subsets"][0]["name"],
            "ktx-ci"
        );
    }

    fn params() -> IstioParams<'static> {
        IstioParams {
            name: "tomcat-ktx-mesh-ci",
            namespace: "shop",
            service: "tomcat",
            key: "version",
            mark: "ci",
        }
    }

    #[test]
    fn the_mark_goes_to_the_shadow_subset_and_the_rest_to_the_service() {
        let p = params();
        let dr = destination_rule(&p);
        assert_eq!(dr["spec"]["host"], "tomcat.shop.svc.cluster.local");
        assert_eq!(dr["spec"]["subsets"][0]["labels"]["version"], "ci");
        let vs = virtual_service(&p);
        let http = &vs["spec"]["http"];
        assert_eq!(http[0]["match"][0]["headers"]["version"]["exact"], "ci");
        assert_eq!(http[0]["route"][0]["destination"]["subset"], "ktx-ci");
        assert!(http[1]["route"][0]["destination"]["subset"].is_null());
    }

    #[test]
    fn the_printed_yaml_reads_as_a_manifest() {
        let y = yaml(&params());
        let want = r#"---
apiVersion: "networking.istio.io/v1beta1"
kind: "DestinationRule"
metadata:
  name: "tomcat-ktx-mesh-ci"
  namespace: "shop"
spec:
  host: "tomcat.shop.svc.cluster.local"
  subsets:
    - labels:
        version: "ci"
      name: "ktx-ci"
---
apiVersion: "networking.istio.io/v1beta1"
kind: "VirtualService"
metadata:
  name: "tomcat-ktx-mesh-ci"
  namespace: "shop"
spec:
  hosts:
    - "tomcat.shop.svc.cluster.local"
  http:
    - match:
        - headers:
            version:
              exact: "ci"
      route:
        - destination:
            host: "tomcat.shop.svc.cluster.local"
            subset: "ktx-ci"
    - route:
        - destination:
            host: "tomcat.shop.svc.cluster.local"
"#;
        assert_eq!(y, want, "got:\n{y}");
    }
}
