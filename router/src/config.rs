//! The router's whole configuration: one typed struct, flags for humans and `KTX_ROUTER_*`
//! environment variables for the Deployment that ktx creates. Doc comments are the `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use ktx_telemetry::{parse_duration, parse_duration_at_least, LogFormat};

/// HTTP/2's largest flow-control window (RFC 9113 §6.9.1).
pub const H2_MAX_WINDOW: i64 = (1 << 31) - 1;

/// ktx-router: sends each request of a meshed Service to the original workload or to the
/// developer session whose rule it matches.
#[derive(Debug, Clone, Parser)]
#[command(name = "ktx-router", version, about, long_about = None)]
pub struct Config {
    /// Where to accept traffic: PORT (all interfaces) or ADDR:PORT. Repeat, or separate with
    /// commas, for a multi-port Service.
    #[arg(long = "listen", env = "KTX_ROUTER_LISTEN", value_delimiter = ',', required = true, value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,

    /// New connections the kernel holds until the router accepts them (listen backlog; the
    /// kernel caps it at net.core.somaxconn). A burst beyond it has SYNs dropped, and those
    /// clients wait a second for the retransmit.
    #[arg(long, env = "KTX_ROUTER_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Admin address for /metrics, /healthz and /readyz.
    #[arg(long, env = "KTX_ROUTER_ADMIN", default_value = "0.0.0.0:9901")]
    pub admin: SocketAddr,

    /// Route table file (YAML or JSON), watched for changes. Use outside a cluster.
    #[arg(
        long,
        env = "KTX_ROUTER_ROUTES_FILE",
        conflicts_with = "routes_configmap"
    )]
    pub routes_file: Option<PathBuf>,

    /// Route table ConfigMap (key `routes.yaml`) in --namespace, watched through the API.
    #[arg(long, env = "KTX_ROUTER_ROUTES_CONFIGMAP")]
    pub routes_configmap: Option<String>,

    /// Namespace of the routes ConfigMap, the target Services and the session Leases.
    #[arg(long, env = "KTX_ROUTER_NAMESPACE")]
    pub namespace: Option<String>,

    /// Worker threads; 0 means one per CPU (at most 1024).
    #[arg(long, env = "KTX_ROUTER_THREADS", default_value_t = 0, value_parser = ktx_telemetry::threads_parser())]
    pub threads: usize,

    /// Give up connecting to an upstream after this long (e.g. 2s, 500ms).
    #[arg(long, env = "KTX_ROUTER_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration_at_least::<1>)]
    pub connect_timeout: Duration,

    /// Close a client that has not sent a complete HTTP/1.1 request head within this time.
    #[arg(long, env = "KTX_ROUTER_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted (bytes, 8192 to 16 MiB); larger heads get 431.
    #[arg(long, env = "KTX_ROUTER_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = ktx_telemetry::usize_in(8192..=16 << 20))]
    pub max_header_bytes: usize,

    /// Treat a client that sends nothing for this long as plain TCP (server-speaks-first).
    #[arg(long, env = "KTX_ROUTER_SNIFF_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub sniff_timeout: Duration,

    /// Listening ports that carry HTTP only (ktx lists the target ports of Service ports named
    /// or declared http, h2c or grpc). A client that sends nothing there is an HTTP client yet
    /// to send its request: it is closed after --header-read-timeout, never passed through as
    /// plain TCP at --sniff-timeout (each would open an upstream connection). Bytes that are
    /// not HTTP still pass through.
    #[arg(long, env = "KTX_ROUTER_HTTP_PORTS", value_delimiter = ',')]
    pub http_ports: Vec<u16>,

    /// Free the buffers of a client keep-alive connection quiet this long after a response (the
    /// socket stays open in the parking lot, with no task: a few hundred bytes remain per idle
    /// connection). It is parked between one and 1.25 times this after its last byte.
    #[arg(long, env = "KTX_ROUTER_IDLE_PARK_AFTER", default_value = "1s", value_parser = parse_duration)]
    pub idle_park_after: Duration,

    /// Close a client keep-alive connection that sends no request for this long.
    #[arg(long, env = "KTX_ROUTER_CLIENT_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub client_idle_timeout: Duration,

    /// Close pooled upstream connections idle for longer than this.
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Idle HTTP/1.1 connections kept per upstream address; one returned to a full pool is
    /// closed. Each keeps hyper's buffers (~20 KB), and those a burst of clients opened would
    /// otherwise stay until the idle timeout.
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_MAX_IDLE", default_value_t = 64)]
    pub upstream_max_idle: usize,

    /// Answer 504 when an upstream sends no response head within this long after the request
    /// (its body included) was handed to the upstream connection. 0s: off.
    #[arg(long, env = "KTX_ROUTER_RESPONSE_HEADER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub response_header_timeout: Duration,

    /// End a request or response body that moves no bytes for this long (a stalled client
    /// upload or upstream download); its stream is reset or its connection closed. 0s: off.
    #[arg(long, env = "KTX_ROUTER_BODY_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub body_idle_timeout: Duration,

    /// Close an h2c client connection with no bytes either way for this long (streams that
    /// keep moving are never cut). 0s: off.
    #[arg(long, env = "KTX_ROUTER_H2C_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub h2c_idle_timeout: Duration,

    /// Close a TCP passthrough or upgraded (WebSocket) connection with no bytes either way for
    /// this long. 0s: off.
    #[arg(long, env = "KTX_ROUTER_SPLICE_IDLE_TIMEOUT", default_value = "3600s", value_parser = parse_duration)]
    pub splice_idle_timeout: Duration,

    /// A client that sends nothing before --sniff-timeout is passed through (a server that
    /// speaks first); close it if the server does not speak within this long either.
    #[arg(long, env = "KTX_ROUTER_SILENT_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub silent_upstream_timeout: Duration,

    /// Upstream connects at a time for clients that sent nothing before --sniff-timeout (a
    /// flood of silent sockets reaches that timeout all at once); the others wait their turn
    /// within --silent-upstream-timeout, while other clients' requests keep being served.
    /// 1 to 65536.
    #[arg(long, env = "KTX_ROUTER_SILENT_CONNECTS", default_value_t = 4, value_parser = ktx_telemetry::usize_in(1..=65536))]
    pub silent_connects: usize,

    /// Open client connections at most (all ports, 1 to 1,000,000); further ones are closed at
    /// accept.
    #[arg(long, env = "KTX_ROUTER_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = ktx_telemetry::usize_in(1..=1_000_000))]
    pub max_connections: usize,

    /// Open client connections per source address at most; 0: no per-source limit (the
    /// default: behind an ingress or SNAT all clients share one address).
    #[arg(
        long,
        env = "KTX_ROUTER_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 0,
        value_parser = ktx_telemetry::usize_in(0..=1_000_000)
    )]
    pub max_connections_per_source: usize,

    /// Refuse new client connections while the router's resident memory is above this many
    /// bytes (set it below the pod's memory limit); 0: off.
    #[arg(long, env = "KTX_ROUTER_MAX_RSS", default_value_t = 200 * 1024 * 1024)]
    pub max_rss: u64,

    /// Concurrent streams per h2c client connection (SETTINGS_MAX_CONCURRENT_STREAMS), 1 to
    /// 65536.
    #[arg(
        long,
        env = "KTX_ROUTER_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=65536)
    )]
    pub h2_max_concurrent_streams: u32,

    /// HTTP/2 per-stream receive window (bytes), both toward clients and toward upstreams:
    /// the most one stalled stream makes the router buffer. 16384 (one frame) to 2147483647
    /// (HTTP/2's largest window).
    #[arg(long, env = "KTX_ROUTER_H2_STREAM_WINDOW", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(16384..=H2_MAX_WINDOW))]
    pub h2_stream_window: u32,

    /// HTTP/2 per-connection receive window (bytes), both sides: the most one connection
    /// makes the router buffer. 65535 (HTTP/2's initial window, which a connection's cannot go
    /// below) to 2147483647.
    #[arg(long, env = "KTX_ROUTER_H2_CONNECTION_WINDOW", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(65535..=H2_MAX_WINDOW))]
    pub h2_connection_window: u32,

    /// Streams carried by one upstream HTTP/2 connection (1 to 65536); more open another
    /// connection.
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_H2_STREAMS", default_value_t = 100, value_parser = ktx_telemetry::usize_in(1..=65536))]
    pub upstream_h2_streams: usize,

    /// Share upstream HTTP/2 connections among all clients instead of giving each client
    /// connection its own. Less CPU per request with many h2c clients (more frames per
    /// syscall), but one client that stops reading can then stall the others' streams on the
    /// same connection: off by default. --upstream-h2-connections then caps the connections
    /// per address for all clients together.
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_H2_SHARED", default_value_t = false)]
    pub upstream_h2_shared: bool,

    /// Streams without a request body (GETs) one client connection may have at a time on
    /// upstream HTTP/2 connections shared by every client; its other streams go on its own
    /// connections. Shared connections advertise a window of --upstream-h2-streams ×
    /// --h2-stream-window, so stalled streams never use up another client's window; a
    /// stalled client holds at most this many × --h2-stream-window there. 0 (the default):
    /// never share. A client's own connections run in its connection's task, which costs
    /// less CPU and latency than shared ones, but a new client connection's first request
    /// waits for its own upstream connection to open.
    #[arg(
        long,
        env = "KTX_ROUTER_UPSTREAM_H2_SHARED_STREAMS",
        default_value_t = 0,
        value_parser = ktx_telemetry::usize_in(0..=65536)
    )]
    pub upstream_h2_shared_streams: usize,

    /// Upstream HTTP/2 connections one client connection may open per address (1 to 1024).
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_H2_CONNECTIONS", default_value_t = 4, value_parser = ktx_telemetry::usize_in(1..=1024))]
    pub upstream_h2_connections: usize,

    /// How long a request waits for a free upstream HTTP/2 stream slot before 503 (gRPC:
    /// UNAVAILABLE).
    #[arg(long, env = "KTX_ROUTER_STREAM_SLOT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub stream_slot_timeout: Duration,

    /// An HTTP/1.1 connection to a session's shadow is reused only if it went idle less than
    /// this long ago. The shadow stands for a laptop that sleeps and a process that restarts: a quiet
    /// kept connection may lead into a frozen tunnel (the next request would hang, then fail)
    /// or to the original workload the shadow fell back to. Busy connections (load) are reused.
    #[arg(long, env = "KTX_ROUTER_SESSION_REUSE_IDLE", default_value = "100ms", value_parser = parse_duration)]
    pub session_reuse_idle: Duration,

    /// A connection to a session's shadow takes new requests for at most this long after it
    /// was opened, so a steady load reaches a restarted developer's process again within it.
    #[arg(long, env = "KTX_ROUTER_SESSION_REUSE_AGE", default_value = "1s", value_parser = parse_duration)]
    pub session_reuse_age: Duration,

    /// Close an admin-port client that has not sent a complete request head within this time.
    #[arg(long, env = "KTX_ROUTER_ADMIN_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub admin_header_timeout: Duration,

    /// On SIGTERM, wait at most this long for in-flight requests before exiting.
    #[arg(long, env = "KTX_ROUTER_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// On SIGTERM, first keep serving (and accepting) this long while /readyz says not ready,
    /// so that nodes whose kube-proxy has not yet seen the Service change still reach a
    /// listening router; then drain.
    #[arg(long, env = "KTX_ROUTER_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// How often the routes file is checked for changes.
    #[arg(long, env = "KTX_ROUTER_RELOAD_INTERVAL", default_value = "50ms", value_parser = parse_duration_at_least::<1>)]
    pub reload_interval: Duration,

    /// Refuse a route table larger than this many bytes (the last good table stays).
    #[arg(long, env = "KTX_ROUTER_MAX_TABLE_BYTES", default_value_t = ktx_rules::budget::DEFAULT_MAX_BYTES)]
    pub max_table_bytes: usize,

    /// Refuse a route table with more rules than this.
    #[arg(long, env = "KTX_ROUTER_MAX_RULES", default_value_t = ktx_rules::budget::DEFAULT_MAX_RULES)]
    pub max_rules: usize,

    /// Refuse a route table with more regex header conditions than this.
    #[arg(long, env = "KTX_ROUTER_MAX_REGEXES", default_value_t = ktx_rules::budget::DEFAULT_MAX_REGEXES)]
    pub max_regexes: usize,

    /// Refuse a regex whose compiled program is larger than this many bytes.
    #[arg(long, env = "KTX_ROUTER_REGEX_SIZE_LIMIT", default_value_t = ktx_rules::budget::DEFAULT_REGEX_SIZE)]
    pub regex_size_limit: usize,

    /// Bytes of lazy DFA cache each regex may use while matching.
    #[arg(long, env = "KTX_ROUTER_REGEX_DFA_SIZE_LIMIT", default_value_t = ktx_rules::budget::DEFAULT_REGEX_DFA_SIZE)]
    pub regex_dfa_size_limit: usize,

    /// Log format: `text` for people, `json` in a cluster.
    #[arg(long, env = "KTX_ROUTER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ktx_router=debug`.
    #[arg(long, env = "KTX_ROUTER_LOG", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// The route-table limits these flags set.
    pub fn table_budget(&self) -> ktx_rules::Budget {
        ktx_rules::Budget {
            max_bytes: self.max_table_bytes,
            max_rules: self.max_rules,
            max_regexes: self.max_regexes,
            regex_size: self.regex_size_limit,
            regex_dfa_size: self.regex_dfa_size_limit,
        }
    }
}

/// `8080` or `127.0.0.1:8080`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is neither a port nor an ADDR:PORT (e.g. 8080, 127.0.0.1:8080)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_durations() {
        assert_eq!(parse_listen("8080").unwrap().port(), 8080);
        assert_eq!(
            parse_listen("127.0.0.1:81").unwrap().to_string(),
            "127.0.0.1:81"
        );
        assert!(parse_listen("x").unwrap_err().contains("ADDR:PORT"));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn needs_a_route_source() {
        let c = Config::try_parse_from([
            "ktx-router",
            "--listen",
            "8080,9090",
            "--routes-file",
            "r.yaml",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(Config::try_parse_from(["ktx-router", "--routes-file", "r.yaml"]).is_err());
    }

    /// The router's parse of `flag value`: the error text, or None if it was taken.
    fn refusal(flag: &str, value: &str) -> Option<String> {
        let args = [
            "ktx-router",
            "--listen",
            "8080",
            "--routes-file",
            "r.yaml",
            flag,
            value,
        ];
        Config::try_parse_from(args).err().map(|e| e.to_string())
    }

    /// Asserts that each of `bad` is refused with an error naming `range`, and each of `good`
    /// taken.
    fn bounded(flag: &str, bad: &[&str], good: &[&str], range: &str) {
        for v in bad {
            let e = refusal(flag, v).unwrap_or_else(|| panic!("{flag} {v} was taken"));
            assert!(e.contains(flag) && e.contains(range), "{flag} {v}: {e}");
        }
        for v in good {
            assert_eq!(refusal(flag, v), None, "{flag} {v}");
        }
    }

    // Each case below was taken before these bounds and then failed as its comment says
    // (found by running the binary; helper review, 2026-12-07).

    #[test]
    fn counts_that_size_a_semaphore_or_a_product_past_its_limit_are_refused() {
        // Startup panic: a semaphore may not have more than MAX_PERMITS permits.
        bounded(
            "--silent-connects",
            &["0", "18446744073709551615"],
            &["1", "65536"],
            "1..=65536",
        );
        bounded(
            "--max-connections",
            &["0", "18446744073709551615"],
            &["1", "1000000"],
            "1..=1000000",
        );
        bounded(
            "--max-connections-per-source",
            &["18446744073709551615"],
            &["0"],
            "0..=1000000",
        );
        // Every h2c request panicked: streams × connections overflowed (h2_pool.rs), or a
        // client connection's semaphore went past MAX_PERMITS (shared streams).
        bounded(
            "--upstream-h2-streams",
            &["0", "4611686018427387904"],
            &["1", "65536"],
            "1..=65536",
        );
        bounded(
            "--upstream-h2-connections",
            &["0", "18446744073709551615"],
            &["1", "1024"],
            "1..=1024",
        );
        bounded(
            "--upstream-h2-shared-streams",
            &["18446744073709551615"],
            &["0", "65536"],
            "0..=65536",
        );
    }

    #[test]
    fn h2_windows_and_stream_counts_outside_what_http2_allows_are_refused() {
        // 4294967295: a startup panic (clamp with min > max) for the connection window; an
        // invalid SETTINGS frame, so every h2c request failed, for the stream window. 0: h2c
        // answers whose body never came (stream), or stalled after 65,535 bytes (connection).
        bounded(
            "--h2-stream-window",
            &["0", "16383", "2147483648", "4294967295"],
            &["16384", "2147483647"],
            "16384..=2147483647",
        );
        bounded(
            "--h2-connection-window",
            &["0", "65534", "4294967295"],
            &["65535", "2147483647"],
            "65535..=2147483647",
        );
        // 0: every h2c request refused.
        bounded(
            "--h2-max-concurrent-streams",
            &["0", "65537"],
            &["1", "65536"],
            "1..=65536",
        );
    }

    #[test]
    fn a_head_limit_the_two_protocols_would_read_differently_is_refused() {
        // 4294967296 was cut to 0 for h2c (every request failed) while HTTP/1.1 raised
        // anything below 8192 to 8192.
        bounded(
            "--max-header-bytes",
            &["0", "8191", "4294967296"],
            &["8192", "16777216"],
            "8192..=16777216",
        );
    }

    #[test]
    fn intervals_that_would_spin_or_never_run_are_refused() {
        // --reload-interval 0s: tokio's interval panicked in the routes task, and the table
        // never loaded (503 for every request, never ready). --connect-timeout 0s: every
        // HTTP/1.1 request got 504 while h2c worked.
        for flag in ["--reload-interval", "--connect-timeout"] {
            bounded(flag, &["0s", "0ms"], &["1ms"], "shorter than 1ms");
        }
    }

    #[test]
    fn more_threads_than_a_runtime_can_start_are_refused() {
        // 18446744073709551615: tokio's builder overflowed; 100000: the OS refused the
        // threads and the process aborted.
        bounded(
            "--threads",
            &["1025", "100000", "18446744073709551615"],
            &["0", "1024"],
            "0..=1024",
        );
    }
}
