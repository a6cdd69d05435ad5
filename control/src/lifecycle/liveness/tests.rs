//! Liveness by observed change, on paused time with scripted Lease lists.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use super::*;

fn lease(name: &str, renewed: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            ..Default::default()
        }),
    }
}

/// Lists that change over (paused) time: `at(t)` is the list at `t` seconds after the start.
fn script(
    at: impl Fn(u64) -> Vec<Lease> + Send + 'static,
) -> impl FnMut() -> std::future::Ready<Result<Vec<Lease>>> {
    let start = Instant::now();
    let at = Arc::new(Mutex::new(at));
    move || {
        let t = start.elapsed().as_secs();
        std::future::ready(Ok((at.lock().unwrap())(t)))
    }
}

/// A teammate whose laptop clock was stepped back an hour: its renewTimes look an hour old on
/// our clock, but they change every 5 s. It stays alive; the truly dead one does not.
#[tokio::test(start_paused = true)]
async fn a_renewed_lease_with_an_old_timestamp_is_alive_and_a_still_one_is_dead() {
    let list = script(|t| {
        let step = t / 5;
        vec![
            lease("teammate", &format!("2026-12-04T14:00:{:02}Z", step * 5)),
            lease("crashed", "2026-12-04T14:00:00Z"),
        ]
    });
    let start = Instant::now();
    let (leases, v) = observe_with(Window::default(), list, |_| false)
        .await
        .unwrap();
    let by_name = |n: &str| leases.iter().find(|l| l.name_any() == n).unwrap().clone();
    assert!(v.alive(&by_name("teammate")));
    assert!(!v.alive(&by_name("crashed")));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(15) + GRACE,
        "judged dead after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fresh_looking_leases_are_alive_without_waiting() {
    let list = script(|_| vec![lease("a", "2026-12-04T14:00:00Z")]);
    let start = Instant::now();
    let (_, v) = observe_with(Window::default(), list, |_| true)
        .await
        .unwrap();
    assert!(v.alive(&lease("a", "2026-12-04T14:00:00Z")));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// Every suspect renewed: the verdict comes as soon as that is seen, nothing is dead.
#[tokio::test(start_paused = true)]
async fn suspects_that_renew_end_the_wait_early() {
    let list = script(|t| {
        vec![lease(
            "a",
            if t < 3 {
                "2026-12-04T14:00:00Z"
            } else {
                "2026-12-04T14:00:05Z"
            },
        )]
    });
    let start = Instant::now();
    let (leases, v) = observe_with(Window::default(), list, |_| false)
        .await
        .unwrap();
    assert!(v.alive(&leases[0]));
    assert!(
        start.elapsed() <= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}
