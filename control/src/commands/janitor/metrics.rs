//! The janitor's metrics — a `prometheus-client` registry whose every series carries the
//! namespace as a label — and what its admin port answers: `/metrics`, and `/healthz` (also
//! `/readyz`), which fails once the rounds have made no progress for [`stuck_after`] (the
//! chart's liveness probe then restarts the janitor). The server itself, with
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
#[derive(Debug)]
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
    /// When a round last ended or a Service of it was done (for `/healthz`).
    last_progress: Mutex<Option<Instant>>,
    /// No progress for this long: stuck ([`stuck_after`]).
    stuck_after: Duration,
}

/// The least time without progress that counts as stuck (a hung API call; a restart is the
/// cure).
pub const STUCK_AFTER: Duration = Duration::from_secs(180);

/// How long the rounds may go without progress before `/healthz` fails: longer than the
/// longest legitimate work on one Service, a wait for its lock plus a scale-back, each up to
/// `--timeout`; at least [`STUCK_AFTER`]. (It was [`STUCK_AFTER`] for a whole round, which
/// with two Services to scale back, or one with the 120 s default, could legitimately take
/// longer: the liveness probe then killed the janitor mid-way, round after round.)
pub fn stuck_after(timeout: Duration) -> Duration {
    timeout
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(60))
        .max(STUCK_AFTER)
}

impl Metrics {
    /// Metrics with no series registered, stuck after `stuck_after` without progress.
    pub fn new(stuck_after: Duration) -> Metrics {
        Metrics {
            leader: Gauge::default(),
            sessions: Family::default(),
            sessions_removed: Counter::default(),
            restorations: Counter::default(),
            orphans_removed: Counter::default(),
            rounds: Counter::default(),
            errors: Counter::default(),
            last_progress: Mutex::new(None),
            stuck_after,
        }
    }

    /// The metrics of the janitor of `namespace`, registered in a new registry.
    pub fn registered(
        namespace: &str,
        stuck_after: Duration,
    ) -> (std::sync::Arc<Metrics>, Registry) {
        let m = std::sync::Arc::new(Metrics::new(stuck_after));
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

    /// A round ended, or one Service of it was done.
    pub fn progressed(&self, at: Instant) {
        *self.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Healthy until the rounds made no progress for the stuck time (the first one too:
    /// measured from `started`).
    pub fn healthy(&self, started: Instant, now: Instant) -> bool {
        let last = *self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last.unwrap_or(started)) < self.stuck_after
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
            format!("no progress for {:?}: stuck\n", metrics.stuck_after),
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
        let m = Metrics::new(STUCK_AFTER);
        assert!(m.healthy(t0, t0 + STUCK_AFTER - Duration::from_secs(1)));
        assert!(!m.healthy(t0, t0 + STUCK_AFTER));
        m.progressed(t0 + STUCK_AFTER);
        assert!(m.healthy(t0, t0 + STUCK_AFTER + Duration::from_secs(1)));
    }

    /// One Service's legitimate work (its lock, then a scale-back, each up to --timeout) fits
    /// in the stuck time; a round of several such Services stays healthy because each Service
    /// done counts as progress. With the 120 s default, one such Service took up to 240 s
    /// against a fixed 180 s for the whole round: the liveness probe killed the janitor.
    #[test]
    fn one_services_longest_work_is_not_stuck_and_each_service_is_progress() {
        let timeout = Duration::from_secs(120);
        let m = Metrics::new(stuck_after(timeout));
        let t0 = Instant::now();
        let one_service = timeout * 2 + Duration::from_secs(5);
        assert!(
            m.healthy(t0, t0 + one_service),
            "one Service's lock and scale-back"
        );
        m.progressed(t0 + one_service);
        assert!(m.healthy(t0, t0 + one_service * 2), "a second such Service");
        assert!(!m.healthy(t0, t0 + one_service + stuck_after(timeout)));
        assert_eq!(stuck_after(Duration::from_secs(10)), STUCK_AFTER);
        assert_eq!(stuck_after(Duration::MAX), Duration::MAX);
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
        let (m, registry) = Metrics::registered("shop", STUCK_AFTER);
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
        let (m, registry) = Metrics::registered("shop", STUCK_AFTER);
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
