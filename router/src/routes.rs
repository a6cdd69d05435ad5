//! The route table as a value on a `watch` channel. Sources publish parsed specs; this module
//! checks each one, keeps the last good table when an update is bad (and says why), removes the
//! rules of sessions whose Lease has expired, and publishes the result for the request path.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ktx_rules::{Budget, RouteTable, RoutesSpec};
use tokio::sync::watch;

use crate::metrics::{Metrics, ResultLabel};

/// One update from a source: the text of the table and where it came from (for logs).
#[derive(Debug, Clone)]
pub struct RoutesText {
    pub origin: String,
    pub text: String,
}

/// Checks `text` into a table within `budget`, or explains why not. CPU-bound (regexes): async
/// callers run it on a blocking thread.
pub fn compile(text: &RoutesText, budget: &Budget) -> Result<RouteTable, ktx_rules::RulesError> {
    RouteTable::compile_within(&RoutesSpec::parse_within(&text.text, budget)?, budget)
}

/// [`compile`] on a blocking thread, so a large table never stalls the request path's workers.
async fn compile_off_workers(
    text: RoutesText,
    budget: Budget,
) -> Result<RouteTable, ktx_rules::RulesError> {
    tokio::task::spawn_blocking(move || compile(&text, &budget))
        .await
        .unwrap_or_else(|e| {
            Err(ktx_rules::RulesError::Parse(format!(
                "route table check did not finish: {e}"
            )))
        })
}

/// Publishes `effective = table − rules of dead sessions` whenever either input changes.
///
/// `texts` carries raw updates (file or ConfigMap); `fresh` carries the names of the Leases
/// that are fresh — a rule naming any other Lease is ignored (its developer is gone). With no
/// Lease source (outside a cluster) every rule counts. The first good table makes `ready` true.
pub async fn run_table(
    mut texts: watch::Receiver<Option<RoutesText>>,
    mut fresh: watch::Receiver<Option<HashSet<String>>>,
    out: watch::Sender<Arc<RouteTable>>,
    ready: watch::Sender<bool>,
    metrics: Metrics,
    budget: Budget,
) {
    let mut good: Option<RouteTable> = None;
    let mut version: i64 = 0;
    let mut dead_changed = true;
    let mut text_changed = true;
    let (mut texts_open, mut fresh_open) = (true, true);
    loop {
        let mut applied = false;
        if text_changed || good.is_none() {
            let current = texts.borrow_and_update().clone();
            if let Some(t) = current {
                match compile_off_workers(t.clone(), budget).await {
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
            let effective = {
                let fresh_now = fresh.borrow_and_update();
                match fresh_now.as_ref() {
                    None => table.clone(),
                    Some(fresh) => {
                        table.retain_rules(|r| r.lease.as_ref().is_none_or(|l| fresh.contains(l)))
                    }
                }
            };
            version += 1;
            metrics.table_version.set(version);
            metrics.table_rules.set(effective.rules().len() as i64);
            out.send_replace(Arc::new(effective));
            ready.send_replace(true);
        }
        // A source whose sender is gone (e.g. no Lease source outside a cluster) is simply
        // not waited on any more.
        tokio::select! {
            r = texts.changed(), if texts_open => {
                texts_open = r.is_ok();
                text_changed = r.is_ok();
                dead_changed = false;
            }
            r = fresh.changed(), if fresh_open => {
                fresh_open = r.is_ok();
                dead_changed = r.is_ok();
                text_changed = false;
            }
            else => return,
        }
    }
}

/// Polls a routes file and publishes its text when its contents change. Writers should replace
/// the file atomically (write + rename); a half-written file is rejected and retried next tick.
pub async fn watch_file(path: PathBuf, interval: Duration, tx: watch::Sender<Option<RoutesText>>) {
    use std::os::unix::fs::MetadataExt;
    // Two quick writes can share an mtime tick and a length; a rename also changes the inode,
    // and every `FULL_READ_EVERY` ticks the contents are compared anyway.
    const FULL_READ_EVERY: u32 = 20;
    let mut last: Option<((u64, SystemTime, u64), String)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        // A small local file: a blocking read is cheaper than a trip to a blocking thread.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let stamp = (
            meta.ino(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let same_stamp = last.as_ref().is_some_and(|(s, _)| *s == stamp);
        if same_stamp && !ticks.is_multiple_of(FULL_READ_EVERY) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let same_text = last.as_ref().is_some_and(|(_, t)| *t == text);
        last = Some((stamp, text));
        if same_text {
            continue;
        }
        let update = RoutesText {
            origin: path.display().to_string(),
            text: last.as_ref().map(|(_, t)| t.clone()).unwrap_or_default(),
        };
        if tx.send(Some(update)).is_err() {
            return;
        }
    }
}
