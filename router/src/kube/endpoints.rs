//! Endpoints of ktx's Services → [`EndpointMap`]: for each Service, the ready `IP:port`s per
//! endpoint port, so the router reaches pods directly (no DNS, no kube-proxy hop).
//!
//! Only `subsets[].addresses` count: `notReadyAddresses` are pods that must not get traffic
//! yet (a shadow without its tunnel is one). The watch is narrowed to ktx's objects by the
//! managed-by label, which the endpoints controller copies from each Service to its Endpoints.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ::kube::ResourceExt;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use tokio::sync::watch;

use super::snapshot::Snapshot;
use super::{Events, Watched};
use crate::upstream::{EndpointMap, ServiceEndpoints};

/// The ready addresses of one Endpoints object, by port number. Every TCP port of a subset gets
/// an entry, even with no ready address, so a request for that port finds "none ready" rather
/// than being sent to another port's pods. Non-TCP ports and malformed entries are skipped.
pub fn service_endpoints(ep: &Endpoints) -> ServiceEndpoints {
    let mut by_port: HashMap<u16, Vec<SocketAddr>> = HashMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ips: Vec<IpAddr> = subset
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| match a.ip.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    tracing::warn!(endpoints = %ep.name_any(), ip = %a.ip, "skipping an endpoint address that is not an IP");
                    None
                }
            })
            .collect();
        for p in subset.ports.iter().flatten() {
            // The router proxies TCP only; absent protocol means TCP.
            if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
                continue;
            }
            let Ok(port) = u16::try_from(p.port) else {
                tracing::warn!(endpoints = %ep.name_any(), port = p.port, "skipping an endpoint port out of range");
                continue;
            };
            let addrs = by_port.entry(port).or_default();
            addrs.extend(ips.iter().map(|ip| SocketAddr::new(*ip, port)));
        }
    }
    // Sorted and deduplicated: the same set always compares equal, so an update that changes
    // nothing for the router is not republished.
    for addrs in by_port.values_mut() {
        addrs.sort_unstable();
        addrs.dedup();
    }
    ServiceEndpoints { by_port }
}

/// Keeps a local copy of the Endpoints and publishes the whole map whenever it changes.
/// Nothing is published before the first list is complete.
pub async fn run(
    mut events: Events<Endpoints>,
    watched: Watched,
    out: watch::Sender<Arc<EndpointMap>>,
) {
    let mut failing = false;
    let mut published = false;
    let mut snapshot = Snapshot::default();
    while let Some(r) = events.next().await {
        if out.is_closed() {
            return;
        }
        let Some(event) = watched.check(r, &mut failing) else {
            continue;
        };
        if !snapshot.apply(event, |ep, _| service_endpoints(ep)) || !snapshot.listed() {
            continue;
        }
        let map = EndpointMap {
            services: snapshot.live().clone(),
        };
        // The first complete list is always published, even if empty: readiness waits for it.
        let first = !published;
        published = true;
        out.send_if_modified(|cur| {
            if **cur == map && !first {
                return false;
            }
            tracing::debug!(services = map.services.len(), "endpoints changed");
            *cur = Arc::new(map);
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use ::kube::runtime::watcher::Event;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::kube::testing;

    fn subset(ready: &[&str], not_ready: &[&str], ports: &[(i32, Option<&str>)]) -> EndpointSubset {
        let addrs = |ips: &[&str]| {
            Some(
                ips.iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            )
        };
        EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|(port, proto)| EndpointPort {
                        port: *port,
                        protocol: proto.map(str::to_string),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn endpoints(name: &str, subsets: Vec<EndpointSubset>) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            subsets: Some(subsets),
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_ready_addresses_count() {
        let ep = endpoints(
            "s",
            vec![subset(
                &["10.0.0.2", "10.0.0.1"],
                &["10.0.0.9"],
                &[(8080, None)],
            )],
        );
        let se = service_endpoints(&ep);
        assert_eq!(se.by_port.len(), 1);
        assert_eq!(
            se.by_port[&8080],
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
    }

    #[test]
    fn several_subsets_and_ports_merge_per_port() {
        // Pods with different port sets land in different subsets.
        let ep = endpoints(
            "s",
            vec![
                subset(&["10.0.0.1"], &[], &[(80, Some("TCP")), (9090, None)]),
                subset(&["10.0.0.2", "fd00::2"], &[], &[(80, None)]),
                subset(&["10.0.0.1"], &[], &[(80, None), (53, Some("UDP"))]),
            ],
        );
        let se = service_endpoints(&ep);
        assert_eq!(
            se.by_port[&80],
            addrs(&["10.0.0.1:80", "10.0.0.2:80", "[fd00::2]:80"]),
            "merged, sorted, deduplicated"
        );
        assert_eq!(se.by_port[&9090], addrs(&["10.0.0.1:9090"]));
        assert!(!se.by_port.contains_key(&53), "UDP is not proxied");
    }

    #[test]
    fn a_port_with_no_ready_address_is_present_and_empty() {
        let ep = endpoints(
            "s",
            vec![
                subset(&["10.0.0.1"], &[], &[(80, None)]),
                subset(&[], &["10.0.0.3"], &[(81, None)]),
            ],
        );
        let se = service_endpoints(&ep);
        assert_eq!(se.by_port[&81], Vec::<SocketAddr>::new());
    }

    #[test]
    fn malformed_input_is_skipped_not_fatal() {
        let ep = endpoints(
            "s",
            vec![subset(
                &["not-an-ip", "10.0.0.1"],
                &[],
                &[(70000, None), (80, None)],
            )],
        );
        let se = service_endpoints(&ep);
        assert_eq!(se.by_port.len(), 1);
        assert_eq!(se.by_port[&80], addrs(&["10.0.0.1:80"]));
        assert!(service_endpoints(&Endpoints::default()).by_port.is_empty());
    }

    fn names(rx: &mut watch::Receiver<Arc<EndpointMap>>) -> Vec<String> {
        let mut names: Vec<_> = rx.borrow_and_update().services.keys().cloned().collect();
        names.sort();
        names
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_is_published_after_the_list_and_only_on_change() {
        let a = endpoints("a", vec![subset(&["10.0.0.1"], &[], &[(80, None)])]);
        let b = endpoints("b", vec![subset(&["10.0.0.2"], &[], &[(80, None)])]);
        let (feed, events) = testing::feed();
        let (tx, mut rx) = watch::channel(Arc::new(EndpointMap::default()));
        tokio::spawn(run(
            events,
            Watched::new("Endpoints", "endpoints", "dev"),
            tx,
        ));

        feed.send(Ok(Event::Init)).unwrap();
        feed.send(Ok(Event::InitApply(a.clone()))).unwrap();
        testing::idle().await;
        assert!(
            !rx.has_changed().unwrap(),
            "nothing before the list is complete"
        );

        feed.send(Ok(Event::InitApply(b.clone()))).unwrap();
        feed.send(Ok(Event::InitDone)).unwrap();
        testing::idle().await;
        assert!(rx.has_changed().unwrap());
        assert_eq!(names(&mut rx), ["a", "b"]);

        feed.send(Ok(Event::Apply(a.clone()))).unwrap();
        feed.send(Err(::kube::runtime::watcher::Error::NoResourceVersion))
            .unwrap();
        testing::idle().await;
        assert!(
            !rx.has_changed().unwrap(),
            "an unchanged object or an error republishes nothing"
        );

        feed.send(Ok(Event::Delete(b))).unwrap();
        testing::idle().await;
        assert_eq!(names(&mut rx), ["a"]);
        assert_eq!(
            rx.borrow().services["a"].by_port[&80],
            addrs(&["10.0.0.1:80"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_first_list_is_published_too() {
        // Readiness waits for the first list; a namespace with no ktx Endpoints yet must not
        // keep the router unready.
        let (feed, events) = testing::feed();
        let (tx, rx) = watch::channel(Arc::new(EndpointMap::default()));
        tokio::spawn(run(
            events,
            Watched::new("Endpoints", "endpoints", "dev"),
            tx,
        ));
        feed.send(Ok(Event::Init)).unwrap();
        feed.send(Ok(Event::InitDone)).unwrap();
        testing::idle().await;
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow().services.is_empty());
    }
}
