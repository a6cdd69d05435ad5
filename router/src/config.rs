//! The router's whole configuration: one typed struct, flags for humans and `KTX_ROUTER_*`
//! environment variables for the Deployment that ktx creates. Doc comments are the `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use ktx_telemetry::{parse_duration, LogFormat};

/// ktx-router: sends each request of a meshed Service to the original workload or to the
/// developer session whose rule it matches.
#[derive(Debug, Clone, Parser)]
#[command(name = "ktx-router", version, about, long_about = None)]
pub struct Config {
    /// Where to accept traffic: PORT (all interfaces) or ADDR:PORT. Repeat, or separate with
    /// commas, for a multi-port Service.
    #[arg(long = "listen", env = "KTX_ROUTER_LISTEN", value_delimiter = ',', required = true, value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,

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

    /// Worker threads; 0 means one per CPU.
    #[arg(long, env = "KTX_ROUTER_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Give up connecting to an upstream after this long (e.g. 2s, 500ms).
    #[arg(long, env = "KTX_ROUTER_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Close a client that has not sent a complete HTTP/1.1 request head within this time.
    #[arg(long, env = "KTX_ROUTER_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted (bytes); larger heads get 431.
    #[arg(long, env = "KTX_ROUTER_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Treat a client that sends nothing for this long as plain TCP (server-speaks-first).
    #[arg(long, env = "KTX_ROUTER_SNIFF_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub sniff_timeout: Duration,

    /// Free the buffers of a client keep-alive connection quiet this long after a response
    /// (the socket stays open; about 1 KB of memory remains per idle connection).
    #[arg(long, env = "KTX_ROUTER_IDLE_PARK_AFTER", default_value = "1s", value_parser = parse_duration)]
    pub idle_park_after: Duration,

    /// Close a client keep-alive connection that sends no request for this long.
    #[arg(long, env = "KTX_ROUTER_CLIENT_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub client_idle_timeout: Duration,

    /// Close pooled upstream connections idle for longer than this.
    #[arg(long, env = "KTX_ROUTER_UPSTREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// On SIGTERM, wait at most this long for in-flight requests before exiting.
    #[arg(long, env = "KTX_ROUTER_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// On SIGTERM, first keep serving (and accepting) this long while /readyz says not ready,
    /// so that nodes whose kube-proxy has not yet seen the Service change still reach a
    /// listening router; then drain.
    #[arg(long, env = "KTX_ROUTER_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// How often the routes file is checked for changes.
    #[arg(long, env = "KTX_ROUTER_RELOAD_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
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
}
