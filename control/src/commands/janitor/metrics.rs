//! The janitor's metrics — a `prometheus-client` registry whose every series carries the
//! namespace as a label — and what its admin port answers: `/metrics`, and `/healthz` (also
//! `/readyz`), which fails once no round has ended for [`STUCK_AFTER`]. The server itself, with
//! its bounds, is [`ktx_telemetry::admin`].

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use ktx_telemetry::admin::{self, Reply};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// `state` of [`Metrics::sessions`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionState {
    pub state: &'static str,
}

/// The janitor's counters, served on `/metrics` as `ktx_janitor_*{namespace="…"}`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// 1 while this replica is the one that acts.
    pub leader: Gauge,
    /// Session Leases seen in the last round, `live` or `expired`.
    pub sessions: Family<SessionState, Gauge>,
    pub sessions_removed: Counter,
    pub restorations: Counter,
    pub orphans_removed: Counter,
    pub rounds: Counter,
    pub errors: Counter,
    /// When the last round ended (for `/healthz`).
    last_round: Mutex<Option<Instant>>,
}

/// `/healthz` fails once no round has ended for this long: the loop is stuck (a hung API call),
/// and a restart is the cure. Longer than the longest legitimate wait of a round (the 120 s
/// default `--timeout` for a lock or a scale-back).
pub const STUCK_AFTER: Duration = Duration::from_secs(180);

impl Metrics {
    /// The metrics of the janitor of `namespace`, registered in a new registry.
    pub fn registered(namespace: &str) -> (std::sync::Arc<Metrics>, Registry) {
        let m = std::sync::Arc::new(Metrics::default());
        let mut r = Registry::with_labels(std::iter::once((
            Cow::Borrowed("namespace"),
            Cow::Owned(namespace.to_string()),
        )));
        r.register(
            "ktx_janitor_leader",
            "1 while this replica is the one that acts",
            m.leader.clone(),
        );
        r.register(
            "ktx_janitor_sessions",
            "Session Leases seen in the last round, by state",
            m.sessions.clone(),
        );
        r.register(
            "ktx_janitor_sessions_removed",
            "Expired sessions whose objects were removed",
            m.sessions_removed.clone(),
        );
        r.register(
            "ktx_janitor_restorations",
            "Services given back their selector (and rid of the router)",
            m.restorations.clone(),
        );
        r.register(
            "ktx_janitor_orphans_removed",
            "Leftover shadows and rules without a session",
            m.orphans_removed.clone(),
        );
        r.register(
            "ktx_janitor_rounds",
            "Rounds of looking at the namespace",
            m.rounds.clone(),
        );
        r.register(
            "ktx_janitor_errors",
            "Rounds or Services that failed (retried next round)",
            m.errors.clone(),
        );
        m.set_sessions(0, 0);
        (m, r)
    }

    /// Session Leases seen in the last round.
    pub fn set_sessions(&self, live: usize, expired: usize) {
        let gauge = |state| self.sessions.get_or_create(&SessionState { state }).clone();
        gauge("live").set(i64::try_from(live).unwrap_or(i64::MAX));
        gauge("expired").set(i64::try_from(expired).unwrap_or(i64::MAX));
    }

    pub fn round_done(&self, at: Instant) {
        *self.last_round.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Healthy until a round that has been going on for [`STUCK_AFTER`] (the first one too:
    /// measured from `started`).
    pub fn healthy(&self, started: Instant, now: Instant) -> bool {
        let last = *self.last_round.lock().unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last.unwrap_or(started)) < STUCK_AFTER
    }
}

/// The admin port's answer to `req`; `started` is when the janitor started.
pub(super) fn respond<B>(
    req: &Request<B>,
    metrics: &Metrics,
    registry: &Mutex<Registry>,
    started: Instant,
) -> Reply {
    if req.method() != Method::GET {
        return admin::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => admin::metrics(registry),
        "/healthz" | "/readyz" if metrics.healthy(started, Instant::now()) => {
            admin::text(StatusCode::OK, "ok\n")
        }
        "/healthz" | "/readyz" => admin::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no round ended for {STUCK_AFTER:?}: stuck\n"),
        ),
        _ => admin::text(StatusCode::NOT_FOUND, "try /metrics or /healthz\n"),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn health_fails_only_when_a_round_is_stuck() {
        let t0 = Instant::now();
        let m = Metrics::default();
        assert!(m.healthy(t0, t0 + STUCK_AFTER - Duration::from_secs(1)));
        assert!(!m.healthy(t0, t0 + STUCK_AFTER));
        m.round_done(t0 + STUCK_AFTER);
        assert!(m.healthy(t0, t0 + STUCK_AFTER + Duration::from_secs(1)));
    }

    async fn body(r: Reply) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    /// The series names and labels e2e/tests/janitor.rs and dashboards read.
    #[tokio::test]
    async fn metrics_render_as_prometheus_text_with_the_namespace() {
        let (m, registry) = Metrics::registered("shop");
        let registry = Mutex::new(registry);
        m.restorations.inc_by(2);
        m.leader.set(1);
        let r = respond(&get("/metrics"), &m, &registry, Instant::now());
        assert_eq!(r.status(), StatusCode::OK);
        let text = body(r).await;
        for line in [
            "ktx_janitor_restorations_total{namespace=\"shop\"} 2\n",
            "ktx_janitor_leader{namespace=\"shop\"} 1\n",
            "ktx_janitor_sessions{namespace=\"shop\",state=\"expired\"} 0\n",
            "ktx_janitor_sessions{namespace=\"shop\",state=\"live\"} 0\n",
            "ktx_janitor_sessions_removed_total{namespace=\"shop\"} 0\n",
            "ktx_janitor_orphans_removed_total{namespace=\"shop\"} 0\n",
            "ktx_janitor_rounds_total{namespace=\"shop\"} 0\n",
            "ktx_janitor_errors_total{namespace=\"shop\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn health_is_served_and_other_methods_and_paths_are_refused() {
        let (m, registry) = Metrics::registered("shop");
        let registry = Mutex::new(registry);
        let t0 = Instant::now();
        let health = respond(&get("/healthz"), &m, &registry, t0);
        assert_eq!(health.status(), StatusCode::OK);
        let stuck = respond(
            &get("/healthz"),
            &m,
            &registry,
            t0.checked_sub(STUCK_AFTER).unwrap(),
        );
        assert_eq!(stuck.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(stuck).await.contains("stuck"));
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            respond(&post, &m, &registry, t0).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&get("/x"), &m, &registry, t0).status(),
            StatusCode::NOT_FOUND
        );
    }
}
