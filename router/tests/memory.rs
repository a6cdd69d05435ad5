//! What idle sockets cost the real `ktx-router` binary (its own process, so its resident memory
//! is its own): a silent socket, which becomes a TCP passthrough after the sniff timeout, and an
//! idle keep-alive HTTP/1.1 connection, which is parked. Both must cost the router little more
//! than their sockets until a byte moves.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

const SILENT: usize = 1000;

/// An upstream that accepts connections and holds them without a word, counting them.
async fn silent_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<Notify>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (count, arrived) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let (c, n) = (Arc::clone(&count), Arc::clone(&arrived));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            c.fetch_add(1, Ordering::Relaxed);
            n.notify_one();
        }
    });
    (addr, count, arrived)
}

/// Starts the router binary and returns it with its first listen address and its admin
/// address.
async fn start_router(
    routes: &std::path::Path,
) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ktx-router"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--routes-file",
        ])
        .arg(routes)
        .args(["--threads", "1", "--sniff-timeout", "100ms"])
        .args(["--silent-upstream-timeout", "60s", "--max-rss", "0"])
        .args(["--idle-park-after", "100ms"])
        .args(["--log-format", "text", "--log-level", "info"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.split("listen=[").nth(1) {
            let addr = rest.split([']', ',']).next().unwrap().parse().unwrap();
            let admin = line.split("admin=").nth(1).unwrap();
            let admin = admin.split_whitespace().next().unwrap().parse().unwrap();
            // Keep draining its log so the router never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, addr, admin);
        }
    }
    panic!("ktx-router exited before listening");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 1,000 sockets that never send: each is passed through to the default target once the sniff
/// timeout passes, and holds no copy buffers (2 × 8 KiB each before) while neither side speaks.
#[tokio::test]
async fn silent_passthroughs_hold_no_buffers_until_a_byte_moves() {
    let (upstream, arrived, arrival) = silent_upstream().await;
    let routes = std::env::temp_dir().join(format!(
        "ktx-router-test-{}-silent-flood.yaml",
        std::process::id()
    ));
    std::fs::write(&routes, format!("default: {{ addrs: [\"{upstream}\"] }}\n")).unwrap();
    let (router, addr, _) = start_router(&routes).await;
    let pid = router.id().unwrap();
    // One passthrough first, so the allocator's and the runtime's one-time costs are paid.
    let first = TcpStream::connect(addr).await.unwrap();
    while arrived.load(Ordering::Relaxed) < 1 {
        arrival.notified().await;
    }
    let before = rss_kb(pid);

    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        while arrived.load(Ordering::Relaxed) < SILENT + 1 {
            arrival.notified().await;
        }
    });
    all.await.unwrap_or_else(|_| {
        panic!(
            "only {} of {} silent sockets reached the upstream",
            arrived.load(Ordering::Relaxed),
            SILENT + 1
        )
    });
    let after = rss_kb(pid);
    std::fs::remove_file(&routes).unwrap();
    let per_socket = (after.saturating_sub(before)) as f64 * 1024.0 / SILENT as f64;
    eprintln!("per socket {per_socket:.0} bytes ({before} KB → {after} KB)");
    assert!(
        per_socket < 8.0 * 1024.0,
        "each silent passthrough costs the router {per_socket:.0} bytes ({before} KB → {after} KB)"
    );
    drop((first, silent));
}

/// One keep-alive exchange: `GET /hello`, the whole response read.
async fn hello(s: &mut TcpStream) {
    s.write_all(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        if got.len() >= end + 4 + len {
            return;
        }
    }
}

/// Parked connections, from the router's metrics.
async fn parked(admin: std::net::SocketAddr) -> usize {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ktx_router_parked_connections "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize)
}

/// The router's RSS once the memory parking freed is given back: the allocator returns freed
/// pages (after `MIMALLOC_PURGE_DELAY`) only when it runs again, so this asks the admin port
/// now and then and keeps the lowest reading of one second.
async fn settled_rss_kb(pid: u32, admin: std::net::SocketAddr) -> u64 {
    let mut low = u64::MAX;
    for _ in 0..20 {
        parked(admin).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        low = low.min(rss_kb(pid));
    }
    low
}

const KEEP_ALIVE: usize = 1000;

/// 1,000 keep-alive connections, one exchange each, then quiet: each is parked (hyper's
/// buffers freed) and waits in the parking lot with no task of its own, a slab entry of 128
/// bytes. On the debug binary 1.8–2.5 KB per connection remain (most of it allocator pages
/// that the freed buffers shared with live ones; 0.5–0.8 KB with the release binary); a parked
/// connection that kept its task cost ~3.2 KB, and 4.4 KB before that task was boxed.
#[tokio::test]
async fn a_parked_keep_alive_connection_holds_no_task() {
    let backend = ktx_testbackend::spawn("original", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let routes = std::env::temp_dir().join(format!(
        "ktx-router-test-{}-parked.yaml",
        std::process::id()
    ));
    std::fs::write(
        &routes,
        format!("default: {{ addrs: [\"{}\"] }}\n", backend.addr()),
    )
    .unwrap();
    let (router, addr, admin) = start_router(&routes).await;
    let pid = router.id().unwrap();
    let wait_parked = |n: usize| async move {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while parked(admin).await < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waited
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} connections were parked"));
    };
    // One parked connection first, so the allocator's and the runtime's one-time costs are paid.
    let mut first = TcpStream::connect(addr).await.unwrap();
    hello(&mut first).await;
    wait_parked(1).await;
    let before = settled_rss_kb(pid, admin).await;

    let mut conns = Vec::with_capacity(KEEP_ALIVE);
    for _ in 0..KEEP_ALIVE {
        let mut s = TcpStream::connect(addr).await.unwrap();
        hello(&mut s).await;
        conns.push(s);
    }
    wait_parked(KEEP_ALIVE + 1).await;
    let after = settled_rss_kb(pid, admin).await;
    std::fs::remove_file(&routes).unwrap();
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / KEEP_ALIVE as f64;
    eprintln!("per parked connection {per_conn:.0} bytes ({before} KB → {after} KB)");
    assert!(
        per_conn < 3072.0,
        "each parked connection costs the router {per_conn:.0} bytes ({before} KB → {after} KB)"
    );
    drop((first, conns));
}
