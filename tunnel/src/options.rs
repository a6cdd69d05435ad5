//! Tunables shared by both ends, and how they become HTTP/2 settings.
//!
//! The windows are large on purpose: one stream must fill a link with real round trips (16 MiB
//! per stream carries 160 MiB/s at 100 ms; OpenSSH's 2 MiB channel window carries 20). Window
//! is given back only once bytes reach the socket, so a stream whose reader stalls holds its
//! window; the connection window (4 stream windows) bounds what one tunnel end buffers and
//! shares the link fairly: with a larger one, busy streams drifted apart (measured Jain index
//! 0.73 with 256 MiB against 0.99 with 64 MiB, 100 streams). The price: 4 streams whose
//! readers stall with full windows stall the tunnel until one of them reads.

use std::time::Duration;

use crate::proto::VersionRange;

/// HTTP/2 frame sizes must lie in this range (RFC 9113 §4.2); h2 panics outside it.
const FRAME_SIZE_RANGE: (u32, u32) = (16_384, 16_777_215);
/// Flow-control windows cannot exceed 2^31 - 1.
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Settings of one tunnel end. Both ends use the same defaults; they need not agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelOptions {
    /// Receive window per stream (bytes).
    pub stream_window: u32,
    /// Receive window for the whole tunnel (bytes).
    pub connection_window: u32,
    /// Largest DATA frame we accept (bytes).
    pub max_frame_size: u32,
    /// Bytes one stream may queue inside h2 before its reader waits.
    pub max_send_buffer: usize,
    /// Largest read from a forwarded socket (one allocation each; reads grow to this size
    /// only while they come back full).
    pub read_chunk: usize,
    /// Streams the opening side may have open at once, enforced by the HTTP/2 server: ktx
    /// for a shadow's streams (serve), the connect pod for ktx's (connect).
    pub max_concurrent_streams: u32,
    /// How often each side pings the other.
    pub keepalive_interval: Duration,
    /// A ping unanswered this long means the peer is dead and the tunnel is dropped.
    pub keepalive_timeout: Duration,
    /// Connect + TLS + preamble + HTTP/2 handshake must finish within this.
    pub handshake_timeout: Duration,
    /// How long a local connection attempt (ktx side) may take.
    pub connect_timeout: Duration,
    /// On shutdown, streams get this long to finish before they are cut.
    pub drain_timeout: Duration,
    /// Shadow side: how long ktx may take to answer a new stream (it answers once the
    /// developer's process accepted the connection). Without an answer by then the connection
    /// is "not taken" and the shadow's policy applies (fallback or 503), so a frozen laptop
    /// costs a marked request at most this long.
    pub answer_timeout: Duration,
    /// Protocol versions this end offers; tests narrow it to check refusals.
    pub protocol: VersionRange,
    /// Sent in the hello, for messages: e.g. `ktx 0.1.0`.
    pub software: String,
}

impl TunnelOptions {
    /// Defaults for a binary named `software` (e.g. `ktx`, `ktx-shadow`).
    pub fn new(program: &str) -> Self {
        Self {
            stream_window: 16 << 20,
            connection_window: 64 << 20,
            max_frame_size: 256 << 10,
            max_send_buffer: 1 << 20,
            read_chunk: 256 << 10,
            max_concurrent_streams: 16_384,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_millis(1500),
            protocol: VersionRange::CURRENT,
            software: format!("{program} {}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn frame_size(&self) -> u32 {
        self.max_frame_size
            .clamp(FRAME_SIZE_RANGE.0, FRAME_SIZE_RANGE.1)
    }

    /// The accepting side's HTTP/2 server: ktx (serve) or the connect pod (connect).
    pub(crate) fn h2_server(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window.min(MAX_WINDOW))
            .initial_connection_window_size(self.connection_window.min(MAX_WINDOW))
            .max_frame_size(self.frame_size())
            .max_send_buffer_size(self.max_send_buffer)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(16 << 10)
            // Streams reset right after opening are normal here (a client that connects and
            // leaves), not an attack from the authenticated peer: allow many.
            .max_pending_accept_reset_streams(self.max_concurrent_streams as usize)
            .max_concurrent_reset_streams(self.max_concurrent_streams as usize)
            .max_local_error_reset_streams(None);
        b
    }

    /// The opening side's HTTP/2 client: the shadow (serve) or ktx (connect).
    pub(crate) fn h2_client(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window.min(MAX_WINDOW))
            .initial_connection_window_size(self.connection_window.min(MAX_WINDOW))
            .max_frame_size(self.frame_size())
            .max_send_buffer_size(self.max_send_buffer)
            .max_header_list_size(16 << 10)
            .max_concurrent_reset_streams(self.max_concurrent_streams as usize)
            .enable_push(false);
        b
    }
}

/// Tuning flags for the binaries that run a tunnel end; unset flags keep the defaults of
/// [`TunnelOptions::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TuningArgs {
    /// Receive window per tunnel stream, in KiB, at least 64 [default: 16384].
    #[arg(long, env = "KTX_TUNNEL_STREAM_WINDOW_KIB", value_parser = clap::value_parser!(u32).range(64..))]
    pub stream_window_kib: Option<u32>,
    /// Receive window of the whole tunnel, in KiB, at least 64 [default: 65536].
    #[arg(long, env = "KTX_TUNNEL_CONNECTION_WINDOW_KIB", value_parser = clap::value_parser!(u32).range(64..))]
    pub connection_window_kib: Option<u32>,
    /// Largest HTTP/2 frame accepted, in KiB, 16 to 16383 [default: 256].
    #[arg(long, env = "KTX_TUNNEL_MAX_FRAME_KIB")]
    pub max_frame_kib: Option<u32>,
    /// Largest single read from a forwarded connection, in KiB [default: 256].
    #[arg(long, env = "KTX_TUNNEL_READ_CHUNK_KIB")]
    pub read_chunk_kib: Option<usize>,
}

impl TuningArgs {
    pub fn apply(&self, o: &mut TunnelOptions) {
        if let Some(k) = self.stream_window_kib {
            o.stream_window = k.saturating_mul(1024);
        }
        if let Some(k) = self.connection_window_kib {
            o.connection_window = k.saturating_mul(1024);
        }
        if let Some(k) = self.max_frame_kib {
            o.max_frame_size = k.saturating_mul(1024);
        }
        if let Some(k) = self.read_chunk_kib {
            o.read_chunk = k.saturating_mul(1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_meet_the_window_floor_and_name_the_build() {
        let o = TunnelOptions::new("ktx");
        assert!(o.stream_window >= 8 << 20);
        assert!(o.connection_window >= o.stream_window);
        assert!(o.keepalive_timeout > o.keepalive_interval);
        assert!(o.software.starts_with("ktx 0."));
    }

    #[test]
    fn out_of_range_frame_sizes_are_clamped_not_panicking() {
        let mut o = TunnelOptions::new("t");
        o.max_frame_size = 1;
        o.h2_server();
        o.max_frame_size = u32::MAX;
        o.h2_client();
        assert_eq!(o.frame_size(), FRAME_SIZE_RANGE.1);
    }

    #[test]
    fn tuning_flags_override_only_what_they_name() {
        let mut o = TunnelOptions::new("t");
        let before = o.clone();
        TuningArgs {
            max_frame_kib: Some(64),
            ..Default::default()
        }
        .apply(&mut o);
        assert_eq!(o.max_frame_size, 64 << 10);
        assert_eq!(o.stream_window, before.stream_window);
    }
}
