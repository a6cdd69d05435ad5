//! One flow: moves bytes between its smoltcp socket and its dialed stream, with no buffer of its
//! own (bytes go from the socket's receive buffer straight into the stream's `poll_write`, and
//! from the stream's `poll_read` straight into the socket's send buffer).
//!
//! Backpressure falls out of that: a stream that does not take bytes leaves them in the socket's
//! receive buffer, whose free space is the window smoltcp advertises; a client that does not read
//! leaves the socket's send buffer full, so the stream is not read. Each half closes on its own:
//! the client's FIN becomes a `shutdown` of the stream once every byte before it was written, and
//! the stream's EOF becomes the socket's FIN once every byte before it was sent. A reset either
//! way becomes a reset the other way (a stream error aborts the socket, which sends RST; a RST
//! from the client drops the stream).
//!
//! Both the socket and the stream wake the same [`FlowWaker`], which queues the flow for the
//! stack loop (one task owns every socket, see [`super`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{RecvError, Socket, State};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::syn_gate::FlowKey;

/// Flows to pump, filled by their wakers, drained by the stack loop.
#[derive(Default)]
pub struct ReadyFlows {
    queue: Mutex<Vec<SocketHandle>>,
    pub notify: Notify,
}

impl ReadyFlows {
    pub fn take(&self, into: &mut Vec<SocketHandle>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut q);
    }
}

/// Queues one flow (once until it is pumped) and wakes the loop.
pub struct FlowWaker {
    handle: SocketHandle,
    queued: AtomicBool,
    ready: Arc<ReadyFlows>,
}

impl Wake for FlowWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.handle);
            self.ready.notify.notify_one();
        }
    }
}

/// What a pump left the flow in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Both halves closed, every byte passed on: remove the socket.
    Done,
    /// The client reset the flow (or it never finished its handshake): the stream is dropped.
    ResetByClient,
    /// The stream failed: the socket was aborted and sends RST at the next poll.
    ResetByDestination,
}

pub struct Flow<S> {
    pub key: FlowKey,
    stream: S,
    flag: Arc<FlowWaker>,
    waker: Waker,
    /// The client's FIN was passed on (`shutdown` of the stream done).
    up_done: bool,
    /// The stream's EOF was passed on (`close` of the socket).
    down_done: bool,
    pub last_active: Instant,
    pub up: u64,
    pub down: u64,
}

enum Step {
    Moved(usize),
    Blocked,
    Eof,
    Failed(io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Flow<S> {
    pub fn new(key: FlowKey, stream: S, handle: SocketHandle, ready: Arc<ReadyFlows>) -> Self {
        let flag = Arc::new(FlowWaker {
            handle,
            queued: AtomicBool::new(false),
            ready,
        });
        let waker = Waker::from(flag.clone());
        Flow {
            key,
            stream,
            flag,
            waker,
            up_done: false,
            down_done: false,
            last_active: Instant::now(),
            up: 0,
            down: 0,
        }
    }

    /// Moves what can move both ways and passes on FINs; registers the wakers for the rest.
    pub fn pump(&mut self, socket: &mut Socket<'_>) -> Status {
        self.flag.queued.store(false, Ordering::Release);
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        socket.register_recv_waker(&waker);
        socket.register_send_waker(&waker);
        if socket.state() == State::Listen {
            // a RST during the handshake puts a listening socket back to LISTEN
            return Status::ResetByClient;
        }
        let mut moved = false;
        let mut reset = false;

        // client → destination
        while !self.up_done {
            let stream = &mut self.stream;
            let step = socket.recv(|buf| {
                if buf.is_empty() {
                    return (0, Step::Blocked);
                }
                match Pin::new(&mut *stream).poll_write(&mut cx, buf) {
                    Poll::Ready(Ok(0)) => (0, Step::Failed(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => (n, Step::Moved(n)),
                    Poll::Ready(Err(e)) => (0, Step::Failed(e)),
                    Poll::Pending => (0, Step::Blocked),
                }
            });
            match step {
                Ok(Step::Moved(n)) => {
                    self.up += n as u64;
                    moved = true;
                }
                Ok(Step::Blocked | Step::Eof) => break,
                Ok(Step::Failed(e)) => return self.abort(socket, &e),
                Err(RecvError::Finished) => {
                    match Pin::new(&mut self.stream).poll_shutdown(&mut cx) {
                        Poll::Ready(Ok(())) => self.up_done = true,
                        Poll::Ready(Err(e)) => return self.abort(socket, &e),
                        Poll::Pending => {}
                    }
                    break;
                }
                Err(RecvError::InvalidState) => {
                    // not yet established, or reset: which one, the state tells below
                    reset = socket.state() == State::Closed;
                    break;
                }
            }
        }
        if moved && !self.up_done {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.stream).poll_flush(&mut cx) {
                return self.abort(socket, &e);
            }
        }

        // destination → client
        while !self.down_done && !reset && socket.can_send() {
            let stream = &mut self.stream;
            let step = socket.send(|buf| {
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut *stream).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => (0, Step::Eof),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        (n, Step::Moved(n))
                    }
                    Poll::Ready(Err(e)) => (0, Step::Failed(e)),
                    Poll::Pending => (0, Step::Blocked),
                }
            });
            match step {
                Ok(Step::Moved(n)) => {
                    self.down += n as u64;
                    moved = true;
                }
                Ok(Step::Blocked) => break,
                Ok(Step::Eof) => {
                    socket.close();
                    self.down_done = true;
                }
                Ok(Step::Failed(e)) => return self.abort(socket, &e),
                Err(_) => break,
            }
        }
        if moved {
            self.last_active = Instant::now();
        }

        match socket.state() {
            State::Closed if reset => Status::ResetByClient,
            State::Closed | State::TimeWait if self.up_done && self.down_done => Status::Done,
            // the client is gone (its FIN was acked, our FIN too): nothing more can reach it
            State::Closed | State::TimeWait if self.up_done => Status::Done,
            _ => Status::Open,
        }
    }

    fn abort(&mut self, socket: &mut Socket<'_>, error: &io::Error) -> Status {
        tracing::debug!(client = %self.key.0, dst = %self.key.1, %error, "flow: destination side failed, resetting");
        socket.abort();
        Status::ResetByDestination
    }
}
