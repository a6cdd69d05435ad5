//! `ktx-router`: the proxy that sits behind a meshed Service.
//!
//! Phases of one connection, in the order they run (see ARCHITECTURE.md):
//! 1. [`listener`] accepts, admits ([`admission`]) and sniffs the first bytes (HTTP/1.1, h2c,
//!    or plain TCP);
//! 2. [`serve`] runs the connection: [`serve::http1`] (with parking), [`serve::h2c`], or
//!    [`serve::splice`] for passthrough and upgraded connections;
//! 3. [`proxy`], the core, matches each request against the current
//!    [`ktx_rules::RouteTable`] and forwards it;
//! 4. [`upstream`] picks a ready endpoint of the target and a pooled connection, and the
//!    response streams back.
//!
//! Dynamic state — the route table, dead sessions, endpoints — lives on `watch` channels fed
//! by [`routes`] (a file) or the Kubernetes watchers; the request path only borrows it.

pub mod admin;
pub mod admission;
pub mod body;
pub mod config;
pub mod error;
pub mod exec;
pub mod headers;
pub mod idle;
pub mod io;
pub mod kube;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod serve;
pub mod sniff;
pub mod upstream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ktx_rules::{RouteTable, RoutesSpec, TargetSpec};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::StartError;
pub use metrics::Metrics;

use crate::routes::RoutesText;
use crate::serve::http1::Shared;
use crate::serve::parking::ParkingLot;
use crate::serve::ListenConfig;
use crate::upstream::{EndpointMap, UpstreamConfig, Upstreams};

/// A running router. Dropping it does not stop it; call [`Router::shutdown`].
#[derive(Debug)]
pub struct Router {
    /// Bound listener addresses, in `--listen` order (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    drain_timeout: std::time::Duration,
    shutdown_delay: std::time::Duration,
    tasks: Vec<JoinHandle<()>>,
    /// The API watches (routes ConfigMap, Endpoints, Leases): stopped first on shutdown.
    watchers: Vec<JoinHandle<()>>,
}

/// Turns `ready` true once the route table is loaded (`table` true) and the first Endpoints map
/// has been published; stays false if either source ends first.
async fn ready_when_both(
    mut table: watch::Receiver<bool>,
    mut endpoints: watch::Receiver<Arc<EndpointMap>>,
    ready: watch::Sender<bool>,
) {
    if endpoints.changed().await.is_err() {
        return;
    }
    while !*table.borrow_and_update() {
        if table.changed().await.is_err() {
            return;
        }
    }
    tracing::info!("first route table and Endpoints list in: ready");
    let _ = ready.send(true);
}

impl Router {
    /// Binds every port, starts the route-table source, and serves. Returns once bound; the
    /// router is ready (see `/readyz`) when the first good route table is loaded (in a
    /// cluster: and the first Endpoints list is in).
    pub async fn start(cfg: Config) -> Result<Router, StartError> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let registry = Arc::new(Mutex::new(registry));

        let (text_tx, text_rx) = watch::channel::<Option<RoutesText>>(None);
        // Outside a cluster there are no Leases (None): no session is ever considered dead. In a
        // cluster no session is alive (Some(empty)) until the Lease watcher's first list.
        let in_cluster = cfg.routes_configmap.is_some();
        let (fresh_tx, fresh_rx) = watch::channel(in_cluster.then(HashSet::<String>::new));
        let (endpoints_tx, endpoints_rx) = watch::channel(Arc::new(EndpointMap::default()));
        let mut tasks = Vec::new();
        let mut watcher_tasks = Vec::new();

        match (&cfg.routes_file, &cfg.routes_configmap) {
            (Some(path), None) => {
                // Fail fast on a file that cannot be read or checked: a person is watching.
                let text =
                    std::fs::read_to_string(path).map_err(|source| StartError::ReadRoutes {
                        path: path.display().to_string(),
                        source,
                    })?;
                let budget = cfg.table_budget();
                let checked = routes::compile(
                    &RoutesText {
                        origin: String::new(),
                        text,
                    },
                    &budget,
                );
                checked.map_err(|source| StartError::BadRoutes {
                    path: path.display().to_string(),
                    source,
                })?;
                tasks.push(tokio::spawn(routes::watch_file(
                    path.clone(),
                    cfg.reload_interval,
                    text_tx,
                )));
            }
            (None, Some(_)) => {
                let outputs = crate::kube::Outputs {
                    texts: text_tx,
                    fresh: fresh_tx,
                    endpoints: endpoints_tx,
                };
                let watchers = crate::kube::start(&cfg, outputs)
                    .await
                    .map_err(|e| StartError::Config(e.to_string()))?;
                watcher_tasks.extend(watchers);
            }
            _ => {
                return Err(StartError::Config(
                    "give exactly one of --routes-file or --routes-configmap".into(),
                ))
            }
        }

        let placeholder = RouteTable::compile(&RoutesSpec {
            default: TargetSpec {
                service: None,
                addrs: Vec::new(),
            },
            rules: Vec::new(),
        })
        .unwrap_or_else(|_| unreachable_table());
        let (table_tx, table_rx) = watch::channel(Arc::new(placeholder));
        let (ready_tx, ready_rx) = watch::channel(false);
        tasks.push(tokio::spawn(routes::run_table(
            text_rx,
            fresh_rx,
            table_tx,
            ready_tx,
            metrics.clone(),
            cfg.table_budget(),
        )));

        // In a cluster, ready also needs the first Endpoints list: before it, every target has no
        // address and unmarked requests would get 503s the moment a Service selects this pod.
        let ready_rx = if in_cluster {
            let (tx, rx) = watch::channel(false);
            tasks.push(tokio::spawn(ready_when_both(
                ready_rx,
                endpoints_rx.clone(),
                tx,
            )));
            rx
        } else {
            ready_rx
        };

        let upstreams = Arc::new(Upstreams::new(
            endpoints_rx,
            UpstreamConfig {
                connect_timeout: cfg.connect_timeout,
                idle_timeout: cfg.upstream_idle_timeout,
                max_idle_per_addr: cfg.upstream_max_idle,
                h2_streams_per_connection: cfg.upstream_h2_streams.max(1),
                h2_connections_per_client: cfg.upstream_h2_connections.max(1),
                h2_stream_slot_timeout: cfg.stream_slot_timeout,
                h2_stream_window: cfg.h2_stream_window,
                h2_connection_window: cfg.h2_connection_window,
                h2_shared_streams_per_client: cfg.upstream_h2_shared_streams,
                session_reuse: crate::upstream::SessionReuse {
                    idle: cfg.session_reuse_idle,
                    age: cfg.session_reuse_age,
                },
            },
        ));
        let admin_table = table_rx.clone();
        let proxy = Arc::new(proxy::Proxy::new(
            table_rx,
            upstreams,
            metrics.clone(),
            proxy::Timeouts {
                response_header: cfg.response_header_timeout,
                body_idle: cfg.body_idle_timeout,
            },
            cfg.upstream_h2_shared,
        ));
        tasks.push(tokio::spawn(sweep_pools(
            Arc::clone(&proxy),
            cfg.upstream_idle_timeout,
            cfg.session_reuse_age,
        )));
        let listen_cfg = Arc::new(ListenConfig {
            sniff_timeout: cfg.sniff_timeout,
            http_ports: cfg.http_ports.clone(),
            header_read_timeout: cfg.header_read_timeout,
            max_header_bytes: cfg.max_header_bytes,
            h2_max_concurrent_streams: cfg.h2_max_concurrent_streams,
            idle_park_after: cfg.idle_park_after,
            client_idle_timeout: cfg.client_idle_timeout,
            h2_stream_window: cfg.h2_stream_window,
            h2_connection_window: cfg.h2_connection_window,
            exchange_stall_timeout: exchange_stall_timeout(&cfg),
            h2c_idle_timeout: cfg.h2c_idle_timeout,
            splice_idle_timeout: cfg.splice_idle_timeout,
            silent_upstream_timeout: cfg.silent_upstream_timeout,
            silent_connect_turns: Arc::new(tokio::sync::Semaphore::new(cfg.silent_connects.max(1))),
        });
        let admission = Arc::new(admission::Admission::new(
            cfg.max_connections,
            cfg.max_connections_per_source,
            cfg.max_rss,
            metrics.clone(),
        ));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Idle keep-alive connections wait in one parking lot; a woken one is served again by
        // a fresh task, as at accept.
        let lot = {
            let (proxy, cfg, shutdown) = (
                Arc::clone(&proxy),
                Arc::clone(&listen_cfg),
                shutdown_rx.clone(),
            );
            let runtime = tokio::runtime::Handle::current();
            ParkingLot::start(
                listen_cfg.client_idle_timeout,
                serve::parking::tidy_after(std::env::var("MIMALLOC_PURGE_DELAY").ok().as_deref()),
                metrics.parked_connections.clone(),
                shutdown_rx.clone(),
                move |woken, lot| {
                    let shared = Shared {
                        proxy: Arc::clone(&proxy),
                        cfg: Arc::clone(&cfg),
                        lot: Arc::clone(lot),
                        shutdown: shutdown.clone(),
                    };
                    listener::resume(&runtime, woken, shared)
                },
            )
            .map_err(|e| StartError::Config(format!("start the parking lot: {e}")))?
        };
        let shared = Shared {
            proxy: Arc::clone(&proxy),
            cfg: Arc::clone(&listen_cfg),
            lot,
            shutdown: shutdown_rx.clone(),
        };

        let mut listen_addrs = Vec::new();
        for addr in &cfg.listen {
            let l =
                listener::bind(*addr, cfg.listen_backlog).map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
            listen_addrs.push(l.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?);
            tasks.push(tokio::spawn(listener::accept_loop(
                l,
                Arc::clone(&admission),
                shared.clone(),
            )));
        }
        let admin_l = TcpListener::bind(cfg.admin)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.admin,
                source,
            })?;
        let admin_addr = admin_l.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.admin,
            source,
        })?;
        let draining = Arc::new(AtomicBool::new(false));
        let state = admin::AdminState {
            registry,
            ready: ready_rx,
            draining: Arc::clone(&draining),
            header_timeout: cfg.admin_header_timeout,
            table: admin_table,
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(admin::serve(admin_l, state, shutdown_rx)));
        tracing::info!(listen = ?listen_addrs, admin = %admin_addr, "ktx-router listening");

        Ok(Router {
            listen_addrs,
            admin_addr,
            metrics,
            shutdown: shutdown_tx,
            draining,
            drain_timeout: cfg.drain_timeout,
            shutdown_delay: cfg.shutdown_delay,
            tasks,
            watchers: watcher_tasks,
        })
    }

    /// Reports not ready, keeps serving for the shutdown delay, then stops accepting, lets
    /// in-flight requests finish (up to the drain timeout), and stops.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::Relaxed);
        // While it stops, the router serves with the table and endpoints it has: the objects
        // around it are being deleted (ktx deletes the stuntman Service with the router), and
        // their disappearance must not turn the last requests into 503s.
        for w in &self.watchers {
            w.abort();
        }
        if !self.shutdown_delay.is_zero() {
            tracing::info!(delay = ?self.shutdown_delay, "not ready; still serving before the drain");
            tokio::time::sleep(self.shutdown_delay).await;
        }
        let _ = self.shutdown.send(true);
        // Every connection task holds a receiver; all dropped means all finished.
        let drained = tokio::time::timeout(self.drain_timeout, self.shutdown.closed()).await;
        match drained {
            Ok(()) => tracing::info!("drained"),
            Err(_) => {
                tracing::warn!(after = ?self.drain_timeout, "drain deadline reached; closing remaining connections")
            }
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The longest an HTTP/1.1 exchange may legitimately move no byte: waiting for the upstream's
/// response head, or between two body frames; one second more so those bounds fire first.
/// Off when either is off.
fn exchange_stall_timeout(cfg: &Config) -> std::time::Duration {
    if cfg.response_header_timeout.is_zero() || cfg.body_idle_timeout.is_zero() {
        return std::time::Duration::ZERO;
    }
    cfg.response_header_timeout
        .max(cfg.body_idle_timeout)
        .saturating_add(std::time::Duration::from_secs(1))
}

/// Drops idle upstream connections past their timeout (or, to a session's shadow, past its
/// reuse bounds), and pool entries of addresses that have none left, every idle timeout or
/// session reuse age, whichever is shorter (at most ten times a second).
async fn sweep_pools(
    proxy: Arc<proxy::Proxy>,
    idle: std::time::Duration,
    session_age: std::time::Duration,
) {
    let every = idle
        .min(session_age)
        .max(std::time::Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        proxy.sweep_pools(idle);
    }
}

/// A table whose default has no address: every request gets 503 until the real table loads.
pub(crate) fn unreachable_table() -> RouteTable {
    RouteTable::compile(&RoutesSpec {
        default: TargetSpec {
            service: Some("ktx-no-table-yet".into()),
            addrs: Vec::new(),
        },
        rules: Vec::new(),
    })
    .expect("a table with a Service default and no rules always compiles")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn settles(rx: &watch::Receiver<bool>) -> bool {
        tokio::time::sleep(Duration::from_millis(20)).await;
        *rx.borrow()
    }

    #[tokio::test]
    async fn ready_needs_the_table_and_the_first_endpoints_list_in_either_order() {
        for endpoints_first in [true, false] {
            let (table_tx, table_rx) = watch::channel(false);
            let (ep_tx, ep_rx) = watch::channel(Arc::new(EndpointMap::default()));
            let (ready_tx, ready_rx) = watch::channel(false);
            tokio::spawn(ready_when_both(table_rx, ep_rx, ready_tx));
            if endpoints_first {
                ep_tx.send_replace(Arc::new(EndpointMap::default()));
            } else {
                table_tx.send_replace(true);
            }
            assert!(!settles(&ready_rx).await, "one of the two is not enough");
            if endpoints_first {
                table_tx.send_replace(true);
            } else {
                ep_tx.send_replace(Arc::new(EndpointMap::default()));
            }
            assert!(settles(&ready_rx).await, "both are in");
        }
    }

    #[tokio::test]
    async fn ready_stays_false_when_the_endpoints_source_ends_first() {
        let (table_tx, table_rx) = watch::channel(true);
        let (ep_tx, ep_rx) = watch::channel(Arc::new(EndpointMap::default()));
        let (ready_tx, ready_rx) = watch::channel(false);
        tokio::spawn(ready_when_both(table_rx, ep_rx, ready_tx));
        drop(ep_tx);
        assert!(!settles(&ready_rx).await);
        drop(table_tx);
    }
}
