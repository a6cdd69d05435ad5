//! Pod Security Standards, profile "restricted" (the rules of Kubernetes 1.25+, which include
//! all of "baseline"), as a pure check of a pod spec. ktx's router and shadow pods must pass it
//! so that they run in namespaces labelled `pod-security.kubernetes.io/enforce: restricted`;
//! the unit tests check the specs ktx builds, and the e2e tier checks the pods as stored.
//!
//! It does not own the security contexts themselves: [`super::security_context`] and
//! [`super::pod_security_context`] build them.

use k8s_openapi::api::core::v1::{PodSpec, SeccompProfile};

/// The only capability "restricted" lets a container add.
pub const NET_BIND_SERVICE: &str = "NET_BIND_SERVICE";

/// Sysctls that "baseline" allows (everything else is refused).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn seccomp_ok(p: Option<&SeccompProfile>) -> Option<bool> {
    p.map(|p| matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost"))
}

/// Every rule of the profile that `spec` breaks, one line each (empty: it passes).
pub fn restricted_violations(spec: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    for (on, what) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if on == Some(true) {
            v.push(format!("{what} is true"));
        }
    }
    for s in pod.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v.push(format!("sysctl {} is not a safe sysctl", s.name));
        }
    }
    if pod.run_as_user == Some(0) {
        v.push("pod runAsUser is 0".into());
    }
    if seccomp_ok(pod.seccomp_profile.as_ref()) == Some(false) {
        v.push("pod seccompProfile is neither RuntimeDefault nor Localhost".into());
    }
    for vol in spec.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v.push(format!(
                "volume {} has a type restricted does not allow",
                vol.name
            ));
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        let n = &c.name;
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            v.push(format!("container {n}: privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!(
                "container {n}: allowPrivilegeEscalation is not false"
            ));
        }
        if sc.run_as_non_root.or(pod.run_as_non_root) != Some(true) {
            v.push(format!("container {n}: runAsNonRoot is not true"));
        }
        if sc.run_as_user == Some(0) {
            v.push(format!("container {n}: runAsUser is 0"));
        }
        if seccomp_ok(sc.seccomp_profile.as_ref()).or(seccomp_ok(pod.seccomp_profile.as_ref()))
            != Some(true)
        {
            v.push(format!(
                "container {n}: seccompProfile is not RuntimeDefault or Localhost"
            ));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            v.push(format!("container {n}: capabilities do not drop ALL"));
        }
        for add in caps.add.iter().flatten() {
            if add != NET_BIND_SERVICE {
                v.push(format!("container {n}: adds capability {add}"));
            }
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            v.push(format!("container {n}: procMount is not Default"));
        }
        for p in c.ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                v.push(format!("container {n}: hostPort {:?}", p.host_port));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Capabilities, Container, SecurityContext};

    use super::*;

    #[test]
    fn an_empty_container_breaks_the_rules_one_by_one() {
        let spec = PodSpec {
            host_network: Some(true),
            containers: vec![Container {
                name: "c".into(),
                security_context: Some(SecurityContext {
                    run_as_user: Some(0),
                    capabilities: Some(Capabilities {
                        add: Some(vec!["NET_ADMIN".into()]),
                        drop: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = restricted_violations(&spec);
        for want in [
            "hostNetwork",
            "allowPrivilegeEscalation",
            "runAsNonRoot",
            "runAsUser is 0",
            "seccompProfile",
            "drop ALL",
            "NET_ADMIN",
        ] {
            assert!(
                v.iter().any(|l| l.contains(want)),
                "{want} missing in {v:?}"
            );
        }
    }
}
