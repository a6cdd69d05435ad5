//! The ktx tunnel: carries connections that arrive at a shadow pod to the developer's machine.
//!
//! ```text
//!  in-cluster client ──TCP──▶ ktx-shadow ══ TLS 1.3 + HTTP/2, one stream per connection ══▶ ktx ──TCP──▶ local process
//!                             (TLS server, h2 client)      (via API port-forward)     (TLS client, h2 server)
//! ```
//!
//! - [`proto`]: the sans-io core (preamble frames, version negotiation, stream heads, backoff).
//! - [`tls`], [`credentials`]: pinned per-session certificates.
//! - [`client`]: the ktx end, reconnecting over any [`client::Connector`].
//! - [`shadow`]: the shadow end's handshake and stream opening (the binary is `ktx-shadow`).
//! - [`connect`]: the other direction (purpose connect, protocol version 2): ktx opens a stream
//!   per local flow, the connect pod dials its destination in the cluster.
//! - [`splice`]: TCP ⇄ HTTP/2 stream copying with half-close.
//!
//! The wire format and compatibility rules are in `PROTOCOL.md` next to this crate.

pub mod client;
pub mod connect;
pub mod credentials;
mod end;
pub mod keepalive;
pub mod options;
pub mod preamble;
pub mod proto;
pub mod shadow;
pub mod splice;
pub mod tls;

pub use end::SessionEnd;
pub use options::TunnelOptions;
