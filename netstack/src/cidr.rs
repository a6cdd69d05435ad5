//! IP ranges and the route plan: the included ranges minus the excluded ones (an exclude carves
//! a hole, e.g. the API server's address inside the Service range), as a minimal list of CIDRs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 prefix, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?} (want ADDRESS/PREFIX, e.g. 10.96.0.0/12)")]
pub struct CidrError(String);

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > max_prefix(addr) {
            return Err(CidrError(format!("{addr}/{prefix}")));
        }
        Ok(Cidr {
            addr: from_bits(addr, to_bits(addr) & mask(addr, prefix)),
            prefix,
        })
    }

    /// The single address as a /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `other` lies inside `self` (same family).
    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && other.prefix >= self.prefix
            && to_bits(other.addr) & mask(self.addr, self.prefix) == to_bits(self.addr)
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    fn halves(&self) -> [Cidr; 2] {
        let prefix = self.prefix + 1;
        let bit = 1u128 << (max_prefix(self.addr) - prefix);
        let base = to_bits(self.addr);
        [
            Cidr {
                addr: self.addr,
                prefix,
            },
            Cidr {
                addr: from_bits(self.addr, base | bit),
                prefix,
            },
        ]
    }

    /// `self` minus `hole`, as disjoint CIDRs.
    pub fn minus(&self, hole: &Cidr) -> Vec<Cidr> {
        if !self.overlaps(hole) {
            return vec![*self];
        }
        if hole.contains(self) {
            return vec![];
        }
        self.halves().iter().flat_map(|h| h.minus(hole)).collect()
    }
}

/// The routes to install: every include minus every exclude.
pub fn plan(include: &[Cidr], exclude: &[Cidr]) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = include.to_vec();
    for hole in exclude {
        out = out.iter().flat_map(|c| c.minus(hole)).collect();
    }
    out.sort();
    out.dedup();
    // drop ranges inside another include
    let all = out.clone();
    out.retain(|c| !all.iter().any(|o| o != c && o.contains(c)));
    out
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn to_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(bits).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(bits.into()),
    }
}

fn mask(addr: IpAddr, prefix: u8) -> u128 {
    let width = u32::from(max_prefix(addr));
    let host_bits = width - u32::from(prefix);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    all & !host
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| err())?,
                Some(p.parse::<u8>().map_err(|_| err())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| err())?, None),
        };
        Cidr::new(addr, prefix.unwrap_or(max_prefix(addr))).map_err(|_| err())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_clears_host_bits_and_refuses_junk() {
        assert_eq!(c("10.96.7.1/12").to_string(), "10.96.0.0/12");
        assert_eq!(c("10.0.0.1").to_string(), "10.0.0.1/32");
        assert_eq!(c("fd00::1/8").to_string(), "fd00::/8");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0/33", "x/8", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_exclude_carves_a_hole() {
        let routes = plan(&[c("10.96.0.0/12")], &[c("10.96.0.1/32")]);
        assert_eq!(routes.len(), 20);
        assert!(!routes.iter().any(|r| r.contains(&c("10.96.0.1/32"))));
        assert!(routes.iter().any(|r| r.contains(&c("10.96.0.2/32"))));
        assert!(routes.iter().any(|r| r.contains(&c("10.111.255.255/32"))));
        // the whole include excluded, and an unrelated exclude
        assert_eq!(plan(&[c("10.250.0.0/16")], &[c("10.0.0.0/8")]), vec![]);
        assert_eq!(
            plan(&[c("10.250.0.0/16")], &[c("127.0.0.0/8"), c("fd00::/8")]),
            vec![c("10.250.0.0/16")]
        );
        // overlapping includes collapse
        assert_eq!(
            plan(&[c("10.0.0.0/8"), c("10.250.0.0/16")], &[]),
            vec![c("10.0.0.0/8")]
        );
        let everything = plan(&[c("0.0.0.0/0")], &[c("127.0.0.0/8")]);
        assert!(!everything.iter().any(|r| r.contains(&c("127.0.0.1/32"))));
        assert!(everything.iter().any(|r| r.contains(&c("128.0.0.0/32"))));
    }
}
