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
//! - machine configuration: [`resolv_conf`] (a managed, backed-up `/etc/resolv.conf`);
//! - no root: [`proxy`] (SOCKS5 and HTTP on one port);
//! - shared: [`dial`] (the seam and a plain-TCP implementation), [`splice`] (both-way copy).
//!
//! Dependencies, each chosen for one job:
//! - `ipstack` (TCP stack): tokio-native, hands out each connection as an
//!   `AsyncRead + AsyncWrite` stream, maintained (used by tun2proxy), pure Rust, small (etherparse and
//!   tokio). `smoltcp` is the more mature stack but is poll-driven: bridging its sockets to
//!   tokio streams is a few hundred lines of our own; `netstack-smoltcp` does that bridging but
//!   is younger and less used. Measured here (debug build, netns test): 100 MiB echoed both ways
//!   at the same time, byte-exact, ~17 MiB/s each way. Known ipstack 1.0.1 defects, worked
//!   around or documented: it answers SYNs at once (hence the SYN gate), it has no TCP
//!   half-close (a client's FIN closes both directions: see the ignored test in `tests/tun.rs`),
//!   and a segment carrying data and FIN together can be lost. Replacing it with `smoltcp` is the
//!   next step if those bite; [`flows`] is the only module that names it.
//! - `etherparse` (already under ipstack): reading SYNs and writing RSTs in the SYN gate.
//! - `tun` (the device): pure Rust ioctls, async device, non-persistent by default.
//! - `hickory-proto` (DNS wire format only, no resolver/server crates).
//! - routes through the `ip` command (see [`tun_device`]).
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
pub mod splice;
pub mod tun_device;
