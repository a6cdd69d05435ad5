//! `ktx forward` (issue 13): a local port that reaches a Service through port-forwards to its
//! Ready pods, following them as they come and go. The fake API holds the pods; the port-forward
//! of each pod is a loopback server answering with the pod's name (or, for a pod marked
//! unreachable, a refused connection).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Service, ServiceSpec};
use ktx::lifecycle::shutdown::Shutdown;
use ktx_tunnel::client::{BoxFuture, BoxIo, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::Fake;
use super::support::{cli, ctx, meta, team_service};

/// Port-forwards to pods, in this process: pod name → a loopback server that writes the pod's
/// name and the port asked for, then echoes. Pods not in the map cannot be reached.
#[derive(Clone, Default)]
struct Pods(Arc<Mutex<BTreeMap<String, SocketAddr>>>);

impl Pods {
    async fn serve(&self, pod: &str) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = pod.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        self.0.lock().unwrap().insert(pod.to_string(), addr);
    }

    fn unreachable(&self, pod: &str) {
        self.0.lock().unwrap().remove(pod);
    }
}

struct PodForward {
    pods: Pods,
    pod: String,
    port: u16,
}

impl Connector for PodForward {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            assert_eq!(self.port, 8080, "forward dials the pods' targetPort");
            let addr = self.pods.0.lock().unwrap().get(&self.pod).copied();
            let addr = addr.ok_or_else(|| io::Error::other(format!("pod {} is gone", self.pod)))?;
            Ok(Box::new(TcpStream::connect(addr).await?) as BoxIo)
        })
    }

    fn describe(&self) -> String {
        format!("pod {}", self.pod)
    }
}

impl ktx::cluster::api::Dialer for Pods {
    fn connector(&self, pod: &str, port: u16) -> Arc<dyn Connector> {
        Arc::new(PodForward {
            pods: self.clone(),
            pod: pod.to_string(),
            port,
        })
    }
}

fn ready(ready: bool) -> PodStatus {
    PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A pod of Service tb (the fake makes every new pod Ready; `is_ready: false` takes it back).
fn pod(fake: &Fake, name: &str, is_ready: bool) {
    fake.seed(&Pod {
        metadata: meta(name, &[("app", "tb")]),
        spec: None,
        status: None,
    });
    set_ready(fake, name, is_ready);
}

fn set_ready(fake: &Fake, name: &str, is_ready: bool) {
    fake.edit("pods", name, |v| {
        v["status"] = serde_json::to_value(ready(is_ready)).unwrap();
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `ktx forward tb LOCAL:80` against `fake`; returns the local address and the stop.
async fn forward(
    fake: &Fake,
    pods: &Pods,
) -> (
    SocketAddr,
    ktx::lifecycle::shutdown::Trigger,
    tokio::task::JoinHandle<ktx::Result<()>>,
) {
    let local = free_port();
    let cli = cli(&["forward", "tb", &format!("{local}:80")]);
    let mut ctx = ctx(fake, &cli);
    ctx.kube.dialer = Some(Arc::new(pods.clone()));
    let (shutdown, stop) = Shutdown::manual();
    let task = tokio::spawn(async move {
        let ktx::cli::Command::Forward(args) = &cli.command else {
            unreachable!()
        };
        ktx::commands::forward::run(&ctx, args, &shutdown).await
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return (addr, stop, task);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("ktx forward did not listen on {addr}");
}

/// The pod that answered one connection through the forward, after an echo check.
async fn ask(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"ping") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    text.lines().next().unwrap().to_string()
}

#[tokio::test]
async fn forward_reaches_ready_pods_round_robin_and_skips_unready_ones() {
    let fake = Fake::new();
    team_service(&fake, "tb"); // and its Ready pod tb-7d9f-abcde
    pod(&fake, "tb-a", true);
    pod(&fake, "tb-b", true);
    pod(&fake, "tb-c", false);
    let pods = Pods::default();
    for p in ["tb-7d9f-abcde", "tb-a", "tb-b", "tb-c"] {
        pods.serve(p).await;
    }
    let (addr, stop, task) = forward(&fake, &pods).await;
    let mut seen = BTreeMap::new();
    for _ in 0..6 {
        *seen.entry(ask(addr).await).or_insert(0) += 1;
    }
    let two_each = ["tb-7d9f-abcde", "tb-a", "tb-b"].map(|p| (p.to_string(), 2));
    assert_eq!(seen, BTreeMap::from(two_each));
    stop.fire();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn forward_follows_the_pods_when_one_goes_and_another_comes() {
    let fake = Fake::new();
    team_service(&fake, "tb");
    set_ready(&fake, "tb-7d9f-abcde", false);
    pod(&fake, "tb-a", true);
    let pods = Pods::default();
    pods.serve("tb-a").await;
    let (addr, stop, task) = forward(&fake, &pods).await;
    assert_eq!(ask(addr).await, "tb-a");
    // The workload restarts: tb-a goes (its port-forward fails), tb-new is Ready.
    pods.unreachable("tb-a");
    set_ready(&fake, "tb-a", false);
    pod(&fake, "tb-new", true);
    pods.serve("tb-new").await;
    for _ in 0..3 {
        assert_eq!(ask(addr).await, "tb-new");
    }
    stop.fire();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn forward_to_a_service_without_selector_says_what_to_do() {
    let fake = Fake::new();
    fake.seed(&Service {
        metadata: meta("tb", &[]),
        spec: Some(ServiceSpec {
            selector: None,
            ..Default::default()
        }),
        status: None,
    });
    let cli = cli(&["forward", "tb", "8080:80"]);
    let ctx = ctx(&fake, &cli);
    let ktx::cli::Command::Forward(args) = &cli.command else {
        unreachable!()
    };
    let (shutdown, _stop) = Shutdown::manual();
    let err = ktx::commands::forward::run(&ctx, args, &shutdown)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no selector") && err.contains("kubectl port-forward"),
        "{err}"
    );
    let err = {
        let cli = super::support::cli(&["forward", "nope", "8080:80"]);
        let ctx = super::support::ctx(&fake, &cli);
        let ktx::cli::Command::Forward(args) = &cli.command else {
            unreachable!()
        };
        ktx::commands::forward::run(&ctx, args, &shutdown)
            .await
            .unwrap_err()
            .to_string()
    };
    assert!(
        err.contains("Service") && err.contains("not found"),
        "{err}"
    );
}
