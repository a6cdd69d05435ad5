//! Copies bytes between a TCP connection and one HTTP/2 stream, both ways, until both ways are
//! done. Used by both ends: the shadow splices the in-cluster client's connection, ktx the
//! connection to the developer's process.
//!
//! - A clean end of one way is passed on as a half-close: socket EOF → END_STREAM,
//!   END_STREAM → `shutdown(Write)`. The other way keeps flowing.
//! - An abnormal end of either way (socket error, stream reset, tunnel lost) resets the stream
//!   and closes the socket with RST, so neither side mistakes a cut stream for a complete one.
//! - Backpressure both ways: we read from the socket only as h2 grants send capacity, and give
//!   receive window back to the peer only after the bytes are written to the socket.
//!
//! The socket is owned and dropped here, on every path: no descriptor outlives its stream.

use std::future::{poll_fn, Future};
use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::proto::stream_head::StreamRejected;

/// Sees the bytes of a splice as they move (for metrics).
pub trait Observer: Send + Sync {
    /// `n` bytes read from the socket and sent into the tunnel.
    fn sent(&self, _n: u64) {}
    /// `n` bytes received from the tunnel and written to the socket.
    fn received(&self, _n: u64) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Bytes moved by a finished splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    pub to_tunnel: u64,
    pub from_tunnel: u64,
}

/// How a splice ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("read from the socket: {0}")]
    SocketRead(io::Error),
    #[error("write to the socket: {0}")]
    SocketWrite(io::Error),
    #[error("the peer reset the stream ({0})")]
    Reset(Reason),
    #[error("tunnel stream: {0}")]
    Stream(h2::Error),
    #[error("the tunnel closed the stream while data was pending")]
    Closed,
    #[error(transparent)]
    Rejected(#[from] StreamRejected),
}

impl From<h2::Error> for SpliceError {
    fn from(e: h2::Error) -> Self {
        match e.reason() {
            Some(reason) if e.is_reset() => SpliceError::Reset(reason),
            _ => SpliceError::Stream(e),
        }
    }
}

/// Splices `socket` with a stream whose send half is `send` and whose receive half `recv`
/// yields (on the shadow, only once ktx has answered; sending starts before that). Reads from
/// the socket take up to `read_chunk` bytes at a time.
pub async fn splice<F>(
    mut socket: TcpStream,
    mut send: SendStream<Bytes>,
    recv: F,
    read_chunk: usize,
    observer: &dyn Observer,
) -> Result<Spliced, SpliceError>
where
    F: Future<Output = Result<RecvStream, SpliceError>>,
{
    let result = {
        let (mut rd, mut wr) = socket.split();
        let up = socket_to_stream(&mut rd, &mut send, read_chunk, observer);
        let down = async {
            let recv = recv.await?;
            stream_to_socket(recv, &mut wr, observer).await
        };
        tokio::try_join!(up, down)
    };
    match result {
        Ok((to_tunnel, from_tunnel)) => Ok(Spliced {
            to_tunnel,
            from_tunnel,
        }),
        Err(e) => {
            send.send_reset(Reason::CANCEL);
            abort(&socket);
            Err(e)
        }
    }
}

/// Makes the coming close of `socket` a reset (RST) rather than an orderly FIN.
pub fn abort(socket: &TcpStream) {
    // Fails only if the socket is already gone; then there is nothing left to signal.
    let _ = socket.set_zero_linger();
}

async fn socket_to_stream(
    rd: &mut ReadHalf<'_>,
    send: &mut SendStream<Bytes>,
    read_chunk: usize,
    observer: &dyn Observer,
) -> Result<u64, SpliceError> {
    let read_chunk = read_chunk.max(MIN_READ);
    // Reads start small and double while they come back full (a bulk transfer wants few large
    // reads), and shrink again for small messages (which should not pin large buffers while
    // they wait in h2's queue).
    let mut size = MIN_READ;
    let mut total = 0u64;
    loop {
        // Wait for bytes before taking a buffer, so an idle connection holds none.
        tokio::select! {
            biased;
            reset = poll_fn(|cx| send.poll_reset(cx)) => return Err(reset_error(reset)),
            ready = rd.as_ref().readable() => ready.map_err(SpliceError::SocketRead)?,
        }
        let mut buf = skewed_buffer(size);
        let n = match rd.as_ref().try_read_buf(&mut (&mut buf).limit(size)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(SpliceError::SocketRead(e)),
        };
        size = next_read_size(size, n, read_chunk);
        if n == 0 {
            send.send_data(Bytes::new(), true)?;
            return Ok(total);
        }
        total += n as u64;
        observer.sent(n as u64);
        let mut chunk = buf.freeze();
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            let granted = poll_fn(|cx| poll_capacity(send, cx)).await?;
            let part = chunk.split_to(granted.min(chunk.len()));
            send.send_data(part, false)?;
        }
    }
}

/// Smallest socket read buffer.
const MIN_READ: usize = 16 * 1024;

/// Where, modulo 4 KiB, a socket read buffer starts ([`skewed_buffer`]).
const READ_SKEW: usize = 2048 + 14;

/// An empty buffer of `size` bytes whose first byte sits at [`READ_SKEW`] modulo 4 KiB.
///
/// rustls copies each record's plaintext into a fresh buffer, after its 5-byte record header;
/// a DATA frame's payload follows h2's 9-byte frame header, so it lands 14 bytes into that
/// buffer. With mimalloc (ktx-shadow) that buffer is page-aligned, and so was a fresh read
/// buffer: the copy then ran with its destination 14 bytes past its source modulo 4 KiB, where
/// glibc's memmove (`rep movsb`) runs about 25 times slower on the AMD EPYC we measure on. It
/// was 30% of the shadow's CPU for bytes from the cluster to the laptop. Starting the payload
/// half a page further keeps the two 2 KiB apart. The price is up to 4 KiB more per read
/// buffer while it is queued.
fn skewed_buffer(size: usize) -> BytesMut {
    const PAGE: usize = 4096;
    let mut buf = BytesMut::with_capacity(size + PAGE);
    let skew = (READ_SKEW + PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    buf.resize(skew, 0);
    buf.advance(skew);
    buf
}

fn next_read_size(size: usize, got: usize, max: usize) -> usize {
    if got >= size {
        (size * 2).min(max)
    } else if got < size / 4 {
        (size / 2).max(MIN_READ)
    } else {
        size
    }
}

/// Waits for send capacity; a reset or a closed stream ends the wait with an error.
fn poll_capacity(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, SpliceError>> {
    if let Poll::Ready(reset) = send.poll_reset(cx) {
        return Poll::Ready(Err(reset_error(reset)));
    }
    loop {
        return match send.poll_capacity(cx) {
            // Zero means "capacity changed but none is free"; the next poll parks us.
            Poll::Ready(Some(Ok(0))) => continue,
            Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e.into())),
            Poll::Ready(None) => Poll::Ready(Err(SpliceError::Closed)),
            Poll::Pending => Poll::Pending,
        };
    }
}

fn reset_error(reset: Result<Reason, h2::Error>) -> SpliceError {
    match reset {
        Ok(reason) => SpliceError::Reset(reason),
        Err(e) => e.into(),
    }
}

async fn stream_to_socket(
    mut recv: RecvStream,
    wr: &mut WriteHalf<'_>,
    observer: &dyn Observer,
) -> Result<u64, SpliceError> {
    let mut total = 0u64;
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let n = chunk.len();
        wr.write_all(&chunk)
            .await
            .map_err(SpliceError::SocketWrite)?;
        total += n as u64;
        observer.received(n as u64);
        // Fails only when the stream is already gone, which the next `data()` reports.
        let _ = recv.flow_control().release_capacity(n);
    }
    wr.shutdown().await.map_err(SpliceError::SocketWrite)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_grows_for_bulk_and_shrinks_for_chatter() {
        let max = 256 * 1024;
        let mut size = MIN_READ;
        for _ in 0..10 {
            size = next_read_size(size, size, max);
        }
        assert_eq!(size, max);
        for _ in 0..10 {
            size = next_read_size(size, 64, max);
        }
        assert_eq!(size, MIN_READ);
        assert_eq!(next_read_size(64 * 1024, 20 * 1024, max), 64 * 1024);
    }

    #[test]
    fn read_buffers_start_half_a_page_past_rustls_payloads() {
        for size in [MIN_READ, 64 * 1024, 256 * 1024, 100] {
            let mut buf = skewed_buffer(size);
            assert!(buf.is_empty());
            assert!(buf.capacity() >= size, "{size}");
            assert_eq!(buf.as_ptr() as usize % 4096, READ_SKEW);
            let start = buf.as_ptr() as usize;
            buf.put_slice(&vec![7u8; size]);
            let frozen = buf.freeze();
            assert_eq!(frozen.as_ptr() as usize, start);
            assert_eq!(frozen.len(), size);
        }
    }
}
