//! The TUN device and its routes (Linux).
//!
//! The device comes from the `tun` crate (pure Rust ioctls on `/dev/net/tun`; it is created
//! non-persistent, so the kernel deletes it — and every route through it — when the process
//! exits, however it exits). The crate also sets the address, MTU and up state. Routes are added
//! with the `ip` command (iproute2, on every Linux that has TUN): one `ip route add CIDR dev
//! NAME` per planned range is simpler to read, log and reproduce by hand than netlink messages,
//! and the number of routes is small. Nothing needs removing on exit: the routes go with the
//! device.

use std::net::{IpAddr, Ipv4Addr};

use crate::cidr::{self, Cidr};

/// The device and what to route into it.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Interface name (e.g. `ktx0`).
    pub name: String,
    pub mtu: u16,
    /// The device's own address (a /32; never a destination).
    pub address: Ipv4Addr,
    /// Ranges to route into the device (Service and Pod CIDRs).
    pub include: Vec<Cidr>,
    /// Ranges carved out of `include`. `127.0.0.0/8`, the device's address and
    /// `never_route` are always added.
    pub exclude: Vec<Cidr>,
    /// Addresses that must keep their normal route (the API server: the tunnel runs over it).
    pub never_route: Vec<IpAddr>,
}

impl TunConfig {
    /// The routes [`open`] installs.
    pub fn routes(&self) -> Vec<Cidr> {
        let mut exclude = self.exclude.clone();
        exclude.push(
            Cidr::new(Ipv4Addr::new(127, 0, 0, 0).into(), 8)
                .unwrap_or(Cidr::host(Ipv4Addr::LOCALHOST.into())),
        );
        exclude.push(Cidr::host(self.address.into()));
        exclude.extend(self.never_route.iter().map(|a| Cidr::host(*a)));
        cidr::plan(&self.include, &exclude)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("create TUN device {name}: {source}")]
    Create { name: String, source: tun::Error },
    #[error("add route {route} via {name}: {detail}")]
    Route {
        route: Cidr,
        name: String,
        detail: String,
    },
}

/// The open device, with its routes installed.
pub struct TunDevice {
    pub(crate) device: tun::AsyncDevice,
    pub name: String,
    pub mtu: u16,
    pub routes: Vec<Cidr>,
}

/// Creates the device, brings it up with its address and MTU, and adds the routes.
pub async fn open(config: &TunConfig) -> Result<TunDevice, TunError> {
    let mut tc = tun::Configuration::default();
    tc.tun_name(&config.name)
        .address(config.address)
        .netmask(Ipv4Addr::new(255, 255, 255, 255))
        .mtu(config.mtu)
        .up();
    let device = tun::create_as_async(&tc).map_err(|source| TunError::Create {
        name: config.name.clone(),
        source,
    })?;
    let routes = config.routes();
    for route in &routes {
        add_route(route, &config.name).await?;
    }
    tracing::info!(device = %config.name, routes = ?routes.iter().map(ToString::to_string).collect::<Vec<_>>(), "tun: up");
    Ok(TunDevice {
        device,
        name: config.name.clone(),
        mtu: config.mtu,
        routes,
    })
}

async fn add_route(route: &Cidr, name: &str) -> Result<(), TunError> {
    let out = tokio::process::Command::new("ip")
        .args(["route", "add", &route.to_string(), "dev", name])
        .output()
        .await;
    let err = |detail: String| TunError::Route {
        route: *route,
        name: name.to_owned(),
        detail,
    };
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(err(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
        Err(e) => Err(err(format!("run `ip`: {e}"))),
    }
}
