//! The janitor's counters and its admin port: `/metrics` (Prometheus text) and `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The janitor's counters, served on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub leader: AtomicU64,
    pub sessions_live: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub sessions_removed: AtomicU64,
    pub restorations: AtomicU64,
    pub orphans_removed: AtomicU64,
    pub rounds: AtomicU64,
    pub errors: AtomicU64,
    /// When the last round ended (for `/healthz`).
    last_round: std::sync::Mutex<Option<Instant>>,
}

/// `/healthz` fails once no round has ended for this long: the loop is stuck (a hung API call),
/// and a restart is the cure. Longer than the longest legitimate wait of a round (the 120 s
/// default `--timeout` for a lock or a scale-back).
pub const STUCK_AFTER: Duration = Duration::from_secs(180);

impl Metrics {
    pub fn round_done(&self, at: Instant) {
        *self.last_round.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Healthy until a round that has been going on for [`STUCK_AFTER`] (the first one too:
    /// measured from `started`).
    pub fn healthy(&self, started: Instant, now: Instant) -> bool {
        let last = *self.last_round.lock().unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last.unwrap_or(started)) < STUCK_AFTER
    }

    pub fn render(&self, namespace: &str) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ns = format!("namespace=\"{namespace}\"");
        format!(
            "# HELP ktx_janitor_leader 1 while this replica is the one that acts.\n\
             # TYPE ktx_janitor_leader gauge\n\
             ktx_janitor_leader{{{ns}}} {}\n\
             # HELP ktx_janitor_sessions Session Leases seen in the last round, by state.\n\
             # TYPE ktx_janitor_sessions gauge\n\
             ktx_janitor_sessions{{{ns},state=\"live\"}} {}\n\
             ktx_janitor_sessions{{{ns},state=\"expired\"}} {}\n\
             # HELP ktx_janitor_sessions_removed_total Expired sessions whose objects were removed.\n\
             # TYPE ktx_janitor_sessions_removed_total counter\n\
             ktx_janitor_sessions_removed_total{{{ns}}} {}\n\
             # HELP ktx_janitor_restorations_total Services given back their selector (and rid of the router).\n\
             # TYPE ktx_janitor_restorations_total counter\n\
             ktx_janitor_restorations_total{{{ns}}} {}\n\
             # HELP ktx_janitor_orphans_removed_total Leftover shadows and rules without a session.\n\
             # TYPE ktx_janitor_orphans_removed_total counter\n\
             ktx_janitor_orphans_removed_total{{{ns}}} {}\n\
             # HELP ktx_janitor_rounds_total Rounds of looking at the namespace.\n\
             # TYPE ktx_janitor_rounds_total counter\n\
             ktx_janitor_rounds_total{{{ns}}} {}\n\
             # HELP ktx_janitor_errors_total Rounds or Services that failed (retried next round).\n\
             # TYPE ktx_janitor_errors_total counter\n\
             ktx_janitor_errors_total{{{ns}}} {}\n",
            g(&self.leader),
            g(&self.sessions_live),
            g(&self.sessions_expired),
            g(&self.sessions_removed),
            g(&self.restorations),
            g(&self.orphans_removed),
            g(&self.rounds),
            g(&self.errors),
        )
    }
}

/// Serves `/metrics` and `/healthz`, one request per connection.
pub(super) async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, namespace: String) {
    let started = Instant::now();
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = sock.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            let head = String::from_utf8_lossy(&buf[..len]);
            let target = head.split_whitespace().nth(1).unwrap_or("");
            // Scrapers and the API server's proxy may add a query (`?timeout=20s`).
            let path = target.split('?').next().unwrap_or("");
            let (status, body) = match (read, head.starts_with("GET ")) {
                (Ok(Some(())), true) => match path {
                    "/metrics" => ("200 OK", metrics.render(&namespace)),
                    "/healthz" | "/readyz" if metrics.healthy(started, Instant::now()) => {
                        ("200 OK", "ok\n".to_string())
                    }
                    "/healthz" | "/readyz" => (
                        "503 Service Unavailable",
                        format!("no round ended for {STUCK_AFTER:?}: stuck\n"),
                    ),
                    _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
                },
                (Ok(Some(())), false) => ("405 Method Not Allowed", "GET only\n".to_string()),
                _ => ("400 Bad Request", "incomplete request\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = Metrics::default();
        m.restorations.fetch_add(2, Ordering::Relaxed);
        m.leader.store(1, Ordering::Relaxed);
        let text = m.render("shop");
        assert!(text.contains("ktx_janitor_restorations_total{namespace=\"shop\"} 2\n"));
        assert!(text.contains("ktx_janitor_leader{namespace=\"shop\"} 1\n"));
        assert!(text.contains("ktx_janitor_sessions{namespace=\"shop\",state=\"expired\"} 0\n"));
    }
}
