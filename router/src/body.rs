//! Bodies on both sides of the router, each with an idle bound: the request body sent upstream
//! ([`RequestBody`]) and the response body sent back ([`RouterBody`]: the upstream's body passed
//! through, or a short body the router wrote itself). A body that produces no frame for the
//! body idle timeout ends with [`BodyError::Idle`], which resets that stream (h2) or closes that
//! connection (HTTP/1.1), so a stalled peer holds its buffers and slot for a bounded time.
//!
//! The idle timer is armed only when the inner body is not ready, so a body that is always
//! ready (a small request, a fast upstream) never touches the timer wheel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Sleep;

use crate::upstream::h2_client::H2Body;
use crate::upstream::raw_h1::RawBody;
use crate::upstream::{H1Conn, Upstreams};

/// Why a body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Transport(#[from] hyper::Error),
    #[error("no body bytes for {0:?} (body idle timeout)")]
    Idle(Duration),
    #[error(transparent)]
    Upstream(crate::upstream::raw_h1::RawError),
    #[error("upstream HTTP/2 stream: {0}")]
    Stream(h2::Error),
    #[error("client HTTP/2 stream: {0}")]
    ClientStream(h2::Error),
}

pin_project_lite::pin_project! {
    /// Yields `inner`'s frames, or an error once it has been pending for `idle` in a row.
    #[derive(Debug)]
    pub struct IdleBound<B> {
        #[pin]
        inner: B,
        // Boxed (upstream HTTP/2 needs an `Unpin` request body) and made on the first wait.
        timer: Option<Pin<Box<Sleep>>>,
        idle: Duration,
        // True while `timer` runs for the current wait.
        armed: bool,
    }
}

impl<B> IdleBound<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBound {
            inner,
            timer: None,
            idle,
            armed: false,
        }
    }
}

impl<B> IdleBound<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    /// `inner`'s next frame if it has one now, without arming the idle timer.
    fn poll_now(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(r) => {
                *this.armed = false;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_bounded(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(r) = self.as_mut().poll_now(cx) {
            return Poll::Ready(r);
        }
        let this = self.project();
        if this.idle.is_zero() {
            return Poll::Pending;
        }
        let deadline = crate::serve::from_now(*this.idle);
        if !*this.armed {
            *this.armed = true;
            match this.timer.as_mut() {
                Some(t) => t.as_mut().reset(deadline),
                None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let timer = this
            .timer
            .as_mut()
            .expect("the timer is set whenever it is armed");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(*this.idle)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Set once a request body has gone upstream to its end: the response-header timeout starts
/// then, and an HTTP/1.1 exchange answered before that hands its connection to a task of its
/// own (the upload must keep flowing while the client is not reading the answer).
///
/// Until then it also tells whether the upstream side is taking the body: how often hyper has
/// asked for more (`polls`), and whether the last ask is waiting on the client
/// (`awaiting_client`, the body idle bound's case) rather than on hyper.
#[derive(Debug, Default)]
pub struct BodySent {
    notify: Notify,
    done: AtomicBool,
    polls: AtomicU64,
    awaiting_client: AtomicBool,
}

impl BodySent {
    fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn polled(&self, pending: bool) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.awaiting_client.store(pending, Ordering::Relaxed);
    }

    /// How often hyper has asked for more of the body.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Whether hyper's last ask is waiting for the client's bytes.
    pub fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Relaxed)
    }

    pub fn is_set(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the body has been sent (at once if it has).
    pub async fn wait(&self) {
        if !self.is_set() {
            // `notify_one` leaves a permit when nobody waits yet.
            self.notify.notified().await;
        }
    }
}

/// A client's request body as the router reads it: by hyper's HTTP/1.1 server, or from a
/// stream of the router's own h2c server (`serve/h2c.rs`).
#[derive(Debug)]
pub enum ClientBody {
    Http1(Incoming),
    H2(H2Body),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Http1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Transport))),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// A client's request body on its way upstream (none: a bodyless request sent again). Tells
/// `ended` (when set) once its last frame is out.
#[derive(Debug)]
pub struct RequestBody {
    body: Option<IdleBound<ClientBody>>,
    ended: Option<Arc<BodySent>>,
}

impl RequestBody {
    pub fn new(body: Option<ClientBody>, idle: Duration, ended: Option<Arc<BodySent>>) -> Self {
        RequestBody {
            body: body.map(|b| IdleBound::new(b, idle)),
            ended,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(&mut *body).poll_bounded(cx);
        // A body of known length has ended with its last data frame, and any body with its
        // trailers: hyper stops polling then, so waiting for `Ready(None)` alone would never
        // start the header timeout.
        let last = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(f))) => f.is_trailers() || body.inner.is_end_stream(),
            _ => false,
        };
        if last {
            if let Some(n) = this.ended.take() {
                n.set();
            }
        } else if let Some(n) = &this.ended {
            n.polled(r.is_pending());
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.inner.size_hint())
    }
}

/// A pooled HTTP/1.1 connection to give back when the response body it carries has ended.
#[derive(Debug)]
pub struct ReturnToPool {
    pub upstreams: std::sync::Arc<Upstreams>,
    pub conn: H1Conn,
}

impl ReturnToPool {
    fn give_back(self) {
        self.upstreams.checkin(self.conn);
    }
}

pin_project_lite::pin_project! {
    #[project = RouterBodyProj]
    #[derive(Debug)]
    pub enum RouterBody {
        // `pool` is set for HTTP/1.1: the connection goes back to the pool at end of body,
        // with no task per request. Dropped early (client gone), the connection is dropped.
        // `slot` is the HTTP/2 stream slot this response holds until it ends or is dropped.
        Upstream {
            #[pin] body: IdleBound<Incoming>,
            pool: Option<ReturnToPool>,
            slot: Option<StreamSlot>,
        },
        // Read by the router's own HTTP/1.1 client; it returns its connection to the pool.
        Raw { #[pin] body: IdleBound<RawBody> },
        // A stream of the router's own HTTP/2 client, holding its stream slot until it ends.
        H2 {
            #[pin] body: IdleBound<H2Body>,
            slot: Option<StreamSlot>,
        },
        Local { data: Option<Bytes> },
    }
}

/// One stream's share of an upstream HTTP/2 connection (see `upstream::H2Pool`); freed on drop.
#[derive(Debug)]
pub struct StreamSlot {
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl RouterBody {
    pub fn local(text: impl Into<Bytes>) -> Self {
        RouterBody::Local {
            data: Some(text.into()),
        }
    }

    pub fn empty() -> Self {
        RouterBody::Local { data: None }
    }

    pub fn raw(body: RawBody, idle: Duration) -> Self {
        RouterBody::Raw {
            body: IdleBound::new(body, idle),
        }
    }

    pub fn h2(body: H2Body, idle: Duration, slot: StreamSlot) -> Self {
        RouterBody::H2 {
            body: IdleBound::new(body, idle),
            slot: Some(slot),
        }
    }

    pub fn upstream(
        body: Incoming,
        idle: Duration,
        pool: Option<ReturnToPool>,
        slot: Option<StreamSlot>,
    ) -> Self {
        RouterBody::Upstream {
            body: IdleBound::new(body, idle),
            pool,
            slot,
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            RouterBodyProj::Upstream {
                mut body,
                pool,
                slot,
            } => {
                // A pooled HTTP/1.1 connection is driven by whoever reads its body: when the
                // body has nothing yet, the driver reads on and the body is asked again (the
                // idle timer is armed only then).
                let r = match pool.as_mut().filter(|p| p.conn.driver.is_some()) {
                    Some(p) => match body.as_mut().poll_now(cx) {
                        Poll::Pending => {
                            crate::upstream::poll_driver(&mut p.conn.driver, cx);
                            body.as_mut().poll_bounded(cx)
                        }
                        ready => ready,
                    },
                    None => body.as_mut().poll_bounded(cx),
                };
                let ended = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.inner.is_end_stream(),
                    _ => false,
                };
                if ended {
                    if let Some(p) = pool.take() {
                        p.give_back();
                    }
                    slot.take();
                }
                r
            }
            RouterBodyProj::Raw { body } => body.poll_bounded(cx),
            RouterBodyProj::H2 { mut body, slot } => {
                let r = body.as_mut().poll_bounded(cx);
                let ended = match &r {
                    Poll::Ready(None | Some(Err(_))) => true,
                    Poll::Ready(Some(Ok(_))) => body.inner.is_end_stream(),
                    Poll::Pending => false,
                };
                if ended {
                    slot.take();
                }
                r
            }
            RouterBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RouterBody::Upstream { body, .. } => body.inner.is_end_stream(),
            RouterBody::Raw { body } => body.inner.is_end_stream(),
            RouterBody::H2 { body, .. } => body.inner.is_end_stream(),
            RouterBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RouterBody::Upstream { body, .. } => body.inner.size_hint(),
            RouterBody::Raw { body } => body.inner.size_hint(),
            RouterBody::H2 { body, .. } => body.inner.size_hint(),
            RouterBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
