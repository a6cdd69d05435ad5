//! The developer's inner loop on the real cluster: the local process stops (to be rebuilt) and
//! starts again while ktx keeps running, and the laptop freezes (`kill -STOP` of ktx) and wakes.
//! Marked requests must follow their rule's policy — `fallback` reaches the original, `reject`
//! answers the 503 naming the session — and never get a 502 or hang, then reach the developer
//! again. Requests come from a pod through the Service's ClusterIP, 5 rounds a second.

#[path = "support/ktx.rs"]
mod support;

use ktx_e2e::{image, secs, testbackend_manifest, Namespace};
use support::{
    end_session, ktx_run, local_backend, local_backend_on, service_fingerprint, start_mesh_with,
    uptime, Proc,
};

/// One round of the client loop: when it started, and for each request what answered and when
/// the answer was complete (uptime). `FAIL` is anything but an answer from a backend or a 503.
#[derive(Debug)]
struct Round<'a> {
    at: f64,
    unmarked: &'a str,
    fallback: &'a str,
    fallback_done: f64,
    reject: &'a str,
    reject_done: f64,
}

fn rounds(logs: &str) -> Vec<Round<'_>> {
    logs.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            Some(Round {
                at: f.first()?.parse().ok()?,
                unmarked: f.get(1)?,
                fallback: f.get(2)?,
                fallback_done: f.get(3)?.parse().ok()?,
                reject: f.get(4)?,
                reject_done: f.get(5)?.parse().ok()?,
            })
        })
        .collect()
}

/// `n` rounds, 5 per second, one connection per request: unmarked, `VERSION: fb` (fallback
/// rule), `VERSION: rj` (reject rule). busybox wget shows only the status line of an error; the
/// original workload never answers 503, so "503" is the reject rule's answer.
fn loop_script(url: &str, n: u32) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do t=$(cut -d' ' -f1 /proc/uptime); \
           a=$(timeout 6 wget -q -O - {url} 2>&1) || a=FAIL; \
           f=$(timeout 6 wget -q -O - --header 'VERSION: fb' {url} 2>&1) || f=FAIL; \
           tf=$(cut -d' ' -f1 /proc/uptime); \
           o=$(timeout 6 wget -q -O - --header 'VERSION: rj' {url} 2>&1) && r=$o \
             || {{ case \"$o\" in *'HTTP/1.1 503 '*) r=503;; *) r=\"FAIL $o\";; esac; }}; \
           tr=$(cut -d' ' -f1 /proc/uptime); \
           echo \"$t|$a|$f|$tf|$r|$tr\"; i=$((i+1)); sleep 0.2; done"
    )
}

/// Runs the client loop (`n` rounds) in a pod; `during` runs on this thread once the loop has
/// seen the fallback rule's developer answer. Returns the loop's output and what `during` did.
fn with_loop<T: Send>(
    ns: &Namespace,
    url: &str,
    n: u32,
    during: impl FnOnce() -> T,
) -> (String, T) {
    let script = loop_script(url, n);
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            let run = ns.run_pod(
                "marked",
                &image("busybox"),
                &["/bin/sh", "-c", &script],
                secs(u64::from(n) + 120),
            );
            assert_eq!(run.phase, "Succeeded", "client loop: {}", run.logs);
            run.logs
        });
        let seen = ktx_e2e::poll(secs(90), || {
            let l = ns
                .cluster()
                .kubectl(&["-n", ns.name(), "logs", "marked"])
                .unwrap_or_default();
            l.contains("|alice|").then_some(())
        });
        assert!(seen.is_some(), "the loop never reached the developers");
        std::thread::sleep(secs(2));
        let t = during();
        (client.join().expect("client thread"), t)
    })
}

/// `orders` answered by "original", meshed twice: `fb` (fallback) → local "alice", `rj`
/// (reject) → local "bob". Returns (fingerprint before, url, fb, rj, alice, bob, ports).
struct Meshed {
    before: String,
    url: String,
    fb: Proc,
    rj: Proc,
    alice: Proc,
    bob: Proc,
    alice_port: u16,
    bob_port: u16,
}

fn meshed(ns: &Namespace) -> Meshed {
    support::build();
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (alice, alice_port) = local_backend("alice");
    let (bob, bob_port) = local_backend("bob");
    let fb = start_mesh_with(ns, "orders", alice_port, "fb", &[]);
    let rj = start_mesh_with(
        ns,
        "orders",
        bob_port,
        "rj",
        &["--on-unavailable", "reject"],
    );
    Meshed {
        before,
        url,
        fb,
        rj,
        alice,
        bob,
        alice_port,
        bob_port,
    }
}

fn end(ns: &Namespace, m: Meshed) {
    let mut rj = m.rj;
    rj.interrupt();
    let (ok, out) = rj.wait_exit(secs(90));
    assert!(ok, "ktx mesh rj did not end cleanly after Ctrl-C:\n{out}");
    end_session(ns, m.fb, "orders", &m.before, secs(120));
}

fn assert_unmarked_untouched(rounds: &[Round<'_>], logs: &str) {
    assert!(
        rounds.iter().all(|r| r.unmarked == "original"),
        "a request without the header was disturbed:\n{logs}"
    );
}

#[test]
fn restarting_the_local_process_never_gives_a_marked_request_a_502() {
    let Some(cluster) = ktx_e2e::Cluster::from_env("inner_loop_restart") else {
        return;
    };
    let ns = cluster.namespace("inner-restart");
    let mut m = meshed(&ns);
    let (alice_port, bob_port) = (m.alice_port, m.bob_port);
    let url = m.url.clone();
    let (logs, (stopped, started)) = with_loop(&ns, &url, 60, || {
        // The developer stops both processes to rebuild them, and starts them 3 s later.
        let stopped = uptime();
        m.alice.kill9();
        m.bob.kill9();
        // `ktx status` says so (ktx probes its LOCAL ports every 2 s).
        let mut said_down = false;
        while uptime() < stopped + 3.0 {
            let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(10));
            if ok
                && status
                    .matches("\"localProcess\":\"not listening on 127.0.0.1:")
                    .count()
                    == 2
            {
                said_down = true;
                break;
            }
        }
        let rest = stopped + 3.0 - uptime();
        if rest > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(rest));
        }
        assert!(
            said_down,
            "ktx status never showed both local processes down"
        );
        let started = uptime();
        let alice = local_backend_on("alice", alice_port);
        let bob = local_backend_on("bob", bob_port);
        m.alice = alice;
        m.bob = bob;
        (stopped, started)
    });
    let rounds = rounds(&logs);
    assert!(rounds.len() >= 45, "too few rounds:\n{logs}");
    assert_unmarked_untouched(&rounds, &logs);
    // Never a failure (a 502, a reset, a timeout): each request is answered by the developer,
    // the original (fallback) or the session's 503 (reject).
    for r in &rounds {
        assert!(
            ["alice", "original"].contains(&r.fallback),
            "VERSION: fb got {:?} at {:.2}s:\n{logs}",
            r.fallback,
            r.at - stopped
        );
        assert!(
            ["bob", "503"].contains(&r.reject),
            "VERSION: rj got {:?} at {:.2}s:\n{logs}",
            r.reject,
            r.at - stopped
        );
    }
    // Within 1 s of the stop: the policy; within 1 s of the start: the developer again.
    let down: Vec<&Round> = rounds
        .iter()
        .filter(|r| r.at > stopped + 1.0 && r.reject_done < started)
        .collect();
    assert!(down.len() >= 5, "too few rounds while down:\n{logs}");
    assert!(
        down.iter()
            .all(|r| r.fallback == "original" && r.reject == "503"),
        "from 1 s after the stop, marked requests follow the rule's policy:\n{logs}"
    );
    let up: Vec<&Round> = rounds.iter().filter(|r| r.at > started + 1.0).collect();
    assert!(up.len() >= 5, "too few rounds after the start:\n{logs}");
    assert!(
        up.iter()
            .all(|r| r.fallback == "alice" && r.reject == "bob"),
        "from 1 s after the start, marked requests reach the developers again:\n{logs}"
    );
    let back = rounds
        .iter()
        .find(|r| r.at > started && r.fallback == "alice")
        .map_or(f64::NAN, |r| r.fallback_done - started);
    let slowest = rounds
        .iter()
        .map(|r| r.fallback_done - r.at)
        .fold(0.0, f64::max);
    eprintln!(
        "local restart: {} rounds, 0 failed; down {:.1}s; the developer answered again {back:.2}s \
         after the start; slowest marked request {slowest:.2}s",
        rounds.len(),
        started - stopped
    );
    let (ok, status) = ktx_run(&ns, &["status", "-o", "json"], secs(30));
    assert!(ok, "{status}");
    assert_eq!(
        status.matches("\"localProcess\":\"listening\"").count(),
        2,
        "ktx status should show both local processes listening again: {status}"
    );
    end(&ns, m);
}

#[test]
fn a_laptop_that_sleeps_sends_marked_requests_to_their_policy_within_seconds() {
    let Some(cluster) = ktx_e2e::Cluster::from_env("inner_loop_sleep") else {
        return;
    };
    let ns = cluster.namespace("inner-sleep");
    let m = meshed(&ns);
    let url = m.url.clone();
    let (logs, (froze, woke)) = with_loop(&ns, &url, 230, || {
        let froze = uptime();
        m.fb.signal("-STOP");
        m.rj.signal("-STOP");
        std::thread::sleep(secs(30));
        let woke = uptime();
        m.fb.signal("-CONT");
        m.rj.signal("-CONT");
        (froze, woke)
    });
    assert_policy_while_frozen(&logs, froze, woke, "laptop asleep 30 s");
    end(&ns, m);
}

/// The loop ran while ktx's side was frozen from `froze` to `woke` (uptime): every marked
/// request answered within 2.5 s by its policy's target — the reject rule's 503 until its Lease
/// goes stale, then the original (the session counts as dead) — and by the developers again
/// within 3 s of waking.
fn assert_policy_while_frozen(logs: &str, froze: f64, woke: f64, what: &str) {
    let rounds = rounds(logs);
    assert!(rounds.len() >= 100, "too few rounds:\n{logs}");
    assert_unmarked_untouched(&rounds, logs);
    // While frozen: every marked request answered within 2.5 s by its policy's target (the
    // reject rule's 503 until its Lease goes stale, then the original: the session is dead).
    for r in rounds.iter().filter(|r| r.at > froze && r.at < woke) {
        assert!(
            ["alice", "original"].contains(&r.fallback) && r.fallback_done - r.at < 2.5,
            "VERSION: fb at {:.2}s after the freeze: {:?} after {:.2}s:\n{logs}",
            r.at - froze,
            r.fallback,
            r.fallback_done - r.at
        );
        assert!(
            ["bob", "503", "original"].contains(&r.reject) && r.reject_done - r.fallback_done < 2.5,
            "VERSION: rj at {:.2}s after the freeze: {:?}:\n{logs}",
            r.at - froze,
            r.reject
        );
    }
    let after = |secs: f64| {
        rounds
            .iter()
            .filter(move |r| r.at > froze + secs && r.at < woke)
    };
    assert!(
        after(2.5).all(|r| r.fallback == "original" && r.reject != "bob"),
        "from 2.5 s after the freeze no marked request reaches the frozen laptop:\n{logs}"
    );
    // Awake: the session resumes by itself within 3 s.
    let late: Vec<&Round> = rounds.iter().filter(|r| r.at > woke + 3.0).collect();
    assert!(late.len() >= 5, "too few rounds after waking:\n{logs}");
    assert!(
        late.iter()
            .all(|r| r.fallback == "alice" && r.reject == "bob"),
        "from 3 s after waking, marked requests reach the developers again:\n{logs}"
    );
    let slowest = rounds
        .iter()
        .filter(|r| r.at > froze && r.at < woke)
        .map(|r| (r.fallback_done - r.at).max(r.reject_done - r.fallback_done))
        .fold(0.0, f64::max);
    let back = rounds
        .iter()
        .find(|r| r.at > woke && r.fallback == "alice")
        .map_or(f64::NAN, |r| r.fallback_done - woke);
    eprintln!(
        "{what}: slowest marked request while frozen {slowest:.2}s; the developer answered \
         again {back:.2}s after waking"
    );
}

#[test]
fn a_paused_api_server_sends_marked_requests_to_their_policy_within_seconds() {
    let Some(cluster) = ktx_e2e::Cluster::from_env("inner_loop_api_pause") else {
        return;
    };
    // The tunnel rides on the API server's port-forward: a paused API server is a frozen tunnel.
    let state = std::env::var("KTX_E2E_STATE").unwrap_or_else(|_| "/var/lib/ktx-e2e".into());
    let pid_file = format!("{state}/pids/kube-apiserver.pid");
    let Ok(pid) = std::fs::read_to_string(&pid_file) else {
        ktx_e2e::announce(&format!(
            "SKIPPED inner_loop_api_pause: no {pid_file}; this test pauses the API server of \
             e2e/cluster only"
        ));
        return;
    };
    let pid = pid.trim().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} (kube-apiserver) failed");
    };
    let ns = cluster.namespace("inner-api-pause");
    let m = meshed(&ns);
    let url = m.url.clone();
    let (logs, (froze, woke)) = with_loop(&ns, &url, 230, || {
        let froze = uptime();
        signal("-STOP");
        // Resumed whatever happens here, so a failure cannot leave the cluster paused.
        struct Resume<'a>(&'a dyn Fn(&str));
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                (self.0)("-CONT");
            }
        }
        let resume = Resume(&signal);
        std::thread::sleep(secs(30));
        let woke = uptime();
        drop(resume);
        (froze, woke)
    });
    assert_policy_while_frozen(&logs, froze, woke, "API server paused 30 s");
    end(&ns, m);
}

#[test]
fn restarting_the_local_process_during_exchange_gives_a_503_naming_the_session_never_a_502() {
    let Some(cluster) = ktx_e2e::Cluster::from_env("inner_loop_exchange_restart") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("inner-exchange");
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(&ns, "orders");
    let url = format!("http://{}:8080/", ns.cluster_ip("orders"));
    let (mut dev, port) = local_backend("developer");
    let mut ex = Proc::spawn(
        "ktx exchange",
        &mut support::ktx(
            &ns,
            &[
                "exchange",
                "orders",
                "--expose",
                &format!("{port}:8080"),
                "-o",
                "json",
            ],
        ),
    );
    ex.wait_line(true, "\"command\":\"exchange\"", secs(180));
    // Exchange has no original to fall back to: every request is the developer's, and while
    // the process is down each one gets the session's 503. 60 rounds, 5 per second.
    let script = format!(
        "i=0; while [ $i -lt 60 ]; do t=$(cut -d' ' -f1 /proc/uptime); \
           o=$(timeout 6 wget -q -O - {url} 2>&1) && r=$o \
             || {{ case \"$o\" in *'HTTP/1.1 503 '*) r=503;; *) r=\"FAIL $o\";; esac; }}; \
           echo \"$t|$r\"; i=$((i+1)); sleep 0.2; done"
    );
    let (logs, (stopped, started)) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let run = ns.run_pod(
                "loop",
                &image("busybox"),
                &["/bin/sh", "-c", &script],
                secs(180),
            );
            assert_eq!(run.phase, "Succeeded", "client loop: {}", run.logs);
            run.logs
        });
        let seen = ktx_e2e::poll(secs(90), || {
            let l = ns
                .cluster()
                .kubectl(&["-n", ns.name(), "logs", "loop"])
                .unwrap_or_default();
            l.contains("|developer").then_some(())
        });
        assert!(seen.is_some(), "the loop never reached the developer");
        std::thread::sleep(secs(2));
        let stopped = uptime();
        dev.kill9();
        std::thread::sleep(secs(3));
        let started = uptime();
        dev = local_backend_on("developer", port);
        (client.join().expect("client thread"), (stopped, started))
    });
    let all: Vec<(f64, &str)> = logs
        .lines()
        .filter_map(|l| {
            let (t, r) = l.split_once('|')?;
            Some((t.trim().parse().ok()?, r.trim()))
        })
        .collect();
    // From the first answer of the developer on: before it, kube-proxy may still send a
    // connection or two to the original (the selector was switched a moment ago).
    let rounds: Vec<(f64, &str)> = all
        .iter()
        .skip_while(|(_, r)| *r != "developer")
        .copied()
        .collect();
    assert!(rounds.len() >= 45, "too few rounds:\n{logs}");
    // The one request, if any, whose bytes had reached the process when SIGKILL landed is
    // reset: it may have run, so the session's 503 ("not taken") would be a lie. It started
    // just before the kill (a CI pre-check of 2026-12-07 caught one; the runs before had none).
    let in_flight =
        |t: f64, r: &str| r.contains("reset") && t > stopped - 0.5 && t < stopped + 0.05;
    assert!(
        rounds.iter().filter(|(t, r)| in_flight(*t, r)).count() <= 1,
        "more than the request in flight at the kill was reset:\n{logs}"
    );
    assert!(
        rounds
            .iter()
            .all(|(t, r)| *r == "developer" || *r == "503" || in_flight(*t, r)),
        "every request is answered by the developer or the session's 503:\n{logs}"
    );
    assert!(
        rounds
            .iter()
            .filter(|(t, _)| *t > stopped + 1.0 && *t < started - 0.3)
            .all(|(_, r)| *r == "503"),
        "from 1 s after the stop, the session's 503:\n{logs}"
    );
    let after: Vec<_> = rounds.iter().filter(|(t, _)| *t > started + 1.0).collect();
    assert!(after.len() >= 5, "too few rounds after the start:\n{logs}");
    assert!(
        after.iter().all(|(_, r)| *r == "developer"),
        "from 1 s after the start, the developer again:\n{logs}"
    );
    drop(dev);
    ex.interrupt();
    let (ok, out) = ex.wait_exit(secs(90));
    assert!(ok, "{out}");
    assert_eq!(service_fingerprint(&ns, "orders"), before, "{out}");
    support::assert_nothing_left(&ns, secs(60));
}
