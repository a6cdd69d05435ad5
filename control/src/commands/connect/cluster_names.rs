//! The cluster's names for `ktx connect`, read from the API rather than from cluster DNS (which
//! the developer's machine cannot reach, and which the local test cluster does not run): the
//! namespace's Services and Endpoints are watched, and every change gives the resolver a new
//! list of [`Entry`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::{reflector, watcher, WatchStreamExt};

use ktx_netstack::names::{NameTable, ServiceNames};

use crate::cluster::api::Kube;

/// One Service's names: its ClusterIPs (a headless Service: its ready endpoints' IPs) and, for
/// a headless Service, the IPs of each endpoint that has a hostname
/// (`HOSTNAME.SVC.NS.svc.DOMAIN`); for an ExternalName Service, the name it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub names: ServiceNames,
}

/// The entries that `services` and their `endpoints` make (pure).
pub fn entries(namespace: &str, services: &[Service], endpoints: &[Endpoints]) -> Vec<Entry> {
    let eps: BTreeMap<&str, &Endpoints> = endpoints
        .iter()
        .filter_map(|e| Some((e.metadata.name.as_deref()?, e)))
        .collect();
    let mut out = Vec::new();
    for s in services {
        let (Some(name), Some(spec)) = (s.metadata.name.as_deref(), s.spec.as_ref()) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            // Without a name to stand for, the Service has no DNS record in the cluster either.
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                out.push(Entry {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    names: ServiceNames {
                        alias: Some(target.to_string()),
                        ..ServiceNames::default()
                    },
                });
            }
            continue;
        }
        let mut cluster_ips: Vec<&str> = spec
            .cluster_ips
            .as_deref()
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if cluster_ips.is_empty() {
            cluster_ips.extend(spec.cluster_ip.as_deref());
        }
        let headless = cluster_ips.iter().all(|ip| ip.eq_ignore_ascii_case("none"));
        let mut entry = Entry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            names: ServiceNames::default(),
        };
        if headless {
            for subset in eps
                .get(name)
                .and_then(|e| e.subsets.as_deref())
                .unwrap_or_default()
            {
                for a in subset.addresses.as_deref().unwrap_or_default() {
                    let Ok(ip) = a.ip.parse::<IpAddr>() else {
                        continue;
                    };
                    if !entry.names.ips.contains(&ip) {
                        entry.names.ips.push(ip);
                    }
                    if let Some(h) = a.hostname.as_deref() {
                        // An address is in one subset per port set: once per name.
                        let ips = entry.names.pods.entry(h.to_string()).or_default();
                        if !ips.contains(&ip) {
                            ips.push(ip);
                        }
                    }
                }
            }
        } else {
            entry.names.ips = cluster_ips
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
        }
        out.push(entry);
    }
    out
}

/// Watches the namespace's Services and Endpoints and calls `apply` with every Service's
/// entry: once both lists are first read, then after every change (changes within
/// `debounce` are applied together). Each watch request asks the API server to end it after
/// `watch_timeout` (below the client's read timeout, so a quiet namespace is not taken for a
/// hung connection); kube's watcher then resumes it. Returns only if a watch stream ends.
pub async fn watch(
    kube: Kube,
    debounce: Duration,
    watch_timeout: Duration,
    apply: impl Fn(Vec<Entry>) + Send + 'static,
) {
    let config = watcher::Config::default().timeout(watch_timeout.as_secs().clamp(1, 290) as u32);
    let (services, svc_writer) = reflector::store::<Service>();
    let (endpoints, ep_writer) = reflector::store::<Endpoints>();
    // Every event counts, the initial list's end (InitDone) included: that is when a store
    // becomes ready.
    let svc_events = reflector(
        svc_writer,
        watcher(kube.api::<Service>(), config.clone()).default_backoff(),
    )
    .map(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let ep_events = reflector(
        ep_writer,
        watcher(kube.api::<Endpoints>(), config).default_backoff(),
    )
    .map(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let mut events = std::pin::pin!(futures_util::stream::select(svc_events, ep_events));
    let ns = kube.namespace.clone();
    let publish = |apply: &dyn Fn(Vec<Entry>)| {
        let s: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let e: Vec<Endpoints> = endpoints.state().iter().map(|e| (**e).clone()).collect();
        apply(entries(&ns, &s, &e));
    };
    let mut ready = false;
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::debug!(error = %e, "watching Services and Endpoints for ktx connect's names");
            continue;
        }
        if !ready {
            let both = tokio::time::timeout(
                Duration::ZERO,
                futures_util::future::join(
                    services.wait_until_ready(),
                    endpoints.wait_until_ready(),
                ),
            )
            .await
            .is_ok();
            if !both {
                continue;
            }
            ready = true;
        }
        // Take every event that arrives within `debounce`, then publish once.
        let until = tokio::time::Instant::now() + debounce;
        while let Ok(Some(_)) = tokio::time::timeout_at(until, events.next()).await {}
        publish(&apply);
    }
}

/// Gives the resolver `entries`, every Service of `namespace` as the watch sees it now: a
/// Service no longer among them stops resolving.
pub fn publish(table: &NameTable, namespace: &str, entries: Vec<Entry>) {
    let services = entries.into_iter().map(|e| (e.name, e.names)).collect();
    table.replace_services(namespace, services);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn eps(name: &str, addrs: &[(&str, Option<&str>)]) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(ip, host)| EndpointAddress {
                            ip: ip.to_string(),
                            hostname: host.map(str::to_string),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn cluster_ip_services_headless_services_and_their_pods() {
        let got = entries(
            "shop",
            &[svc("inventory", "10.96.0.10"), svc("db", "None")],
            &[
                eps("inventory", &[("10.244.0.5", None)]),
                eps(
                    "db",
                    &[("10.244.0.7", Some("db-0")), ("10.244.0.8", Some("db-1"))],
                ),
            ],
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].name, "inventory");
        assert_eq!(
            got[0].names.ips,
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert!(got[0].names.pods.is_empty());
        assert_eq!(got[1].name, "db");
        assert_eq!(got[1].names.ips.len(), 2);
        assert_eq!(
            got[1].names.pods.get("db-1"),
            Some(&vec!["10.244.0.8".parse::<IpAddr>().unwrap()])
        );
    }

    /// A pod in two subsets (two port sets) had its hostname answered with its address twice.
    /// Found by a review helper, 2026-12-07.
    #[test]
    fn a_pod_in_two_subsets_has_its_address_once() {
        let mut e = eps("db", &[("10.244.0.7", Some("db-0"))]);
        let subset = e.subsets.as_ref().unwrap()[0].clone();
        e.subsets.as_mut().unwrap().push(subset);
        let got = entries("shop", &[svc("db", "None")], &[e]);
        let one = vec!["10.244.0.7".parse::<IpAddr>().unwrap()];
        assert_eq!(got[0].names.ips, one);
        assert_eq!(got[0].names.pods.get("db-0"), Some(&one));
    }

    #[test]
    fn a_headless_service_without_endpoints_has_a_name_and_no_address() {
        let got = entries("shop", &[svc("db", "None")], &[]);
        assert_eq!(got.len(), 1);
        assert!(got[0].names.ips.is_empty());
    }

    fn external(name: &str, target: Option<&str>) -> Service {
        let mut s = svc(name, "");
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = target.map(str::to_string);
        spec.cluster_ip = None;
        s
    }

    /// An ExternalName Service resolves as an alias of its `externalName` (it was answered
    /// NXDOMAIN); one without a name is left out, as cluster DNS leaves it.
    #[test]
    fn an_external_name_service_is_an_alias_of_its_name() {
        use ktx_netstack::names::Lookup;
        let got = entries(
            "shop",
            &[
                external("payments", Some("payments.example.com")),
                external("blank", None),
            ],
            &[],
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].names.alias.as_deref(), Some("payments.example.com"));
        assert!(got[0].names.ips.is_empty());
        let table = NameTable::new("cluster.local", "shop");
        publish(&table, "shop", got);
        assert_eq!(
            table.snapshot().lookup("payments.shop.svc.cluster.local"),
            Lookup::Alias("payments.example.com".into())
        );
    }

    /// A Service deleted while `ktx connect` runs stops resolving: its old ClusterIP may go to
    /// another Service. (One turned into an ExternalName resolves as its alias.)
    #[test]
    fn a_service_that_goes_away_stops_resolving() {
        use ktx_netstack::names::Lookup;
        let table = NameTable::new("cluster.local", "shop");
        let both = [svc("inventory", "10.96.0.10"), svc("orders", "10.96.0.11")];
        publish(&table, "shop", entries("shop", &both, &[]));
        assert!(matches!(
            table.snapshot().lookup("orders.shop"),
            Lookup::Found(_)
        ));
        publish(&table, "shop", entries("shop", &both[..1], &[]));
        assert_eq!(
            table.snapshot().lookup("orders.shop.svc.cluster.local"),
            Lookup::NoSuchName
        );
        assert!(matches!(
            table.snapshot().lookup("inventory.shop"),
            Lookup::Found(_)
        ));
    }
}
