//! The one-session rule: at most one authenticated ktx session holds the shadow at a time.
//!
//! A tunnel connection claims the slot atomically after its handshake checks pass; the claim
//! publishes the session's handle for the service listeners and, when dropped (session over,
//! or the handshake failed after claiming), empties the slot and turns the shadow not-ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ktx_tunnel::shadow::SessionHandle;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The live session, as the service listeners see it.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: u64,
    pub handle: SessionHandle,
}

#[derive(Debug)]
pub struct Slot {
    claimed: AtomicBool,
    current: watch::Sender<Option<Live>>,
    metrics: Metrics,
}

impl Slot {
    pub fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            claimed: AtomicBool::new(false),
            current: watch::channel(None).0,
            metrics,
        })
    }

    /// Takes the slot if it is free.
    pub fn try_claim(self: &Arc<Self>) -> Option<Claim> {
        self.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim { slot: self.clone() })
    }

    /// The live session, if any.
    pub fn current(&self) -> Option<Live> {
        self.current.borrow().clone()
    }

    /// Follows whether a session is live (readiness).
    pub fn subscribe(&self) -> watch::Receiver<Option<Live>> {
        self.current.subscribe()
    }
}

/// Holding the slot. Dropping it frees the slot.
#[derive(Debug)]
pub struct Claim {
    slot: Arc<Slot>,
}

impl Claim {
    /// Counts the session as up without publishing a handle (connect mode: no service port
    /// opens streams; the slot only keeps the session single).
    pub fn mark_up(&self) {
        self.slot.metrics.session_up.set(1);
    }

    /// Makes the session visible to the service listeners: the shadow is ready from now on.
    pub fn publish(&self, live: Live) {
        self.slot.metrics.session_up.set(1);
        self.slot.current.send_replace(Some(live));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unpublish before releasing, so a new session never sees the old handle.
        self.slot.current.send_replace(None);
        self.slot.metrics.session_up.set(0);
        self.slot.claimed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time() {
        let slot = Slot::new(Metrics::new(&mut Default::default()));
        let first = slot.try_claim().expect("free slot");
        assert!(slot.try_claim().is_none());
        drop(first);
        assert!(slot.try_claim().is_some());
    }
}
