//! The byte stream of one port-forward: the API server's WebSocket, spoken here directly.
//!
//! The API server frames a port-forward as WebSocket binary messages whose first byte names a
//! channel: for one port, channel 0 carries the data and channel 1 the pod side's error (for
//! example nothing listening on the port). The first message on each channel from the server
//! is the port number (two bytes, little endian).
//!
//! kube-rs's `Portforwarder` speaks the same protocol, but it sends the data towards the pod in
//! messages of at most 4 KiB (a `ReaderStream` of a duplex pipe), each through a channel of
//! depth one and flushed on its own, and it reads the other way through two more task hops.
//! The API server handles every message on its own, so with that client a marked download
//! (whose bytes flow laptop → pod) ran at a third of what the same port-forward carries the
//! other way (`loadtests/cluster.sh`). Here a write is gathered into one message of up to
//! [`MESSAGE_MAX`] bytes, sent when the caller flushes or the message is full, and reads take
//! the payload of each message without another copy.
//!
//! An error on channel 1 becomes an I/O error on the next read (and every later read and
//! write), so the tunnel client fails the attempt at once with the API server's words instead
//! of waiting for its handshake timeout. Dropping the stream closes the WebSocket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Failure;

/// The largest message sent towards the pod (data bytes, plus the channel byte).
pub const MESSAGE_MAX: usize = 256 * 1024;

const DATA: u8 = 0;
const ERROR: u8 = 1;

/// One port-forwarded stream over the WebSocket `ws` (kube's upgraded connection in use; any
/// stream of messages in tests).
pub struct PortForwardIo<S> {
    ws: S,
    port: u16,
    /// Data of the last message not yet read.
    rx: Bytes,
    /// Whether the server's port prefix was seen on the data and the error channel.
    prefixed: [bool; 2],
    eof: bool,
    /// Its name in errors, and the pod side's error once one arrived.
    f: Failure,
    /// The message being gathered: the channel byte and data, empty when nothing is pending.
    tx: BytesMut,
    closed: bool,
}

impl<S> std::fmt::Debug for PortForwardIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardIo")
            .field("what", &self.f.what)
            .field("failed", &self.f.failed)
            .finish_non_exhaustive()
    }
}

impl<S> PortForwardIo<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    /// `ws` is a port-forward of the single port `port`; `what` names it in errors.
    pub fn new(ws: S, port: u16, what: String) -> Self {
        Self {
            ws,
            port,
            f: Failure::new(what),
            rx: Bytes::new(),
            prefixed: [false; 2],
            eof: false,
            tx: BytesMut::new(),
            closed: false,
        }
    }

    fn ws_error(&self, e: WsError) -> io::Error {
        match e {
            WsError::Io(e) => self.f.error(e.kind(), e),
            e => self.f.error(io::ErrorKind::InvalidData, e),
        }
    }

    /// Takes in one message from the server. `Ok(true)`: data is waiting in `rx`.
    fn take(&mut self, message: Message) -> io::Result<bool> {
        let Message::Binary(mut bytes) = message else {
            if message.is_close() {
                self.eof = true;
            }
            // Pings are answered by tungstenite; text and pongs carry nothing for a port.
            return Ok(false);
        };
        if bytes.is_empty() {
            return Ok(false);
        }
        let channel = bytes.split_to(1)[0];
        if channel != DATA && channel != ERROR {
            return Err(self.f.error(
                io::ErrorKind::InvalidData,
                format!("the API server used channel {channel}, not one of this port's"),
            ));
        }
        let seen = &mut self.prefixed[usize::from(channel)];
        if !*seen {
            *seen = true;
            return match <[u8; 2]>::try_from(&bytes[..]).map(u16::from_le_bytes) {
                Ok(port) if port == self.port => Ok(false),
                _ => Err(self.f.error(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the API server's first message on channel {channel} is not port {}",
                        self.port
                    ),
                )),
            };
        }
        if channel == ERROR {
            if !bytes.is_empty() {
                return Err(self.f.fail(String::from_utf8_lossy(&bytes).into_owned()));
            }
            return Ok(false);
        }
        self.rx = bytes;
        Ok(!self.rx.is_empty())
    }

    /// Hands the gathered message to the WebSocket (without flushing it).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tx.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(|e| self.ws_error(e))?;
        let message = Message::Binary(self.tx.split().freeze());
        Pin::new(&mut self.ws)
            .start_send(message)
            .map_err(|e| self.ws_error(e))?;
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncRead for PortForwardIo<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.f.check()?;
        while this.rx.is_empty() && !this.eof {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(message)) => {
                    this.take(message)?;
                }
                Some(Err(e)) => return Poll::Ready(Err(this.ws_error(e))),
                None => this.eof = true,
            }
        }
        let n = this.rx.len().min(buf.remaining());
        buf.put_slice(&this.rx.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncWrite for PortForwardIo<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.f.check()?;
        if this.closed {
            return Poll::Ready(Err(this
                .f
                .error(io::ErrorKind::BrokenPipe, "already shut down")));
        }
        if this.tx.len() >= MESSAGE_MAX {
            ready!(this.poll_send(cx))?;
        }
        if this.tx.is_empty() {
            this.tx.reserve(MESSAGE_MAX.min(buf.len() + 1));
            this.tx.put_u8(DATA);
        }
        let n = buf.len().min(MESSAGE_MAX - this.tx.len());
        this.tx.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.f.check()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(|e| this.ws_error(e))
    }

    /// Sends what is gathered and closes the WebSocket (as kube-rs does once its port's
    /// writer is shut down).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            ready!(this.poll_send(cx))?;
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(|e| this.ws_error(e))?;
            Pin::new(&mut this.ws)
                .start_send(Message::Close(None))
                .map_err(|e| this.ws_error(e))?;
            this.closed = true;
        }
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            // The server may close first; either way nothing more goes out.
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(this.ws_error(e))),
        }
    }
}
