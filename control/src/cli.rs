//! The command line: one typed struct for the whole `ktx` invocation. Doc comments are the
//! `--help`. kt-connect's spellings (`--expose`, `--versionMark`, `--routerImage`,
//! `--shadowImage`) stay valid; kebab-case aliases are accepted too.
//!
//! Parsing only: nothing here talks to a cluster. Each command's module takes its args struct.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ktx_rules::OnUnavailable;

use crate::objects::pod_settings::{parse_key_value, parse_quota, PairKind, PodSettings, Quota};
use crate::plan::expose::Expose;
use crate::plan::target::Target;

pub mod ktconnect;

/// Image of the router Deployment unless `--routerImage` says otherwise.
pub const DEFAULT_ROUTER_IMAGE: &str = "ktx.local/ktx-router:dev";
/// Image of the shadow pod unless `--shadowImage` says otherwise.
pub const DEFAULT_SHADOW_IMAGE: &str = "ktx.local/ktx-shadow:dev";

const EXPOSE_HELP: &str = "\
Which Service ports reach your process: [LOCAL:]REMOTE, comma-separated or repeated.

REMOTE is the Service's `port` (the PORT(S) column of `kubectl get svc`, what clients dial), or \
that port's name; it is NOT the targetPort. LOCAL is the port your process listens on at \
127.0.0.1 (default: REMOTE).

How a request travels: a client dials Service port REMOTE; Kubernetes sends it to the Service's \
targetPort T on the pods the Service selects. ktx points the selector at its router (mesh) or \
your shadow pod (exchange), which listen on every targetPort T (named targetPorts included, \
resolved from the workload's containerPorts); the shadow sends the connection through the tunnel \
to 127.0.0.1:LOCAL.

Example: Service `orders` has port 80 → targetPort 8080, your process listens on 3001: \
--expose 3001:80";

/// ktx: run one service of a Kubernetes application on your machine while the rest stays in
/// the cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "ktx", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub profile: crate::config::command::ProfileArg,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Namespace to work in (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true, env = "KTX_NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(short = 'c', long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Image of the router Deployment.
    #[arg(long = "routerImage", alias = "router-image", global = true, env = "KTX_ROUTER_IMAGE", default_value = DEFAULT_ROUTER_IMAGE)]
    pub router_image: String,

    /// Image of the shadow pod (kt-connect's -i/--image).
    #[arg(short = 'i', long = "shadowImage", visible_alias = "image", alias = "shadow-image", global = true, env = "KTX_SHADOW_IMAGE", default_value = DEFAULT_SHADOW_IMAGE)]
    pub shadow_image: String,

    /// Always pull the router and shadow images (imagePullPolicy: Always), e.g. after pushing
    /// a new image under the same tag.
    #[arg(
        short = 'f',
        long = "forceUpdate",
        alias = "force-update",
        global = true,
        env = "KTX_FORCE_UPDATE"
    )]
    pub force_update: bool,

    /// Secret(s) to pull the router and shadow images with: set as imagePullSecrets on their
    /// pods and on the router's ServiceAccount (comma-separated or repeated).
    #[arg(long = "imagePullSecret", alias = "image-pull-secret", global = true, env = "KTX_IMAGE_PULL_SECRET", value_name = "NAME", value_delimiter = ',', value_parser = parse_object_name)]
    pub image_pull_secrets: Vec<String>,

    /// ServiceAccount of the shadow pods (default: the namespace's `default`). Its token is
    /// not mounted: the shadow never calls the API.
    #[arg(long = "serviceAccount", alias = "service-account", global = true, env = "KTX_SERVICE_ACCOUNT", value_name = "NAME", value_parser = parse_object_name)]
    pub service_account: Option<String>,

    /// Node labels the router and shadow pods must run on, e.g. disk=ssd,region=hangzhou.
    #[arg(long = "nodeSelector", alias = "node-selector", global = true, env = "KTX_NODE_SELECTOR", value_delimiter = ',', value_name = "KEY=VALUE", value_parser = |s: &str| parse_key_value(s, PairKind::Label))]
    pub node_selector: Vec<(String, String)>,

    /// Extra labels on the router and shadow pods, e.g. team=orders,owner=alice (ktx's own
    /// keys, ktx.dev/* and app.kubernetes.io/managed-by, are refused).
    #[arg(short = 'l', long = "withLabel", alias = "with-label", global = true, env = "KTX_WITH_LABEL", value_delimiter = ',', value_name = "KEY=VALUE", value_parser = |s: &str| parse_key_value(s, PairKind::Label))]
    pub with_label: Vec<(String, String)>,

    /// Extra annotations on the router and shadow pods, e.g. sidecar.istio.io/inject=false.
    #[arg(long = "withAnnotation", alias = "with-annotation", global = true, env = "KTX_WITH_ANNOTATION", value_delimiter = ',', value_name = "KEY=VALUE", value_parser = |s: &str| parse_key_value(s, PairKind::Annotation))]
    pub with_annotation: Vec<(String, String)>,

    /// CPU and memory of the router and shadow containers, as both request and limit, e.g.
    /// 0.5c,512m (c: CPUs; k, m, g: KiB, MiB, GiB). Default: ktx's own (shadow 20m/16Mi
    /// request, 1 CPU/256Mi limit; router 50m/32Mi, 1 CPU/256Mi).
    #[arg(long = "podQuota", alias = "pod-quota", global = true, env = "KTX_POD_QUOTA", value_name = "CPUc,MEMm", value_parser = parse_quota)]
    pub pod_quota: Option<Quota>,

    /// kt-connect's spelling of --timeout, in seconds (e.g. 60).
    #[arg(long = "podCreationTimeout", alias = "pod-creation-timeout", global = true, value_name = "SECONDS", conflicts_with = "timeout", value_parser = clap::value_parser!(u64).range(1..=ktx_telemetry::LONGEST_DURATION.as_secs()))]
    pub pod_creation_timeout: Option<u64>,

    /// kt-connect's spelling of --api-connect-timeout, in seconds (e.g. 10).
    #[arg(long = "portForwardTimeout", alias = "port-forward-timeout", global = true, value_name = "SECONDS", conflicts_with = "api_connect_timeout", value_parser = clap::value_parser!(u64).range(1..=ktx_telemetry::LONGEST_DURATION.as_secs()))]
    pub port_forward_timeout: Option<u64>,

    /// Accepted for kt-connect's scripts; has no effect: ktx judges Leases by when their
    /// renewTime changes as seen by the reader, so clocks need not agree.
    #[arg(long = "useLocalTime", alias = "use-local-time", global = true)]
    pub use_local_time: bool,

    /// Refused (kt-connect's): ktx's shadow is a bare Pod, see the README.
    #[arg(long = "useShadowDeployment", global = true, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = refuse(ktconnect::USE_SHADOW_DEPLOYMENT))]
    pub use_shadow_deployment: Option<bool>,

    /// Refused: kt-connect's internal flag.
    #[arg(long = "asWorker", global = true, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = refuse(ktconnect::AS_WORKER))]
    pub as_worker: Option<bool>,

    /// How long to wait for pods to become Ready (and other cluster steps) before giving up
    /// and rolling back, e.g. 90s, 2m.
    #[arg(long, global = true, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Do not say when nothing listens on a LOCAL port of --expose yet (mesh, exchange,
    /// preview; kt-connect's flag).
    #[arg(long = "skipPortChecking", alias = "skip-port-checking", global = true)]
    pub skip_port_checking: bool,

    /// Every API call gives up when the API server sends nothing for this long (the client's
    /// read and write timeout; a tunnel's keepalive pings keep its port-forward busy), e.g. 30s.
    #[arg(long = "api-timeout", global = true, env = "KTX_API_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Connecting to the API server gives up after this long.
    #[arg(long = "api-connect-timeout", global = true, env = "KTX_API_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub api_connect_timeout: Duration,

    /// More logs: -v for debug, -vv for trace. (kt-connect's -v (the version) is -V here.)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Debug logs, as -v (kt-connect's flag).
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,

    /// Output format of results.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl Global {
    /// kt-connect's pod knobs, checked, for the builders in [`crate::objects`].
    pub fn pod_settings(&self) -> PodSettings {
        PodSettings {
            always_pull: self.force_update,
            pull_secrets: self.image_pull_secrets.clone(),
            service_account: self.service_account.clone(),
            node_selector: self.node_selector.iter().cloned().collect(),
            labels: self.with_label.iter().cloned().collect(),
            annotations: self.with_annotation.iter().cloned().collect(),
            quota: self.pod_quota.clone().unwrap_or_default(),
        }
    }
}

impl Cli {
    /// Folds kt-connect's spellings into ktx's settings: `-d` is `-v`, `--podCreationTimeout`
    /// is `--timeout`, `--portForwardTimeout` is `--api-connect-timeout` (clap refuses a line
    /// that gives both). Idempotent.
    pub fn resolved(mut self) -> Self {
        let g = &mut self.global;
        if g.debug {
            g.verbose = g.verbose.max(1);
        }
        if let Some(s) = g.pod_creation_timeout {
            g.timeout = Duration::from_secs(s);
        }
        if let Some(s) = g.port_forward_timeout {
            g.api_connect_timeout = Duration::from_secs(s);
        }
        self
    }
}

/// The value parser of a kt-connect flag ktx refuses: `--flag` or `--flag=true` fails with
/// `reason`; `--flag=false` asks for nothing and passes.
fn refuse(
    reason: &'static str,
) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s {
        "false" => Ok(false),
        _ => Err(reason.to_string()),
    }
}

/// The name of an object in the namespace (a Secret, a ServiceAccount): a DNS subdomain.
fn parse_object_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an object name: lower-case letters, digits, '-' and '.'"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Requests that carry your mark (header `VERSION: VALUE`, or a richer rule) go to your
    /// process; all others keep reaching the original workload. Ctrl-C ends the session and
    /// restores the Service.
    Mesh(MeshArgs),
    /// All traffic of the Service goes to your process until Ctrl-C.
    Exchange(ExchangeArgs),
    /// Your process becomes a new Service NAME in the cluster until Ctrl-C.
    Preview(PreviewArgs),
    /// This machine reaches the cluster's Services and pods by name and address until Ctrl-C:
    /// `sudo ktx connect` (TUN device, routes, DNS), or without root `ktx connect --socks
    /// 127.0.0.1:1080` (SOCKS5 and HTTP proxy). TCP only: UDP other than DNS is not carried.
    Connect(ConnectArgs),
    /// A local port that reaches a Service's port through the API server (any Ready pod,
    /// re-picked when pods restart); no root, nothing created in the cluster. Prints the local
    /// address on stdout.
    Forward(ForwardArgs),
    /// Sessions in the namespace: who, which Service, which rule, since when, alive or
    /// expired, requests routed per rule.
    Status,
    /// Removes the objects of expired sessions and restores their Services. Never touches a
    /// live session.
    Clean(CleanArgs),
    /// Restores Service SERVICE from its saved selector and removes ktx's objects of it, even
    /// if sessions look alive (use when a Service is stuck).
    Recover(RecoverArgs),
    /// In-cluster mode (the Helm chart runs it): restores Services whose sessions all stopped
    /// renewing their Leases, within about 20 s, and removes their ktx objects. Replicas elect
    /// one leader; `/metrics` and `/healthz` on --metrics-addr.
    Janitor(JanitorArgs),
    /// Defaults for the global flags, set once: `ktx config set routerImage REG/ktx-router:TAG`.
    /// Keys are the global flags; `ktx config show` lists them and where each value comes from.
    Config(crate::config::command::ConfigArgs),
    /// Prints a shell completion script, e.g. `ktx completions bash > /etc/bash_completion.d/ktx`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `--expose`, shared by mesh, exchange and preview.
#[derive(Debug, Clone, Args)]
pub struct ExposeArgs {
    #[arg(long, required = true, value_delimiter = ',', value_name = "[LOCAL:]REMOTE", long_help = EXPOSE_HELP, help = "Service ports to your local ports: [LOCAL:]REMOTE,... (REMOTE is the Service's port, not its targetPort; see --help)")]
    pub expose: Vec<Expose>,
}

#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// The Service to mesh: NAME, svc/NAME, service/NAME, or deployment/NAME (deploy/NAME):
    /// the Service that selects that Deployment's pods.
    pub service: Target,
    #[command(flatten)]
    pub expose: ExposeArgs,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Router pods, when this session creates the router (later sessions reuse it as it is).
    /// Two keep the Service up while one is evicted or its node is drained; a
    /// PodDisruptionBudget lets only one go at a time, and they spread across nodes.
    #[arg(long = "router-replicas", env = "KTX_ROUTER_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub router_replicas: u16,
    /// `auto`: ktx's router splits the traffic. `manual` (kt-connect's Istio mode): only a
    /// shadow pod with the workload's labels plus `KEY: MARK` of --versionMark; no router, the
    /// Service untouched; ktx prints the Istio VirtualService and DestinationRule that send the
    /// mark to it.
    #[arg(long, value_enum, default_value_t = MeshMode::Auto)]
    pub mode: MeshMode,
    /// (--mode manual) Create the printed VirtualService and DestinationRule (owned by the
    /// session's Lease, deleted when the session ends) instead of only printing them. Needs
    /// Istio's CRDs in the cluster and the Role's rights on networking.istio.io.
    #[arg(long = "apply-istio", alias = "applyIstio")]
    pub apply_istio: bool,
    #[command(flatten)]
    pub workload: WorkloadEnvArgs,
}

/// The workload's environment for your process, and the process itself (mesh, exchange).
#[derive(Debug, Clone, Args)]
pub struct WorkloadEnvArgs {
    /// Write the environment of the workload's container (literal values and ConfigMap refs
    /// resolved, as in its pods) to PATH before the session starts: `KEY=value` lines,
    /// dotenv-quoted where needed, file mode 0600.
    #[arg(long = "env-file", value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Also take the variables that come from Secrets (needs `get` on those Secrets, which the
    /// developer Role does not grant: see the README's "The workload's environment").
    #[arg(long = "env-secrets")]
    pub env_secrets: bool,
    /// The workload container whose environment is taken, when its pods have several.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// After a stop request (Ctrl-C, SIGTERM) ktx sends CMD SIGTERM and waits this long for it
    /// to exit before killing it and tearing the session down.
    #[arg(long = "command-grace", env = "KTX_COMMAND_GRACE", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub command_grace: Duration,
    /// Runs CMD ARGS… (after `--`) once the session is up, with the workload's environment on
    /// top of yours; the session ends when CMD exits, and ktx exits with CMD's status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl WorkloadEnvArgs {
    /// Whether the workload's environment is needed at all.
    pub fn wanted(&self) -> bool {
        self.env_file.is_some() || !self.command.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MeshMode {
    /// ktx's router in front of the workload (default).
    Auto,
    /// A labelled shadow pod for a service mesh (Istio) to route to.
    Manual,
}

/// The conditions of this session's rule (all must hold) and what happens when it is down.
#[derive(Debug, Clone, Default, Args)]
pub struct RuleArgs {
    /// Requests with header KEY: VALUE reach you. KEY defaults to VERSION; VALUE is random
    /// when neither this nor another condition is given.
    #[arg(
        long = "versionMark",
        alias = "version-mark",
        value_name = "[KEY:]VALUE"
    )]
    pub version_mark: Option<String>,
    /// Header NAME must equal VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub header: Vec<String>,
    /// Header NAME must match the regular expression RE, anchored at both ends (repeatable).
    #[arg(long = "header-regex", value_name = "NAME=RE")]
    pub header_regex: Vec<String>,
    /// Header NAME must be present, any value (repeatable).
    #[arg(long = "header-present", value_name = "NAME")]
    pub header_present: Vec<String>,
    /// W3C `baggage` member KEY must equal VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub baggage: Vec<String>,
    /// Path must start with P.
    #[arg(long = "path-prefix", value_name = "P")]
    pub path_prefix: Option<String>,
    /// Method must be M (e.g. GET).
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// While your process or tunnel is down: `fallback` sends your requests to the original
    /// workload, `reject` answers 503 naming your session.
    #[arg(
        long = "on-unavailable",
        value_name = "fallback|reject",
        default_value = "fallback"
    )]
    pub on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExchangeMode {
    /// Point the Service's selector at your shadow pod (the workload keeps running).
    Selector,
    /// Also scale the workload to 0 while exchanged, and back afterwards.
    Scale,
}

#[derive(Debug, Clone, Args)]
pub struct ExchangeArgs {
    /// The Service to take over: NAME, svc/NAME, service/NAME, or deployment/NAME
    /// (deploy/NAME): the Service that selects that Deployment's pods.
    pub service: Target,
    #[command(flatten)]
    pub expose: ExposeArgs,
    /// How the original workload is taken out of the way: `selector` (the Service's selector
    /// points at your shadow pod; the workload keeps running) or `scale` (also scale the
    /// workload to 0 while exchanged). kt-connect's `ephemeral` is refused.
    #[arg(long, value_name = "selector|scale", default_value = "selector", value_parser = parse_exchange_mode)]
    pub mode: ExchangeMode,
    /// Accepted for kt-connect's scripts (scale mode): scaling back waits for the workload's
    /// pods to be Ready within --timeout before the Service is restored and the shadow goes.
    #[arg(
        long = "recoverWaitTime",
        alias = "recover-wait-time",
        value_name = "SECONDS"
    )]
    pub recover_wait_time: Option<u64>,
    #[command(flatten)]
    pub workload: WorkloadEnvArgs,
}

fn parse_exchange_mode(s: &str) -> Result<ExchangeMode, String> {
    match s {
        "selector" => Ok(ExchangeMode::Selector),
        "scale" => Ok(ExchangeMode::Scale),
        "ephemeral" => Err(ktconnect::EPHEMERAL.to_string()),
        _ => Err(format!("{s:?} is not a mode: use selector or scale")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// Name of the new Service.
    pub name: String,
    /// Ports of the new Service to your local ports: [LOCAL:]PORT,... (PORT becomes the
    /// Service's port).
    #[arg(
        long,
        required = true,
        value_delimiter = ',',
        value_name = "[LOCAL:]PORT"
    )]
    pub expose: Vec<Expose>,
    /// Also reachable from outside the cluster: `--external` makes the Service a LoadBalancer,
    /// `--external=nodeport` a NodePort (for clusters without load balancers); ktx prints the
    /// address.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "loadbalancer", value_name = "loadbalancer|nodeport")]
    pub external: Option<External>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum External {
    /// Service type LoadBalancer.
    #[value(name = "loadbalancer", alias = "lb")]
    LoadBalancer,
    /// Service type NodePort.
    #[value(name = "nodeport")]
    NodePort,
}

#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    /// Only say what would be removed and restored.
    #[arg(long = "dry-run", alias = "dryRun")]
    pub dry_run: bool,
    /// Where `ktx connect` keeps its backup of /etc/resolv.conf: a crashed `ktx connect`'s DNS
    /// settings are put back from there (only if the file is still exactly what ktx wrote).
    #[arg(
        long = "state-dir",
        env = "KTX_STATE_DIR",
        default_value = "/var/lib/ktx"
    )]
    pub state_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// No root: serve a SOCKS5 (with remote name resolution) and HTTP proxy (CONNECT and
    /// absolute-form requests) on this address instead of a TUN device, e.g. 127.0.0.1:1080.
    #[arg(long, value_name = "ADDR")]
    pub socks: Option<std::net::SocketAddr>,
    /// Ranges to route into the cluster (repeatable). Default: the /16 blocks of the
    /// namespace's ClusterIPs and pod IPs.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Vec<ktx_netstack::cidr::Cidr>,
    /// Ranges never routed into the cluster, carved out of the others (repeatable). The API
    /// server's address and 127.0.0.0/8 are never routed.
    #[arg(long = "exclude-cidr", value_name = "CIDR")]
    pub exclude_cidr: Vec<ktx_netstack::cidr::Cidr>,
    /// The TUN device's name.
    #[arg(long = "tun-name", default_value = "ktx0")]
    pub tun_name: String,
    /// The TUN device's own address (never a destination).
    #[arg(long = "tun-address", default_value = "198.18.77.1")]
    pub tun_address: std::net::Ipv4Addr,
    /// Where the DNS resolver for cluster names listens (UDP and TCP); /etc/resolv.conf points
    /// at it while ktx connect runs. Where systemd-resolved runs, the resolver listens on the
    /// TUN device's address instead and is set as that link's DNS (per-link, gone with it).
    #[arg(long, default_value = "127.0.0.153:53")]
    pub dns: std::net::SocketAddr,
    /// The cluster's DNS domain.
    #[arg(long = "cluster-domain", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where ktx keeps the backup of /etc/resolv.conf while it manages it (restored on exit, by
    /// the next `ktx connect`, or by `ktx clean` after a crash).
    #[arg(
        long = "state-dir",
        env = "KTX_STATE_DIR",
        default_value = "/var/lib/ktx"
    )]
    pub state_dir: std::path::PathBuf,
    /// TUN mode: TCP connections carried at once (dialing or open), 1 to 1,000,000; past it, a
    /// new one is refused (RST).
    #[arg(
        long = "max-flows",
        env = "KTX_CONNECT_MAX_FLOWS",
        default_value_t = 4096,
        value_parser = ktx_telemetry::usize_in(1..=1_000_000)
    )]
    pub max_flows: usize,
    /// TUN mode: connections being dialed through the tunnel at once (1 to 65536); past it, a
    /// new connection's SYN is dropped and the machine retries it.
    #[arg(
        long = "max-dialing",
        env = "KTX_CONNECT_MAX_DIALING",
        default_value_t = 256,
        value_parser = ktx_telemetry::usize_in(1..=65536)
    )]
    pub max_dialing: usize,
    /// TUN mode: each connection's receive and send buffer in bytes (a connection costs at most
    /// twice this): the most a client can have in flight to a destination that does not read.
    /// 1024 to 64 MiB.
    #[arg(long = "flow-buffer", env = "KTX_CONNECT_FLOW_BUFFER", default_value_t = 256 * 1024, value_parser = ktx_telemetry::usize_in(1024..=64 << 20))]
    pub flow_buffer: usize,
    /// TUN mode: a connection with no byte moving either way for this long is reset.
    #[arg(long = "flow-idle-timeout", env = "KTX_CONNECT_FLOW_IDLE", value_name = "DURATION", default_value = "60m", value_parser = ktx_telemetry::parse_duration_at_least::<1000>)]
    pub flow_idle: Duration,
    /// After a stop request (Ctrl-C, SIGTERM) ktx sends CMD SIGTERM and waits this long for it
    /// to exit before killing it and ending the session.
    #[arg(long = "command-grace", env = "KTX_COMMAND_GRACE", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub command_grace: Duration,
    /// Runs CMD ARGS… (after `--`) once connected, no root needed: the proxy on a free local
    /// port, and CMD with ALL_PROXY (socks5h://), HTTP_PROXY, HTTPS_PROXY and NO_PROXY set; the
    /// session ends when CMD exits, and ktx exits with CMD's status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// The Service to reach.
    pub service: String,
    /// [LOCAL:]REMOTE: REMOTE is the Service's port (number or name), LOCAL the port on this
    /// machine (default: the same number; 0: any free port).
    #[arg(value_name = "[LOCAL:]REMOTE")]
    pub port: Expose,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    /// The Service to restore.
    pub service: String,
}

#[derive(Debug, Clone, Args)]
pub struct JanitorArgs {
    /// Where to serve /metrics and /healthz.
    #[arg(long = "metrics-addr", default_value = "0.0.0.0:9090")]
    pub metrics_addr: std::net::SocketAddr,
    /// This replica's name in the leader-election Lease (the chart passes the pod name;
    /// default: user@host).
    #[arg(long, env = "KTX_JANITOR_IDENTITY")]
    pub identity: Option<String>,
    /// How often to look at the namespace's sessions (100ms to 5s: the leader renews its
    /// election Lease once per round).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// A session is dead once its Lease's renewTime has not changed, as seen by the janitor,
    /// for the Lease's duration plus this.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Close a client of /metrics or /healthz that has not sent a complete request head
    /// within this time.
    #[arg(long = "admin-header-timeout", env = "KTX_JANITOR_ADMIN_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub admin_header_timeout: Duration,
    /// Log format: `text` for people, `json` for a log collector.
    #[arg(
        long = "log-format",
        env = "KTX_JANITOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: ktx_telemetry::LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ktx=debug`.
    #[arg(long = "log-level", env = "KTX_JANITOR_LOG", default_value = "info")]
    pub log_level: String,
}

/// `--interval` of the janitor: a duration between 100 ms and 5 s.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(5) {
        return Err(format!(
            "{s} is out of range: use 100ms to 5s (the leader must renew its Lease well within 15 s)"
        ));
    }
    Ok(d)
}

/// `250ms`, `90s`, `2m`: the parser every ktx binary's duration flags share.
pub use ktx_telemetry::parse_duration;

#[cfg(test)]
mod tests;
