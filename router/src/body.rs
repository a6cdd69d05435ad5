//! The response body type of the router: the upstream's body passed through untouched, or a
//! short body the router wrote itself (errors). An enum rather than a box: no allocation per
//! request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::{H1Conn, Upstreams};

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
        Upstream { #[pin] body: Incoming, pool: Option<ReturnToPool> },
        Local { data: Option<Bytes> },
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
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            RouterBodyProj::Upstream { mut body, pool } => {
                let r = body.as_mut().poll_frame(cx);
                let ended = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    _ => false,
                };
                if ended {
                    if let Some(p) = pool.take() {
                        p.give_back();
                    }
                }
                r
            }
            RouterBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RouterBody::Upstream { body, .. } => body.is_end_stream(),
            RouterBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RouterBody::Upstream { body, .. } => body.size_hint(),
            RouterBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
