//! Fixtures for the loopback tunnel tests: a shadow and a ktx end in this process, a local
//! echo server standing in for the developer's process, a relay that can cut or freeze the
//! tunnel, and bounded waits (every wait names what it waits for and gives up after a while).

// Shared by two test binaries, each using a part.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ktx_shadow::unavailable::Unavailable;
use ktx_shadow::{Settings, Shadow};
use ktx_tunnel::client::{ClientConfig, Connector, PortMap, Status, TcpConnector, Tunnel};
use ktx_tunnel::credentials::{SessionCredentials, SideMaterial};
use ktx_tunnel::proto::backoff::BackoffPolicy;
use ktx_tunnel::TunnelOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Upper bound for any single wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until a second ktx end, whose `status` this is, hears the shadow's "busy" refusal, then
/// until `shadow` has counted it (the peer hears the refusal before the shadow counts it).
pub async fn refused_busy(mut status: watch::Receiver<Status>, shadow: &Shadow) {
    let down = within(
        "the busy refusal",
        status.wait_for(|s| matches!(s, Status::Down { .. })),
    )
    .await
    .expect("the ktx end is alive")
    .clone();
    assert!(format!("{down:?}").contains("busy"), "{down:?}");
    within(
        "the busy refusal to be counted",
        until(|| shadow.metrics.refused_peers("busy") >= 1),
    )
    .await;
}

/// Awaits `f`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Options with quick keepalives and timeouts, so failure tests finish fast. The keepalive
/// timeout stays a few seconds: a CI run starved of CPU (1,000-stream tests beside each other
/// on 2 cores) must not drop a session mid-test. A test of keepalive itself shortens it.
pub fn quick(program: &str) -> TunnelOptions {
    let mut o = TunnelOptions::new(program);
    o.keepalive_interval = Duration::from_millis(200);
    o.keepalive_timeout = Duration::from_secs(5);
    o.handshake_timeout = Duration::from_secs(5);
    o.drain_timeout = Duration::from_millis(500);
    // Generous: a burst of 1,000 streams beside other tests on 2 cores can keep ktx's answer
    // past the 1.5 s default, and these tests are not about it (`unavailable.rs` is).
    o.answer_timeout = Duration::from_secs(10);
    o
}

pub fn quick_backoff() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        healthy_after: Duration::from_secs(1),
    }
}

/// A shadow on loopback with `ports` service ports (ephemeral) and the given material; it
/// resets connections ktx does not take.
pub async fn shadow(material: &SideMaterial, ports: usize, options: TunnelOptions) -> Shadow {
    shadow_with(material, ports, options, Unavailable::default()).await
}

/// [`shadow`] with a policy for connections ktx does not take.
pub async fn shadow_with(
    material: &SideMaterial,
    ports: usize,
    options: TunnelOptions,
    unavailable: Unavailable,
) -> Shadow {
    Shadow::start(Settings {
        mode: ktx_shadow::config::Mode::Mesh,
        dial_timeout: Duration::from_secs(10),
        listen_addr: [127, 0, 0, 1].into(),
        tunnel_addr: [127, 0, 0, 1].into(),
        ports: vec![0; ports],
        tunnel_port: 0,
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_header_timeout: std::time::Duration::from_secs(5),
        tls: material.clone(),
        options,
        unavailable,
    })
    .await
    .expect("shadow starts")
}

/// A ktx end mapping every service port of `shadow` to `local`, reaching it via `connector`.
pub fn ktx(
    material: &SideMaterial,
    shadow: &Shadow,
    local: SocketAddr,
    connector: Arc<dyn Connector>,
    options: TunnelOptions,
) -> Tunnel {
    let config = ClientConfig {
        tls: material.ktx_config().expect("ktx TLS config"),
        ports: shadow
            .service_addrs
            .iter()
            .map(|a| (a.port(), local))
            .collect::<PortMap>(),
        options,
        backoff: quick_backoff(),
    };
    Tunnel::spawn(config, connector)
}

/// The common case: fresh credentials, one shadow port, a direct connector, an echo server.
pub struct Rig {
    pub creds: SessionCredentials,
    pub shadow: Shadow,
    pub tunnel: Tunnel,
    pub local: SocketAddr,
}

impl Rig {
    pub async fn start() -> Rig {
        let creds = SessionCredentials::generate("test").expect("credentials");
        let shadow = shadow(creds.shadow(), 1, quick("ktx-shadow")).await;
        let local = echo_server().await;
        let connector = Arc::new(TcpConnector {
            addr: shadow.tunnel_addr,
        });
        let tunnel = ktx(creds.ktx(), &shadow, local, connector, quick("ktx"));
        let rig = Rig {
            creds,
            shadow,
            tunnel,
            local,
        };
        rig.wait_session(1).await;
        rig
    }

    /// Waits until ktx has session `n` up and the shadow is ready on it.
    pub async fn wait_session(&self, n: u64) {
        let status = within("the tunnel to come up", self.tunnel.wait_for_session(n)).await;
        assert!(matches!(status, Status::Up { .. }), "tunnel: {status:?}");
        within("the shadow to be ready", wait_ready(&self.shadow, true)).await;
    }

    pub fn service(&self) -> SocketAddr {
        self.shadow.service_addrs[0]
    }
}

/// Waits until the shadow's readiness is `ready`.
pub async fn wait_ready(shadow: &Shadow, ready: bool) {
    shadow.wait_ready(ready).await;
}

/// Echoes every byte; after the client's half-close, half-closes too and ends.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// One short exchange through the shadow: send `msg`, half-close, read to EOF.
pub async fn round_trip(service: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(service).await?;
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).await?;
    Ok(got)
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable")
        .count()
}

/// Polls `cond` every few milliseconds until it holds. For states that have no event to wait
/// on (descriptor counts, counters); bounded by [`within`] at the call site.
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TCP relay in front of the shadow's tunnel port that can cut (close) or freeze (stop
/// forwarding, keep the sockets open) every connection it carries at that moment, or freeze
/// only the way from ktx to the shadow. Later connections are forwarded normally.
pub struct Relay {
    pub addr: SocketAddr,
    control: watch::Sender<RelayEvents>,
}

/// How many cuts and freezes have been ordered; a connection obeys those after its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RelayEvents {
    cuts: u64,
    freezes: u64,
    freezes_to_target: u64,
    /// Bytes per second the way to the target carries at most (0: as fast as it can).
    rate_to_target: u64,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let (control, _) = watch::channel(RelayEvents::default());
        let events = control.clone();
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut a, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(mut b) = TcpStream::connect(target).await else {
                    continue;
                };
                let mut rx = events.subscribe();
                let born = *rx.borrow_and_update();
                let mut to_target_rx = events.subscribe();
                let rate_rx = events.subscribe();
                conns.spawn(async move {
                    let (mut a_read, mut a_write) = a.split();
                    let (mut b_read, mut b_write) = b.split();
                    // Each way copies until its end, then half-closes the other socket, as
                    // `copy_bidirectional` does; the way to the target can be frozen alone.
                    let to_target = async {
                        let frozen = async {
                            let _ = to_target_rx
                                .wait_for(|e| e.freezes_to_target > born.freezes_to_target)
                                .await;
                        };
                        let copy = async {
                            let mut buf = vec![0u8; 16 << 10];
                            loop {
                                let n = match a_read.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if b_write.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                                let rate = rate_rx.borrow().rate_to_target;
                                if rate > 0 {
                                    let pause = Duration::from_secs_f64(n as f64 / rate as f64);
                                    tokio::time::sleep(pause).await;
                                }
                            }
                        };
                        tokio::select! {
                            () = copy => {}
                            () = frozen => std::future::pending::<()>().await,
                        }
                        let _ = b_write.shutdown().await;
                    };
                    let from_target = async {
                        let _ = tokio::io::copy(&mut b_read, &mut a_write).await;
                        let _ = a_write.shutdown().await;
                    };
                    tokio::select! {
                        _ = async { tokio::join!(to_target, from_target) } => return,
                        _ = rx.wait_for(|e| e.cuts > born.cuts || e.freezes > born.freezes) => {}
                    }
                    // Frozen (or cut): hold both sockets silently until cut.
                    let _ = rx.wait_for(|e| e.cuts > born.cuts).await;
                });
            }
        });
        Relay { addr, control }
    }

    /// Closes every connection relayed now.
    pub fn cut(&self) {
        self.control.send_modify(|e| e.cuts += 1);
    }

    /// Stops forwarding on every connection relayed now, without closing it (a dead peer).
    pub fn freeze(&self) {
        self.control.send_modify(|e| e.freezes += 1);
    }

    /// Stops forwarding from ktx to the shadow on every connection relayed now; the other way
    /// keeps flowing (ktx's answers stuck behind a saturated upload).
    pub fn freeze_to_shadow(&self) {
        self.control.send_modify(|e| e.freezes_to_target += 1);
    }

    /// Carries at most `bytes_per_sec` from ktx to the shadow on every connection (a slow
    /// uplink): what ktx sends beyond that queues in the sockets' buffers.
    pub fn throttle_to_shadow(&self, bytes_per_sec: u64) {
        self.control
            .send_modify(|e| e.rate_to_target = bytes_per_sec);
    }

    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(TcpConnector { addr: self.addr })
    }
}

/// The status of an HTTP/1.0 GET (admin port).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let text = http_raw(addr, path).await;
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// The body of an HTTP/1.0 GET (admin port).
pub async fn http_body(addr: std::net::SocketAddr, path: &str) -> String {
    let text = http_raw(addr, path).await;
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

pub async fn http_raw(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("the admin answer", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}
