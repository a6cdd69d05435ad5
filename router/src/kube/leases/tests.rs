//! Lease freshness with explicit instants (no sleeping), and the publishing task under paused
//! time.

use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::kube::testing;

const SEC: Duration = Duration::from_secs(1);

/// A Lease renewed at `renew` (wall clock), lasting `secs`.
fn lease(name: &str, renew: Option<SystemTime>, secs: Option<i32>) -> Lease {
    // Distinct resource versions, as the API server would give.
    static RV: AtomicI64 = AtomicI64::new(1);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: Some(RV.fetch_add(1, Ordering::Relaxed).to_string()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            renew_time: renew.map(|t| {
                MicroTime(
                    Timestamp::from_microsecond(unix_micros(t)).expect("test times are in range"),
                )
            }),
            lease_duration_seconds: secs,
            holder_identity: Some("dev@laptop".into()),
            ..Default::default()
        }),
    }
}

/// A tracker that has completed its first list with `leases`, at `now` / `wall`.
fn listed(leases: Vec<Lease>, now: Instant, wall: SystemTime) -> LeaseTracker {
    let mut t = LeaseTracker::default();
    t.apply(Event::Init, now, wall);
    for l in leases {
        t.apply(Event::InitApply(l), now, wall);
    }
    t.apply(Event::InitDone, now, wall);
    t
}

fn set(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn observation_reads_renew_time_and_positive_duration() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let o = Observation::of(&lease("a", Some(wall), Some(15)));
    assert_eq!(o.renew_time_us, Some(1_700_000_000_000_000));
    assert_eq!(o.duration, Some(Duration::from_secs(15)));
    assert_eq!(Observation::of(&lease("a", None, Some(0))).duration, None);
    assert_eq!(Observation::of(&lease("a", None, Some(-5))).duration, None);
    let no_spec = Lease::default();
    assert_eq!(
        Observation::of(&no_spec),
        Observation {
            renew_time_us: None,
            duration: None
        }
    );
}

#[test]
fn a_recent_lease_seen_first_is_fresh_for_one_duration_of_the_routers_clock() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let tr = listed(vec![lease("a", Some(wall - 3 * SEC), Some(10))], t0, wall);
    assert!(tr.listed());
    assert_eq!(tr.fresh(t0), set(&["a"]));
    // Counted as renewed when first seen, not 3 s before (that would trust the laptop's clock).
    assert_eq!(tr.next_expiry(t0), Some(t0 + 10 * SEC));
    assert_eq!(
        tr.fresh(t0 + 10 * SEC - Duration::from_millis(1)),
        set(&["a"])
    );
    assert_eq!(tr.fresh(t0 + 10 * SEC), set(&[]));
    assert_eq!(tr.next_expiry(t0 + 10 * SEC), None);
}

#[test]
fn a_stale_lease_seen_first_is_not_fresh_until_it_changes() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    // Either a dead session, or a laptop clock 60 s behind: the next renewal tells them apart.
    let mut tr = listed(vec![lease("a", Some(wall - 60 * SEC), Some(10))], t0, wall);
    assert_eq!(tr.fresh(t0), set(&[]));
    assert_eq!(tr.next_expiry(t0), None, "nothing to wake up for");

    let t1 = t0 + 2 * SEC;
    tr.apply(
        Event::Apply(lease("a", Some(wall - 58 * SEC), Some(10))),
        t1,
        wall + 2 * SEC,
    );
    assert_eq!(
        tr.fresh(t1),
        set(&["a"]),
        "renewal observed: fresh despite the skewed clock"
    );
    assert_eq!(tr.next_expiry(t1), Some(t1 + 10 * SEC));
}

#[test]
fn a_laptop_clock_ahead_within_the_duration_still_counts() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let tr = listed(vec![lease("a", Some(wall + 4 * SEC), Some(10))], t0, wall);
    assert_eq!(tr.fresh(t0), set(&["a"]));
}

#[test]
fn only_a_changed_renew_time_extends_freshness() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut tr = listed(vec![lease("a", Some(wall), Some(10))], t0, wall);

    // Another update (new resourceVersion, same renewTime): not a renewal.
    let t1 = t0 + 6 * SEC;
    tr.apply(
        Event::Apply(lease("a", Some(wall), Some(10))),
        t1,
        wall + 6 * SEC,
    );
    assert_eq!(tr.next_expiry(t1), Some(t0 + 10 * SEC));

    // A relist showing the same renewTime: not a renewal either.
    tr.apply(Event::Init, t1, wall);
    tr.apply(Event::InitApply(lease("a", Some(wall), Some(10))), t1, wall);
    tr.apply(Event::InitDone, t1, wall);
    assert_eq!(tr.next_expiry(t1), Some(t0 + 10 * SEC));

    // A renewal at t2 counts from t2.
    let t2 = t0 + 8 * SEC;
    tr.apply(
        Event::Apply(lease("a", Some(wall + 8 * SEC), Some(10))),
        t2,
        wall + 8 * SEC,
    );
    assert_eq!(tr.fresh(t0 + 17 * SEC), set(&["a"]));
    assert_eq!(tr.fresh(t2 + 10 * SEC), set(&[]));
}

#[test]
fn a_renewal_seen_during_a_relist_counts() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut tr = listed(vec![lease("a", Some(wall), Some(10))], t0, wall);
    let t1 = t0 + 9 * SEC;
    tr.apply(Event::Init, t1, wall);
    tr.apply(
        Event::InitApply(lease("a", Some(wall + 5 * SEC), Some(10))),
        t1,
        wall,
    );
    assert_eq!(
        tr.next_expiry(t1),
        Some(t0 + 10 * SEC),
        "old view until the list is done"
    );
    tr.apply(Event::InitDone, t1, wall);
    assert_eq!(tr.next_expiry(t1), Some(t1 + 10 * SEC));
}

#[test]
fn deleted_or_unlisted_leases_are_not_fresh() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut tr = listed(
        vec![
            lease("a", Some(wall), Some(10)),
            lease("b", Some(wall), Some(10)),
        ],
        t0,
        wall,
    );
    assert_eq!(tr.fresh(t0), set(&["a", "b"]));
    tr.apply(Event::Delete(lease("a", Some(wall), Some(10))), t0, wall);
    assert_eq!(tr.fresh(t0), set(&["b"]));
    // "b" was deleted while the watch was down: the relist does not show it.
    tr.apply(Event::Init, t0, wall);
    tr.apply(Event::InitDone, t0, wall);
    assert_eq!(tr.fresh(t0), set(&[]));
}

#[test]
fn leases_without_renew_time_or_duration_are_never_fresh() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut tr = listed(
        vec![
            lease("no-renew", None, Some(10)),
            lease("no-duration", Some(wall), None),
        ],
        t0,
        wall,
    );
    assert_eq!(tr.fresh(t0), set(&[]));
    tr.apply(
        Event::Apply(lease("no-duration", Some(wall + SEC), None)),
        t0,
        wall,
    );
    assert_eq!(tr.fresh(t0), set(&[]));
    // A renewTime that disappears ends freshness.
    tr.apply(Event::Apply(lease("x", Some(wall), Some(10))), t0, wall);
    assert_eq!(tr.fresh(t0), set(&["x"]));
    tr.apply(Event::Apply(lease("x", None, Some(10))), t0, wall);
    assert_eq!(tr.fresh(t0), set(&[]));
}

#[test]
fn the_next_expiry_is_the_soonest_of_the_fresh_leases() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let tr = listed(
        vec![
            lease("long", Some(wall), Some(30)),
            lease("short", Some(wall), Some(5)),
            lease("stale", Some(wall - 100 * SEC), Some(1)),
        ],
        t0,
        wall,
    );
    assert_eq!(tr.next_expiry(t0), Some(t0 + 5 * SEC));
    assert_eq!(tr.next_expiry(t0 + 5 * SEC), Some(t0 + 30 * SEC));
}

#[test]
fn nothing_is_listed_before_the_first_init_done() {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let mut tr = LeaseTracker::default();
    tr.apply(Event::Init, t0, wall);
    tr.apply(Event::InitApply(lease("a", Some(wall), Some(10))), t0, wall);
    assert!(!tr.listed());
    assert_eq!(tr.fresh(t0), set(&[]));
}

fn fresh_now(rx: &mut watch::Receiver<Option<HashSet<String>>>) -> Option<HashSet<String>> {
    rx.borrow_and_update().clone()
}

#[tokio::test(start_paused = true)]
async fn the_task_publishes_after_the_list_and_at_each_expiry() {
    let (feed, events) = testing::feed();
    let (tx, mut rx) = watch::channel(Some(HashSet::new()));
    rx.borrow_and_update();
    tokio::spawn(run(events, Watched::new("Lease", "leases", "dev"), tx));

    let wall = SystemTime::now();
    feed.send(Ok(Event::Init)).unwrap();
    feed.send(Ok(Event::InitApply(lease("a", Some(wall), Some(10)))))
        .unwrap();
    testing::idle().await;
    assert!(
        !rx.has_changed().unwrap(),
        "no session is alive until the list is done"
    );
    feed.send(Ok(Event::InitDone)).unwrap();
    testing::idle().await;
    assert_eq!(fresh_now(&mut rx), Some(set(&["a"])));

    // Renewed 6 s later: now fresh until 16 s after the start.
    let start = Instant::now();
    tokio::time::sleep(6 * SEC).await;
    feed.send(Ok(Event::Apply(lease("a", Some(wall + 6 * SEC), Some(10)))))
        .unwrap();
    testing::idle().await;
    assert!(
        !rx.has_changed().unwrap(),
        "still fresh: nothing to publish"
    );

    tokio::time::sleep_until(start + 16 * SEC - Duration::from_millis(10)).await;
    assert!(!rx.has_changed().unwrap());
    tokio::time::sleep_until(start + 16 * SEC).await;
    testing::idle().await;
    assert_eq!(
        fresh_now(&mut rx),
        Some(set(&[])),
        "expired on the timer, with no event"
    );

    // A new renewal brings it back at once.
    feed.send(Ok(Event::Apply(lease(
        "a",
        Some(wall + 17 * SEC),
        Some(10),
    ))))
    .unwrap();
    testing::idle().await;
    assert_eq!(fresh_now(&mut rx), Some(set(&["a"])));
}
