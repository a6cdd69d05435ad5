//! Waiting for ktx's pods, with the reason shown while waiting ("router pod X: ImagePullBackOff
//! (image ktx.local/ktx-router:dev)") and a fast, explained failure when the pod cannot start
//! (bad image name, image never pulled, crash loop) instead of sitting out the whole timeout.
//!
//! It looks (a get) when the objects it waits on change, and polls as well: a watch on them,
//! opened after the first look and from the version that look saw, wakes the wait at once,
//! instead of up to a poll interval later (on the local cluster that was 50 ms on average at
//! each of the two waits on `ktx mesh`'s critical path: the shadow Running, then the shadow or
//! the router Ready). The polls stay: every 100 ms for the first few seconds (a pod on a warm
//! node starts in one or two), every 300 ms after that, and they alone remain when the watch
//! cannot be opened (a Role without `watch`), ends or fails. Each look refreshes the progress
//! text. Cancellation is by dropping the future.

use std::time::Duration;

use futures_util::future::FutureExt;
use futures_util::stream::{BoxStream, SelectAll, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::time::Instant;

use super::{Kind, Kube};
use crate::error::ApiContext;
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

/// How long opening a watch may take before the wait polls only.
const WATCH_OPEN: Duration = Duration::from_secs(1);

/// Changes to what a wait looks at: one `()` per watch event, from every watch it opened.
#[derive(Default)]
struct Changes {
    streams: SelectAll<BoxStream<'static, ()>>,
    /// A watch could not be opened: poll only, and do not ask again.
    refused: bool,
}

impl Changes {
    /// Whether a watch should be (re)opened: none is open, and none was refused.
    fn wanted(&self) -> bool {
        !self.refused && self.streams.is_empty()
    }

    /// Opens a watch on `K` from `version` (what the last look saw). The stream ends at its
    /// first error (an expired version, the client's read timeout on a quiet watch); the next
    /// look then opens a new one from what it saw. An answer slower than [`WATCH_OPEN`] (a
    /// proxy that holds a watch's headers back until its first event) counts as a refusal, so
    /// that opening a watch never holds up the polls.
    async fn watch<K: Kind>(&mut self, kube: &Kube, params: WatchParams, version: &str) {
        let opened = tokio::time::timeout(WATCH_OPEN, kube.api::<K>().watch(&params, version))
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!("no answer within {WATCH_OPEN:?}").into(),
                ))
            });
        match opened {
            Ok(events) => self.streams.push(
                events
                    .take_while(|e| {
                        std::future::ready(matches!(
                            e,
                            Ok(WatchEvent::Added(_)
                                | WatchEvent::Modified(_)
                                | WatchEvent::Deleted(_)
                                | WatchEvent::Bookmark(_))
                        ))
                    })
                    .map(|_| ())
                    .boxed(),
            ),
            Err(e) => {
                tracing::debug!(resource = %super::resource::<K>(), error = %e, "no watch: polling only");
                self.refused = true;
            }
        }
    }

    /// Until the next change or `interval`, whichever comes first. Changes that arrived
    /// together make one wake-up.
    async fn next(&mut self, interval: Duration) {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            Some(()) = self.streams.next() => {
                while let Some(Some(())) = self.streams.next().now_or_never() {}
            }
        }
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
    let mut changes = Changes::default();
    loop {
        let found = kube.get::<Pod>(name).await?;
        if let Some(p) = &found {
            match blocker(p, goal) {
                None => return Ok(found.expect("just matched")),
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
        if changes.wanted() {
            let version = found.and_then(|p| p.metadata.resource_version);
            let params = WatchParams::default().fields(&format!("metadata.name={name}"));
            changes
                .watch::<Pod>(kube, params, version.as_deref().unwrap_or("0"))
                .await;
        }
        changes.next(poll_interval(started.elapsed())).await;
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
    let mut changes = Changes::default();
    loop {
        let found = kube.get::<Deployment>(name).await?;
        if let Some(d) = &found {
            let st = d.status.as_ref();
            let ready = st.and_then(|s| s.ready_replicas).unwrap_or(0);
            let current = st.and_then(|s| s.observed_generation) >= d.metadata.generation;
            if ready >= 1 && current {
                return Ok(());
            }
        }
        let pods = kube
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .ctx("list", "pods", &kube.namespace, "")?;
        for p in &pods.items {
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
        // The Deployment's readyReplicas follow its pods' Ready: both are watched.
        if changes.wanted() {
            let version = found.and_then(|d| d.metadata.resource_version);
            let params = WatchParams::default().fields(&format!("metadata.name={name}"));
            changes
                .watch::<Deployment>(kube, params, version.as_deref().unwrap_or("0"))
                .await;
            let version = pods.metadata.resource_version.unwrap_or_else(|| "0".into());
            changes
                .watch::<Pod>(kube, WatchParams::default().labels(selector), &version)
                .await;
        }
        changes.next(poll_interval(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests;
