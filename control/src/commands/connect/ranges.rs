//! Which address ranges `ktx connect` routes into the cluster when no `--cidr` is given: the
//! blocks that hold the namespace's Service ClusterIPs and pod IPs (as kt-connect finds them:
//! the API has no call that names the cluster's Service and Pod ranges to a namespaced user).
//! IPv4 addresses count by their /16, IPv6 by their /64; a block is routed whole, so Services
//! and pods created later in the same ranges are reached too.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Pod;

/// The pod IPs that are the cluster's own: a pod on the host network has its node's address
/// (`podIP` = `hostIP`), whose block is the node network, not the pod network; routing it into
/// the tunnel would cut the machine off from the nodes (all but the API server).
pub fn pod_addrs(pods: Vec<Pod>) -> impl Iterator<Item = IpAddr> {
    pods.into_iter().filter_map(|p| {
        let on_host = p.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let status = p.status?;
        let ip = status.pod_ip?;
        if on_host || status.host_ip.as_deref() == Some(ip.as_str()) {
            return None;
        }
        ip.parse().ok()
    })
}

/// The /16 (IPv4) or /64 (IPv6) blocks of `addrs`, sorted, without duplicates; loopback,
/// link-local and unspecified addresses are left out.
pub fn blocks(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<(IpAddr, u8)> {
    let mut out = BTreeSet::new();
    for a in addrs {
        if a.is_loopback() || a.is_unspecified() {
            continue;
        }
        match a {
            IpAddr::V4(v4) => {
                if v4.is_link_local() {
                    continue;
                }
                let o = v4.octets();
                out.insert((IpAddr::V4(Ipv4Addr::new(o[0], o[1], 0, 0)), 16));
            }
            IpAddr::V6(v6) => {
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
                let s = v6.segments();
                out.insert((
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)),
                    64,
                ));
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    fn pod(ip: &str, host_ip: &str, host_network: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: host_network.then_some(true),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                host_ip: Some(host_ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A host-network pod's address (its node's) made the node network's /16 go into the
    /// tunnel. Found by a review helper, 2026-12-07.
    #[test]
    fn host_network_pods_do_not_name_a_block() {
        let got: Vec<IpAddr> = pod_addrs(vec![
            pod("10.244.0.5", "192.168.49.2", false),
            pod("192.168.49.2", "192.168.49.2", true),
            // hostNetwork unset, but the pod has its node's address all the same.
            pod("192.168.49.3", "192.168.49.3", false),
            Pod::default(),
        ])
        .collect();
        assert_eq!(got, vec![ip("10.244.0.5")]);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_become_their_blocks() {
        let got = blocks([
            ip("10.96.0.1"),
            ip("10.96.200.7"),
            ip("10.244.0.5"),
            ip("127.0.0.1"),
            ip("169.254.1.1"),
            ip("0.0.0.0"),
            ip("fd00:10:96::a"),
            ip("fe80::1"),
        ]);
        assert_eq!(
            got,
            vec![
                (ip("10.96.0.0"), 16),
                (ip("10.244.0.0"), 16),
                (ip("fd00:10:96::"), 64),
            ]
        );
    }
}
