//! `ktx connect` on the developer's machine: everything that turns the machine's connections and
//! name lookups into cluster flows, with no knowledge of Kubernetes or of the tunnel. The caller
//! (ktx) supplies a [`dial::Dial`] (the tunnel to the in-cluster connect pod) and fills a
//! [`names::NameTable`] (from watched Services and Endpoints).
//!
//! ```text
//!  app ──TCP──▶ route ──▶ TUN ──▶ flows (SYN gate + ipstack) ──▶ Dial ══▶ cluster
//!  app ──DNS──▶ resolv.conf / resolved ──▶ dns (NameTable | forward to the old resolvers)
//!  app ──SOCKS5 / HTTP CONNECT / absolute-form──▶ proxy ──▶ Dial ══▶ cluster   (no root)
//! ```
//!
//! Modules, by role:
//! - flows of packets: [`tun_device`] (the device, its address and routes), [`cidr`] (the route
//!   plan: includes minus excludes), [`flows`] (the userspace TCP stack and one dial + splice per
//!   connection; `flows::syn_gate` answers a SYN only once its dial has an answer);
//! - names: [`names`] (the table and the lookup rules), [`dns`] (the resolver on UDP and TCP);
//! - machine configuration: [`resolved`] (per-link DNS where systemd-resolved runs), else
//!   [`resolv_conf`] (a managed, backed-up `/etc/resolv.conf`);
//! - no root: [`proxy`] (SOCKS5 and HTTP on one port);
//! - shared: [`dial`] (the seam and a plain-TCP implementation), [`splice`] (both-way copy).
//!
//! Dependencies, each chosen for one job:
//! - `ipstack` (TCP stack): tokio-native, hands out each connection as an
//!   `AsyncRead + AsyncWrite` stream, maintained (used by tun2proxy), pure Rust, small (etherparse and
//!   tokio). `smoltcp` is the more mature stack but is poll-driven: bridging its sockets to
//!   tokio streams is a few hundred lines of our own; `netstack-smoltcp` does that bridging but
//!   is younger and less used. Measured here (netns test, 100 MiB echoed both ways at the same
//!   time, byte-exact, `cargo test --release -p ktx-netstack --test tun -- --nocapture
//!   tun_flows`): 49–61 MiB/s each way in three runs (7–17 in a debug build) on a loaded
//!   2-core machine. Known
//!   ipstack 1.0.1 defects, each shown by an ignored netns test in `tests/tun.rs`: it answers
//!   SYNs at once (worked around: the SYN gate), it has no TCP half-close (a client's FIN
//!   closes both directions), its receive window ignores bytes queued for the reader (a
//!   destination that never reads lets the client push tens of MiB into memory), and a segment
//!   carrying data and FIN together can be lost. Replacing it with `smoltcp` (socket buffers
//!   bound the window, real half-close) is the next step; [`flows`] is the only module that
//!   names it.
//! - `etherparse` (already under ipstack): reading SYNs and writing RSTs in the SYN gate.
//! - `tun` (the device): pure Rust ioctls, async device, non-persistent by default.
//! - `hickory-proto` (DNS wire format only, no resolver/server crates).
//! - routes through the `ip` command (see [`tun_device`]).
//!
//! Wiring, for `ktx connect` (as root):
//! 1. `resolv_conf::restore` (a crash leftover), then `tun_device::open` with the Service and
//!    Pod CIDRs, `never_route` = the API server's addresses;
//! 2. `dns::DnsServer::bind` on the resolver address with the previous nameservers as upstreams
//!    (`resolv_conf::install` returns them; in resolved mode, those of
//!    `/run/systemd/resolve/resolv.conf`), then `run`;
//! 3. `resolved::install` on the TUN link where `resolved::is_running`, else
//!    `resolv_conf::install`; `restore`/`revert` on exit;
//! 4. `flows::serve(tun, dial, …)` and, without root, `proxy::serve(listener, dial, names, …)`.
//!
//! The limits live in `FlowConfig`, `ProxyConfig` and `DnsConfig` (defaults documented there);
//! ktx exposes each as a flag.
//!
//! Runtime: ipstack blocks in place when a stream is dropped, so [`flows::serve`] must run on a
//! multi-thread tokio runtime.

pub mod cidr;
pub mod dial;
pub mod dns;
pub mod flows;
pub mod names;
pub mod proxy;
pub mod resolv_conf;
pub mod resolved;
pub mod splice;
pub mod tun_device;
