//! The no-root proxy with real clients: curl through SOCKS5 (`--socks5-hostname`, and
//! `ALL_PROXY=socks5h://`), HTTP CONNECT (`-p -x`) and absolute-form (`-x`) to a real backend
//! (ktx-testbackend) behind a fake cluster address; every failure's SOCKS5 reply code and HTTP
//! status from a raw client; the bounds (head size, handshake timeout, flow count); hostile
//! bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktx_netstack::dial::{Dial, DialError};
use ktx_netstack::names::{NameTable, ServiceNames};
use ktx_netstack::proxy::{self, http::parse_head, ProxyConfig};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The fake cluster: 10.250.0.10:80 is the backend; .20 refuses, .30 is forbidden, .40 is
/// behind a tunnel that is down, .50 does not answer; .60 answers 10 bytes and resets; .70
/// takes [`SLOW_DIAL`] to say it does not answer (the connect pod's own dial timeout).
struct FakeCluster {
    backend: SocketAddr,
}

const SLOW_DIAL: Duration = Duration::from_millis(600);

/// A server that sends 10 bytes, then resets the connection.
async fn resetting_server() -> TcpStream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"0123456789").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.set_zero_linger();
        }
    });
    TcpStream::connect(addr).await.unwrap()
}

impl Dial for FakeCluster {
    type Stream = TcpStream;
    async fn dial(&self, dst: SocketAddr) -> Result<TcpStream, DialError> {
        let reason = String::from("test");
        match dst.ip().to_string().as_str() {
            "10.250.0.10" => TcpStream::connect(self.backend)
                .await
                .map_err(|e| DialError::from_io(dst, &e)),
            "10.250.0.20" => Err(DialError::Refused { dst }),
            "10.250.0.30" => Err(DialError::Forbidden { dst, reason }),
            "10.250.0.40" => Err(DialError::Down { reason }),
            "10.250.0.60" => Ok(resetting_server().await),
            "10.250.0.70" => {
                tokio::time::sleep(SLOW_DIAL).await;
                Err(DialError::Unreachable { dst, reason })
            }
            _ => Err(DialError::Unreachable { dst, reason }),
        }
    }
}

fn names() -> NameTable {
    let t = NameTable::new("cluster.local", "shop");
    for (svc, ip) in [
        ("inventory", "10.250.0.10"),
        ("closed", "10.250.0.20"),
        ("secret", "10.250.0.30"),
        ("far", "10.250.0.40"),
    ] {
        t.set_service(
            "shop",
            svc,
            ServiceNames {
                ips: vec![ip.parse().unwrap()],
                pods: BTreeMap::new(),
                alias: None,
            },
        );
    }
    t
}

/// A name that is an ExternalName Service is followed to the name it stands for (a cluster
/// name, or one the machine resolves); a loop of aliases is no such host, and so is an
/// `externalName` that looks like an address (cluster DNS reads it as a name, which does not
/// resolve; the system resolver would have read it as the address). Such a name was no such
/// host at all.
#[tokio::test]
async fn an_external_name_service_resolves_to_its_targets_address() {
    let t = names();
    for (svc, target) in [
        ("stock", "inventory.shop.svc.cluster.local"),
        ("here", "localhost"),
        ("loop-a", "loop-b.shop"),
        ("loop-b", "loop-a.shop"),
        ("by-ip", "10.250.0.10"),
        ("by-short-ip", "10.250.10."),
        ("by-hex", "0x0afa000a"),
    ] {
        t.set_service(
            "shop",
            svc,
            ServiceNames {
                alias: Some(target.into()),
                ..ServiceNames::default()
            },
        );
    }
    let got = proxy::resolve(&t, "stock.shop", 80).await.unwrap();
    assert_eq!(got, "10.250.0.10:80".parse().unwrap());
    let got = proxy::resolve(&t, "here", 81).await.unwrap();
    assert!(got.ip().is_loopback() && got.port() == 81, "{got}");
    assert!(proxy::resolve(&t, "loop-a", 80).await.is_err());
    for svc in ["by-ip", "by-short-ip", "by-hex"] {
        let got = proxy::resolve(&t, svc, 80).await;
        assert!(got.is_err(), "{svc}: {got:?}");
    }
}

async fn start(config: ProxyConfig) -> (SocketAddr, ktx_testbackend::Backend) {
    let (addr, backend, _server) = start_held(config).await;
    (addr, backend)
}

/// [`start`], with the proxy's task to stop it by.
async fn start_held(
    config: ProxyConfig,
) -> (
    SocketAddr,
    ktx_testbackend::Backend,
    tokio::task::JoinHandle<()>,
) {
    let backend = ktx_testbackend::spawn("inventory", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dial = Arc::new(FakeCluster {
        backend: backend.addr(),
    });
    let server = tokio::spawn(proxy::serve(listener, dial, names(), config));
    (addr, backend, server)
}

async fn curl(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-sS", "--max-time", "5"]).args(args);
    c.env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().await.expect("run curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_cluster_names_through_every_proxy_mode() {
    let (proxy, _backend) = start(ProxyConfig::default()).await;
    let p = proxy.to_string();
    let socks = format!("socks5h://{p}");
    let http = format!("http://{p}");
    for (args, env) in [
        (
            vec!["--socks5-hostname", &p, "http://inventory.shop/"],
            vec![],
        ),
        (
            vec!["http://inventory.shop.svc.cluster.local/"],
            vec![("ALL_PROXY", socks.clone())],
        ),
        (vec!["-p", "-x", &http, "http://inventory/"], vec![]),
        (vec!["-x", &http, "http://inventory.shop.svc/"], vec![]),
        (
            vec!["http://inventory.shop/"],
            vec![("http_proxy", http.clone())],
        ),
    ] {
        let (code, out, err) = curl(&args, &env).await;
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "inventory\n"),
            "{args:?} {env:?}: {err}"
        );
    }
    // two requests on one client connection through absolute-form: each one gets its answer
    let (code, out, err) = curl(
        &[
            "-x",
            &http,
            "http://inventory.shop/",
            "http://inventory.shop/",
        ],
        &[],
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "inventory\ninventory\n"),
        "{err}"
    );
}

async fn socks_connect(proxy: SocketAddr, cmd: u8, host: &str, port: u16) -> u8 {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut hello = [0u8; 2];
    c.read_exact(&mut hello).await.unwrap();
    assert_eq!(hello, [5, 0]);
    let mut req = vec![5, cmd, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    c.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    reply[1]
}

async fn http_connect(proxy: SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match c.read(&mut byte).await {
            Ok(1) => out.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_socks5_reply_code_and_http_status() {
    let (proxy, _backend) = start(ProxyConfig::default()).await;
    for (host, code, status) in [
        (
            "inventory.shop",
            0x00,
            "HTTP/1.1 200 Connection established",
        ),
        ("closed.shop", 0x05, "HTTP/1.1 502 Bad Gateway"),
        ("secret.shop", 0x02, "HTTP/1.1 403 Forbidden"),
        ("far.shop", 0x01, "HTTP/1.1 503 Service Unavailable"),
        ("10.250.0.50", 0x06, "HTTP/1.1 504 Gateway Timeout"),
        (
            "nope.shop.svc.cluster.local",
            0x04,
            "HTTP/1.1 502 Bad Gateway",
        ),
    ] {
        assert_eq!(
            socks_connect(proxy, 1, host, 80).await,
            code,
            "socks5 {host}"
        );
        let got = http_connect(
            proxy,
            &format!("CONNECT {host}:80 HTTP/1.1\r\nHost: {host}:80\r\n\r\n"),
        )
        .await;
        assert_eq!(got, status, "CONNECT {host}");
    }
    assert_eq!(
        socks_connect(proxy, 2, "inventory.shop", 80).await,
        0x07,
        "BIND"
    );
    assert_eq!(
        http_connect(proxy, "GET https://inventory.shop/ HTTP/1.1\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    // a SOCKS5 client that offers only username/password
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&[5, 1, 2]).await.unwrap();
    let mut reply = [0u8; 2];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [5, 0xff]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_hold() {
    let config = ProxyConfig {
        handshake_timeout: Duration::from_millis(300),
        max_head: 1024,
        max_flows: 2,
        idle: Duration::from_secs(60),
    };
    let (proxy, _backend) = start(config).await;
    // a head over the limit
    let big = format!(
        "CONNECT inventory.shop:80 HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(
        http_connect(proxy, &big).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // a client that never finishes its handshake is closed after the timeout
    let mut slow = TcpStream::connect(proxy).await.unwrap();
    slow.write_all(b"CONNECT inventory.shop:80 HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // two flows held open; the third connection is closed at once
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"CONNECT inventory.shop:80 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut line = [0u8; 12];
        c.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"HTTP/1.1 200");
        held.push(c);
    }
    let mut third = TcpStream::connect(proxy).await.unwrap();
    let _ = third
        .write_all(b"CONNECT inventory.shop:80 HTTP/1.1\r\n\r\n")
        .await;
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)), "third flow refused: {n:?}");
    drop(held);
}

/// Stopping the proxy (its future dropped, as `ktx connect` does when it ends) ends its flows
/// too: they ran on in tasks of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_proxy_ends_its_flows() {
    let (addr, _backend, server) = start_held(ProxyConfig::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"CONNECT inventory.shop:80 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut line = [0u8; 12];
    c.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"HTTP/1.1 200");
    server.abort();
    let _ = server.await;
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the flow outlived the proxy");
}

/// A destination that resets mid-stream resets the client's connection too: a clean end would
/// pass a cut answer for a whole one (HTTP/1.0, a read-until-close protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_from_the_destination_reaches_the_client_as_a_reset() {
    let (proxy, _backend) = start(ProxyConfig::default()).await;
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(b"CONNECT 10.250.0.60:80 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("the flow ends");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{got:?}"
    );
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client saw {end:?} after {got:?}, not a reset"
    );
}

/// The handshake timeout bounds the client's greeting and head, not the dial: a destination
/// the cluster takes longer to give up on still gets its answer (SOCKS5 TTL expired, HTTP
/// 504), not a bare close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_dial_gets_its_answer_past_the_handshake_timeout() {
    let config = ProxyConfig {
        handshake_timeout: SLOW_DIAL / 2,
        ..ProxyConfig::default()
    };
    let (proxy, _backend) = start(config).await;
    assert_eq!(socks_connect(proxy, 1, "10.250.0.70", 80).await, 0x06);
    assert_eq!(
        http_connect(proxy, "CONNECT 10.250.0.70:80 HTTP/1.1\r\n\r\n").await,
        "HTTP/1.1 504 Gateway Timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_socks5_bytes_only_close_the_connection() {
    let (proxy, _backend) = start(ProxyConfig::default()).await;
    for junk in [
        &[5u8, 0][..],
        &[5, 1, 0, 9, 9, 9, 9],
        &[5, 1, 0, 5, 1, 0, 9],
        &[5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
        &[5, 1, 0, 5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80],
        &[5, 255],
    ] {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let _ = c.write_all(junk).await;
        let _ = c.shutdown().await;
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
        assert!(r.is_ok(), "{junk:?}: closed, not hung");
    }
    // and the proxy still serves
    assert_eq!(socks_connect(proxy, 1, "inventory.shop", 80).await, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
    #[test]
    fn no_request_head_makes_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_head(&bytes);
    }
    #[test]
    fn no_text_head_makes_the_parser_panic(s in "[A-Z]{0,8} [a-z:/\\[\\]0-9.@?]{0,40} HTTP/1\\.[01]\r\n([A-Za-z-]{0,10}:[ -~]{0,20}\r\n){0,4}\r\n") {
        let _ = parse_head(s.as_bytes());
    }
}
