//! A flood of silent sockets against the real `ktx-router` binary (its own process, so its
//! resident memory is its own): each socket becomes a TCP passthrough after the sniff timeout,
//! and must cost the router little more than the two sockets until a byte moves.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
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

/// Starts the router binary and returns it with its first listen address.
async fn start_router(routes: &std::path::Path) -> (Child, std::net::SocketAddr) {
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
            // Keep draining its log so the router never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, addr);
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
    let (router, addr) = start_router(&routes).await;
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
