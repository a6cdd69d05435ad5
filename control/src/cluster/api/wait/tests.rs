//! Pod states as the kubelet reports them, and what ktx says about each.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    PodCondition, PodSpec, PodStatus,
};

use super::*;

fn pod(phase: &str, scheduled: bool, state: Option<ContainerState>, ready: bool) -> Pod {
    Pod {
        spec: Some(PodSpec {
            node_name: scheduled.then(|| "node".to_string()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: state.map(|s| {
                vec![ContainerStatus {
                    name: "router".into(),
                    image: "ktx.local/ktx-router:nope".into(),
                    state: Some(s),
                    restart_count: 3,
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 2,
                            message: Some("bad flag\n".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str) -> Option<ContainerState> {
    Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some("details".into()),
        }),
        ..Default::default()
    })
}

fn running() -> Option<ContainerState> {
    Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    })
}

#[test]
fn image_problems_are_named_and_permanent_ones_fail_fast() {
    let b = blocker(
        &pod("Pending", true, waiting("ImagePullBackOff"), false),
        Goal::Ready,
    )
    .unwrap();
    assert!(!b.fatal, "a registry blip may pass");
    assert!(b.reason.contains("ImagePullBackOff"), "{}", b.reason);
    assert!(
        b.reason.contains("ktx.local/ktx-router:nope"),
        "{}",
        b.reason
    );
    let b = blocker(
        &pod("Pending", true, waiting("ErrImageNeverPull"), false),
        Goal::Ready,
    )
    .unwrap();
    assert!(b.fatal);
}

#[test]
fn a_crash_loop_shows_the_last_exit() {
    let b = blocker(
        &pod("Running", true, waiting("CrashLoopBackOff"), false),
        Goal::Running,
    )
    .unwrap();
    assert!(b.fatal);
    assert!(
        b.reason.contains("last exit code 2: bad flag"),
        "{}",
        b.reason
    );
}

#[test]
fn running_and_ready_are_different_goals() {
    let p = pod("Running", true, running(), false);
    assert_eq!(blocker(&p, Goal::Running), None);
    assert_eq!(
        blocker(&p, Goal::Ready).unwrap().reason,
        "running, not Ready yet"
    );
    assert_eq!(
        blocker(&pod("Running", true, running(), true), Goal::Ready),
        None
    );
}

#[test]
fn unscheduled_and_ended_pods() {
    let b = blocker(&pod("Pending", false, None, false), Goal::Running).unwrap();
    assert!(
        b.reason.starts_with("waiting to be scheduled"),
        "{}",
        b.reason
    );
    assert!(
        blocker(&pod("Failed", true, None, false), Goal::Running)
            .unwrap()
            .fatal
    );
    assert!(blocker(&Pod::default(), Goal::Running).is_some());
}

#[test]
fn polls_fast_while_a_pod_may_be_about_to_start_then_slower() {
    assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(100));
    assert_eq!(
        poll_interval(Duration::from_millis(4900)),
        Duration::from_millis(100)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(5)),
        Duration::from_millis(300)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(60)),
        Duration::from_millis(300)
    );
}

/// A one-pod API server on loopback that never answers a watch (as a proxy that holds a
/// watch's headers back until its first event would look): the third get of the pod finds it
/// Running.
async fn api_without_watch_answers() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = std::sync::Arc::new(AtomicU32::new(0));
    let counted = gets.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let gets = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        if head.contains("watch=") {
                            // Never answered; held open until the client lets go.
                            let _ = sock.read(&mut [0u8; 1]).await;
                            return;
                        }
                        let running = gets.fetch_add(1, Ordering::SeqCst) >= 2;
                        let body = serde_json::json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7"},
                            "spec": {"nodeName": "node", "containers": []},
                            "status": {
                                "phase": if running { "Running" } else { "Pending" },
                                "containerStatuses": [{
                                    "name": "shadow", "image": "i", "imageID": "", "ready": false,
                                    "restartCount": 0,
                                    "state": if running {
                                        serde_json::json!({"running": {}})
                                    } else {
                                        serde_json::json!({"waiting": {"reason": "ContainerCreating"}})
                                    },
                                }],
                            },
                        })
                        .to_string();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, gets)
}

#[tokio::test]
async fn a_watch_that_never_answers_does_not_hold_up_the_polls() {
    let (addr, gets) = api_without_watch_answers().await;
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let kube = Kube::new(kube::Client::try_from(config).unwrap(), "ns");
    let started = std::time::Instant::now();
    let pod = tokio::time::timeout(
        Duration::from_secs(20),
        super::pod(
            &kube,
            "p",
            Goal::Running,
            "shadow pod",
            Duration::from_secs(30),
            &crate::progress::Progress::silent(),
        ),
    )
    .await
    .expect("the wait hung on the watch")
    .unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("p"));
    assert_eq!(gets.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Three looks 100 ms apart while the watch is still opening: opening it never delays a
    // look (awaited before the next poll, it took WATCH_OPEN; before that, the client's read
    // timeout).
    let took = started.elapsed();
    assert!(took < WATCH_OPEN, "{took:?}");
}
