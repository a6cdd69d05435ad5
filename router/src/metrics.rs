//! The router's metrics, as one struct registered on a registry that is passed in (no globals).
//! Names are `ktx_router_*`; tests read the counters directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Protocol of a downstream connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Proto {
    http1,
    h2c,
    tcp,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The session of the matched rule, or `default`.
    pub rule: Arc<str>,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabel {
    pub side: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtoLabel {
    pub proto: Proto,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric of the router.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RuleLabel, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<SideLabel, Counter>,
    pub active_connections: Family<ProtoLabel, Gauge>,
    pub connections: Family<ProtoLabel, Counter>,
    pub parked_connections: Gauge,
    pub refused_connections: Family<RefusedLabel, Counter>,
    pub table_version: Gauge,
    pub table_rules: Gauge,
    pub table_updates: Family<ResultLabel, Counter>,
    /// Each rule's request counters (by status) and duration histogram, shared with
    /// the families above: a family's lookup takes its lock and SipHashes the labels, twice
    /// per request; this is one lock and one fast hash (labels are session names from the
    /// cluster's rules, never a client's bytes).
    handles: Arc<Mutex<RequestHandles>>,
}

type RequestHandles = HashMap<Arc<str>, RuleHandles, foldhash::fast::RandomState>;

/// One rule's request counters (by status) and duration histogram.
#[derive(Debug)]
struct RuleHandles {
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

impl RuleHandles {
    fn record(&mut self, metrics: &Metrics, rule: &Arc<str>, status: u16, seconds: f64) {
        match self.by_status.iter().find(|(s, _)| *s == status) {
            Some((_, count)) => {
                count.inc();
            }
            None => {
                let count = metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        rule: Arc::clone(rule),
                        status,
                    })
                    .clone();
                count.inc();
                self.by_status.push((status, count));
            }
        };
        self.duration.observe(seconds);
    }
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            active_connections: Family::default(),
            connections: Family::default(),
            parked_connections: Gauge::default(),
            refused_connections: Family::default(),
            table_version: Gauge::default(),
            table_rules: Gauge::default(),
            table_updates: Family::default(),
            handles: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("ktx_router");
        r.register(
            "requests",
            "Requests answered, by rule (session or default) and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head, by rule",
            m.latency.clone(),
        );
        r.register(
            "upstream_errors",
            "Requests that failed, by the side that failed (client, upstream, shadow, internal)",
            m.upstream_errors.clone(),
        );
        r.register(
            "active_connections",
            "Open downstream connections, by protocol",
            m.active_connections.clone(),
        );
        r.register(
            "connections",
            "Accepted downstream connections, by protocol",
            m.connections.clone(),
        );
        r.register(
            "parked_connections",
            "Idle HTTP/1.1 keep-alive connections whose buffers are released",
            m.parked_connections.clone(),
        );
        r.register(
            "refused_connections",
            "Downstream connections closed at accept, by reason (connections, source, memory)",
            m.refused_connections.clone(),
        );
        r.register(
            "table_version",
            "Version of the route table in use (increments on each change)",
            m.table_version.clone(),
        );
        r.register(
            "table_rules",
            "Rules in the route table in use (live sessions only)",
            m.table_rules.clone(),
        );
        r.register(
            "table_updates",
            "Route table updates, by result (applied, rejected)",
            m.table_updates.clone(),
        );
        m
    }

    /// Counts one answered request by rule and status, and its duration by rule.
    pub fn request(&self, rule: &Arc<str>, status: u16, seconds: f64) {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = handles.get_mut(&**rule) {
            h.record(self, rule, status, seconds);
            return;
        }
        let duration = self
            .latency
            .get_or_create(&RuleLabel {
                rule: Arc::clone(rule),
            })
            .clone();
        let mut h = RuleHandles {
            duration,
            by_status: Vec::new(),
        };
        h.record(self, rule, status, seconds);
        handles.insert(Arc::clone(rule), h);
    }

    pub fn error(&self, side: crate::error::Side) {
        self.upstream_errors
            .get_or_create(&SideLabel {
                side: side.as_str(),
            })
            .inc();
    }
}

/// Counts one open connection for as long as it lives.
#[derive(Debug)]
pub struct ConnGuard {
    gauge: Gauge,
}

impl ConnGuard {
    pub fn new(metrics: &Metrics, proto: Proto) -> Self {
        let label = ProtoLabel { proto };
        metrics.connections.get_or_create(&label).inc();
        let gauge = metrics.active_connections.get_or_create(&label).clone();
        gauge.inc();
        ConnGuard { gauge }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_in_the_families_by_rule_and_status() {
        let m = Metrics::new(&mut Registry::default());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("default"));
        m.request(&a, 200, 0.001);
        m.request(&a, 200, 0.002);
        m.request(&a, 503, 0.003);
        // Another Arc with the same name is the same rule.
        m.request(&Arc::from("alice"), 200, 0.004);
        m.request(&b, 200, 0.005);
        let count = |rule: &Arc<str>, status| {
            m.requests
                .get_or_create(&RequestLabels {
                    rule: Arc::clone(rule),
                    status,
                })
                .get()
        };
        assert_eq!(count(&a, 200), 3);
        assert_eq!(count(&a, 503), 1);
        assert_eq!(count(&b, 200), 1);
        assert_eq!(count(&b, 503), 0);
        let mut text = String::new();
        let mut registry = Registry::default();
        registry.register("latency", "", m.latency.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("latency_count{rule=\"alice\"} 4"), "{text}");
        assert!(text.contains("latency_count{rule=\"default\"} 1"), "{text}");
    }
}
