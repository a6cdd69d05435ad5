//! `ktx connect` on the developer's machine: everything that turns the machine's connections and
//! name lookups into cluster flows, with no knowledge of Kubernetes or of the tunnel. The caller
//! (ktx) supplies a [`dial::Dial`] (the tunnel to the in-cluster connect pod) and fills a
//! [`names::NameTable`] (from watched Services and Endpoints).
//!
//! ```text
//!  app ──TCP──▶ route ──▶ TUN ──▶ flows (SYN gate + smoltcp) ──▶ Dial ══▶ cluster
//!  app ──DNS──▶ resolv.conf / resolved ──▶ dns (NameTable | forward to the old resolvers)
//!  app ──SOCKS5 / HTTP CONNECT / absolute-form──▶ proxy ──▶ Dial ══▶ cluster   (no root)
//! ```
//!
//! Modules, by role:
//! - flows of packets: [`tun_device`] (the device, its address and routes), [`cidr`] (the route
//!   plan: includes minus excludes), [`flows`] (the userspace TCP stack and one dial + bridge per
//!   connection; `flows::syn_gate` answers a SYN only once its dial has an answer);
//! - names: [`names`] (the table and the lookup rules), [`dns`] (the resolver on UDP and TCP);
//! - machine configuration: [`resolved`] (per-link DNS where systemd-resolved runs), else
//!   [`resolv_conf`] (a managed, backed-up `/etc/resolv.conf`);
//! - no root: [`proxy`] (SOCKS5 and HTTP on one port);
//! - shared: [`dial`] (the seam and a plain-TCP implementation), [`splice`] (both-way copy, for
//!   the proxy).
//!
//! Dependencies, each chosen for one job:
//! - `smoltcp` (TCP stack): pure Rust, mature, poll-driven (no tasks or I/O of its own). What it
//!   gives that matters here: real half-close (each direction's FIN on its own), and fixed-size
//!   per-socket receive and send buffers whose free space is the window it advertises, so what a
//!   flow can hold is bounded by construction; RST both ways; its `wire` module crafts the SYN
//!   gate's RSTs and checks checksums. The price is the bridge to tokio (one task owning the
//!   interface and every socket, wakers queueing flows for it, see [`flows`]), a few hundred
//!   lines of our own. It replaced `ipstack` 1.0.1, which had no half-close, a window that
//!   ignored unread data (a destination that never read let a client push 100 MiB into memory
//!   in 3 s) and lost a segment carrying data and FIN; the netns tests in `tests/tun.rs` show
//!   each. Measured (release, `cargo test --release -p ktx-netstack --test tun -- --ignored
//!   --nocapture tun_throughput`, 100 MiB from a client in the netns through the TUN to a
//!   loopback sink, shared 2-core machine): 540–583 MiB/s (ipstack: 84–88); the 100 MiB echo
//!   both ways at once (`tun_flows`): 116–125 MiB/s each way (ipstack: 50–56); through the
//!   tunnel in e2e (`e2e/README.md`): 143 MiB/s (ipstack: 134), the tunnel now the bottleneck.
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
//! Runtime: [`flows::serve`] is one task (it never blocks a thread); dials run as their own
//! tasks.

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

/// After a failed accept (EMFILE, ENFILE, ENOBUFS: the client waits in the backlog and the
/// next accept fails the same way): a pause, so the loop does not spin a core until a
/// descriptor frees.
pub(crate) async fn accept_failed(what: &str, e: &std::io::Error) {
    tracing::debug!(error = %e, "{what}: accept failed; retrying in 50 ms");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
