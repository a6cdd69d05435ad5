//! Ctrl-C and SIGTERM as a counter on a `watch` channel: the first ends a session (or aborts a
//! setup, which then rolls back), later ones are counted so a person who insists can cut the
//! rollback short. Library callers (tests) can make their own with [`Shutdown::manual`].

use tokio::sync::watch;

/// How many stop requests have arrived.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<u32>,
}

/// Sends stop requests to a [`Shutdown`] made by [`Shutdown::manual`].
#[derive(Debug, Clone)]
pub struct Trigger {
    tx: std::sync::Arc<watch::Sender<u32>>,
}

impl Trigger {
    pub fn fire(&self) {
        self.tx.send_modify(|n| *n += 1);
    }
}

impl Shutdown {
    /// Listens for SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed, an SSH session
    /// lost: without it ktx would die undoing nothing, leaving `ktx connect`'s DNS settings
    /// pointing at a resolver that is gone). The handlers are in place when this returns. Must
    /// run inside a tokio runtime.
    pub fn from_signals() -> Shutdown {
        use tokio::signal::unix::{signal, SignalKind};
        let (shutdown, trigger) = Shutdown::manual();
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::warn!(
                "cannot listen for Ctrl-C/SIGTERM/SIGHUP; the session can only end by an error"
            );
            return shutdown;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => trigger.fire(),
                    _ = term.recv() => trigger.fire(),
                    _ = hup.recv() => trigger.fire(),
                }
            }
        });
        shutdown
    }

    /// A shutdown fired by hand.
    pub fn manual() -> (Shutdown, Trigger) {
        let (tx, rx) = watch::channel(0);
        (
            Shutdown { rx },
            Trigger {
                tx: std::sync::Arc::new(tx),
            },
        )
    }

    /// Stop requests so far.
    pub fn count(&self) -> u32 {
        *self.rx.borrow()
    }

    /// Waits until at least `n` stop requests have arrived (forever if the sender is gone).
    pub async fn reached(&self, n: u32) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|c| *c >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hangup_is_a_stop_request() {
        let s = Shutdown::from_signals();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.reached(1))
            .await
            .expect("SIGHUP counted as a stop request");
    }

    #[tokio::test]
    async fn counts_requests() {
        let (s, t) = Shutdown::manual();
        assert_eq!(s.count(), 0);
        t.fire();
        s.reached(1).await;
        t.fire();
        s.reached(2).await;
        assert_eq!(s.count(), 2);
    }
}
