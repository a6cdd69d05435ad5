//! The shadow's whole configuration: one typed struct, flags for humans and `KTX_SHADOW_*`
//! environment variables for the pod spec that ktx writes. Doc comments are the `--help`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use ktx_telemetry::{parse_duration, LogFormat};

/// Port the shadow accepts the tunnel on, unless told otherwise.
pub const DEFAULT_TUNNEL_PORT: u16 = 7766;

/// What this pod is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A shadow of `ktx mesh` / `ktx exchange`: connections to --ports go to the developer.
    Mesh,
    /// A connect pod of `ktx connect`: ktx opens streams, this pod dials their destinations.
    Connect,
}

/// ktx-shadow: stands in for a developer's process inside the cluster. Every connection to one
/// of its ports is carried through the ktx tunnel to the developer's machine. In connect mode it
/// is the other way round: ktx opens streams and the pod connects each to its destination.
#[derive(Debug, Clone, Parser)]
#[command(name = "ktx-shadow", version, about, long_about = None)]
pub struct Config {
    /// `mesh`: listen on --ports and carry their connections to ktx. `connect`: dial in the
    /// cluster for `ktx connect` (no --ports; refuses its own loopback and link-local).
    #[arg(long, env = "KTX_SHADOW_MODE", value_enum, default_value = "mesh")]
    pub mode: Mode,

    /// Service target ports to listen on, comma separated (e.g. 8080,9090). Required in mesh
    /// mode, refused in connect mode.
    #[arg(long, env = "KTX_SHADOW_PORTS", value_delimiter = ',')]
    pub ports: Vec<u16>,

    /// Connect mode: give up connecting to a destination after this long (ktx is told `504`).
    #[arg(long, env = "KTX_SHADOW_DIAL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Address the service ports listen on.
    #[arg(long, env = "KTX_SHADOW_LISTEN_ADDR", default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,

    /// Address the tunnel port listens on. The API server's port-forward reaches the pod's
    /// loopback, so nothing else needs it: listening wider would let any pod of the cluster hold
    /// the handshake slots and block ktx's reconnects.
    #[arg(long, env = "KTX_SHADOW_TUNNEL_ADDR", default_value = "127.0.0.1")]
    pub tunnel_addr: IpAddr,

    /// Port for the tunnel from ktx (reached through the API server's port-forward).
    #[arg(long, env = "KTX_SHADOW_TUNNEL_PORT", default_value_t = DEFAULT_TUNNEL_PORT)]
    pub tunnel_port: u16,

    /// Admin address for /healthz, /readyz (200 only while a tunnel is up) and /metrics.
    #[arg(long, env = "KTX_SHADOW_ADMIN", default_value = "0.0.0.0:9902")]
    pub admin: SocketAddr,

    /// Close an admin-port client that has not sent a complete request head within this time.
    #[arg(long, env = "KTX_SHADOW_ADMIN_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub admin_header_timeout: Duration,

    /// Directory holding tls.crt, tls.key (this shadow's) and peer.crt (ktx's, pinned): the
    /// session's Secret, mounted.
    #[arg(long, env = "KTX_SHADOW_TLS_DIR", default_value = "/var/run/ktx")]
    pub tls_dir: PathBuf,

    /// How often to ping ktx through the tunnel.
    #[arg(long, env = "KTX_SHADOW_KEEPALIVE_INTERVAL", default_value = "500ms", value_parser = ktx_telemetry::parse_duration_at_least::<100>)]
    pub keepalive_interval: Duration,

    /// Drop the tunnel (close the service ports, turn not-ready) when a ping is unanswered this
    /// long: a laptop that froze or slept, or a paused API server. Short, so the router sends
    /// marked requests back to their policy's target within seconds; ktx reconnects by itself.
    #[arg(long, env = "KTX_SHADOW_KEEPALIVE_TIMEOUT", default_value = "2s", value_parser = ktx_telemetry::parse_duration_at_least::<100>)]
    pub keepalive_timeout: Duration,

    /// A tunnel connection must finish TLS and the version handshake within this.
    #[arg(long, env = "KTX_SHADOW_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// How long ktx may take to take a new connection (it answers once the developer's process
    /// accepted it). Later, the connection is "not taken" and `--on-unavailable` applies: a
    /// frozen laptop or a paused API server costs a marked request at most this long.
    #[arg(long, env = "KTX_SHADOW_ANSWER_TIMEOUT", default_value = "1500ms", value_parser = parse_duration)]
    pub answer_timeout: Duration,

    /// What to do with a connection ktx did not take (nothing listens on the developer's port,
    /// no answer within --answer-timeout, tunnel lost before the answer); the developer's process
    /// saw none of it. `fallback`: send it to --fallback (the original workload); `reject`: answer
    /// HTTP/1.1 or HTTP/2 with a 503 naming --session (reset anything else); `reset`: reset it.
    #[arg(long, env = "KTX_SHADOW_ON_UNAVAILABLE", default_value = "reset")]
    pub on_unavailable: String,

    /// Where `fallback` sends connections, per service port: PORT=IP:PORT, or *=IP:PORT for every
    /// other port; comma separated.
    #[arg(long, env = "KTX_SHADOW_FALLBACK", value_delimiter = ',')]
    pub fallback: Vec<crate::unavailable::FallbackRoute>,

    /// The session this shadow serves (named in `reject` answers).
    #[arg(long, env = "KTX_SHADOW_SESSION", default_value = "")]
    pub session: String,

    /// On SIGTERM, let open connections finish for at most this long.
    #[arg(long, env = "KTX_SHADOW_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub tuning: ktx_tunnel::options::TuningArgs,

    /// Worker threads; 0 means one per CPU (at most 1024).
    #[arg(long, env = "KTX_SHADOW_THREADS", default_value_t = 0, value_parser = ktx_telemetry::threads_parser())]
    pub threads: usize,

    /// Log format: `text` for people, `json` in a cluster.
    #[arg(long, env = "KTX_SHADOW_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ktx_shadow=debug`.
    #[arg(long, env = "KTX_SHADOW_LOG", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// What the flags cannot say alone: mesh mode needs ports, connect mode has none.
    pub fn check(&self) -> Result<(), String> {
        match (self.mode, self.ports.is_empty()) {
            (Mode::Mesh, true) => Err("--ports (KTX_SHADOW_PORTS) is required in mesh mode".into()),
            (Mode::Connect, false) => {
                Err("connect mode listens on no service ports: drop --ports".into())
            }
            _ => Ok(()),
        }
    }

    /// The policy for connections ktx did not take, from `--on-unavailable` and `--fallback`.
    pub fn policy(&self) -> Result<crate::unavailable::Policy, String> {
        crate::unavailable::Policy::from_flags(&self.on_unavailable, &self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let c = Config::try_parse_from(args).map_err(|e| e.to_string())?;
        c.check().map(|()| c)
    }

    #[test]
    fn ports_and_defaults() {
        let c = Config::try_parse_from(["ktx-shadow", "--ports", "8080,9090"]).unwrap();
        assert_eq!(c.ports, [8080, 9090]);
        assert_eq!(c.tunnel_port, DEFAULT_TUNNEL_PORT);
        assert!(c.tunnel_addr.is_loopback());
        assert_eq!(c.tls_dir, PathBuf::from("/var/run/ktx"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(parse(&["ktx-shadow"]).is_err());
        assert!(parse(&["ktx-shadow", "--ports", "x"]).is_err());
        assert_eq!(c.mode, Mode::Mesh);
    }

    #[test]
    fn connect_mode_needs_no_ports_and_mesh_mode_refuses_none() {
        let c = parse(&["ktx-shadow", "--mode", "connect"]).unwrap();
        assert_eq!((c.mode, c.ports.len()), (Mode::Connect, 0));
        assert_eq!(c.dial_timeout, Duration::from_secs(10));
        assert!(parse(&["ktx-shadow", "--mode", "mesh"]).is_err());
        assert!(parse(&["ktx-shadow", "--mode", "connect", "--ports", "80"]).is_err());
        assert!(parse(&["ktx-shadow", "--mode", "other"]).is_err());
    }

    /// The shadow's parse with `extra` after a mesh port: the error, or None if taken.
    fn refusal(extra: &[&str]) -> Option<String> {
        let args = ["ktx-shadow", "--ports", "8080"]
            .into_iter()
            .chain(extra.iter().copied());
        Config::try_parse_from(args).err().map(|e| e.to_string())
    }

    /// Each was taken before (helper review, 2026-12-07): a keepalive interval of 0s pinged
    /// as fast as pongs came back (an idle shadow spent ~11% of a core); a timeout of 0s
    /// dropped the tunnel every second; window 0 hung every forwarded connection while
    /// /readyz said ready; --threads past 1024 panicked. (`--ports 0`, an OS-chosen port, is
    /// what the tests use.)
    #[test]
    fn values_that_spin_hang_or_crash_the_shadow_are_refused() {
        for (flag, bad, good, says) in [
            ("--keepalive-interval", "0s", "100ms", "shorter than 100ms"),
            (
                "--keepalive-interval",
                "99ms",
                "100ms",
                "shorter than 100ms",
            ),
            ("--keepalive-timeout", "0s", "100ms", "shorter than 100ms"),
            ("--stream-window-kib", "0", "64", "64.."),
            ("--connection-window-kib", "63", "64", "64.."),
            ("--threads", "1025", "1024", "0..=1024"),
        ] {
            let e = refusal(&[flag, bad]).unwrap_or_else(|| panic!("{flag} {bad} was taken"));
            assert!(e.contains(flag) && e.contains(says), "{flag} {bad}: {e}");
            assert_eq!(refusal(&[flag, good]), None, "{flag} {good}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2").is_err());
    }
}
