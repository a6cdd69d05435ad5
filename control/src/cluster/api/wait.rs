//! Waiting for ktx's pods, with the reason shown while waiting ("router pod X: ImagePullBackOff
//! (image ktx.local/ktx-router:dev)") and a fast, explained failure when the pod cannot start
//! (bad image name, image never pulled, crash loop) instead of sitting out the whole timeout.
//!
//! It polls: a get every 100 ms for the first few seconds (a pod on a warm node starts in one or
//! two, and each step of `ktx mesh` waits for one), every 300 ms after that; that costs little
//! for one pod, and each poll is a natural point to refresh the progress text. Cancellation is
//! by dropping the future.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use tokio::time::Instant;

use super::Kube;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// The poll interval while a pod may be about to start, and for how long.
const POLL_FAST: Duration = Duration::from_millis(100);
const FAST_FOR: Duration = Duration::from_secs(5);
/// The poll interval after that (an image pull, a crash loop, a full node).
const POLL: Duration = Duration::from_millis(300);

/// How long to wait before the next look, `waited` into a wait.
pub fn poll_interval(waited: Duration) -> Duration {
    if waited < FAST_FOR {
        POLL_FAST
    } else {
        POLL
    }
}

/// What a pod must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// All containers started (a shadow is not Ready before its tunnel is up).
    Running,
    /// The Ready condition is true.
    Ready,
}

/// Why a pod is not there yet, and whether waiting longer can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub reason: String,
    pub fatal: bool,
}

/// Reasons after which waiting longer cannot help.
const FATAL_WAITING: &[&str] = &[
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerError",
];

fn container_blocker(cs: &ContainerStatus) -> Option<Blocker> {
    let state = cs.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.clone().unwrap_or_else(|| "waiting".into());
        let msg = w.message.clone().unwrap_or_default();
        let crash = reason == "CrashLoopBackOff";
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                format!(
                    "; last exit code {}{}",
                    t.exit_code,
                    t.message
                        .as_ref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        return Some(Blocker {
            reason: format!(
                "container {}: {reason}{}{last} (image {})",
                cs.name,
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                },
                cs.image
            ),
            fatal: FATAL_WAITING.contains(&reason.as_str()) || (crash && cs.restart_count >= 2),
        });
    }
    if let Some(t) = &state.terminated {
        return Some(Blocker {
            reason: format!(
                "container {} exited with code {}{}",
                cs.name,
                t.exit_code,
                t.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            fatal: false,
        });
    }
    None
}

/// Where `pod` stands with respect to `goal`: `None` when it is there.
pub fn blocker(pod: &Pod, goal: Goal) -> Option<Blocker> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded") {
        return Some(Blocker {
            reason: format!(
                "pod ended ({phase}){}",
                status
                    .and_then(|s| s.message.as_ref())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            fatal: true,
        });
    }
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    if let Some(b) = statuses.iter().find_map(container_blocker) {
        return Some(b);
    }
    if !scheduled {
        let why = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        return Some(Blocker {
            reason: format!("waiting to be scheduled {why}").trim().to_string(),
            fatal: false,
        });
    }
    let running = phase == "Running"
        && !statuses.is_empty()
        && statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    match goal {
        Goal::Running if running => None,
        Goal::Ready if ready => None,
        Goal::Running => Some(Blocker {
            reason: "starting containers".into(),
            fatal: false,
        }),
        Goal::Ready if running => Some(Blocker {
            reason: "running, not Ready yet".into(),
            fatal: false,
        }),
        Goal::Ready => Some(Blocker {
            reason: "starting containers".into(),
            fatal: false,
        }),
    }
}

/// Waits until pod `name` reaches `goal`; `what` names it for people ("shadow pod").
pub async fn pod(
    kube: &Kube,
    name: &str,
    goal: Goal,
    what: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<Pod> {
    let started = Instant::now();
    let deadline = started + timeout;
    let what = format!("{what} {}/{name}", kube.namespace);
    let mut last = "not created yet".to_string();
    loop {
        if let Some(p) = kube.get::<Pod>(name).await? {
            match blocker(&p, goal) {
                None => return Ok(p),
                Some(b) if b.fatal => {
                    return Err(Error::PodFailed {
                        what,
                        reason: b.reason,
                    })
                }
                Some(b) => last = b.reason,
            }
        }
        progress.waiting(format!("waiting for {what}: {last}"));
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what,
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(poll_interval(started.elapsed())).await;
    }
}

/// Waits until Deployment `name` has a Ready pod of its current version; shows its pods'
/// blockers meanwhile.
pub async fn deployment(
    kube: &Kube,
    name: &str,
    what: &str,
    selector: &str,
    timeout: Duration,
    progress: &Progress,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let what = format!("{what} {}/{name}", kube.namespace);
    let mut last = "no pod yet".to_string();
    loop {
        if let Some(d) = kube.get::<Deployment>(name).await? {
            let st = d.status.as_ref();
            let ready = st.and_then(|s| s.ready_replicas).unwrap_or(0);
            let current = st.and_then(|s| s.observed_generation) >= d.metadata.generation;
            if ready >= 1 && current {
                return Ok(());
            }
        }
        let pods = kube.list::<Pod>(selector).await?;
        for p in &pods {
            if let Some(b) = blocker(p, Goal::Ready) {
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                if b.fatal {
                    return Err(Error::PodFailed {
                        what: format!("{what} (pod {pod_name})"),
                        reason: b.reason,
                    });
                }
                last = format!("pod {pod_name}: {}", b.reason);
            }
        }
        progress.waiting(format!("waiting for {what}: {last}"));
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what,
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(poll_interval(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests;
