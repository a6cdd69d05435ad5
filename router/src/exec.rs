//! Where hyper's HTTP/2 tasks run: each stream of a downstream h2c connection, and the
//! connections of that client's own upstream pool, run inside the downstream connection's task
//! ([`Exec::Local`] and [`Driven`]) instead of being tasks of their own.
//!
//! Why: tokio's current-thread scheduler runs woken tasks in FIFO order. With a task per
//! stream and per upstream connection, a request crossed four tasks (client connection,
//! stream, upstream connection, and back), each queued behind every task the same epoll woke;
//! at 1k rps with bursts of ten, a request waited for the whole burst at each hop. Driven in
//! one task, a stream's request is written upstream, and its response written back, in the
//! poll that made them ready. Connections shared by every client (`upstream/h2_shared.rs`)
//! keep their own task ([`Exec::Spawn`]): no client's task may own them.
//!
//! A driven task costs one boxed future in the connection's set; a task woken from another
//! task (an upstream connection shared by all, a timer) wakes the connection's task, which
//! polls only the woken ones (`FuturesUnordered`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs hyper's background futures: spawned on tokio, or driven by one connection's task.
#[derive(Clone, Debug, Default)]
pub enum Exec {
    #[default]
    Spawn,
    Local(Local),
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Exec {
    fn execute(&self, fut: F) {
        match self {
            Exec::Spawn => {
                tokio::spawn(fut);
            }
            Exec::Local(local) => local.push(Box::pin(fut)),
        }
    }
}

/// The queue of futures pushed for one [`Driven`], and what wakes it.
#[derive(Clone, Default)]
pub struct Local(Arc<Shared>);

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Local")
    }
}

#[derive(Default)]
struct Shared {
    new: Mutex<Vec<Task>>,
    flags: Arc<Flags>,
}

impl Local {
    fn push(&self, task: Task) {
        self.0
            .new
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        self.0.flags.new_task.store(true, Ordering::Release);
        self.0.flags.wake_task();
    }
}

/// What happened since the driver last looked, and the task to wake for it.
#[derive(Default)]
struct Flags {
    main: AtomicBool,
    tasks: AtomicBool,
    new_task: AtomicBool,
    /// The driver is inside its poll: it will look at the flags before it returns, so a wake
    /// needs no trip through the scheduler.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Flags {
    fn wake_task(&self) {
        if !self.polling.load(Ordering::Acquire) {
            self.task.wake();
        }
    }
}

/// Wakes the driver for its main future (`main`) or its set of tasks (`tasks`).
struct FlagWaker {
    flags: Arc<Flags>,
    main: bool,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let flag = if self.main {
            &self.flags.main
        } else {
            &self.flags.tasks
        };
        flag.store(true, Ordering::Release);
        self.flags.wake_task();
    }
}

/// Rounds of main-then-tasks in one poll before the driver yields to other tasks.
const ROUNDS: usize = 16;

/// Drives `main` (hyper's connection) and every future pushed to its [`Local`], in the task
/// that polls it; resolves with `main`'s output.
pub struct Driven<F> {
    main: Pin<Box<F>>,
    local: Local,
    tasks: FuturesUnordered<Task>,
    main_waker: Waker,
    tasks_waker: Waker,
}

impl<F: Future> Driven<F> {
    /// `main` driven with the futures its executor (`Exec::Local(local)`) pushes.
    pub fn new(main: F, local: Local) -> Self {
        let flags = Arc::clone(&local.0.flags);
        // polled at once: everything counts as woken
        flags.main.store(true, Ordering::Release);
        let waker = |main| {
            Waker::from(Arc::new(FlagWaker {
                flags: Arc::clone(&flags),
                main,
            }))
        };
        Driven {
            main: Box::pin(main),
            main_waker: waker(true),
            tasks_waker: waker(false),
            local,
            tasks: FuturesUnordered::new(),
        }
    }

    /// The main future (for hyper's `graceful_shutdown`); it is polled again at the next poll.
    pub fn main(&mut self) -> Pin<&mut F> {
        self.flags().main.store(true, Ordering::Release);
        self.main.as_mut()
    }

    /// Futures still running (after `main` resolved: upstream connections closing, streams
    /// ending).
    pub fn running(&self) -> usize {
        let queued = self
            .local
            .0
            .new
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        self.tasks.len() + queued
    }

    /// Drives the remaining tasks until none is left.
    pub async fn drain(&mut self) {
        std::future::poll_fn(|cx| {
            self.poll_tasks(cx);
            if self.running() == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn flags(&self) -> &Flags {
        &self.local.0.flags
    }

    /// Polls the new tasks and the woken ones.
    fn poll_tasks(&mut self, cx: &mut Context<'_>) {
        let flags = Arc::clone(&self.local.0.flags);
        flags.task.register(cx.waker());
        if flags.new_task.swap(false, Ordering::AcqRel) {
            let new =
                std::mem::take(&mut *self.local.0.new.lock().unwrap_or_else(|p| p.into_inner()));
            self.tasks.extend(new);
            flags.tasks.store(true, Ordering::Release);
        }
        if flags.tasks.swap(false, Ordering::AcqRel) {
            let mut tcx = Context::from_waker(&self.tasks_waker);
            while let Poll::Ready(Some(())) = self.tasks.poll_next_unpin(&mut tcx) {}
        }
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let flags = Arc::clone(&this.local.0.flags);
        flags.polling.store(true, Ordering::Release);
        for _ in 0..ROUNDS {
            if flags.main.swap(false, Ordering::AcqRel) {
                let mut mcx = Context::from_waker(&this.main_waker);
                if let Poll::Ready(out) = this.main.as_mut().poll(&mut mcx) {
                    flags.polling.store(false, Ordering::Release);
                    return Poll::Ready(out);
                }
            }
            this.poll_tasks(cx);
            if !flags.main.load(Ordering::Acquire)
                && !flags.tasks.load(Ordering::Acquire)
                && !flags.new_task.load(Ordering::Acquire)
            {
                flags.polling.store(false, Ordering::Release);
                // a wake between the check and here found `polling` set: look once more
                if flags.main.load(Ordering::Acquire)
                    || flags.tasks.load(Ordering::Acquire)
                    || flags.new_task.load(Ordering::Acquire)
                {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
        // still busy after ROUNDS: let other connections run, come back at once
        flags.polling.store(false, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use hyper::rt::Executor;
    use tokio::sync::oneshot;

    use super::*;

    /// Polls `fut` once with a waker that counts its wakes.
    fn poll_once<F: Future + Unpin>(fut: &mut F, wakes: &Arc<AtomicUsize>) -> Poll<F::Output> {
        struct Count(Arc<AtomicUsize>);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Count(Arc::clone(wakes))));
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    /// A task the main future pushes runs in the same poll, and when it wakes the main future
    /// the main future runs in that poll too: no trip through the scheduler, no self-wake.
    #[test]
    fn a_pushed_task_and_the_main_future_it_wakes_run_in_one_poll() {
        let local = Local::default();
        let exec = Exec::Local(local.clone());
        let (tx, rx) = oneshot::channel::<u32>();
        let mut tx = Some(tx);
        let mut rx = rx;
        let main = std::future::poll_fn(move |cx| {
            if let Some(tx) = tx.take() {
                exec.execute(async move {
                    let _ = tx.send(7);
                });
            }
            Pin::new(&mut rx).poll(cx).map(|r| r.expect("sent"))
        });
        let mut driven = Driven::new(main, local);
        let wakes = Arc::new(AtomicUsize::new(0));
        assert_eq!(poll_once(&mut driven, &wakes), Poll::Ready(7));
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "no self-wake");
    }

    /// A task woken from outside (another task, a timer) wakes the driver, which polls it.
    #[tokio::test]
    async fn a_task_woken_from_outside_runs_and_what_is_left_drains() {
        let local = Local::default();
        let exec = Exec::Local(local.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        exec.execute(async move {
            rx.await.expect("sent");
            let _ = done_tx.send(());
        });
        let mut driven = Driven::new(done_rx, local);
        let wakes = Arc::new(AtomicUsize::new(0));
        assert!(poll_once(&mut driven, &wakes).is_pending());
        assert_eq!(driven.running(), 1);
        tx.send(()).expect("the task waits");
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "woke the driver");
        assert!(matches!(
            poll_once(&mut driven, &wakes),
            Poll::Ready(Ok(()))
        ));

        // main done, one task left: drain runs it to its end
        let (tx, rx) = oneshot::channel::<()>();
        let local = Local::default();
        Exec::Local(local.clone()).execute(async move {
            rx.await.expect("sent");
        });
        let mut driven = Driven::new(std::future::ready(()), local);
        (&mut driven).await;
        assert_eq!(driven.running(), 1);
        tx.send(()).expect("the task waits");
        tokio::time::timeout(std::time::Duration::from_secs(5), driven.drain())
            .await
            .expect("drained");
        assert_eq!(driven.running(), 0);
    }
}
