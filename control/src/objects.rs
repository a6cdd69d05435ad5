//! Pure builders of every cluster object ktx creates. No I/O: each function takes what it needs
//! and returns the object, so tests check the exact objects and the orchestration only sends them.
//!
//! Every object carries `app.kubernetes.io/managed-by: ktx` and `ktx.dev/service: S`, plus its
//! role (and session, for per-session objects); names come from [`ktx_names`].
//!
//! - [`stuntman`]: the `S-ktx-stuntman` Service (the original selector and ports);
//! - [`routes`]: the `S-ktx-routes` ConfigMap and the rules in it;
//! - [`router`]: the `S-ktx-router` Deployment and its ServiceAccount, Role and RoleBinding;
//! - [`lease`]: the session Lease;
//! - [`shadow`]: the shadow Pod, Service and Secret of one session.

pub mod istio;
pub mod lease;
pub mod pod_security;
pub mod pod_settings;
pub mod preview;
pub mod router;
pub mod routes;
pub mod shadow;
pub mod stuntman;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ktx_names as names;

/// The labels every object of Service `service` carries, with its role and (for per-session
/// objects) its session.
pub fn labels(service: &str, role: &str, session: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            names::LABEL_MANAGED_BY.to_string(),
            names::MANAGED_BY_VALUE.to_string(),
        ),
        (names::LABEL_SERVICE.to_string(), service.to_string()),
        (names::LABEL_ROLE.to_string(), role.to_string()),
    ]);
    if let Some(s) = session {
        l.insert(names::LABEL_SESSION.to_string(), names::dns_label(s));
    }
    l
}

/// The label selector of the router pods of `service` (what S's selector becomes).
pub fn router_selector(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::LABEL_SERVICE.to_string(), service.to_string()),
        (
            names::LABEL_ROLE.to_string(),
            names::role::ROUTER.to_string(),
        ),
    ])
}

/// The label selector of one session's shadow pod.
pub fn shadow_selector(service: &str, session: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::LABEL_SERVICE.to_string(), service.to_string()),
        (
            names::LABEL_ROLE.to_string(),
            names::role::SHADOW.to_string(),
        ),
        (names::LABEL_SESSION.to_string(), names::dns_label(session)),
    ])
}

/// `key=value,...` for list calls.
pub fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata with a name, a namespace and labels.
pub fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// Checks that `name` can name a Service (a DNS-1035 label: the strictest of the kinds ktx
/// creates under one name).
pub fn check_name(name: &str) -> Result<(), crate::Error> {
    let bad = |reason: &str| {
        Err(crate::Error::BadName {
            what: format!("{name:?}"),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name.len() > 63 {
        return bad("1 to 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad("lower-case letters, digits and '-' only");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return bad("must start with a letter and end with a letter or digit");
    }
    Ok(())
}

/// The user and group of ktx's static images (`e2e/images.sh`, `e2e/Dockerfile`).
pub const IMAGE_USER: i64 = 65532;

/// A container security context for ktx's router and shadow images that passes Pod Security
/// "restricted" ([`pod_security`]): never root, RuntimeDefault seccomp, no privilege escalation,
/// every capability dropped but NET_BIND_SERVICE, on every port. Their binaries carry
/// NET_BIND_SERVICE as a file capability (`setcap cap_net_bind_service=+ep`, `e2e/images.sh`) so
/// that user 65532 can bind target ports below 1024; the kernel refuses to run such a binary
/// ("exec: operation not permitted") unless the container can grant that capability, so it is
/// added always, not only for low ports. `no_new_privs` (allowPrivilegeEscalation: false) keeps
/// it from widening: the process gets at most what the container was given.
pub fn security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(IMAGE_USER),
        run_as_group: Some(IMAGE_USER),
        seccomp_profile: Some(runtime_default()),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: Some(vec![pod_security::NET_BIND_SERVICE.to_string()]),
        }),
        ..Default::default()
    }
}

/// The pod-level half of "restricted": non-root and RuntimeDefault seccomp for every container;
/// `fsGroup` lets the non-root user read mounted Secrets (mode 0440).
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        fs_group: Some(IMAGE_USER),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Requests and limits for a container ktx creates: `(cpu, memory)` each. Namespaces with a
/// LimitRange or a ResourceQuota refuse pods without them, and the scheduler needs the
/// requests to place the pod beside the workload it stands in for.
pub fn resources(request: (&str, &str), limit: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(request)),
        limits: Some(pair(limit)),
        ..Default::default()
    }
}

/// The first port from `start` up that is not in `taken` (admin ports must not collide with
/// the Service's target ports).
pub fn free_port(start: u16, taken: &[u16]) -> u16 {
    (start..=u16::MAX)
        .find(|p| !taken.contains(p))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_owner_service_role_and_session() {
        let l = labels("orders", names::role::SHADOW, Some("Foo_Bar"));
        assert_eq!(l["app.kubernetes.io/managed-by"], "ktx");
        assert_eq!(l["ktx.dev/service"], "orders");
        assert_eq!(l["ktx.dev/role"], "shadow");
        assert_eq!(l["ktx.dev/session"], "foo-bar");
        assert!(!labels("orders", "router", None).contains_key("ktx.dev/session"));
        assert_eq!(
            selector_string(&router_selector("orders")),
            "ktx.dev/role=router,ktx.dev/service=orders"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders-ktx-mesh-foobar").is_ok());
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_name("Orders").is_err());
        assert!(check_name("1abc").is_err());
        assert!(check_name("abc-").is_err());
    }

    #[test]
    fn non_root_with_only_net_bind_service() {
        let sc = security_context();
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.run_as_non_root, Some(true));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!(free_port(9901, &[9901, 9902]), 9903);
    }
}
