//! Test helpers for the watcher tasks: a hand-fed event stream, and a way to wait until every
//! task has done all it can (paused time advances only when the runtime is idle).

use ::kube::runtime::watcher::{self, Event};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Events;

/// A stream the test pushes watcher events into.
pub fn feed<K: Send + 'static>() -> (
    mpsc::UnboundedSender<Result<Event<K>, watcher::Error>>,
    Events<K>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed();
    (tx, events)
}

/// Returns once every other task is blocked. Needs `start_paused = true`: the 1 ms sleep can
/// only complete by auto-advance, which happens when nothing else can run.
pub async fn idle() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}
