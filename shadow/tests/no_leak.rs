//! The descriptor-leak check runs in its own test binary: it counts this process's open file
//! descriptors, which tests running in parallel in the same process would disturb.

#[path = "support/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_short_connections_leave_no_descriptor_behind() {
    const N: usize = 10_000;
    const PARALLEL: usize = 50;
    let rig = Rig::start().await;
    // Warm up once so lazily opened descriptors (runtime internals) are in the baseline.
    assert_eq!(round_trip(rig.service(), b"warm").await.unwrap(), b"warm");
    within(
        "warm-up to settle",
        until(|| rig.shadow.metrics.active_streams.get() == 0),
    )
    .await;
    let before = fd_count();

    let service = rig.service();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        let next = next.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < N {
                let got = round_trip(service, b"x").await.expect("short connection");
                assert_eq!(got, b"x");
            }
        });
    }
    within("10,000 connections", async {
        while let Some(r) = workers.join_next().await {
            r.expect("worker");
        }
    })
    .await;
    assert_eq!(rig.shadow.metrics.streams.get(), N as u64 + 1);
    assert_eq!(rig.shadow.metrics.stream_errors.get(), 0);
    within(
        "every stream to close",
        until(|| {
            rig.shadow.metrics.active_streams.get() == 0
                && rig.tunnel.stats().active_streams.load(Ordering::Relaxed) == 0
        }),
    )
    .await;
    within(
        "descriptors back to the baseline",
        until(|| fd_count() <= before),
    )
    .await;
    let after = fd_count();
    assert!(
        after <= before,
        "{before} descriptors before, {after} after"
    );
}
