//! Admission of new downstream connections: under overload the router refuses new work with a
//! clear answer (the connection is closed at accept, and counted by reason) and keeps serving
//! the connections it has. Three limits: open connections in all (`--max-connections`), open
//! connections per source address (`--max-connections-per-source`, off by default: behind an
//! ingress or SNAT every client shares one source), and the process's resident memory
//! (`--max-rss`, sampled every 100 ms from `/proc/self/status`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, RefusedLabel};

/// Why a connection was refused (the `reason` label of `ktx_router_refused_connections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` are open.
    Connections,
    /// `--max-connections-per-source` are open from this address.
    Source,
    /// Resident memory is above `--max-rss`.
    Memory,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::Source => "source",
            Refused::Memory => "memory",
        }
    }
}

/// Open connections per source address; an address has an entry only while it has some.
type Sources = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Limits on new connections, shared by every listener.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    per_source: usize,
    sources: Sources,
    overloaded: Arc<AtomicBool>,
    metrics: Metrics,
}

/// Held by a connection for as long as it is open.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    source: Option<(IpAddr, Sources)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, sources)) = self.source.take() {
            let mut map = sources
                .lock()
                .expect("source lock is never held across a panic");
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// `per_source` 0 turns the per-source limit off; `max_rss` 0 turns the memory limit off.
    pub fn new(max_connections: usize, per_source: usize, max_rss: u64, metrics: Metrics) -> Self {
        let overloaded = Arc::new(AtomicBool::new(false));
        if max_rss > 0 {
            // The first sample now: the watch's first one waits until its task is scheduled,
            // and connections accepted before it would go unchecked.
            if let Some(rss) = rss_bytes() {
                record(rss, max_rss, &overloaded);
            }
            tokio::spawn(watch_rss(max_rss, Arc::clone(&overloaded), rss_bytes));
        }
        Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_source,
            sources: Arc::default(),
            overloaded,
            metrics,
        }
    }

    /// Admits a connection from `ip`, or says why not (and counts it).
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refused> {
        let r = self.try_admit(ip);
        if let Err(reason) = r {
            self.metrics
                .refused_connections
                .get_or_create(&RefusedLabel {
                    reason: reason.as_str(),
                })
                .inc();
        }
        r
    }

    fn try_admit(&self, ip: IpAddr) -> Result<Admitted, Refused> {
        if self.overloaded.load(Ordering::Relaxed) {
            return Err(Refused::Memory);
        }
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Refused::Connections)?;
        if self.per_source == 0 {
            return Ok(Admitted {
                _slot: slot,
                source: None,
            });
        }
        let mut map = self
            .sources
            .lock()
            .expect("source lock is never held across a panic");
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_source {
            return Err(Refused::Source);
        }
        *n += 1;
        Ok(Admitted {
            _slot: slot,
            source: Some((ip, Arc::clone(&self.sources))),
        })
    }
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples the RSS (`sample`) every 100 ms and sets `overloaded` while it is above `max_rss`,
/// until the router is gone. A failed sample (no file descriptor left to open `/proc` with,
/// in a connection flood) is skipped: the flag keeps its value until the next good one.
async fn watch_rss(
    max_rss: u64,
    overloaded: Arc<AtomicBool>,
    mut sample: impl FnMut() -> Option<u64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Arc::strong_count(&overloaded) == 1 {
            return; // the router is gone
        }
        let Some(rss) = sample() else { continue };
        record(rss, max_rss, &overloaded);
    }
}

/// Sets `overloaded` by one RSS sample, and says so when it changes.
fn record(rss: u64, max_rss: u64, overloaded: &AtomicBool) {
    let over = rss > max_rss;
    if overloaded.swap(over, Ordering::Relaxed) != over {
        if over {
            tracing::warn!(
                rss,
                max_rss,
                "memory above --max-rss: refusing new connections"
            );
        } else {
            tracing::info!(rss, max_rss, "memory below --max-rss: accepting again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample that fails (EMFILE while opening `/proc`) does not end the watch: the next
    /// good one still sets and clears the flag.
    #[tokio::test(start_paused = true)]
    async fn the_memory_watch_outlives_a_failed_sample() {
        let overloaded = Arc::new(AtomicBool::new(false));
        let mut samples = vec![Some(10), None, None, Some(200), Some(10)].into_iter();
        let watch = tokio::spawn(watch_rss(100, Arc::clone(&overloaded), move || {
            samples.next().unwrap_or(Some(10))
        }));
        let mut seen = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.push(overloaded.load(Ordering::Relaxed));
        }
        assert!(
            seen.contains(&true),
            "never overloaded after a failed sample: {seen:?}"
        );
        assert!(!overloaded.load(Ordering::Relaxed), "{seen:?}");
        watch.abort();
    }

    fn admission(total: usize, per_source: usize) -> Admission {
        let mut registry = prometheus_client::registry::Registry::default();
        Admission::new(total, per_source, 0, Metrics::new(&mut registry))
    }

    #[tokio::test]
    async fn one_source_cannot_take_every_slot() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let adm = admission(4, 2);
        let a1 = adm.admit(a).unwrap();
        let _a2 = adm.admit(a).unwrap();
        assert_eq!(adm.admit(a).unwrap_err(), Refused::Source);
        let _b1 = adm.admit(b).unwrap();
        let _b2 = adm.admit(b).unwrap();
        assert_eq!(adm.admit(b).unwrap_err(), Refused::Connections);
        drop(a1);
        let _a3 = adm.admit(a).unwrap();
    }

    #[tokio::test]
    async fn a_source_leaves_no_entry_once_its_connections_close() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let adm = admission(4, 2);
        drop(adm.admit(a).unwrap());
        assert!(adm.sources.lock().unwrap().is_empty());
    }

    /// Before its first sample the watch had not run: a router over the limit from the start
    /// took every connection until the sampling task was first scheduled (on a busy machine,
    /// past the first requests; `tests/proxy/bounds.rs` saw it with CI beside it).
    #[tokio::test]
    async fn memory_above_the_limit_refuses_from_the_first_connection() {
        let mut registry = prometheus_client::registry::Registry::default();
        let adm = Admission::new(4, 0, 1, Metrics::new(&mut registry));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // No await in between: the sampling task has not run yet.
        assert_eq!(adm.admit(a).unwrap_err(), Refused::Memory);
    }

    #[test]
    fn rss_is_readable() {
        assert!(rss_bytes().unwrap() > 0);
    }
}
