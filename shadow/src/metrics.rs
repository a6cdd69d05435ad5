//! The shadow's metrics, as one struct registered on a registry that is passed in (no
//! globals). Names are `ktx_shadow_*`; tests read the counters directly.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use ktx_tunnel::connect::pod::DialObserver;
use ktx_tunnel::proto::connect_head::DialFailure;
use ktx_tunnel::splice::Observer;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `certificate`, `tls`, `preamble`, `version`, `busy`, `h2`, `timeout`, `refused`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `to_ktx` (in-cluster client → developer) or `from_ktx`.
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotTakenLabel {
    /// `refused` (nothing listens on the developer's port), `no_answer`, `tunnel`.
    pub reason: &'static str,
    /// What the session's policy did: `fallback`, `reject`, `reset`.
    pub action: &'static str,
}

/// Every metric of the shadow. In connect mode `streams`, `active_streams`, `stream_errors`
/// and `bytes` count the streams ktx opened (`to_ktx`: from the destinations), and
/// `dial_failures` the ones the pod answered with an error.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connections sent through the tunnel.
    pub streams: Counter,
    /// Connect mode: streams not connected, by reason (`bad-head`, `forbidden`, `refused`,
    /// `unreachable`, `timeout`).
    pub dial_failures: Family<ReasonLabel, Counter>,
    pub active_streams: Gauge,
    /// Streams that ended abnormally (reset, refused by ktx, tunnel lost).
    pub stream_errors: Counter,
    /// Connections closed at once because no tunnel was up.
    pub refused_connections: Counter,
    /// Tunnel connections refused, by reason.
    pub refused_peers: Family<ReasonLabel, Counter>,
    /// Tunnel sessions accepted.
    pub sessions: Counter,
    /// 1 while a tunnel session is up.
    pub session_up: Gauge,
    pub bytes_to_ktx: Counter,
    pub bytes_from_ktx: Counter,
    /// Connections ktx did not take, by reason and by what the policy did with them.
    pub not_taken: Family<NotTakenLabel, Counter>,
}

impl Metrics {
    /// Connections ktx did not take for `reason` that the policy handled with `action`.
    pub fn not_taken(&self, reason: &'static str, action: &'static str) -> u64 {
        self.not_taken
            .get_or_create(&NotTakenLabel { reason, action })
            .get()
    }

    pub fn new(registry: &mut Registry) -> Self {
        let bytes = Family::<DirectionLabel, Counter>::default();
        // One statement each: `get_or_create` returns a lock guard that lives until the end of
        // its statement, and a second call in the same statement would deadlock on it.
        let to_ktx = bytes
            .get_or_create(&DirectionLabel {
                direction: "to_ktx",
            })
            .clone();
        let from_ktx = bytes
            .get_or_create(&DirectionLabel {
                direction: "from_ktx",
            })
            .clone();
        let m = Self {
            streams: Counter::default(),
            dial_failures: Family::default(),
            active_streams: Gauge::default(),
            stream_errors: Counter::default(),
            refused_connections: Counter::default(),
            refused_peers: Family::default(),
            sessions: Counter::default(),
            session_up: Gauge::default(),
            bytes_to_ktx: to_ktx,
            bytes_from_ktx: from_ktx,
            not_taken: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("ktx_shadow");
        r.register(
            "streams",
            "Connections sent through the tunnel",
            m.streams.clone(),
        );
        r.register(
            "not_taken",
            "Connections ktx did not take (developer's process down, no answer, tunnel lost), by reason and by what the session's policy did",
            m.not_taken.clone(),
        );
        r.register(
            "active_streams",
            "Connections in the tunnel now",
            m.active_streams.clone(),
        );
        r.register(
            "stream_errors",
            "Streams that ended abnormally",
            m.stream_errors.clone(),
        );
        r.register(
            "refused_connections",
            "Connections closed at once because no tunnel was up",
            m.refused_connections.clone(),
        );
        r.register(
            "refused_peers",
            "Tunnel connections refused, by reason",
            m.refused_peers.clone(),
        );
        r.register("sessions", "Tunnel sessions accepted", m.sessions.clone());
        r.register(
            "dial_failures",
            "Connect mode: streams the pod could not connect, by reason",
            m.dial_failures.clone(),
        );
        r.register(
            "session_up",
            "1 while a tunnel session is up",
            m.session_up.clone(),
        );
        r.register("bytes", "Bytes carried through the tunnel", bytes);
        m
    }

    /// Refused tunnel connections for one reason label.
    pub fn refused_peers(&self, reason: &'static str) -> u64 {
        self.refused_peers
            .get_or_create(&ReasonLabel { reason })
            .get()
    }
}

impl Metrics {
    /// Connect mode: streams answered with `failure`.
    pub fn dial_failures(&self, failure: DialFailure) -> u64 {
        self.dial_failures
            .get_or_create(&ReasonLabel {
                reason: failure.label(),
            })
            .get()
    }
}

impl DialObserver for Metrics {
    fn opened(&self) {
        self.streams.inc();
        self.active_streams.inc();
    }

    fn failed(&self, failure: DialFailure) {
        self.dial_failures
            .get_or_create(&ReasonLabel {
                reason: failure.label(),
            })
            .inc();
    }

    fn closed(&self, cut: bool) {
        self.active_streams.dec();
        if cut {
            self.stream_errors.inc();
        }
    }
}

impl Observer for Metrics {
    fn sent(&self, n: u64) {
        self.bytes_to_ktx.inc_by(n);
    }

    fn received(&self, n: u64) {
        self.bytes_from_ktx.inc_by(n);
    }
}
