//! Waiting for ktx's pods, with the reason shown while waiting ("router pod X: ImagePullBackOff
//! (image ktx.local/ktx-router:dev)") and a fast, explained failure when the pod cannot start
//! (bad image name, image never pulled, crash loop) instead of sitting out the whole timeout.
//!
//! It looks (a get) when the objects it waits on change, and polls as well: a watch on them,
//! opened after the first look, wakes the wait at once instead of up to a poll interval later
//! (on the local cluster that was 50 ms on average at each of the two waits on `ktx mesh`'s
//! critical path: the shadow Running, then the shadow or the router Ready). The polls stay:
//! every 100 ms for the first few seconds (a pod on a warm node starts in one or two), every
//! 300 ms after that, and they alone remain when the watch cannot be opened (a Role without
//! `watch`), ends or fails. Each look refreshes the progress text. Cancellation is by dropping
//! the future.

use std::time::Duration;

use futures_util::future::FutureExt;
use futures_util::stream::{BoxStream, SelectAll, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{WatchEvent, WatchParams};
use tokio::time::Instant;

use super::{Kind, Kube};
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

/// How long opening a watch may take before the wait gives up on it and polls only.
const WATCH_OPEN: Duration = Duration::from_secs(1);

/// What a watch stream tells its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// An event: look again now.
    Change,
    /// Watch `slot` ended (an error event, a closed stream, the client's read timeout on a
    /// quiet watch): the next look opens it again.
    Ended(usize),
    /// Watch `slot` could not be opened within [`WATCH_OPEN`] (a Role without `watch`, an
    /// answer held back): it is not asked again.
    Refused(usize),
}

/// Changes to what a wait looks at, from one watch per slot (a pod; a Deployment and its
/// pods). A watch is opened inside [`Changes::next`], beside the poll's sleep, so that neither
/// opening it nor its failure ever delays a look.
struct Changes {
    streams: SelectAll<BoxStream<'static, Signal>>,
    /// Per slot: a watch is open (or opening).
    open: Vec<bool>,
    /// Per slot: it was refused; poll only.
    refused: Vec<bool>,
}

impl Changes {
    fn new(slots: usize) -> Self {
        Changes {
            streams: SelectAll::new(),
            open: vec![false; slots],
            refused: vec![false; slots],
        }
    }

    /// Starts watch `slot` on `K` unless it is open or was refused. It starts from version
    /// "0": the API server first sends what it holds now (one early look, cheap), then every
    /// change; a version from an earlier get could be too old for the server's watch history
    /// (a pod Pending for minutes) and fail at once, again and again.
    fn ensure<K: Kind>(&mut self, slot: usize, kube: &Kube, params: WatchParams) {
        if self.open[slot] || self.refused[slot] {
            return;
        }
        self.open[slot] = true;
        let api = kube.api::<K>();
        let opening = async move {
            match tokio::time::timeout(WATCH_OPEN, api.watch(&params, "0")).await {
                Ok(Ok(events)) => events
                    .take_while(|e| {
                        std::future::ready(matches!(
                            e,
                            Ok(WatchEvent::Added(_)
                                | WatchEvent::Modified(_)
                                | WatchEvent::Deleted(_)
                                | WatchEvent::Bookmark(_))
                        ))
                    })
                    .map(|_| Signal::Change)
                    .chain(futures_util::stream::once(std::future::ready(
                        Signal::Ended(slot),
                    )))
                    .boxed(),
                Ok(Err(e)) => {
                    tracing::debug!(resource = %super::resource::<K>(), error = %e, "no watch: polling only");
                    futures_util::stream::once(std::future::ready(Signal::Refused(slot))).boxed()
                }
                Err(_) => {
                    tracing::debug!(resource = %super::resource::<K>(), "no watch within {WATCH_OPEN:?}: polling only");
                    futures_util::stream::once(std::future::ready(Signal::Refused(slot))).boxed()
                }
            }
        };
        self.streams
            .push(futures_util::stream::once(opening).flatten().boxed());
    }

    /// Until the next change or `interval`, whichever comes first. Changes that arrived
    /// together make one look.
    async fn next(&mut self, interval: Duration) {
        let sleep = tokio::time::sleep(interval);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return,
                Some(signal) = self.streams.next() => {
                    if self.note(signal) {
                        while let Some(Some(signal)) = self.streams.next().now_or_never() {
                            self.note(signal);
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Records what `signal` says about its slot; whether it calls for a look now.
    fn note(&mut self, signal: Signal) -> bool {
        match signal {
            Signal::Change => true,
            Signal::Ended(slot) => {
                self.open[slot] = false;
                false
            }
            Signal::Refused(slot) => {
                self.open[slot] = false;
                self.refused[slot] = true;
                false
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
    let mut changes = Changes::new(1);
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
        changes.ensure::<Pod>(
            0,
            kube,
            WatchParams::default().fields(&format!("metadata.name={name}")),
        );
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
    let mut changes = Changes::new(2);
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
        // The Deployment's readyReplicas follow its pods' Ready: both are watched.
        changes.ensure::<Deployment>(
            0,
            kube,
            WatchParams::default().fields(&format!("metadata.name={name}")),
        );
        changes.ensure::<Pod>(1, kube, WatchParams::default().labels(selector));
        changes.next(poll_interval(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests;
