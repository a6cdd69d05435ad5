//! Where the HTTP/2 tasks run: each stream of a downstream h2c connection (`serve/h2c.rs`), and
//! the connections of that client's own upstream pool, run inside the downstream connection's task
//! ([`Exec::Local`] and [`Driven`]) instead of being tasks of their own.
//!
//! Why: tokio runs woken tasks in turn (FIFO on the current-thread runtime the benchmarks use,
//! per-worker queues on the multi-thread one). With a task per stream and per upstream
//! connection, a request crossed four tasks (client connection, stream, upstream connection,
//! and back), each queued behind every task the same epoll woke; at 1k rps with bursts of ten,
//! a request waited for the whole burst at each hop. Driven in one task, a stream's request is
//! written upstream, and its response written back, in the poll that made them ready (within
//! [`ROUNDS`] rounds and tokio's cooperative budget). Connections shared by every client
//! (`upstream/h2_shared.rs`) keep their own task ([`Exec::Spawn`]): no client's task may own
//! them.
//!
//! A driven task costs one boxed future in the connection's set; a task woken from another
//! task or thread (an upstream connection shared by all, a timer, the I/O driver) wakes the
//! connection's task, which polls only the woken ones (`FuturesUnordered`). The price: one
//! client connection's streams share one task, so one busy client connection uses one core
//! at a time. A panic in one driven future ends that future only (as a task of its own did).
//!
//! The wake flags use `SeqCst`: a waker stores its flag then reads `polling`, the driver
//! clears `polling` then reads the flags; with weaker orderings both could read the old values
//! and the wake would be lost.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the HTTP/2 background futures (streams, upstream connections, request bodies piped
/// upstream): spawned on tokio, or driven by one connection's task.
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
            // a panic ends this future only, as it would end a task of its own
            Exec::Local(local) => {
                local.push(Box::pin(AssertUnwindSafe(fut).catch_unwind().map(|r| {
                    if r.is_err() {
                        tracing::error!("an HTTP/2 stream or upstream connection task panicked");
                    }
                })))
            }
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
        self.0.flags.new_task.store(true, Ordering::SeqCst);
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
        if !self.polling.load(Ordering::SeqCst) {
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
        flag.store(true, Ordering::SeqCst);
        self.flags.wake_task();
    }
}

/// Rounds of main-then-tasks in one poll before the driver yields to other tasks.
const ROUNDS: usize = 16;

/// Drives `main` (the h2c connection) and every future pushed to its [`Local`], in the task
/// that polls it; resolves with `main`'s output.
pub struct Driven<F> {
    /// Dropped as soon as it resolves: the h2c connection holds the client's upstream pool;
    /// the pool's connections end only once it is gone.
    main: Option<Pin<Box<F>>>,
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
        flags.main.store(true, Ordering::SeqCst);
        let waker = |main| {
            Waker::from(Arc::new(FlagWaker {
                flags: Arc::clone(&flags),
                main,
            }))
        };
        Driven {
            main: Some(Box::pin(main)),
            main_waker: waker(true),
            tasks_waker: waker(false),
            local,
            tasks: FuturesUnordered::new(),
        }
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

    /// Polls the new tasks and the woken ones.
    fn poll_tasks(&mut self, cx: &mut Context<'_>) {
        let flags = Arc::clone(&self.local.0.flags);
        flags.task.register(cx.waker());
        if flags.new_task.swap(false, Ordering::SeqCst) {
            let new =
                std::mem::take(&mut *self.local.0.new.lock().unwrap_or_else(|p| p.into_inner()));
            self.tasks.extend(new);
            flags.tasks.store(true, Ordering::SeqCst);
        }
        if flags.tasks.swap(false, Ordering::SeqCst) {
            let mut tcx = Context::from_waker(&self.tasks_waker);
            while let Poll::Ready(Some(())) = self.tasks.poll_next_unpin(&mut tcx) {}
        }
    }
}

impl<F> Drop for Driven<F> {
    /// Futures still queued hold the queue (through `Exec::Local`, or the pool that holds it):
    /// drop them here, or they would keep each other alive.
    fn drop(&mut self) {
        loop {
            let queued =
                std::mem::take(&mut *self.local.0.new.lock().unwrap_or_else(|p| p.into_inner()));
            if queued.is_empty() {
                break;
            }
            drop(queued);
        }
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let flags = Arc::clone(&this.local.0.flags);
        flags.polling.store(true, Ordering::SeqCst);
        for _ in 0..ROUNDS {
            if flags.main.swap(false, Ordering::SeqCst) {
                let mut mcx = Context::from_waker(&this.main_waker);
                let main = this.main.as_mut().expect("Driven polled after it resolved");
                if let Poll::Ready(out) = main.as_mut().poll(&mut mcx) {
                    this.main = None;
                    flags.polling.store(false, Ordering::SeqCst);
                    return Poll::Ready(out);
                }
            }
            this.poll_tasks(cx);
            if !flags.main.load(Ordering::SeqCst)
                && !flags.tasks.load(Ordering::SeqCst)
                && !flags.new_task.load(Ordering::SeqCst)
            {
                flags.polling.store(false, Ordering::SeqCst);
                // a wake between the check and here found `polling` set: look once more
                if flags.main.load(Ordering::SeqCst)
                    || flags.tasks.load(Ordering::SeqCst)
                    || flags.new_task.load(Ordering::SeqCst)
                {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
        // still busy after ROUNDS: let other connections run, come back at once
        flags.polling.store(false, Ordering::SeqCst);
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

    /// A panic in one driven future ends that future only (as it ended a task of its own).
    #[test]
    fn a_panicking_task_ends_alone() {
        let local = Local::default();
        let exec = Exec::Local(local.clone());
        let (tx, rx) = oneshot::channel::<u32>();
        exec.execute(async { panic!("a stream's bug") });
        exec.execute(async move {
            let _ = tx.send(3);
        });
        let mut driven = Driven::new(rx, local);
        let wakes = Arc::new(AtomicUsize::new(0));
        assert!(matches!(poll_once(&mut driven, &wakes), Poll::Ready(Ok(3))));
    }

    /// Queued futures that hold the executor (as the h2c connection and the pool's streams
    /// do) are dropped with the driver, not kept alive by the queue they sit in.
    #[test]
    fn queued_tasks_holding_the_executor_are_dropped_with_the_driver() {
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let local = Local::default();
        let exec = Exec::Local(local.clone());
        let guard = Count(Arc::clone(&dropped));
        let held = exec.clone();
        exec.execute(async move {
            let _keep = (guard, held);
            std::future::pending::<()>().await;
        });
        drop(exec);
        drop(Driven::new(std::future::pending::<()>(), local));
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
