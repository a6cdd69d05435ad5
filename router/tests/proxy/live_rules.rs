//! Live rules: the table is swapped while requests flow (no errors, new rules take effect),
//! a bad update keeps the last good table, and shutdown drains in-flight requests.

use std::time::Duration;

use super::http1::wait_table_version;
use super::support::*;

#[tokio::test]
async fn rules_change_under_load_without_errors() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let (orig, shadow) = (mesh.original.addr(), mesh.shadow.addr());
    let load = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let r = c.send(get_marked("/", "foobar")).await;
            assert_eq!(r.status(), 200);
            seen.insert(backend_of(&r));
            body_string(r).await;
        }
        seen
    });
    // Alternate between "foobar → shadow" and "no rule" while the load runs.
    for i in 0..20 {
        let text = if i % 2 == 0 {
            format!("default: {{ addrs: [\"{orig}\"] }}\nrules: []\n")
        } else {
            one_rule(orig, shadow, "fallback")
        };
        write_routes(&mesh.routes, &text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen = load.await.unwrap();
    assert!(
        seen.contains(SHADOW) && seen.contains(ORIGINAL),
        "both tables served: {seen:?}"
    );
    let m = mesh.metrics().await;
    assert_eq!(
        counter(&m, "ktx_router_upstream_errors_total{side=\"upstream\"}"),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_bad_update_keeps_the_last_good_table() {
    keeps_the_last_good_table_after("default: { addrs: [\"not-an-address\"] }\n".into(), |_| {})
        .await;
}

/// A table over budget (here: an alias bomb, refused on the text; and a table with one rule
/// too many, with the limit set by flag) is refused like any bad table.
#[tokio::test]
async fn a_table_over_budget_keeps_the_last_good_table() {
    let mut bomb = format!(
        "default: {{ addrs: [\"127.0.0.1:1\"] }}\nrules:\n  - &r {{ session: a, match: {{ headers: [{{ name: v, exact: \"{}\" }}] }}, target: {{ service: t }} }}\n",
        "x".repeat(4096)
    );
    for _ in 0..1_000 {
        bomb.push_str("  - *r\n");
    }
    keeps_the_last_good_table_after(bomb, |_| {}).await;
    // The test's one rule is within --max-rules 1; a second is one too many.
    let two = "default: { addrs: [\"127.0.0.1:1\"] }\nrules:\n  - { session: a, match: { method: GET }, target: { service: t } }\n  - { session: b, match: { method: PUT }, target: { service: t } }\n";
    keeps_the_last_good_table_after(two.into(), |c| c.max_rules = 1).await;
}

async fn keeps_the_last_good_table_after(bad: String, tune: impl FnOnce(&mut ktx_router::Config)) {
    let mesh = Mesh::start_with(tune).await;
    write_routes(&mesh.routes, &bad);
    for _ in 0..300 {
        let m = mesh.metrics().await;
        if counter(&m, "ktx_router_table_updates_total{result=\"rejected\"}") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = mesh.metrics().await;
    assert_eq!(
        counter(&m, "ktx_router_table_updates_total{result=\"rejected\"}"),
        1.0,
        "{m}"
    );
    let mut c = H1::connect(mesh.addr()).await;
    assert_eq!(backend_of(&c.send(get_marked("/", "foobar")).await), SHADOW);
    assert_eq!(backend_of(&c.send(get("/")).await), ORIGINAL);
    // And a good one after it applies.
    write_routes(
        &mesh.routes,
        &format!("default: {{ addrs: [\"{}\"] }}\n", mesh.shadow.addr()),
    );
    wait_table_version(&mesh, 2).await;
    assert_eq!(backend_of(&c.send(get("/")).await), SHADOW);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let (router, _original, _shadow) = Mesh::start().await.split();
    let addr = router.listen_addrs[0];
    let mut c = H1::connect(addr).await;
    let slow = tokio::spawn(async move {
        let r = c.send(get("/slow?ms=300")).await;
        (r.status(), body_string(r).await)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let admin = router.admin_addr;
    router.shutdown().await;
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, format!("{ORIGINAL}\n"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after drain"
    );
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin closed after drain"
    );
}

#[tokio::test]
async fn during_the_shutdown_delay_new_connections_are_still_served_but_not_ready() {
    let (router, _original, _shadow) = Mesh::start_with(|c| {
        c.shutdown_delay = Duration::from_millis(600);
    })
    .await
    .split();
    let addr = router.listen_addrs[0];
    let admin = router.admin_addr;
    let stopping = tokio::spawn(router.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        admin_get(admin, "/readyz").await.0,
        503,
        "not ready while stopping"
    );
    // A connection opened during the delay (a node whose kube-proxy lags) is served.
    let mut c = H1::connect(addr).await;
    let r = c.send(get("/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_string(r).await, format!("{ORIGINAL}\n"));
    drop(c);
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after the delay and the drain"
    );
}

/// `GET /routes` on the admin port (what ktx reads to know a rule is applied): the rules of the
/// table in use, its generation, and the refused updates.
#[tokio::test]
async fn the_routes_endpoint_reports_the_table_in_use() {
    use ktx_rules::applied::{AppliedTable, ROUTES_PATH};
    let mesh = Mesh::start().await;
    let routes = || async {
        let (status, body) = admin_get(mesh.router.admin_addr, ROUTES_PATH).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<AppliedTable>(&body).expect("an AppliedTable")
    };
    let first = routes().await;
    assert!(first.has_session("foobar"), "{first:?}");
    assert_eq!(first.rejected, 0);
    assert!(first.generation >= 1);

    write_routes(
        &mesh.routes,
        &format!(
            "default: {{ addrs: [\"{}\"] }}\nrules: []\n",
            mesh.original.addr()
        ),
    );
    wait_table_version(&mesh, first.generation + 1).await;
    let emptied = routes().await;
    assert!(emptied.rules.is_empty(), "{emptied:?}");
    assert!(emptied.generation > first.generation);

    write_routes(&mesh.routes, "default: { addrs: [\"not-an-address\"] }\n");
    let mut refused = routes().await;
    for _ in 0..300 {
        if refused.rejected > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        refused = routes().await;
    }
    assert_eq!(refused.rejected, 1, "{refused:?}");
    assert_eq!(refused.rules, emptied.rules, "the last good table stays");
}

/// A request the router reads after the drain began, on a connection it accepted before (a
/// client that had not spoken yet), is answered, not dropped with the connection: the drain
/// ends what is in hand, it does not throw it away.
#[tokio::test]
async fn a_request_read_after_the_drain_began_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (router, _original, _shadow) = Mesh::start_with(|c| c.shutdown_delay = Duration::ZERO)
        .await
        .split();
    let addr = router.listen_addrs[0];
    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(router.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for c in &mut conns {
        c.write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
            .await
            .unwrap();
    }
    let mut answered = 0;
    for c in &mut conns {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            answered += 1;
        }
    }
    assert_eq!(
        answered, 20,
        "requests read after the drain began, answered"
    );
    stopping.await.unwrap();
}
