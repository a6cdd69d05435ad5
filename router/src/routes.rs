//! The route table as a value on a `watch` channel. Sources publish parsed specs; this module
//! checks each one, keeps the last good table when an update is bad (and says why), removes the
//! rules of sessions whose Lease has expired, and publishes the result for the request path.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ktx_rules::{RouteTable, RoutesSpec};
use tokio::sync::watch;

use crate::metrics::{Metrics, ResultLabel};

/// One update from a source: the text of the table and where it came from (for logs).
#[derive(Debug, Clone)]
pub struct RoutesText {
    pub origin: String,
    pub text: String,
}

/// Checks `text` into a table, or explains why not.
pub fn compile(text: &RoutesText) -> Result<RouteTable, ktx_rules::RulesError> {
    RouteTable::compile(&RoutesSpec::parse(&text.text)?)
}

/// Publishes `effective = table − dead sessions` whenever either input changes.
///
/// `texts` carries raw updates (file or ConfigMap); `dead` carries the sessions whose Lease is
/// expired or missing. The first good table makes `ready` true.
pub async fn run_table(
    mut texts: watch::Receiver<Option<RoutesText>>,
    mut dead: watch::Receiver<HashSet<String>>,
    out: watch::Sender<Arc<RouteTable>>,
    ready: watch::Sender<bool>,
    metrics: Metrics,
) {
    let mut good: Option<RouteTable> = None;
    let mut version: i64 = 0;
    let mut dead_changed = true;
    loop {
        let mut applied = false;
        let text_changed = texts.has_changed().unwrap_or(false) || good.is_none();
        if text_changed {
            let current = texts.borrow_and_update().clone();
            if let Some(t) = current {
                match compile(&t) {
                    Ok(table) => {
                        metrics
                            .table_updates
                            .get_or_create(&ResultLabel { result: "applied" })
                            .inc();
                        tracing::info!(origin = %t.origin, rules = table.rules().len(), "route table loaded");
                        good = Some(table);
                        applied = true;
                    }
                    Err(e) => {
                        metrics
                            .table_updates
                            .get_or_create(&ResultLabel { result: "rejected" })
                            .inc();
                        if good.is_some() {
                            tracing::warn!(origin = %t.origin, error = %e, "route table update rejected; keeping the last good table");
                        } else {
                            tracing::warn!(origin = %t.origin, error = %e, "route table rejected; not ready until a good one arrives");
                        }
                    }
                }
            }
        }
        if let (Some(table), true) = (&good, applied || dead_changed) {
            let dead_now = dead.borrow_and_update().clone();
            let effective = table.without_sessions(&dead_now);
            version += 1;
            metrics.table_version.set(version);
            metrics.table_rules.set(effective.rules().len() as i64);
            out.send_replace(Arc::new(effective));
            ready.send_replace(true);
        }
        tokio::select! {
            r = texts.changed() => {
                if r.is_err() { return }
                dead_changed = false;
            }
            r = dead.changed() => {
                if r.is_err() { return }
                dead_changed = true;
            }
        }
    }
}

/// Polls a routes file and publishes its text when its contents change. Writers should replace
/// the file atomically (write + rename); a half-written file is rejected and retried next tick.
pub async fn watch_file(path: PathBuf, interval: Duration, tx: watch::Sender<Option<RoutesText>>) {
    let mut last: Option<(SystemTime, u64, String)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A small local file: a blocking read is cheaper than a trip to a blocking thread.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if last.as_ref().is_some_and(|(m, l, _)| (*m, *l) == stamp) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if last.as_ref().is_some_and(|(_, _, t)| *t == text) {
            last = Some((stamp.0, stamp.1, text));
            continue;
        }
        last = Some((stamp.0, stamp.1, text.clone()));
        let update = RoutesText {
            origin: path.display().to_string(),
            text,
        };
        if tx.send(Some(update)).is_err() {
            return;
        }
    }
}
