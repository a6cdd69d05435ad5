//! Accept errors back off instead of spinning: with the process out of file descriptors
//! (EMFILE) and a client waiting in the proxy's backlog, every accept fails at once. A loop
//! that retries immediately burns a whole core (the proxy's `max_flows`, 1024, is the usual
//! soft RLIMIT_NOFILE); `ktx connect` must stay near idle.
//!
//! Its own test binary: it lowers the whole process's RLIMIT_NOFILE (with `prlimit`, so no
//! unsafe code), which would break any test running beside it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ktx_netstack::dial::{Dial, DialError};
use ktx_netstack::names::NameTable;
use ktx_netstack::proxy::{self, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// CPU time (user + system) of this process so far, in clock ticks, read from
/// `/proc/self/stat` opened beforehand (no descriptor is free while it is measured).
fn cpu_ticks(stat: &File) -> u64 {
    let mut buf = vec![0u8; 4096];
    let n = stat.read_at(&mut buf, 0).unwrap();
    let stat = String::from_utf8_lossy(&buf[..n]);
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn set_soft_nofile(limit: u64) {
    let pid = std::process::id().to_string();
    let ok = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("prlimit (util-linux) runs")
        .success();
    assert!(ok, "prlimit --nofile={limit}: failed");
}

/// Refuses every destination: the test needs only the accept loop.
struct Nowhere;

impl Dial for Nowhere {
    type Stream = TcpStream;
    async fn dial(&self, dst: std::net::SocketAddr) -> Result<TcpStream, DialError> {
        Err(DialError::Refused { dst })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_on_the_proxy_do_not_spin() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let names = NameTable::new("cluster.local", "shop");
    tokio::spawn(proxy::serve(
        listener,
        Arc::new(Nowhere),
        names,
        ProxyConfig::default(),
    ));

    let original = soft_nofile();
    let stat = File::open("/proc/self/stat").unwrap();
    // Fill every free descriptor number below the new limit, keep some spare to free later.
    let mut spare: Vec<File> = (0..16).map(|_| File::open("/dev/null").unwrap()).collect();
    let fds = open_fds();
    let limit = *fds.iter().max().unwrap() as u64 + 1;
    let holes = limit as usize - fds.len();
    spare.extend((0..holes).map(|_| File::open("/dev/null").unwrap()));
    set_soft_nofile(limit);
    // Exactly one descriptor free: the client's socket takes it, the proxy's accept fails.
    spare.pop();
    let client = std::net::TcpStream::connect(addr).expect("one descriptor was free");

    let before = cpu_ticks(&stat);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(&stat) - before;
    eprintln!("cpu ticks in 1 s with accept failing: {used}");

    drop(client);
    spare.clear();
    set_soft_nofile(original);
    // A spinning accept loop uses ~100 ticks a second; backing off, a few.
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s while accept failed with EMFILE: the accept loop spins"
    );
    // And the proxy serves again once descriptors are back: a SOCKS5 greeting is answered.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut hello = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut hello))
        .await
        .expect("the proxy answers again")
        .unwrap();
    assert_eq!(hello, [5, 0]);
}
