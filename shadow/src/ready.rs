//! Readiness: a session is up, every service port is listening again for it, and the shadow is
//! not draining (connect mode: not draining; it has no service ports and needs no session). What `/readyz` answers (so the kubelet, and through it the router's
//! endpoints, send traffic here only then) and what tests wait on.
//!
//! The ports count separately because they are bound again when a session comes
//! ([`crate::service`] closes them while none is up): a shadow that said "ready" the moment the
//! session was published would have its first connections refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::slot::Slot;

#[derive(Debug)]
pub struct Readiness {
    slot: Arc<Slot>,
    /// Service ports listening for the current session.
    listening: watch::Sender<usize>,
    ports: usize,
    /// Set on shutdown: not ready any more, whatever the tunnel does.
    draining: AtomicBool,
    /// Mesh mode: ready only with a session. Connect mode: ready while listening.
    needs_session: bool,
    /// [`Readiness::is_ready`] has said yes at least once.
    was_ready: AtomicBool,
}

impl Readiness {
    pub fn new(slot: Arc<Slot>, ports: usize, needs_session: bool) -> Arc<Self> {
        Arc::new(Self {
            slot,
            listening: watch::channel(0).0,
            ports,
            draining: AtomicBool::new(false),
            needs_session,
            was_ready: AtomicBool::new(false),
        })
    }

    /// Whether readiness waits for a session (mesh mode).
    pub fn needs_session(&self) -> bool {
        self.needs_session
    }

    pub fn is_ready(&self) -> bool {
        let ready = (!self.needs_session || self.slot.current().is_some())
            && *self.listening.borrow() == self.ports
            && !self.draining.load(Ordering::Relaxed);
        if ready {
            self.was_ready.store(true, Ordering::Relaxed);
        }
        ready
    }

    /// Whether [`Readiness::is_ready`] has ever said yes (the shadow is past its start).
    pub fn was_ready(&self) -> bool {
        self.was_ready.load(Ordering::Relaxed)
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // Wake waiters: readiness changed.
        self.listening.send_modify(|_| {});
    }

    /// Resolves once [`Readiness::is_ready`] is `ready`.
    pub async fn wait(&self, ready: bool) {
        let mut session = self.slot.subscribe();
        let mut listening = self.listening.subscribe();
        while self.is_ready() != ready {
            tokio::select! {
                r = session.changed() => if r.is_err() { return },
                r = listening.changed() => if r.is_err() { return },
            }
        }
    }

    /// Counts one service port as listening until the guard is dropped.
    pub(crate) fn listening(self: &Arc<Self>) -> Listening {
        self.listening.send_modify(|n| *n += 1);
        Listening(self.clone())
    }
}

/// A service port bound for the current session.
#[derive(Debug)]
pub(crate) struct Listening(Arc<Readiness>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.send_modify(|n| *n -= 1);
    }
}
