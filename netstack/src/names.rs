//! The cluster's names: a table the caller fills (ktx from watched Services and Endpoints) and
//! the pure lookup the DNS resolver and the SOCKS5 proxy share.
//!
//! The table is published on a `watch` channel as an `Arc<Names>`: writers copy-on-write, readers
//! only borrow the current snapshot. This module does not speak DNS (see `dns`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// One Service: its addresses (the ClusterIP; a headless Service's ready pod IPs) and, for a
/// headless Service, each pod's hostname (`HOSTNAME.svc.NS.svc.DOMAIN`); or, for an
/// ExternalName Service, the name it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceNames {
    pub ips: Vec<IpAddr>,
    pub pods: BTreeMap<String, Vec<IpAddr>>,
    /// An ExternalName Service's `externalName`: the Service's names are an alias (a CNAME) of
    /// it, and `ips` and `pods` are empty.
    pub alias: Option<String>,
}

impl ServiceNames {
    /// What the Service's own name is: its addresses, or the name it is an alias of.
    fn lookup(&self) -> Lookup {
        match &self.alias {
            Some(target) => Lookup::Alias(target.clone()),
            None => Lookup::Found(self.ips.clone()),
        }
    }

    /// With its pods' hostnames in lower case, as lookups compare them.
    fn lowercased(self) -> ServiceNames {
        ServiceNames {
            pods: self
                .pods
                .into_iter()
                .map(|(h, ips)| (h.to_ascii_lowercase(), ips))
                .collect(),
            alias: self
                .alias
                .map(|a| a.trim_end_matches('.').to_ascii_lowercase()),
            ..self
        }
    }
}

/// A snapshot of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    domain: String,
    default_namespace: String,
    services: BTreeMap<(String, String), ServiceNames>,
    namespaces: BTreeSet<String>,
}

/// What a name is, for the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A cluster name with these addresses (may be empty: the name exists, no address yet).
    Found(Vec<IpAddr>),
    /// A name under `svc.DOMAIN` that the table does not have: answered NXDOMAIN.
    NoSuchName,
    /// Not a cluster name: forwarded to the machine's previous resolvers.
    NotOurs,
    /// An ExternalName Service: an alias of this name (lower case, no trailing dot), which is
    /// looked up in turn, in the table or by the machine's previous resolvers.
    Alias(String),
}

impl Names {
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// Looks `name` up (any case, with or without the trailing dot). Forms, for namespace NS
    /// and domain D: `svc` (the default namespace), `svc.NS`, `svc.NS.svc`, `svc.NS.svc.D`,
    /// `HOSTNAME.svc.NS.svc.D`. The short forms match only namespaces the table knows and are
    /// otherwise `NotOurs`, so a real domain (`example.com`) is never hijacked; only names under
    /// `svc.D` are answered NXDOMAIN.
    pub fn lookup(&self, name: &str) -> Lookup {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let suffix = format!(".svc.{}", self.domain);
        let dotted = format!(".{name}");
        if let Some(rest) = dotted.strip_suffix(&suffix) {
            let labels: Vec<&str> = rest.trim_start_matches('.').split('.').collect();
            return match labels.as_slice() {
                [svc, ns] => self.service(ns, svc).map(ServiceNames::lookup),
                [host, svc, ns] => self
                    .service(ns, svc)
                    .and_then(|s| s.pods.get(*host).cloned())
                    .map(Lookup::Found),
                _ => None,
            }
            .unwrap_or(Lookup::NoSuchName);
        }
        let labels: Vec<&str> = name.split('.').collect();
        let found = match labels.as_slice() {
            [svc] => self.service(&self.default_namespace, svc),
            [svc, ns] | [svc, ns, "svc"] if self.namespaces.contains(*ns) => self.service(ns, svc),
            _ => None,
        };
        found.map_or(Lookup::NotOurs, ServiceNames::lookup)
    }

    /// Looks up an alias's target: an absolute name, so only its `*.svc.DOMAIN` forms are the
    /// table's (as cluster DNS reads a CNAME's target); any other name is `NotOurs`, never a
    /// short form of a Service in some namespace.
    pub fn lookup_target(&self, target: &str) -> Lookup {
        let name = target
            .strip_suffix('.')
            .unwrap_or(target)
            .to_ascii_lowercase();
        if name.ends_with(&format!(".svc.{}", self.domain)) {
            self.lookup(&name)
        } else {
            Lookup::NotOurs
        }
    }

    fn service(&self, ns: &str, svc: &str) -> Option<&ServiceNames> {
        self.services.get(&(ns.to_owned(), svc.to_owned()))
    }
}

/// The writable table; clone [`NameTable::subscribe`] receivers into readers.
#[derive(Debug, Clone)]
pub struct NameTable {
    tx: Arc<watch::Sender<Arc<Names>>>,
}

impl NameTable {
    /// An empty table for `domain` (e.g. `cluster.local`) whose bare names resolve in
    /// `default_namespace`.
    pub fn new(domain: &str, default_namespace: &str) -> Self {
        let default_namespace = default_namespace.to_ascii_lowercase();
        let names = Names {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            namespaces: BTreeSet::from([default_namespace.clone()]),
            default_namespace,
            services: BTreeMap::new(),
        };
        NameTable {
            tx: Arc::new(watch::channel(Arc::new(names)).0),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Names> {
        self.tx.borrow().clone()
    }

    /// Adds or replaces a Service (a namespace becomes known with its first Service).
    pub fn set_service(&self, namespace: &str, name: &str, service: ServiceNames) {
        let key = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
        let service = service.lowercased();
        self.tx.send_modify(|names| {
            let names = Arc::make_mut(names);
            names.namespaces.insert(key.0.clone());
            names.services.insert(key, service);
        });
    }

    /// Makes `services` the namespace's Services, all at once: those not among them are
    /// removed (a Service deleted stops resolving; one turned into an ExternalName resolves as
    /// its alias).
    pub fn replace_services(&self, namespace: &str, services: Vec<(String, ServiceNames)>) {
        let ns = namespace.to_ascii_lowercase();
        let fresh: Vec<((String, String), ServiceNames)> = services
            .into_iter()
            .map(|(name, service)| {
                (
                    (ns.clone(), name.to_ascii_lowercase()),
                    service.lowercased(),
                )
            })
            .collect();
        self.tx.send_modify(|names| {
            let names = Arc::make_mut(names);
            names.namespaces.insert(ns.clone());
            names.services.retain(|(n, _), _| *n != ns);
            names.services.extend(fresh);
        });
    }

    /// Removes a Service (its namespace stays known).
    pub fn remove_service(&self, namespace: &str, name: &str) {
        let key = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
        self.tx.send_modify(|names| {
            Arc::make_mut(names).services.remove(&key);
        });
    }

    /// Makes a namespace known without a Service in it (so `svc.NS` is ours once one appears).
    pub fn add_namespace(&self, namespace: &str) {
        let ns = namespace.to_ascii_lowercase();
        self.tx.send_modify(|names| {
            Arc::make_mut(names).namespaces.insert(ns);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NameTable {
        let t = NameTable::new("cluster.local", "shop");
        t.set_service(
            "shop",
            "inventory",
            ServiceNames {
                ips: vec!["10.96.0.10".parse().unwrap()],
                pods: BTreeMap::new(),
                alias: None,
            },
        );
        t.set_service(
            "data",
            "db",
            ServiceNames {
                ips: vec!["10.244.0.5".parse().unwrap(), "10.244.0.6".parse().unwrap()],
                pods: BTreeMap::from([("db-0".into(), vec!["10.244.0.5".parse().unwrap()])]),
                alias: None,
            },
        );
        t
    }

    fn found(s: &str) -> Lookup {
        Lookup::Found(vec![s.parse().unwrap()])
    }

    #[test]
    fn every_name_form_of_a_service() {
        let n = table().snapshot();
        for name in [
            "inventory",
            "inventory.shop",
            "inventory.shop.svc",
            "inventory.shop.svc.cluster.local",
            "INVENTORY.Shop.svc.cluster.local.",
        ] {
            assert_eq!(n.lookup(name), found("10.96.0.10"), "{name}");
        }
        assert_eq!(
            n.lookup("db-0.db.data.svc.cluster.local"),
            found("10.244.0.5")
        );
        assert_eq!(
            n.lookup("db.data").clone(),
            n.lookup("db.data.svc.cluster.local")
        );
    }

    #[test]
    fn unknown_names_under_svc_domain_are_nxdomain() {
        let n = table().snapshot();
        for name in [
            "nope.shop.svc.cluster.local",
            "db-1.db.data.svc.cluster.local",
            "a.b.c.d.svc.cluster.local",
            "svc.cluster.local",
        ] {
            assert_eq!(n.lookup(name), Lookup::NoSuchName, "{name}");
        }
    }

    /// An ExternalName Service's every name form is an alias of its `externalName`; it has no
    /// pod names. Such a Service was answered NXDOMAIN.
    #[test]
    fn an_external_name_service_is_an_alias() {
        let t = table();
        t.set_service(
            "shop",
            "payments",
            ServiceNames {
                alias: Some("Payments.Example.COM.".into()),
                ..ServiceNames::default()
            },
        );
        let n = t.snapshot();
        for name in [
            "payments",
            "payments.shop",
            "payments.shop.svc",
            "payments.shop.svc.cluster.local.",
        ] {
            assert_eq!(
                n.lookup(name),
                Lookup::Alias("payments.example.com".into()),
                "{name}"
            );
        }
        assert_eq!(
            n.lookup("x.payments.shop.svc.cluster.local"),
            Lookup::NoSuchName
        );
        // A target is absolute: `inventory` is not the default namespace's Service there.
        assert_eq!(n.lookup_target("inventory"), Lookup::NotOurs);
        assert_eq!(n.lookup_target("inventory.shop"), Lookup::NotOurs);
        assert_eq!(
            n.lookup_target("inventory.shop.svc.cluster.local."),
            found("10.96.0.10")
        );
    }

    #[test]
    fn short_forms_never_hijack_real_domains() {
        let n = table().snapshot();
        for name in [
            "example.com",
            "inventory.com",
            "www.example.com",
            "nope",
            "nope.shop",
            "cluster.local",
            "x.pod.cluster.local",
        ] {
            assert_eq!(n.lookup(name), Lookup::NotOurs, "{name}");
        }
        // a namespace named like a TLD is ours only once the table knows it
        let t = table();
        t.set_service("com", "example", ServiceNames::default());
        assert_eq!(t.snapshot().lookup("example.com"), Lookup::Found(vec![]));
        t.remove_service("com", "example");
        assert_eq!(t.snapshot().lookup("example.com"), Lookup::NotOurs);
    }
}
