//! Purpose connect (protocol version 2): the other direction. ktx opens one stream per local
//! flow (a TUN flow, a SOCKS or HTTP CONNECT request) and the connect pod dials the stream's
//! destination inside the cluster.
//!
//! ```text
//!  local flow ─▶ ktx ═══ TLS 1.3 ═══ HTTP/2 ═══▶ connect pod ─TCP─▶ Service / pod IP:PORT
//!                TLS client                      TLS server
//!                h2 CLIENT (opens streams)       h2 SERVER (dials, answers 200 or an error)
//! ```
//!
//! - [`client`]: ktx's end: keeps one tunnel up and opens streams ([`client::ConnectHandle::open`]).
//! - [`stream`]: an open stream as `AsyncRead + AsyncWrite` for ktx's callers.
//! - [`pod`]: the connect pod's end (the `ktx-shadow` binary in `--mode connect`).
//!
//! The stream head, statuses and the deny rule are the sans-io [`crate::proto::connect_head`];
//! the handshake, keepalive and splice are shared with the serve purpose.

pub mod client;
pub mod pod;
pub mod stream;
