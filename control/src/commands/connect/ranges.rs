//! Which address ranges `ktx connect` routes into the cluster when no `--cidr` is given: the
//! blocks that hold the namespace's Service ClusterIPs and pod IPs (as kt-connect finds them:
//! the API has no call that names the cluster's Service and Pod ranges to a namespaced user).
//! IPv4 addresses count by their /16, IPv6 by their /64; a block is routed whole, so Services
//! and pods created later in the same ranges are reached too.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
