//! The TUN device and the userspace TCP stack, for real, inside a network namespace this test
//! creates and removes (never a route in the host's namespace).
//!
//! The parent test re-runs this test binary as `child` inside the namespace (`ip netns exec`):
//! the child brings up `ktxt0` with a route for 10.250.0.0/16 and a [`TcpDial`] that maps
//! `10.250.x.y:p` to `127.0.0.1:p` (servers in the same namespace), checks flows as a client,
//! prints READY and waits. The parent then runs `curl` in the namespace, `kill -9`s the child
//! and checks that the device and its routes are gone.

#[path = "support/root.rs"]
mod root;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktx_netstack::dial::TcpDial;
use ktx_netstack::flows::{self, FlowConfig};
use ktx_netstack::tun_device::{self, TunConfig};
use root::{root_or_skip, Netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEVICE: &str = "ktxt0";
const BIG: usize = 100 * 1024 * 1024;

#[test]
fn tun_flows_in_a_netns_and_kill_9_removes_device_and_routes() {
    if !root_or_skip("tun_flows_in_a_netns_and_kill_9_removes_device_and_routes") {
        return;
    }
    let ns = Netns::new("tun");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = ns
        .command(exe.to_str().expect("utf-8 path"))
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KTX_NST_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child in netns");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("child exited before READY")
            .expect("read child");
        println!("child: {line}");
        if line == "READY" {
            break;
        }
        seen.push(line);
    }
    let routes = root::run("ip", &["-n", &ns.name, "route"]);
    assert!(
        routes.contains(&format!("10.250.0.0/16 dev {DEVICE}")),
        "{routes}"
    );
    assert!(!routes.contains("127."), "never routes loopback: {routes}");

    let curl = |url: &str| {
        let started = Instant::now();
        let out = ns
            .command("curl")
            .args(["-sS", "--max-time", "10", url])
            .output()
            .expect("curl");
        (out, started.elapsed())
    };
    let (out, _) = curl("http://10.250.0.9:8080/");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello ktxnet");
    let (out, took) = curl("http://10.250.0.9:7999/");
    assert!(!out.status.success(), "nothing listens on 7999");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("curl to a refused destination: {took:?}: {err}");
    assert!(
        took < Duration::from_secs(2),
        "a refused dial fails fast: {took:?}"
    );
    assert_eq!(out.status.code(), Some(7), "curl: couldn't connect: {err}");

    child.kill().expect("kill -9 the child");
    let _ = child.wait();
    let links = root::run("ip", &["-n", &ns.name, "-o", "link"]);
    assert!(
        !links.contains(DEVICE),
        "device gone with the process: {links}"
    );
    let routes = root::run("ip", &["-n", &ns.name, "route"]);
    assert!(
        !routes.contains("10.250."),
        "routes gone with the device: {routes}"
    );
}

/// The in-namespace half; runs only when the parent sets KTX_NST_CHILD.
#[test]
#[ignore = "run by tun_flows_in_a_netns_and_kill_9_removes_device_and_routes inside its netns"]
fn child() {
    if std::env::var("KTX_NST_CHILD").is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_main());
}

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("{} {}: {}", r.level(), r.target(), r.args());
    }
    fn flush(&self) {}
}

async fn child_main() {
    if let Ok(level) = std::env::var("KTX_NST_LOG") {
        let _ = log::set_logger(&StderrLog);
        log::set_max_level(level.parse().unwrap_or(log::LevelFilter::Trace));
    }
    let echo = TcpListener::bind("127.0.0.1:7000")
        .await
        .expect("bind echo");
    tokio::spawn(async move {
        loop {
            let (mut c, _) = echo.accept().await.expect("accept");
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let http = TcpListener::bind("127.0.0.1:8080")
        .await
        .expect("bind http");
    tokio::spawn(async move {
        loop {
            let (mut c, _) = http.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello ktxnet")
                    .await;
            });
        }
    });

    let config = TunConfig {
        name: DEVICE.into(),
        mtu: 1500,
        address: "10.251.0.1".parse().expect("addr"),
        include: vec!["10.250.0.0/16".parse().expect("cidr")],
        exclude: vec![],
        never_route: vec![],
    };
    let tun = tun_device::open(&config).await.expect("open tun");
    let dial = Arc::new(TcpDial::new(
        |dst: SocketAddr| SocketAddr::from(([127, 0, 0, 1], dst.port())),
        Duration::from_secs(2),
    ));
    tokio::spawn(flows::serve(tun, dial, FlowConfig::default()));

    // a request and its answer
    let mut c = TcpStream::connect("10.250.0.1:7000")
        .await
        .expect("connect echo");
    c.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"ping");
    println!("echo ok");

    // refused: the SYN is answered with RST, connect() fails at once
    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect("10.250.0.1:7999"),
    )
    .await
    .expect("a refused dial must not hang");
    let took = started.elapsed();
    println!(
        "refused dial: {:?} after {took:?}",
        refused.as_ref().map(|_| ())
    );
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // 100 MiB both ways through the echo, byte-exact
    let c = TcpStream::connect("10.250.3.4:7000")
        .await
        .expect("connect echo");
    let (mut r, mut w) = c.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut block = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        while sent < BIG {
            for (i, b) in block.iter_mut().enumerate() {
                *b = pattern(sent + i);
            }
            w.write_all(&block).await.expect("write");
            sent += block.len();
        }
        // no shutdown: ipstack 1.0.1 loses a segment that carries data and FIN together
        w
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while received < BIG {
        assert!(
            tokio::time::Instant::now() < deadline,
            "100 MiB took over 300s"
        );
        let n = r.read(&mut buf).await.expect("read");
        assert!(n > 0, "EOF after {received} bytes");
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(received + i), "byte {}", received + i);
        }
        received += n;
    }
    drop(writer.await.expect("writer"));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(received, BIG);
    println!(
        "100 MiB echoed byte-exact through the TUN in {secs:.2}s: {:.1} MiB/s each way",
        100.0 / secs
    );
    println!("READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}
