//! `ktx mesh` against the real cluster, with the real binary: a test backend deployed as the
//! original workload, another one running on this machine as the developer's process, and
//! requests from a pod through the Service's ClusterIP (no DNS in the test cluster).
//!
//! Each test works in its own namespace and checks, at the end, that the Service is exactly as
//! before and that no ktx object is left.

#[path = "support/ktx.rs"]
mod support;

use std::time::{Duration, Instant};

use ktx_e2e::{image, secs, testbackend_manifest, Cluster, Namespace};
use support::{
    ask_from_pod, assert_nothing_left, end_session, ktx, ktx_run, local_backend, mesh_cmd,
    service_fingerprint, start_mesh_with, uptime, Proc,
};

/// `orders` (Service port 8080 → targetPort `http`) answered by "original".
fn deploy_orders(ns: &Namespace) {
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
}

#[test]
fn mesh_sends_marked_requests_to_the_developer_and_ctrl_c_restores_exactly() {
    let Some(cluster) = Cluster::from_env("mesh_http1") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-http1");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let ip = ns.cluster_ip("orders");
    let (_dev, port) = local_backend("developer");

    let started = Instant::now();
    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut ktx(
            &ns,
            &[
                "mesh",
                "orders",
                "--expose",
                &format!("{port}:8080"),
                "--versionMark",
                "foobar",
                "-o",
                "json",
            ],
        ),
    );
    let json = mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    let up = started.elapsed();
    assert!(json.contains(&format!("http://{ip}:8080/")), "{json}");
    assert!(json.contains("VERSION: foobar"), "{json}");

    let url = format!("http://{ip}:8080/");
    let logs = ask_from_pod(
        &ns,
        "client",
        &url,
        &[("VERSION: foobar", "developer"), ("", "original")],
    );
    let first_routed = started.elapsed();
    eprintln!(
        "mesh: session up after {:.1}s; first routed request answered {:.1}s after `ktx mesh` started ({})",
        up.as_secs_f64(),
        first_routed.as_secs_f64(),
        logs.trim()
    );

    let stop = Instant::now();
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    eprintln!("mesh: teardown took {:.1}s", stop.elapsed().as_secs_f64());
    assert!(ok, "ktx mesh did not end cleanly after Ctrl-C:\n{out}");
    assert_eq!(
        service_fingerprint(&ns, "orders"),
        before,
        "Service orders is not exactly as before"
    );
    assert_nothing_left(&ns, secs(60));
    ask_from_pod(&ns, "after", &url, &[("VERSION: foobar", "original")]);
}

#[test]
fn a_failed_setup_leaves_nothing_behind() {
    let Some(cluster) = Cluster::from_env("mesh_failed_setup") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-failed-setup");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "orders",
            "--expose",
            "8080",
            "--routerImage",
            "ktx.local/no-such-router:dev",
            "--timeout",
            "20s",
        ],
        secs(120),
    );
    assert!(
        !ok,
        "ktx mesh succeeded with a router image that does not exist:\n{out}"
    );
    assert!(
        out.contains("router") && out.contains("no-such-router"),
        "the error does not name the router image:\n{out}"
    );
    assert!(out.contains("rolling back"), "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    // The kubelet may still be busy trying to pull the missing image before it kills the pod.
    assert_nothing_left(&ns, secs(150));

    // A failure after the Lease, in the shadow's branch (the router's may have switched S by
    // then): the shadow's image is missing.
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "orders",
            "--expose",
            "8080",
            "--shadowImage",
            "ktx.local/no-such-shadow:dev",
            "--timeout",
            "20s",
        ],
        secs(120),
    );
    assert!(
        !ok,
        "ktx mesh succeeded with a shadow image that does not exist:\n{out}"
    );
    assert!(
        out.contains("no-such-shadow"),
        "the error does not name the shadow image:\n{out}"
    );
    assert!(out.contains("rolling back"), "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(150));
    ask_from_pod(
        &ns,
        "after",
        &format!("http://{}:8080/", ns.cluster_ip("orders")),
        &[("", "original")],
    );
}

#[test]
fn ctrl_c_in_the_middle_of_setup_restores_exactly() {
    let Some(cluster) = Cluster::from_env("mesh_interrupted_setup") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-interrupted");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut ktx(
            &ns,
            &["mesh", "orders", "--expose", "8080", "--versionMark", "x"],
        ),
    );
    // After the selector switch and the Lease, with the shadow still starting: the most state
    // there is before the rule. The router and the shadow start side by side, and the rule
    // follows the switch within milliseconds when the shadow happens to be Ready first, so a
    // Ctrl-C sent on seeing the switch could land after the session is up. Made certain:
    // ktx is stopped before it creates the shadow pod until the router is Ready; resumed, it
    // switches at once, while the new shadow pod needs seconds to be Ready.
    mesh.wait_line(false, "Created Deployment", secs(120));
    mesh.signal("-STOP");
    let rollout = ns.cluster().kubectl(&[
        "-n",
        ns.name(),
        "rollout",
        "status",
        "deployment/orders-ktx-router",
        "--timeout=120s",
    ]);
    mesh.signal("-CONT");
    rollout.unwrap_or_else(|e| panic!("the router did not become Ready while ktx waited: {e}"));
    mesh.wait_line(false, "now selects the router", secs(120));
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(!ok, "an interrupted setup must not report success:\n{out}");
    assert!(out.contains("interrupted"), "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn kill_9_then_clean_restores_the_service() {
    let Some(cluster) = Cluster::from_env("mesh_kill9_clean") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-kill9");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let mut mesh = Proc::spawn(
        "ktx mesh",
        &mut ktx(
            &ns,
            &[
                "mesh",
                "orders",
                "--expose",
                "8080",
                "--versionMark",
                "gone",
            ],
        ),
    );
    mesh.wait_line(false, "shadow pod", secs(120));
    mesh.kill9();
    assert_ne!(
        service_fingerprint(&ns, "orders"),
        before,
        "the Service should still point at the router right after kill -9"
    );

    // While the Lease is fresh, clean must leave the session alone.
    let (ok, out) = ktx_run(&ns, &["clean"], secs(60));
    assert!(ok, "{out}");
    assert!(
        out.contains("kept live session"),
        "clean touched a live session:\n{out}"
    );
    assert!(!support::ktx_leftovers(&ns).is_empty());

    // Lease duration (15 s) + clean's grace (10 s), then clean restores everything.
    std::thread::sleep(Duration::from_secs(27));
    let (ok, out) = ktx_run(&ns, &["clean"], secs(120));
    assert!(ok, "{out}");
    assert!(out.contains("expired session"), "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    assert_nothing_left(&ns, secs(60));
}

#[test]
fn refusals_name_the_problem() {
    let Some(cluster) = Cluster::from_env("mesh_refusals") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-refusals");
    let (ok, out) = ktx_run(&ns, &["mesh", "nope", "--expose", "80"], secs(60));
    assert!(!ok);
    assert!(
        out.contains("Service") && out.contains("nope") && out.contains("not found"),
        "{out}"
    );

    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - port: 80\n",
    );
    let (ok, out) = ktx_run(&ns, &["mesh", "manual", "--expose", "80"], secs(60));
    assert!(!ok);
    assert!(out.contains("has no selector"), "{out}");

    deploy_orders(&ns);
    let (ok, out) = ktx_run(
        &ns,
        &["mesh", "orders", "--expose", "3001:http-x"],
        secs(60),
    );
    assert!(!ok);
    assert!(out.contains("has no port http-x"), "{out}");
    // The targetPort given where the Service port belongs: explained. (Service port 8080 →
    // targetPort http = 8080 here, so use a Service with distinct numbers.)
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: orders\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    let (ok, out) = ktx_run(&ns, &["mesh", "web", "--expose", "3001:8080"], secs(60));
    assert!(!ok);
    assert!(out.contains("use --expose 3001:80"), "{out}");
    assert_nothing_left(&ns, secs(30));
}

/// `ktx mesh` for `service` with `mark`, `-o json`, waiting until the session is up.
fn start_mesh(ns: &Namespace, service: &str, port: u16, mark: &str) -> Proc {
    start_mesh_with(ns, service, port, mark, &[])
}

#[test]
fn two_developers_share_a_service_and_the_last_one_restores_it() {
    let Some(cluster) = Cluster::from_env("mesh_two_developers") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-two-devs");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (_alice_local, alice_port) = local_backend("alice");
    let (_bob_local, bob_port) = local_backend("bob");

    let mut alice = start_mesh(&ns, "orders", alice_port, "alice");
    let bob = start_mesh(&ns, "orders", bob_port, "bob");

    // Same conditions as a live session, spelled differently: refused, naming the session.
    let (ok, out) = ktx_run(
        &ns,
        &[
            "mesh",
            "orders",
            "--expose",
            "8080",
            "--header",
            "VERSION=alice",
        ],
        secs(60),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("the live session alice of Service orders"),
        "{out}"
    );
    let (ok, out) = ktx_run(
        &ns,
        &["mesh", "orders", "--expose", "8080", "--versionMark", "bob"],
        secs(60),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("session bob of Service orders is already running"),
        "{out}"
    );

    ask_from_pod(
        &ns,
        "both",
        &url,
        &[
            ("VERSION: alice", "alice"),
            ("VERSION: bob", "bob"),
            ("", "original"),
        ],
    );
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(60));
    assert!(ok, "{status}");
    for s in [
        "\"session\":\"alice\"",
        "\"session\":\"bob\"",
        "\"alive\":true",
    ] {
        assert!(status.contains(s), "ktx status -o json lacks {s}: {status}");
    }
    // Requests routed per rule, from the router's metrics: each developer's got answers above.
    for dev in ["alice", "bob"] {
        // Each session is one flat JSON object (keys in any order).
        let requests = status
            .split('{')
            .find(|o| o.contains(&format!("\"session\":\"{dev}\"")))
            .and_then(|o| o.split_once("\"requests\":"))
            .and_then(|(_, n)| {
                n.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u64>()
                    .ok()
            });
        assert!(
            requests.is_some_and(|n| n >= 1),
            "ktx status -o json should count {dev}'s routed requests: {status}"
        );
    }

    // Alice leaves: Bob's route and the router stay.
    alice.interrupt();
    let (ok, out) = alice.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert!(out.contains("stays taken over for 1 live session"), "{out}");
    ask_from_pod(
        &ns,
        "bob-only",
        &url,
        &[("VERSION: alice", "original"), ("VERSION: bob", "bob")],
    );
    assert_ne!(service_fingerprint(&ns, "orders"), before);

    // Bob is the last one out: the Service is exactly as before, nothing is left.
    end_session(&ns, bob, "orders", &before, secs(60));
}

#[test]
fn twenty_sessions_joining_and_leaving_at_once_end_consistent() {
    let Some(cluster) = Cluster::from_env("mesh_twenty") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-twenty");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let (_dev, port) = local_backend("developer");
    let spawn = |i: usize| {
        let mark = format!("dev{i}");
        Proc::spawn(
            &format!("ktx mesh ({mark})"),
            &mut ktx(
                &ns,
                &[
                    "mesh",
                    "orders",
                    "--expose",
                    &format!("{port}:8080"),
                    "--versionMark",
                    &mark,
                    "-o",
                    "json",
                ],
            ),
        )
    };
    let mut first: Vec<Proc> = (0..10).map(spawn).collect();
    for p in &mut first {
        p.wait_line(true, "\"command\":\"mesh\"", secs(240));
    }
    // The first ten leave while ten more join.
    for p in &first {
        p.interrupt();
    }
    let mut second: Vec<Proc> = (10..20).map(spawn).collect();
    for p in &mut first {
        let (ok, out) = p.wait_exit(secs(120));
        assert!(ok, "{out}");
    }
    for p in &mut second {
        p.wait_line(true, "\"command\":\"mesh\"", secs(240));
    }
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(60));
    assert!(ok, "{status}");
    assert_eq!(
        status.matches("\"alive\":true").count(),
        10,
        "exactly the ten joined sessions are alive: {status}"
    );
    let table = ns.kubectl(&[
        "get",
        "configmap",
        "orders-ktx-routes",
        "-o",
        "jsonpath={.data.routes\\.yaml}",
    ]);
    assert_eq!(table.matches("session:").count(), 10, "{table}");
    ask_from_pod(
        &ns,
        "mixed",
        &format!("http://{}:8080/", ns.cluster_ip("orders")),
        &[
            ("VERSION: dev3", "original"),
            ("VERSION: dev13", "developer"),
        ],
    );
    for p in &second {
        p.interrupt();
    }
    for p in &mut second {
        let (ok, out) = p.wait_exit(secs(120));
        assert!(ok, "{out}");
    }
    assert_eq!(service_fingerprint(&ns, "orders"), before);
    assert_nothing_left(&ns, secs(120));
}

/// One line of the marked client loop: `UPTIME|unmarked|VERSION: fb|VERSION: rj|UPTIME at its
/// end`.
struct Round<'a> {
    at: f64,
    unmarked: &'a str,
    fallback: &'a str,
    reject: &'a str,
    end: f64,
}

fn rounds(logs: &str) -> Vec<Round<'_>> {
    logs.lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some(Round {
                at: f.next()?.trim().parse().ok()?,
                unmarked: f.next()?.trim(),
                fallback: f.next()?.trim(),
                reject: f.next()?.trim(),
                end: f.next()?.trim().parse().ok()?,
            })
        })
        .collect()
}

#[test]
fn kill_9_sends_marked_requests_back_at_once_and_the_next_mesh_cleans_up() {
    let Some(cluster) = Cluster::from_env("mesh_kill9_live") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("mesh-kill9-live");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (_alice_local, alice_port) = local_backend("alice");
    let (_bob_local, bob_port) = local_backend("bob");
    // fb falls back to the original when its developer is gone; rj answers 503.
    let mut fb = start_mesh(&ns, "orders", alice_port, "fb");
    let mut rj = start_mesh_with(
        &ns,
        "orders",
        bob_port,
        "rj",
        &["--on-unavailable", "reject"],
    );

    // 200 rounds, 5 per second, one connection per request. busybox wget shows only the status
    // line of an error (the 503's body naming the session is checked on loopback, in
    // router/tests); the original workload never answers 503.
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do t=$(cut -d' ' -f1 /proc/uptime); \
           a=$(timeout 4 wget -q -O - {url} 2>&1) || a=FAIL; \
           f=$(timeout 4 wget -q -O - --header 'VERSION: fb' {url} 2>&1) || f=FAIL; \
           o=$(timeout 4 wget -q -O - --header 'VERSION: rj' {url} 2>&1) && r=$o \
             || {{ case \"$o\" in *'HTTP/1.1 503 '*) r=503;; *) r=FAIL;; esac; }}; \
           e=$(cut -d' ' -f1 /proc/uptime); \
           echo \"$t|$a|$f|$r|$e\"; i=$((i+1)); sleep 0.2; done"
    );
    let (logs, killed_at) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let run = ns.run_pod(
                "marked",
                &image("busybox"),
                &["/bin/sh", "-c", &script],
                secs(240),
            );
            assert_eq!(run.phase, "Succeeded", "client loop: {}", run.logs);
            run.logs
        });
        // Kill once the loop has seen both developers answer.
        let seen = ktx_e2e::poll(secs(90), || {
            let l = ns
                .cluster()
                .kubectl(&["-n", ns.name(), "logs", "marked"])
                .unwrap_or_default();
            l.contains("|alice|bob").then_some(())
        });
        assert!(seen.is_some(), "the loop never reached both developers");
        std::thread::sleep(secs(2));
        let at = uptime();
        fb.kill9();
        rj.kill9();
        (client.join().expect("client thread"), at)
    });

    let rounds = rounds(&logs);
    assert!(rounds.len() >= 150, "too few rounds:\n{logs}");
    assert!(
        rounds.iter().all(|r| r.unmarked == "original"),
        "a request without the header was disturbed:\n{logs}"
    );
    let (early, late): (Vec<&Round>, Vec<&Round>) = rounds.iter().partition(|r| r.at < killed_at);
    // A round that began before the kill and ended after it saw both (its requests straddle
    // the kill): only rounds over before the kill are checked here.
    assert!(
        early
            .iter()
            .filter(|r| r.end < killed_at)
            .all(|r| r.fallback == "alice" && r.reject == "bob"),
        "before the kill every marked request reaches its developer:\n{logs}"
    );
    // Requests sent in the instant between the kill and the shadow seeing its tunnel end can
    // fail (they were already written to a tunnel that was gone); from then on the shadow's
    // ports are closed and each rule does what it says, until the Lease is stale and the router
    // ignores the rule (both then reach the original).
    let after = |r: &Round| r.at - killed_at;
    let fell_back = late
        .iter()
        .rposition(|r| r.fallback != "original")
        .map_or(Some(0.0), |i| late.get(i + 1).map(|r| after(r)))
        .unwrap_or_else(|| panic!("VERSION: fb never fell back to the original:\n{logs}"));
    let first_503 = late
        .iter()
        .position(|r| r.reject == "503")
        .unwrap_or_else(|| panic!("VERSION: rj never got the session's 503:\n{logs}"));
    let ignored = late[first_503..]
        .iter()
        .position(|r| r.reject != "503")
        .map(|i| first_503 + i);
    let settled = first_503.max(
        late.iter()
            .position(|r| r.fallback == "original")
            .unwrap_or(0),
    );
    let failed = late[..settled]
        .iter()
        .filter(|r| r.fallback == "FAIL" || r.reject == "FAIL")
        .count();
    let rejected = after(late[first_503]);
    eprintln!(
        "kill -9: marked requests fell back {fell_back:.2}s after the kill, the reject rule answered 503 after {rejected:.2}s ({failed} marked requests failed before), and the stale rule was ignored after {}",
        ignored.map_or("the end of the loop".to_string(), |i| format!("{:.1}s", after(late[i])))
    );
    // "As soon as the tunnel is known dead": the shadow closes its ports when the tunnel ends.
    assert!(fell_back < 2.0, "fallback took {fell_back:.2}s:\n{logs}");
    assert!(rejected < 2.0, "503 took {rejected:.2}s:\n{logs}");
    if let Some(i) = ignored {
        // The Lease (15 s, renewed every 5 s) went stale: the rule no longer applies.
        // At least ~10 s after the kill (15 s after the last renewal, every 5 s); 5 s of margin.
        assert!(
            after(late[i]) > 5.0,
            "the rule was dropped too early:\n{logs}"
        );
        assert!(
            late[i..].iter().all(|r| r.reject == "original"),
            "after the 503s, VERSION: rj must reach the original:\n{logs}"
        );
    }

    // Both Leases have expired by now (15 s + clean's 10 s grace): status says so, and the next
    // mesh of this Service cleans up after them.
    std::thread::sleep(secs(3));
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(60));
    assert!(ok, "{status}");
    assert!(
        status.contains("\"session\":\"fb\"")
            && status.contains("\"session\":\"rj\"")
            && !status.contains("\"alive\":true"),
        "both sessions should show as expired: {status}"
    );
    let (_carol_local, carol_port) = local_backend("carol");
    let again = start_mesh(&ns, "orders", carol_port, "again");
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(60));
    assert!(ok, "{status}");
    assert!(
        status.contains("\"session\":\"again\"")
            && !status.contains("\"session\":\"fb\"")
            && !status.contains("\"session\":\"rj\""),
        "the new mesh should have removed the expired sessions: {status}"
    );
    let shadows = ns.kubectl(&[
        "get",
        "pods,services",
        "-l",
        "ktx.dev/role=shadow",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    assert!(
        shadows
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim().contains(' '))
            .all(|l| l.contains("again")),
        "shadows of the dead sessions are still there:\n{shadows}"
    );
    ask_from_pod(
        &ns,
        "after",
        &url,
        &[
            ("VERSION: again", "carol"),
            ("VERSION: fb", "original"),
            ("", "original"),
        ],
    );
    end_session(&ns, again, "orders", &before, secs(60));
}

#[test]
fn a_laptop_whose_clock_runs_ahead_leaves_teammates_sessions_alone() {
    let Some(cluster) = Cluster::from_env("mesh_clock_ahead") else {
        return;
    };
    // libfaketime (Debian's `faketime`, installed by e2e/ci.sh) moves this machine's clock for
    // one process only.
    let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !std::path::Path::new(faketime).exists() {
        assert!(
            std::env::var("KTX_E2E_REQUIRED").is_err(),
            "{faketime} is missing: apt-get install faketime"
        );
        eprintln!("SKIPPED mesh_clock_ahead: {faketime} is missing (apt-get install faketime)");
        return;
    }
    support::build();
    let ns = cluster.namespace("mesh-clock");
    deploy_orders(&ns);
    let before = service_fingerprint(&ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (_alice_local, alice_port) = local_backend("alice");
    let (_carol_local, carol_port) = local_backend("carol");
    let alice = start_mesh(&ns, "orders", alice_port, "alice");

    // Carol's clock is 90 s ahead: by it, Alice's Lease (15 s, renewed every 5 s, + 10 s grace)
    // expired long ago. Her ktx must judge by the API server's clock, not kill Alice's session.
    let mut cmd = mesh_cmd(&ns, "orders", &format!("{carol_port}:8080"), "carol", &[]);
    cmd.env("LD_PRELOAD", faketime)
        .env("FAKETIME", "+90s")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut carol = Proc::spawn("ktx mesh (carol, clock +90 s)", &mut cmd);
    let warned = carol.wait_line(false, "clock is", secs(60));
    assert!(
        warned.contains("ahead of the API server"),
        "ktx should say the clock is off: {warned}"
    );
    carol.wait_line(true, "\"command\":\"mesh\"", secs(180));

    ask_from_pod(
        &ns,
        "both",
        &url,
        &[
            ("VERSION: alice", "alice"),
            ("VERSION: carol", "carol"),
            ("", "original"),
        ],
    );
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(60));
    assert!(ok, "{status}");
    assert!(
        status.contains("\"session\":\"alice\"")
            && status.contains("\"session\":\"carol\"")
            && !status.contains("\"alive\":false"),
        "both sessions must be alive: {status}"
    );

    carol.interrupt();
    let (ok, out) = carol.wait_exit(secs(90));
    assert!(ok, "{out}");
    end_session(&ns, alice, "orders", &before, secs(60));
}
