//! The Lease keeper on paused time, with scripted renewal outcomes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::*;

/// What a scripted renewal does.
#[derive(Clone)]
enum Step {
    Answer(Renewal),
    Hang,
}

struct Rig {
    reports: Arc<Mutex<Vec<(Duration, String)>>>,
    lost: watch::Receiver<Option<String>>,
    /// Kept for the test's length (the keeper runs until then).
    _task: JoinHandle<()>,
    start: Instant,
}

fn start(script: Vec<Step>) -> Rig {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let renew = move || {
        let step = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Answer(Renewal::Done));
        async move {
            match step {
                Step::Answer(r) => r,
                Step::Hang => std::future::pending().await,
            }
        }
    };
    let start = Instant::now();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    let (tx, lost) = watch::channel(None);
    let task = tokio::spawn(keep_renewed(renew, "lease x".into(), tx, move |m| {
        r.lock().unwrap().push((start.elapsed(), m))
    }));
    Rig {
        reports,
        lost,
        _task: task,
        start,
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_renewal_is_reported_after_a_third_of_the_lease_and_on_expiry_then_resumes() {
    // Renewals hang (a frozen API server, a laptop asleep): 7 calls of 4 s, 1 s apart, due
    // from 5 s on, so about 40 s; then they work again.
    let rig = start(vec![Step::Hang; 7]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reports = rig.reports.lock().unwrap().clone();
    assert_eq!(
        reports[0].0,
        RENEW_EVERY + REPORT_AFTER,
        "reported at once, while the next call hangs: {reports:?}"
    );
    assert!(reports[0].1.contains("has not been renewed"), "{reports:?}");
    assert!(
        reports.iter().any(|(at, m)| *at >= LOST_AFTER
            && *at <= LEASE_DURATION + RENEW_CALL_TIMEOUT
            && m.contains("stopped sending your requests")),
        "the expiry is said: {reports:?}"
    );
    assert!(
        reports.last().unwrap().1.contains("renewed again"),
        "and the recovery: {reports:?}"
    );
    assert!(
        rig.lost.borrow().is_none(),
        "time alone never ends a session: the same Lease is renewed and the session resumes"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_are_reported_once_and_recovery_too() {
    let fail = || Step::Answer(Renewal::Failed("503".into()));
    // Due at 5 s, failing every second until 10 s, renewed at 11 s.
    let mut script = vec![fail(); 6];
    script.push(Step::Answer(Renewal::Done));
    let rig = start(script);
    tokio::time::sleep(RENEW_EVERY * 4).await;
    let reports = rig.reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0].0, RENEW_EVERY + REPORT_AFTER);
    assert!(reports[0].1.contains("503"), "{reports:?}");
    assert!(reports[1].1.contains("renewed again"), "{reports:?}");
    assert!(
        rig.lost.borrow().is_none(),
        "one slow stretch is not a lost session"
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_failure_is_retried_quietly() {
    let fail = || Step::Answer(Renewal::Failed("503".into()));
    let rig = start(vec![fail(), fail()]);
    tokio::time::sleep(LEASE_DURATION * 2).await;
    assert!(rig.reports.lock().unwrap().is_empty());
    assert!(rig.lost.borrow().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_ends_the_session_at_once() {
    let mut rig = start(vec![Step::Answer(Renewal::Gone)]);
    rig.lost.changed().await.unwrap();
    assert_eq!(rig.start.elapsed(), RENEW_EVERY);
    assert!(rig.lost.borrow().as_ref().unwrap().contains("was deleted"));
}

#[tokio::test(start_paused = true)]
async fn healthy_renewals_report_nothing() {
    let rig = start(vec![]);
    tokio::time::sleep(LEASE_DURATION * 4).await;
    assert!(rig.reports.lock().unwrap().is_empty());
    assert!(rig.lost.borrow().is_none());
}
