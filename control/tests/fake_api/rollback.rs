//! Setup fails at step k, for every k: the namespace is left exactly as it was. Teardown runs
//! in the order DESIGN.md gives (rule first, restore before delete), and the last session out
//! restores the Service.
//!
//! A "step" here is one write to the API server (create, update, patch, delete): the fake makes
//! the k-th one fail, for k from 1 to the number of writes a clean setup makes, so every step of
//! mesh, exchange (selector and scale) and preview is hit, in order. Pods are Ready when
//! created and the tunnel reaches an in-process shadow, so each setup runs to its very end; the
//! router's "rule applied" confirmation finds no router pod to ask (the fake runs no
//! Deployment's pods) and is skipped by ktx as it would be without a reachable router.

use std::time::Duration;

use futures_util::future::join_all;

use super::server::Call;
use super::support::{self, cli, team_namespace, Snapshot, MESH};

/// The whole test's bound: setups on the fake take milliseconds; a mesh teardown waits
/// KUBE_PROXY_SETTLE (2 s) once.
const PATIENCE: Duration = Duration::from_secs(30);

/// How one run went.
#[derive(Debug)]
struct Outcome {
    /// `Ok(())`: the session came up (and was then ended); `Err`: setup failed.
    setup: Result<(), String>,
    /// The namespace after the command returned.
    after: Snapshot,
    /// Writes the setup made before it came up (or failed).
    setup_writes: usize,
    calls: Vec<Call>,
}

/// Runs `args` against a fresh team namespace, the `fail`-th write failing; ends the session
/// once it is up.
async fn attempt(args: &[&str], fail: Option<usize>) -> (Snapshot, Outcome) {
    let (fake, before) = team_namespace("tb");
    if let Some(k) = fail {
        fake.fail_write(k);
    }
    let cli = cli(args);
    let ctx = support::ctx(&fake, &cli);
    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let run = support::run_ctx(&ctx, &cli, &shutdown);
    tokio::pin!(run);
    let mut setup_writes = 0;
    let r = tokio::select! {
        r = &mut run => Err(format!("{}", r.expect_err("a session returns only when stopped"))),
        () = ctx.progress.until(|l| l.contains("Session is up")) => {
            setup_writes = fake.writes();
            stop.fire();
            run.await.map_err(|e| format!("teardown failed: {e}"))
        }
    };
    let setup = r;
    if setup.is_err() {
        setup_writes = fake.writes();
    }
    let outcome = Outcome {
        setup,
        after: fake.snapshot(),
        setup_writes,
        calls: fake.calls(),
    };
    (before, outcome)
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(format!("left behind: {}/{}", k.0, k.1)),
            Some(b) if b != v => out.push(format!("changed: {}/{}: {v} (was {b})", k.0, k.1)),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(format!("deleted: {}/{}", k.0, k.1));
        }
    }
    out.join("\n")
}

/// The table for one command: a clean run first (its setup's write count is the table's
/// length), then a run failing at each write of the setup, all at once.
async fn every_step_rolls_back(args: &[&str]) {
    let (before, clean) = attempt(args, None).await;
    assert!(
        clean.setup.is_ok(),
        "{args:?} comes up on the fake: {:?}",
        clean.setup
    );
    assert_eq!(
        diff(&before, &clean.after),
        "",
        "{args:?}: a session's end leaves the namespace as it was"
    );
    let n = clean.setup_writes;
    assert!(n >= 3, "{args:?}: a setup makes several writes ({n})");
    eprintln!("{args:?}: failing each of the setup's {n} writes in turn");
    let runs = join_all((1..=n).map(|k| attempt(args, Some(k)))).await;
    for (k, (before, o)) in (1..=n).zip(runs) {
        let writes: Vec<&Call> = o
            .calls
            .iter()
            .filter(|c| !matches!(c.verb, "get" | "list" | "watch"))
            .collect();
        let step = writes.get(k - 1).map(|c| c.to_string()).unwrap_or_default();
        // A write ktx retries (releasing the lock) may fail once without failing the setup.
        let retried = writes.get(k - 1).is_some_and(|failed| {
            writes[k..]
                .iter()
                .any(|c| c.to_string() == failed.to_string())
        });
        assert!(
            o.setup.is_err() || retried,
            "{args:?}: a failure of write {k} ({step}) fails the setup, got {:?}",
            o.setup
        );
        assert_eq!(
            diff(&before, &o.after),
            "",
            "{args:?}: setup failing at write {k} ({step}) rolls back exactly"
        );
    }
}

#[tokio::test]
async fn mesh_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(PATIENCE, every_step_rolls_back(MESH))
        .await
        .expect("in time");
}

#[tokio::test]
async fn exchange_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&["exchange", "tb", "--expose", "3001:80"]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn exchange_scale_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&["exchange", "tb", "--mode", "scale", "--expose", "3001:80"]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn preview_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&["preview", "tb-dev", "--expose", "3001:80"]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn manual_mesh_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&[
            "mesh",
            "tb",
            "--mode",
            "manual",
            "--versionMark",
            "ver:",
            "--expose",
            "3001:80",
        ]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn manual_mesh_applying_istio_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&[
            "mesh",
            "tb",
            "--mode",
            "manual",
            "--apply-istio",
            "--versionMark",
            "ci",
            "--expose",
            "3001:80",
        ]),
    )
    .await
    .expect("in time");
}

/// A cluster without Istio: `--apply-istio` is refused with what to do, and the rollback
/// leaves the namespace as it was (the undo of an Istio object that was never created must
/// not fail on the kind not being served).
#[tokio::test]
async fn apply_istio_without_istio_is_refused_and_leaves_nothing() {
    let (fake, before) = team_namespace("tb");
    fake.unserve("destinationrules");
    fake.unserve("virtualservices");
    let cli = cli(&[
        "mesh",
        "tb",
        "--mode",
        "manual",
        "--apply-istio",
        "--versionMark",
        "ci",
        "--expose",
        "3001:80",
    ]);
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let err = tokio::time::timeout(PATIENCE, support::run(&fake, &cli, &shutdown))
        .await
        .expect("in time")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("Istio is not installed"), "{err}");
    assert_eq!(diff(&before, &fake.snapshot()), "");
}

#[tokio::test]
async fn kt_connect_line_setup_failing_at_any_step_rolls_back_exactly() {
    // kt-connect's exchange line and pod knobs: the Deployment stands for its Service.
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&[
            "-d",
            "-f",
            "-l",
            "team=orders",
            "--podQuota",
            "0.5c,512m",
            "--imagePullSecret",
            "regcred",
            "exchange",
            "deployment/tb",
            "--mode",
            "scale",
            "--expose",
            "3001:80",
        ]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn external_preview_setup_failing_at_any_step_rolls_back_exactly() {
    tokio::time::timeout(
        PATIENCE,
        every_step_rolls_back(&[
            "preview",
            "tb-dev",
            "--expose",
            "3001:80",
            "--external=nodeport",
        ]),
    )
    .await
    .expect("in time");
}

#[tokio::test]
async fn manual_mesh_writes_only_its_lease_and_shadow() {
    let args = [
        "mesh",
        "tb",
        "--mode",
        "manual",
        "--versionMark",
        "ci",
        "--expose",
        "3001:80",
    ];
    let (_, o) = tokio::time::timeout(PATIENCE, attempt(&args, None))
        .await
        .expect("in time");
    assert!(o.setup.is_ok(), "{:?}", o.setup);
    let writes: Vec<String> = o
        .calls
        .iter()
        .filter(|c| !matches!(c.verb, "get" | "list" | "watch"))
        .map(|c| format!("{} {}", c.verb, c.resource))
        .collect();
    let setup: Vec<&str> = writes[..o.setup_writes]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        setup,
        ["create leases", "create secrets", "create pods",],
        "no router, no stuntman, no routes, Service tb untouched"
    );
}
