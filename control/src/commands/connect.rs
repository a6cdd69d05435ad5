//! `ktx connect`: this machine reaches the cluster's Services and pods, by IP and by name, until
//! Ctrl-C (the other direction from `mesh`).
//!
//! Order: expired connect sessions of the namespace cleaned → session Lease → connect pod (the
//! shadow image in `--mode connect`) and its Secret, owned by the Lease → the tunnel to it
//! (protocol 2, purpose connect: this machine opens one stream per TCP flow, the pod dials the
//! destination) → the names (Services and Endpoints watched) → the front end:
//!
//! - `--socks ADDR` (no root): a SOCKS5 + HTTP proxy on ADDR that resolves cluster names itself;
//! - `-- CMD ARGS…` (no root): that proxy on a free loopback port, and CMD run with ALL_PROXY,
//!   HTTP(S)_PROXY and NO_PROXY pointing at it; the session ends when CMD exits;
//! - otherwise (root): a TUN device with routes for the cluster's ranges, a userspace TCP/IP
//!   stack carrying every TCP flow through the tunnel, and a DNS resolver for cluster names,
//!   installed for the machine (systemd-resolved's per-link DNS where it runs, else a managed
//!   `/etc/resolv.conf` that this command, the next one or `ktx clean` puts back after a crash).
//!
//! UDP other than DNS is not carried. Everything on this machine is undone before the cluster
//! objects (the undo stack: local front end → tunnel → pod → Lease); the TUN device and its
//! routes disappear with the process even after `kill -9`.

mod cluster_names;
mod ranges;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use ktx_names::{mode, ServiceNames, CONNECT_GROUP};
use ktx_netstack::cidr::Cidr;
use ktx_netstack::dial::{Dial, DialError};
use ktx_netstack::names::NameTable;
use ktx_tunnel::connect::client::{ConnectHandle, OpenError};
use ktx_tunnel::connect::stream::ConnectStream;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::ConnectArgs;
use crate::error::{Error, Result};
use crate::lifecycle::command::LocalCommand;
use crate::lifecycle::flow::{self, Ctx, Ready};
use crate::lifecycle::link;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::steps;
use crate::lifecycle::undo::{LocalStop, Step, Undo};
use crate::objects::lease::LeaseParams;
use crate::objects::shadow::{NotTaken, ShadowParams};

/// `ktx connect`.
pub async fn run(ctx: &Ctx, args: &ConnectArgs, shutdown: &Shutdown) -> Result<()> {
    let front = Front::check(args).await?;
    // `-- CMD`: the proxy's address is known before the session starts, so CMD's environment is.
    let command = match (&front, args.command.is_empty()) {
        (Front::Proxy(listener), false) => {
            let addr = listener
                .local_addr()
                .map_err(|e| Error::Unsupported(format!("the proxy's address: {e}")))?;
            Some(LocalCommand {
                argv: args.command.clone(),
                env: proxy_env(addr),
                grace: args.command_grace,
            })
        }
        _ => None,
    };
    let names = ServiceNames::new(CONNECT_GROUP);
    let session = crate::plan::rule::random_id();
    let undo = Undo::new();
    let setup = setup(ctx, &names, &session, args, front, &undo);
    flow::session_with(ctx, shutdown, &undo, setup, command).await
}

/// The variables that send a program's connections through the proxy at `addr`: `socks5h`
/// (names resolved by the proxy, so cluster names work) for what honours ALL_PROXY, HTTP
/// proxying for the rest; loopback stays direct.
pub fn proxy_env(addr: SocketAddr) -> Vec<(String, String)> {
    let (socks, http) = (format!("socks5h://{addr}"), format!("http://{addr}"));
    let no = "localhost,127.0.0.1,::1".to_string();
    [
        ("ALL_PROXY", &socks),
        ("all_proxy", &socks),
        ("HTTP_PROXY", &http),
        ("http_proxy", &http),
        ("HTTPS_PROXY", &http),
        ("https_proxy", &http),
        ("NO_PROXY", &no),
        ("no_proxy", &no),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// What this machine gets: a proxy (its listener bound before the session starts), or the TUN
/// device with routes and DNS.
#[derive(Debug)]
enum Front {
    Proxy(TcpListener),
    Tun,
}

impl Front {
    /// Chosen from the flags, and checked before anything is created in the cluster.
    async fn check(args: &ConnectArgs) -> Result<Front> {
        let listen = match (args.socks, args.command.is_empty()) {
            (Some(addr), _) => Some(addr),
            (None, false) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            (None, true) => None,
        };
        if let Some(addr) = listen {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                Error::Unsupported(format!(
                    "cannot listen on {addr} for the proxy: {e}; choose another address (--socks)"
                ))
            })?;
            return Ok(Front::Proxy(listener));
        }
        // SAFETY-free check of the effective user: root (or CAP_NET_ADMIN) is needed for the
        // TUN device and the routes; say so before touching the cluster.
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
            })
            .unwrap_or(false);
        if !root {
            return Err(Error::Unsupported(
                "ktx connect without --socks needs root for its TUN device, routes and DNS (sudo ktx connect); without root use `ktx connect --socks 127.0.0.1:1080` (SOCKS5 and HTTP proxy), or `ktx forward SERVICE PORT` for one Service".into(),
            ));
        }
        Ok(Front::Tun)
    }
}

/// The tunnel to the connect pod, as the netstack's dialer.
struct TunnelDial(ConnectHandle);

impl Dial for TunnelDial {
    type Stream = ConnectStream;

    async fn dial(&self, dst: SocketAddr) -> std::result::Result<ConnectStream, DialError> {
        self.0.open(dst).await.map_err(|e| match e {
            OpenError::Refused { dest, .. } => DialError::Refused { dst: dest },
            OpenError::Unreachable { dest, reason } | OpenError::Timeout { dest, reason } => {
                DialError::Unreachable { dst: dest, reason }
            }
            OpenError::Forbidden { dest, reason } | OpenError::BadRequest { dest, reason } => {
                DialError::Forbidden { dst: dest, reason }
            }
            OpenError::TunnelDown(reason) => DialError::Down { reason },
        })
    }
}

async fn setup(
    ctx: &Ctx,
    names: &ServiceNames,
    session: &str,
    args: &ConnectArgs,
    front: Front,
    undo: &Undo,
) -> Result<Ready> {
    let kube = &ctx.kube;
    let ns = kube.namespace.clone();
    crate::lifecycle::expired::sweep(ctx, names).await;
    let name = names.connect(session);
    let lease = steps::session_lease(
        ctx,
        undo,
        names,
        &LeaseParams {
            name: &name,
            session,
            holder: &ctx.holder,
            mode: mode::CONNECT,
            rule: "connect",
        },
    )
    .await?;
    let pod = ctx.global.pod_settings();
    let sp = ShadowParams {
        name: &name,
        namespace: &ns,
        service: CONNECT_GROUP,
        session,
        mode: mode::CONNECT,
        image: &ctx.global.shadow_image,
        targets: &[],
        exposed: &[],
        not_taken: NotTaken::Reject,
        pod: &pod,
    };
    let creds = flow::create_shadow(ctx, undo, &sp, &lease.owner, false).await?;
    let (link, handle) = link::open_connect(
        kube,
        &name,
        sp.tunnel_port(),
        &creds,
        ctx.global.timeout,
        &ctx.progress,
    )
    .await?;
    let tunnel = link.status();
    undo.push(Step::CloseTunnel(link));
    ctx.progress
        .done("Tunnel to the connect pod is up (TLS 1.3, pinned certificates)");
    flow::wait_shadow_ready(ctx, &name).await?;

    // The names, before the front end: the first lookup must find them.
    let table = NameTable::new(&args.cluster_domain, &ns);
    let (first, mut first_rx) = tokio::sync::watch::channel(false);
    let watched = {
        let table = table.clone();
        let watched_ns = ns.clone();
        tokio::spawn(cluster_names::watch(
            kube.clone(),
            Duration::from_millis(50),
            ctx.global
                .api_timeout
                .saturating_sub(Duration::from_secs(5)),
            move |entries| {
                cluster_names::publish(&table, &watched_ns, entries);
                first.send_replace(true);
            },
        ))
    };
    let watched_abort = watched.abort_handle();
    undo.push(Step::StopLocal(LocalStop::abort(
        "watching Services and Endpoints",
        watched_abort,
    )));
    tokio::time::timeout(ctx.global.timeout, first_rx.wait_for(|f| *f))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("the list of Services and Endpoints of namespace {ns}"),
            waited: ctx.global.timeout,
            last: "no answer to the watch".into(),
        })?
        .map_err(|_| Error::Tunnel("the Service watch ended".into()))?;
    let dial = Arc::new(TunnelDial(handle));

    let mut lost = lease.lost.clone();
    let (text, json) = match front {
        Front::Proxy(listener) => {
            let local = listener
                .local_addr()
                .map_err(|e| Error::Tunnel(e.to_string()))?;
            let served = tokio::spawn(ktx_netstack::proxy::serve(
                listener,
                dial,
                table,
                ktx_netstack::proxy::ProxyConfig::default(),
            ));
            let abort = served.abort_handle();
            undo.push(Step::StopLocal(LocalStop::abort(
                format!("the proxy on {local}"),
                abort,
            )));
            ctx.progress
                .done(format!("SOCKS5 and HTTP proxy on {local}"));
            (
                vec![
                    format!("Cluster names and addresses of namespace {ns} through the proxy on {local}, e.g.:"),
                    format!("  curl --socks5-hostname {local} http://SERVICE.{ns}/"),
                    format!("  ALL_PROXY=socks5h://{local} HTTP_PROXY=http://{local} YOUR-COMMAND"),
                ],
                serde_json::json!({
                    "command": "connect",
                    "namespace": ns,
                    "session": session,
                    "pod": name,
                    "proxy": local.to_string(),
                }),
            )
        }
        Front::Tun => {
            let routes = tun_routes(ctx, args).await?;
            let stopped = lost_or(undo, &mut lost);
            start_tun(ctx, args, undo, dial, table, &routes, stopped).await?;
            (
                vec![format!(
                    "This machine reaches namespace {ns}'s Services and pods by name and address (routes {})",
                    routes.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
                )],
                serde_json::json!({
                    "command": "connect",
                    "namespace": ns,
                    "session": session,
                    "pod": name,
                    "routes": routes.iter().map(Cidr::to_string).collect::<Vec<_>>(),
                }),
            )
        }
    };
    Ok(Ready {
        text,
        json,
        lost,
        tunnel,
        local: Default::default(),
    })
}

/// Makes `lost` (the session's "lost, and why") also say when the returned sender does: a part
/// of the session that stops on its own (the TUN device's TCP/IP stack, when the device goes)
/// ends the session instead of leaving the machine with routes and names that lead nowhere.
fn lost_or(
    undo: &Undo,
    lost: &mut watch::Receiver<Option<String>>,
) -> watch::Sender<Option<String>> {
    let (tx, rx) = watch::channel(lost.borrow().clone());
    let from = std::mem::replace(lost, rx);
    let to = tx.clone();
    let forwarded = tokio::spawn(pass_on_lost(from, to));
    undo.push(Step::StopLocal(LocalStop::abort(
        "passing on the session's Lease state",
        forwarded.abort_handle(),
    )));
    tx
}

/// Passes the first reason `from` gives on to `to`, and stops: the keeper drops its sender
/// right after sending, and that drop must not overwrite the reason. A keeper gone without
/// one is a reason too, unless another part of the session has given one already.
async fn pass_on_lost(
    mut from: watch::Receiver<Option<String>>,
    to: watch::Sender<Option<String>>,
) {
    loop {
        if from.changed().await.is_err() {
            to.send_if_modified(|v| {
                v.is_none() && {
                    *v = Some("the Lease keeper stopped".into());
                    true
                }
            });
            return;
        }
        let why = from.borrow_and_update().clone();
        if why.is_some() {
            to.send_replace(why);
            return;
        }
    }
}

/// The ranges to route: `--cidr`, or the blocks of the namespace's ClusterIPs and pod IPs.
async fn tun_routes(ctx: &Ctx, args: &ConnectArgs) -> Result<Vec<Cidr>> {
    if !args.cidr.is_empty() {
        return Ok(args.cidr.clone());
    }
    let kube = &ctx.kube;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for s in kube.list::<Service>("").await? {
        let spec = s.spec.unwrap_or_default();
        addrs.extend(
            spec.cluster_ips
                .unwrap_or_default()
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok()),
        );
        addrs.extend(spec.cluster_ip.and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    addrs.extend(ranges::pod_addrs(kube.list::<Pod>("").await?));
    let blocks = ranges::blocks(addrs);
    if blocks.is_empty() {
        return Err(Error::Unsupported(format!(
            "namespace {} has no Service or pod address to find the cluster's ranges from; give them with --cidr (e.g. --cidr 10.96.0.0/12 --cidr 10.244.0.0/16)",
            kube.namespace
        )));
    }
    blocks
        .into_iter()
        .map(|(a, p)| Cidr::new(a, p).map_err(|e| Error::Unsupported(e.to_string())))
        .collect()
}

/// Opens the TUN device (routes with it), serves its flows, starts the resolver and installs
/// it for the machine; each on `undo` before it acts.
async fn start_tun(
    ctx: &Ctx,
    args: &ConnectArgs,
    undo: &Undo,
    dial: Arc<TunnelDial>,
    table: NameTable,
    routes: &[Cidr],
    stopped: watch::Sender<Option<String>>,
) -> Result<()> {
    let ns = ctx.kube.namespace.clone();
    let never = api_server_addrs(ctx).await;
    let config = ktx_netstack::tun_device::TunConfig {
        name: args.tun_name.clone(),
        mtu: 1500,
        address: args.tun_address,
        include: routes.to_vec(),
        exclude: args.exclude_cidr.clone(),
        never_route: never,
    };
    let device = ktx_netstack::tun_device::open(&config)
        .await
        .map_err(|e| Error::Unsupported(format!("TUN device {}: {e}", args.tun_name)))?;
    let flow_config = ktx_netstack::flows::FlowConfig {
        max_flows: args.max_flows,
        max_dialing: args.max_dialing,
        idle: args.flow_idle,
        buffer: args.flow_buffer,
    };
    let tun_name = args.tun_name.clone();
    let served = tokio::spawn(async move {
        let why = match ktx_netstack::flows::serve(device, dial, flow_config).await {
            Ok(()) => String::new(),
            Err(e) => format!(": {e}"),
        };
        tracing::warn!(device = %tun_name, "the TCP/IP stack stopped{why}");
        stopped.send_replace(Some(format!(
            "TUN device {tun_name} stopped working{why}; its routes and names would lead nowhere"
        )));
    });
    let abort = served.abort_handle();
    undo.push(Step::StopLocal(LocalStop::abort(
        format!("TUN device {} and its routes", args.tun_name),
        abort,
    )));
    ctx.progress.done(format!(
        "TUN device {} up with routes for the cluster's ranges",
        args.tun_name
    ));

    let domain = args.cluster_domain.trim_matches('.').to_string();
    let search = vec![
        format!("{ns}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.clone(),
    ];
    let (listen, upstreams, installed_in) = if ktx_netstack::resolved::is_running() {
        // systemd-resolved: per-link DNS on the TUN device (gone with the device after a
        // crash). The resolver listens on the device's own address, where resolved reaches
        // it; its upstreams are resolved's real ones, never the 127.0.0.53 stub (a forwarded
        // `x.NS` would come straight back). Not exercised on the test machine (no resolved).
        let listen = SocketAddr::new(IpAddr::V4(args.tun_address), 53);
        let real = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
        let upstreams = ktx_netstack::resolv_conf::parse(&real)
            .nameservers
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect::<Vec<_>>();
        let link = args.tun_name.clone();
        undo.push(Step::StopLocal(LocalStop {
            what: format!("the DNS settings of link {link} (systemd-resolved)"),
            stop: Box::new(move || {
                Box::pin(async move {
                    if let Err(e) = ktx_netstack::resolved::revert(&link).await {
                        tracing::warn!(error = %e, "reverting the link's DNS");
                    }
                })
            }),
        }));
        ktx_netstack::resolved::install(
            &args.tun_name,
            listen.ip(),
            &search,
            &[domain.clone(), ns.clone()],
        )
        .await
        .map_err(|e| Error::Unsupported(format!("DNS through systemd-resolved: {e}")))?;
        (
            listen,
            upstreams,
            format!("systemd-resolved, link {}", args.tun_name),
        )
    } else {
        // A managed /etc/resolv.conf: the previous resolvers become the upstreams; the file is
        // restored on exit (and by the next `ktx connect` / `ktx clean` after a crash).
        let paths = ktx_netstack::resolv_conf::ResolvPaths {
            backup: args.state_dir.join("resolv.conf.backup"),
            ..Default::default()
        };
        let listen = args.dns;
        let restore_paths = paths.clone();
        // The session's lock on the file, once install has taken it: the undo restores as its
        // holder (without it, as anyone would: only a file no live session holds).
        let held = Arc::new(std::sync::Mutex::new(None));
        let held_by_undo = Arc::clone(&held);
        undo.push(Step::StopLocal(LocalStop {
            what: format!("the DNS settings ({})", paths.resolv_conf.display()),
            stop: Box::new(move || {
                Box::pin(async move {
                    let held: Option<ktx_netstack::resolv_conf::Held> = held_by_undo
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    let restored = match held {
                        Some(h) => h.restore(),
                        None => ktx_netstack::resolv_conf::restore(&restore_paths),
                    };
                    if let Err(e) = restored {
                        tracing::warn!(error = %e, "restoring resolv.conf");
                    }
                })
            }),
        }));
        let installed = ktx_netstack::resolv_conf::install(&paths, listen.ip(), &search)
            .map_err(|e| Error::Unsupported(format!("DNS: {e}")))?;
        *held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(installed.held);
        let upstreams: Vec<SocketAddr> = installed
            .original
            .nameservers
            .iter()
            .filter(|ip| **ip != listen.ip())
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect();
        (listen, upstreams, paths.resolv_conf.display().to_string())
    };
    let server = ktx_netstack::dns::DnsServer::bind(
        ktx_netstack::dns::DnsConfig::new(listen, upstreams),
        table,
    )
    .await
    .map_err(|e| Error::Unsupported(format!("DNS resolver on {listen}: {e}")))?;
    let dns = tokio::spawn(server.run());
    let abort = dns.abort_handle();
    undo.push(Step::StopLocal(LocalStop::abort(
        format!("the DNS resolver on {listen}"),
        abort,
    )));
    ctx.progress.done(format!(
        "DNS resolver on {listen} answers the cluster's names ({installed_in})"
    ));
    Ok(())
}

/// Puts back the DNS settings a `ktx connect` that died left on this machine (the managed
/// `/etc/resolv.conf`), if the file is still exactly what it wrote; says what it did.
pub fn restore_dns(ctx: &Ctx, state_dir: &std::path::Path) {
    use ktx_netstack::resolv_conf::{restore, ResolvPaths, Restored};
    let paths = ResolvPaths {
        backup: state_dir.join("resolv.conf.backup"),
        ..Default::default()
    };
    match restore(&paths) {
        Ok(Restored::NothingToRestore) => {}
        Ok(Restored::Restored) => ctx.progress.done(format!(
            "Restored {} (left by a ktx connect that did not end)",
            paths.resolv_conf.display()
        )),
        Ok(Restored::InUse) => ctx.progress.done(format!(
            "{} is managed by a running ktx connect: left as it is",
            paths.resolv_conf.display()
        )),
        Ok(Restored::ChangedSince { kept_backup }) => ctx.progress.warn(format!(
            "{} changed since a ktx connect managed it: left as it is (its backup: {})",
            paths.resolv_conf.display(),
            kept_backup.display()
        )),
        Err(e) => ctx.progress.warn(format!(
            "cannot put back the DNS settings of a ktx connect that did not end: {e}"
        )),
    }
}

/// The API server's addresses: never routed into the TUN device (the tunnel runs over them).
async fn api_server_addrs(ctx: &Ctx) -> Vec<IpAddr> {
    let Some(host) = ctx.kube.api_host() else {
        return Vec::new();
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    tokio::net::lookup_host((host.as_str(), 443))
        .await
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keeper sends why the Lease is lost and drops its sender at once: the forwarder
    /// read the reason, then the drop, and overwrote the reason with "the Lease keeper
    /// stopped", the message `ktx connect` (TUN mode) then printed (20 of 20 runs of a
    /// review helper's reproduction).
    #[tokio::test]
    async fn the_leases_reason_survives_its_keeper_stopping() {
        let (keeper, from) = watch::channel(None);
        let (to, mut lost) = watch::channel(None);
        let forwarded = tokio::spawn(pass_on_lost(from, to));
        keeper.send_replace(Some("the session's Lease was deleted".to_string()));
        drop(keeper);
        forwarded.await.unwrap();
        assert_eq!(
            lost.borrow_and_update().as_deref(),
            Some("the session's Lease was deleted")
        );
    }

    #[tokio::test]
    async fn a_keeper_gone_without_a_reason_is_one_unless_the_session_has_one() {
        for earlier in [None, Some("TUN device ktx0 stopped working")] {
            let (keeper, from) = watch::channel(None);
            let (to, lost) = watch::channel(earlier.map(String::from));
            let forwarded = tokio::spawn(pass_on_lost(from, to));
            drop(keeper);
            forwarded.await.unwrap();
            let want = earlier.unwrap_or("the Lease keeper stopped");
            assert_eq!(lost.borrow().as_deref(), Some(want));
        }
    }
}
