//! `ktx janitor`: the in-cluster mode the Helm chart runs, one Deployment per namespace. It
//! looks at the namespace's session Leases every `--interval` and, once every session of a
//! Service has stopped renewing, does what `ktx clean` would: removes the dead sessions'
//! objects, scales back `exchange --mode scale` workloads, restores the Service's selector and
//! deletes the router, routes and stuntman — so a laptop that dies mid-session leaves a
//! working Service within about 20 seconds, without anyone running `ktx clean`.
//!
//! Two judgements are made on the janitor's own clock, never on the timestamps a developer's
//! machine wrote (laptop clocks drift):
//! - a session is dead when the janitor has not seen its Lease's `renewTime` change for
//!   `leaseDurationSeconds + --grace` ([`Renewals`]); a Lease it has not seen yet is alive;
//! - replicas elect one leader through the Lease [`JANITOR_ELECTION_LEASE`] ([`Election`]);
//!   only the leader acts, the others keep watching so that a takeover starts with history.
//!
//! `/metrics` (Prometheus text) and `/healthz` are served on `--metrics-addr`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use ktx_names::{
    role, ServiceNames, JANITOR_ELECTION_LEASE, LABEL_MANAGED_BY, LABEL_PART_OF, LABEL_ROLE,
    MANAGED_BY_VALUE, PART_OF_VALUE,
};
use kube::api::PostParams;
use kube::ResourceExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clean;
use crate::cli::JanitorArgs;
use crate::error::{status_code, Error, Result};
use crate::flow::Ctx;
use crate::kube::Kube;
use crate::leave::Judge;
use crate::objects::meta;
use crate::shutdown::Shutdown;

/// How long the leader's claim lasts without renewal; a standby takes over after seeing no
/// renewal for this long.
pub const ELECTION_DURATION: Duration = Duration::from_secs(15);

/// When the janitor last saw each session Lease's `renewTime` change, on its own clock.
#[derive(Debug)]
pub struct Renewals {
    grace: Duration,
    /// Lease UID → (renewTime as written, when that value was first seen).
    seen: HashMap<String, (String, Instant)>,
}

fn renew_mark(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

fn uid(lease: &Lease) -> String {
    lease.uid().unwrap_or_else(|| lease.name_any())
}

impl Renewals {
    pub fn new(grace: Duration) -> Renewals {
        Renewals {
            grace,
            seen: HashMap::new(),
        }
    }

    /// Records the Leases listed at `now`; forgets Leases that are gone.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut next = HashMap::with_capacity(leases.len());
        for l in leases {
            let mark = renew_mark(l);
            let since = match self.seen.get(&uid(l)) {
                Some((old, since)) if *old == mark => *since,
                _ => now,
            };
            next.insert(uid(l), (mark, since));
        }
        self.seen = next;
    }

    /// Alive unless its renewTime has stood still for its duration plus the grace. A Lease
    /// without a usable duration counts as [`crate::objects::lease::LEASE_DURATION`]. A Lease
    /// read later than the last [`Renewals::observe`] whose renewTime moved since is alive: a
    /// verdict of death always rests on a renewTime seen unchanged for the whole window, however
    /// long a round takes.
    pub fn alive(&self, lease: &Lease, now: Instant) -> bool {
        let Some((mark, since)) = self.seen.get(&uid(lease)) else {
            return true;
        };
        if *mark != renew_mark(lease) {
            return true;
        }
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(crate::objects::lease::LEASE_DURATION);
        now.saturating_duration_since(*since) < duration + self.grace
    }
}

/// What this replica should do about the election Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No Lease yet: create it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, and they stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else's, still renewed.
    Standby { leader: String },
}

/// Leader election through one Lease, judged on this replica's clock.
#[derive(Debug)]
pub struct Election {
    identity: String,
    /// The other holder's (holder, renewTime) and when it was first seen unchanged.
    other: Option<((String, String), Instant)>,
    /// When our claim was last written successfully.
    renewed: Option<Instant>,
}

impl Election {
    pub fn new(identity: impl Into<String>) -> Election {
        Election {
            identity: identity.into(),
            other: None,
            renewed: None,
        }
    }

    /// Decides from the Lease as read at `now`.
    pub fn decide(&mut self, lease: Option<&Lease>, now: Instant) -> Claim {
        let Some(lease) = lease else {
            return Claim::Create;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder == self.identity {
            return Claim::Renew;
        }
        self.renewed = None;
        if holder.is_empty() {
            return Claim::TakeOver;
        }
        let key = (holder.clone(), renew_mark(lease));
        let since = match &self.other {
            Some((k, since)) if *k == key => *since,
            _ => now,
        };
        self.other = Some((key, since));
        if now.saturating_duration_since(since) >= ELECTION_DURATION {
            Claim::TakeOver
        } else {
            Claim::Standby { leader: holder }
        }
    }

    /// Records a successful write of our claim at `at`.
    pub fn claimed(&mut self, at: Instant) {
        self.renewed = Some(at);
        self.other = None;
    }

    /// Records a failed write (someone else won, or the API failed).
    pub fn lost(&mut self) {
        self.renewed = None;
    }

    /// Whether we may act at `now`: our claim was written within half its duration, so no
    /// standby can have taken over yet.
    pub fn leading(&self, now: Instant) -> bool {
        claim_fresh(self.renewed, now)
    }

    /// When our claim was last written, if we hold it.
    pub fn renewed(&self) -> Option<Instant> {
        self.renewed
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// A claim written at `renewed` lets us act until half the election's duration has passed, so
/// no standby can have taken over yet.
fn claim_fresh(renewed: Option<Instant>, now: Instant) -> bool {
    renewed.is_some_and(|at| now.saturating_duration_since(at) < ELECTION_DURATION / 2)
}

fn election_lease(namespace: &str, identity: Option<&str>, now: Timestamp) -> Lease {
    let labels = [
        (LABEL_PART_OF.to_string(), PART_OF_VALUE.to_string()),
        (LABEL_ROLE.to_string(), "janitor".to_string()),
    ]
    .into_iter()
    .collect();
    Lease {
        metadata: meta(JANITOR_ELECTION_LEASE, namespace, labels),
        spec: Some(LeaseSpec {
            holder_identity: identity.map(str::to_string),
            lease_duration_seconds: Some(ELECTION_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// One round of the election: read the Lease, decide, write. Returns whether we lead now.
async fn elect(kube: &Kube, election: &mut Election) -> Result<bool> {
    let api = kube.api::<Lease>();
    let current = kube.get::<Lease>(JANITOR_ELECTION_LEASE).await?;
    let started = Instant::now();
    let claim = election.decide(current.as_ref(), started);
    let now = Timestamp::now();
    let written = match (&claim, current) {
        (Claim::Standby { .. }, _) => return Ok(false),
        (Claim::Create, _) | (_, None) => api
            .create(
                &PostParams::default(),
                &election_lease(&kube.namespace, Some(election.identity()), now),
            )
            .await
            .map(|_| ()),
        (Claim::Renew | Claim::TakeOver, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if claim == Claim::TakeOver {
                spec.holder_identity = Some(election.identity().to_string());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(ELECTION_DURATION.as_secs() as i32);
            spec.renew_time = Some(MicroTime(now));
            // The replace carries the resourceVersion read: of two replicas taking over at
            // once, exactly one write succeeds.
            api.replace(JANITOR_ELECTION_LEASE, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match written {
        Ok(()) => {
            election.claimed(started);
            if claim != Claim::Renew {
                tracing::info!(identity = election.identity(), "became the leader");
            }
            Ok(true)
        }
        Err(e) if status_code(&e) == Some(409) => {
            election.lost();
            Ok(false)
        }
        Err(e) => {
            election.lost();
            Err(e).map_err(|source| Error::Api {
                action: format!(
                    "write leases.coordination.k8s.io {}/{JANITOR_ELECTION_LEASE}",
                    kube.namespace
                ),
                hint: crate::error::hint_for(
                    status_code(&source),
                    "update",
                    "leases.coordination.k8s.io",
                    &kube.namespace,
                ),
                source,
            })
        }
    }
}

/// Gives the leadership up on shutdown, so a standby takes over at once.
async fn release(kube: &Kube, election: &Election) {
    if let Ok(Some(mut lease)) = kube.get::<Lease>(JANITOR_ELECTION_LEASE).await {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(election.identity()) {
            spec.holder_identity = None;
            let _ = kube
                .api::<Lease>()
                .replace(JANITOR_ELECTION_LEASE, &PostParams::default(), &lease)
                .await;
        }
    }
}

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
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, namespace: String) {
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

/// When our claim on the election Lease was last written, as [`campaign`] publishes it.
type Leadership = watch::Receiver<Option<Instant>>;

/// Whether we may act at `now` (see [`Election::leading`]).
fn leads(leadership: &Leadership, now: Instant) -> bool {
    claim_fresh(*leadership.borrow(), now)
}

/// Resolves once our leadership may have passed to a standby.
async fn leadership_lost(leadership: &Leadership) {
    while leads(leadership, Instant::now()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The election, on its own beat so that a long round never lets the claim lapse: every
/// `interval`, read and write the election Lease and publish when we last held it.
async fn campaign(
    ctx: &Ctx,
    election: &mut Election,
    interval: Duration,
    publish: watch::Sender<Option<Instant>>,
    metrics: &Metrics,
) {
    // The leader gauge is the rounds' to set: they read the claim this publishes.
    let mut was_leading = false;
    loop {
        // Bounded: the client has no read timeout, and a hung write must not freeze the claim
        // we publish (it only goes stale, which stops the rounds from acting).
        match tokio::time::timeout(ELECTION_DURATION / 4, elect(&ctx.kube, election)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.warn(format!("leader election: {e}"));
            }
            Err(_) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.warn(format!(
                    "leader election: no answer from the API server within {:?}",
                    ELECTION_DURATION / 4
                ));
            }
        }
        publish.send_replace(election.renewed());
        // What the rounds will see, not what this attempt returned: a failed read keeps a
        // claim that is still fresh.
        let leading = election.leading(Instant::now());
        if leading != was_leading {
            ctx.progress.done(if leading {
                format!("{} leads: acting on expired sessions", election.identity())
            } else {
                format!(
                    "{} stands by (another replica leads, or the election failed)",
                    election.identity()
                )
            });
            was_leading = leading;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One round as the leader: clean every Service that ktx objects refer to, judging sessions
/// by `renewals`; stops before the next Service when our leadership may have passed.
async fn act(ctx: &Ctx, renewals: &Renewals, leadership: &Leadership, metrics: &Metrics) {
    let services = match clean::services_in_use(ctx).await {
        Ok(s) => s,
        Err(e) => {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
            ctx.progress
                .warn(format!("could not list ktx objects: {e}; retrying"));
            return;
        }
    };
    for s in services {
        let now = Instant::now();
        if !leads(leadership, now) {
            return;
        }
        let alive = |l: &Lease| renewals.alive(l, now);
        let names = ServiceNames::new(s.clone());
        match clean::service_judged(ctx, &names, false, Judge::With(&alive)).await {
            Ok(r) => {
                let n = r.expired_sessions.len() as u64;
                metrics.sessions_removed.fetch_add(n, Ordering::Relaxed);
                metrics
                    .orphans_removed
                    .fetch_add(r.orphans.len() as u64, Ordering::Relaxed);
                if n > 0 || !r.orphans.is_empty() {
                    ctx.progress.done(format!(
                        "Service {}/{s}: removed expired session(s) [{}] and leftover(s) [{}]",
                        ctx.kube.namespace,
                        r.expired_sessions.join(", "),
                        r.orphans.join(", ")
                    ));
                }
                if r.restored {
                    metrics.restorations.fetch_add(1, Ordering::Relaxed);
                    ctx.progress.done(format!(
                        "Service {}/{s}: restored (no live session left)",
                        ctx.kube.namespace
                    ));
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.warn(format!(
                    "Service {}/{s}: could not clean up: {e}; retrying next round",
                    ctx.kube.namespace
                ));
            }
        }
    }
}

/// The janitor's rounds, until SIGTERM: watch the session Leases and, while leading, act. A
/// round is cut short the moment leadership may have passed (a scale-back can wait for
/// minutes); what it left half done is idempotent work for whoever leads next.
async fn rounds(
    ctx: &Ctx,
    args: &JanitorArgs,
    leadership: Leadership,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let mut renewals = Renewals::new(args.grace);
    let sessions = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_ROLE}={}",
        role::SESSION
    );
    loop {
        metrics.rounds.fetch_add(1, Ordering::Relaxed);
        metrics.leader.store(
            u64::from(leads(&leadership, Instant::now())),
            Ordering::Relaxed,
        );
        match ctx.kube.list::<Lease>(&sessions).await {
            Ok(leases) => {
                let now = Instant::now();
                renewals.observe(&leases, now);
                let live = leases.iter().filter(|l| renewals.alive(l, now)).count();
                metrics.sessions_live.store(live as u64, Ordering::Relaxed);
                metrics
                    .sessions_expired
                    .store((leases.len() - live) as u64, Ordering::Relaxed);
                if leads(&leadership, Instant::now()) {
                    tokio::select! {
                        () = act(ctx, &renewals, &leadership, metrics) => {}
                        () = leadership_lost(&leadership) => ctx.progress.warn(
                            "leadership may have passed to another replica; stopping this round"
                        ),
                        // Cut rather than be killed mid-way by the kubelet without releasing.
                        _ = shutdown.reached(1) => return,
                    }
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress
                    .warn(format!("could not list session Leases: {e}; retrying"));
            }
        }
        metrics.round_done(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = shutdown.reached(1) => return,
        }
    }
}

/// `ktx janitor`: runs until SIGTERM.
pub async fn run(ctx: &Ctx, args: &JanitorArgs, shutdown: &Shutdown) -> Result<()> {
    let kube = &ctx.kube;
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| Error::BadName {
            what: format!("--metrics-addr {}", args.metrics_addr),
            reason: format!("cannot listen there ({e}); pick a free address, e.g. 0.0.0.0:9090"),
        })?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(serve_metrics(
        listener,
        metrics.clone(),
        kube.namespace.clone(),
    ));
    // Two janitors started by hand on one machine must not share a name (both would "renew").
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{:04x}",
            crate::session::holder(),
            crate::random::below(0x10000)
        )
    });
    let mut election = Election::new(identity.clone());
    ctx.progress.done(format!(
        "janitor {identity} watching namespace {} every {:?} (metrics on {})",
        kube.namespace, args.interval, args.metrics_addr
    ));
    let (publish, leadership) = watch::channel(None);
    tokio::select! {
        () = campaign(ctx, &mut election, args.interval, publish, &metrics) => {}
        () = rounds(ctx, args, leadership, &metrics, shutdown) => {}
    }
    // Whatever the last attempt returned (a reply lost to the cancel, a claim 7.5–15 s old):
    // `release` gives the Lease up only if it still names us.
    release(kube, &election).await;
    server.abort();
    ctx.progress.done(format!("janitor {identity} stopped"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(uid: &str, holder: Option<&str>, renewed_at: i64) -> Lease {
        let mut l = election_lease("shop", holder, Timestamp::from_second(renewed_at).unwrap());
        l.metadata.uid = Some(uid.to_string());
        l
    }

    #[test]
    fn a_session_is_dead_only_after_its_renewal_stood_still_long_enough() {
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        let l = lease("a", Some("alice"), 1_700_000_000);
        r.observe(std::slice::from_ref(&l), t0);
        // 15 s duration + 3 s grace, on the janitor's clock.
        assert!(r.alive(&l, t0 + Duration::from_secs(17)));
        assert!(!r.alive(&l, t0 + Duration::from_secs(18)));
        // A renewal seen at t0+10 restarts the count.
        let renewed = lease("a", Some("alice"), 1_700_000_005);
        r.observe(std::slice::from_ref(&renewed), t0 + Duration::from_secs(10));
        assert!(r.alive(&renewed, t0 + Duration::from_secs(27)));
        assert!(!r.alive(&renewed, t0 + Duration::from_secs(28)));
    }

    #[test]
    fn an_old_timestamp_alone_does_not_kill_a_session() {
        // A laptop whose clock is an hour behind writes old renewTimes; what counts is that
        // they change.
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        let l = lease("a", Some("alice"), 1_000);
        r.observe(std::slice::from_ref(&l), t0);
        assert!(r.alive(&l, t0 + Duration::from_secs(1)));
        // Unknown Leases (created after the last list) are alive.
        assert!(r.alive(&lease("b", None, 0), t0 + Duration::from_secs(100)));
    }

    #[test]
    fn a_renewal_read_after_the_last_observation_keeps_the_session_alive() {
        // A round that took long: the record is old, but the Lease read now was renewed since.
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::from_secs(3));
        r.observe(&[lease("a", Some("alice"), 1_700_000_000)], t0);
        let renewed = lease("a", Some("alice"), 1_700_000_100);
        assert!(r.alive(&renewed, t0 + Duration::from_secs(100)));
        assert!(!r.alive(
            &lease("a", Some("alice"), 1_700_000_000),
            t0 + Duration::from_secs(100)
        ));
    }

    #[test]
    fn leases_that_are_gone_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Renewals::new(Duration::ZERO);
        r.observe(&[lease("a", None, 1), lease("b", None, 1)], t0);
        r.observe(&[lease("b", None, 1)], t0);
        assert_eq!(r.seen.len(), 1);
    }

    #[test]
    fn election_creates_renews_waits_and_takes_over() {
        let t0 = Instant::now();
        let mut e = Election::new("j-1");
        assert_eq!(e.decide(None, t0), Claim::Create);
        assert_eq!(
            e.decide(Some(&lease("x", Some("j-1"), 5)), t0),
            Claim::Renew
        );
        let other = lease("x", Some("j-2"), 5);
        assert_eq!(
            e.decide(Some(&other), t0),
            Claim::Standby {
                leader: "j-2".into()
            }
        );
        assert_eq!(
            e.decide(
                Some(&other),
                t0 + ELECTION_DURATION - Duration::from_secs(1)
            ),
            Claim::Standby {
                leader: "j-2".into()
            }
        );
        // A renewal by the leader restarts the wait.
        let renewed = lease("x", Some("j-2"), 6);
        assert!(matches!(
            e.decide(Some(&renewed), t0 + ELECTION_DURATION),
            Claim::Standby { .. }
        ));
        assert_eq!(
            e.decide(Some(&renewed), t0 + ELECTION_DURATION * 2),
            Claim::TakeOver
        );
        // A released Lease is taken over at once.
        assert_eq!(e.decide(Some(&lease("x", None, 6)), t0), Claim::TakeOver);
    }

    #[test]
    fn a_leader_stops_acting_well_before_a_standby_may_take_over() {
        let t0 = Instant::now();
        let mut e = Election::new("j-1");
        assert!(!e.leading(t0));
        e.claimed(t0);
        assert!(e.leading(t0 + ELECTION_DURATION / 2 - Duration::from_millis(1)));
        assert!(!e.leading(t0 + ELECTION_DURATION / 2));
        e.lost();
        assert!(!e.leading(t0));
    }

    #[tokio::test]
    async fn a_round_stops_once_the_published_claim_is_stale() {
        let now = Instant::now();
        let (publish, leadership) = watch::channel(Some(now));
        assert!(leads(&leadership, now));
        let still = tokio::time::timeout(Duration::from_millis(20), leadership_lost(&leadership));
        assert!(still.await.is_err(), "a fresh claim keeps the round going");
        // The election loop last held the Lease half its duration ago: stop at once.
        publish.send_replace(now.checked_sub(ELECTION_DURATION / 2));
        leadership_lost(&leadership).await;
        publish.send_replace(None);
        leadership_lost(&leadership).await;
        assert!(!leads(&leadership, now));
    }

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
