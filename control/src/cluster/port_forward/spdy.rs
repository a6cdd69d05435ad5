//! The byte stream of one port-forward over SPDY/3.1, the transport `kubectl port-forward`
//! uses: the API server upgrades the request and passes the connection through to the
//! kubelet's (or the container runtime's) streaming server, which speaks SPDY with
//! `moby/spdystream`.
//!
//! Why not only the WebSocket (`io.rs`): on the clusters we measured (Kubernetes 1.20 with
//! containerd), the runtime's streaming server decodes the WebSocket with Go's
//! `x/net/websocket` (masked frames unmasked byte by byte), and spends about three times the CPU
//! per byte that the same transfer costs it over SPDY; a marked download through the mesh ran
//! at 0.43× of `kubectl port-forward` (`loadtests/cluster.sh`).
//!
//! What is spoken, for one port (protocol `portforward.k8s.io`, as kubectl's
//! `client-go/tools/portforward`): stream 1, `streamtype: error`, and stream 3,
//! `streamtype: data`, both with `port` and `requestid: 0`, opened with SYN_STREAM. Data goes
//! out only after the server's SYN_REPLY to stream 3 (spdystream drops DATA for a stream it
//! has not replied to). The pod side's error (nothing listening on the port, say) arrives as
//! DATA on stream 1 and becomes an I/O error on the next read and write. Shutting down the
//! write side sends FIN on stream 3 (a half-close); the session ends when the stream is
//! dropped. PINGs from the server are answered; SETTINGS, WINDOW_UPDATE, HEADERS and GOAWAY
//! carry nothing for one stream and are skipped (spdystream does no flow control).
//!
//! Header blocks are zlib streams (one per direction for the whole session). Ours uses stored
//! (uncompressed) deflate blocks and no preset dictionary, which every zlib reader accepts;
//! the server's header blocks (its SYN_REPLY) carry nothing we need and are skipped unread.
//!
//! Memory is bounded: frames are parsed as they stream in, data is handed out as it arrives,
//! control frames keep their first 8 bytes, the error text its first [`ERROR_TEXT_MAX`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::Failure;

/// The largest DATA frame sent towards the pod (payload bytes).
pub const FRAME_MAX: usize = 256 * 1024;
/// How much of the pod side's error text is kept.
pub const ERROR_TEXT_MAX: usize = 4096;
/// The `X-Stream-Protocol-Version` asked for and expected back.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The `Upgrade` header's value.
pub const UPGRADE: &str = "SPDY/3.1";

pub(super) const ERROR_STREAM: u32 = 1;
pub(super) const DATA_STREAM: u32 = 3;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const FLAG_FIN: u8 = 0x01;
const READ_CHUNK: usize = 64 * 1024;
/// An empty stored deflate block, not final: what zlib's sync flush ends a header block with.
const SYNC_FLUSH: [u8; 5] = [0, 0, 0, 0xff, 0xff];

/// One frame's header, as far as the reader cares.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// Between frames.
    Head,
    /// Payload of a DATA frame on the data stream still to hand out.
    Data { left: usize, fin: bool },
    /// Payload of a DATA frame on the error stream.
    Error { left: usize, fin: bool },
    /// Payload of a control frame: its first 8 bytes are kept in `ctl_head`.
    Control { kind: u16, left: usize, got: usize },
    /// Payload of a frame that carries nothing for this port.
    Skip { left: usize },
}

/// One port-forwarded stream over an upgraded SPDY connection `io`.
pub struct SpdyIo<T> {
    io: T,
    rbuf: BytesMut,
    rx: Rx,
    ctl_head: [u8; 8],
    replied: [bool; 2],
    eof: bool,
    error_text: Vec<u8>,
    /// Its name in errors, and the pod side's error once one arrived.
    f: Failure,
    /// The DATA frame being gathered: 8 header bytes, then the payload; empty when none.
    tx: BytesMut,
    /// The DATA frame being written. Its buffer and `tx`'s swap: a frame is gathered in the
    /// buffer the frame before last went out of, so a transfer keeps two buffers already grown
    /// to the frame size. (Gathered in a fresh buffer, each frame grew it from the size of the
    /// first write, one TLS record, by doubling, and copied what it held at every step: a
    /// third of ktx's copying on a marked download.)
    wire: BytesMut,
    /// Control frames waiting to go out (SYN_STREAMs, PING answers, the FIN).
    ctl: BytesMut,
    /// The control frames being written.
    out: Bytes,
    closed: bool,
}

impl<T> std::fmt::Debug for SpdyIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyIo")
            .field("what", &self.f.what)
            .field("failed", &self.f.failed)
            .finish_non_exhaustive()
    }
}

/// SYN_STREAM for `stream`, a `streamtype` of `kind` for `port`. `first`: the session's
/// first header block, which starts the zlib stream.
pub(super) fn syn_stream(stream: u32, kind: &str, port: u16, first: bool) -> Vec<u8> {
    let port = port.to_string();
    let pairs = [("streamtype", kind), ("port", &port), ("requestid", "0")];
    let mut block = Vec::new();
    block.put_u32(pairs.len() as u32);
    for (name, value) in pairs {
        block.put_u32(name.len() as u32);
        block.put_slice(name.as_bytes());
        block.put_u32(value.len() as u32);
        block.put_slice(value.as_bytes());
    }
    let mut zlib = Vec::with_capacity(block.len() + 12);
    if first {
        // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no preset dictionary, check bits ok.
        zlib.put_slice(&[0x78, 0x01]);
    }
    // One stored block, not final: its 3 header bits and padding in one byte, LEN, NLEN.
    let len = block.len() as u16;
    zlib.put_u8(0);
    zlib.put_u16_le(len);
    zlib.put_u16_le(!len);
    zlib.put_slice(&block);
    // Then the empty stored block of a zlib sync flush: Go's inflater hands out a block's
    // bytes only at the next block's start, and without it would read past the frame.
    zlib.put_slice(&SYNC_FLUSH);

    let mut frame = Vec::with_capacity(18 + zlib.len());
    frame.put_u16(0x8000 | VERSION);
    frame.put_u16(SYN_STREAM);
    frame.put_u32((10 + zlib.len()) as u32); // flags 0
    frame.put_u32(stream);
    frame.put_u32(0); // associated-to stream
    frame.put_u16(0); // priority 0, slot 0
    frame.put_slice(&zlib);
    frame
}

fn ping(id: u32) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[..2].copy_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f[2..4].copy_from_slice(&PING.to_be_bytes());
    f[4..8].copy_from_slice(&4u32.to_be_bytes());
    f[8..].copy_from_slice(&id.to_be_bytes());
    f
}

fn data_head(stream: u32, flags: u8, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&stream.to_be_bytes());
    h[4..].copy_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    h
}

impl<T: AsyncRead + AsyncWrite + Unpin> SpdyIo<T> {
    /// Opens the error and data streams for `port` on the upgraded connection `io` and waits
    /// for the server's replies; `what` names the port-forward in errors.
    pub async fn open(io: T, port: u16, what: String) -> io::Result<Self> {
        let mut s = SpdyIo {
            io,
            f: Failure::new(what),
            rbuf: BytesMut::new(),
            rx: Rx::Head,
            ctl_head: [0; 8],
            replied: [false; 2],
            eof: false,
            error_text: Vec::new(),
            tx: BytesMut::new(),
            wire: BytesMut::new(),
            ctl: BytesMut::new(),
            out: Bytes::new(),
            closed: false,
        };
        s.ctl
            .put_slice(&syn_stream(ERROR_STREAM, "error", port, true));
        s.ctl
            .put_slice(&syn_stream(DATA_STREAM, "data", port, false));
        s.flush().await?;
        std::future::poll_fn(|cx| s.poll_replies(cx)).await?;
        Ok(s)
    }

    /// Waits until the server replied to both streams (or data arrived on the data stream).
    fn poll_replies(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Parsed up to data for the caller, or up to the end of what was read.
            let data = self.parse()?;
            if data || self.replied == [true, true] || matches!(self.rx, Rx::Data { .. }) {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(self.f.error(
                    io::ErrorKind::UnexpectedEof,
                    "the API server closed the port-forward before it opened the streams",
                )));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Reads more bytes into `rbuf`; at the connection's end sets `eof` (an error inside a
    /// frame).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Answer pings even when the caller is not writing; a full socket just waits.
        let _ = self.poll_send(cx);
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n == 0 {
            if !matches!(self.rx, Rx::Head) || !self.rbuf.is_empty() {
                return Poll::Ready(Err(self.f.error(
                    io::ErrorKind::UnexpectedEof,
                    "the port-forward connection ended inside a frame",
                )));
            }
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Ok(()))
    }

    /// Works through `rbuf` until data for the caller is at hand (`Ok(true)`) or more bytes
    /// are needed (`Ok(false)`).
    fn parse(&mut self) -> io::Result<bool> {
        loop {
            match self.rx {
                Rx::Data { left, fin } => {
                    if left == 0 {
                        self.rx = Rx::Head;
                        if fin {
                            self.eof = true;
                        }
                        continue;
                    }
                    return Ok(!self.rbuf.is_empty());
                }
                Rx::Head => {
                    if self.eof && self.rbuf.is_empty() {
                        return Ok(false);
                    }
                    if self.rbuf.len() < 8 {
                        return Ok(false);
                    }
                    let head = self.rbuf.split_to(8);
                    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                    let flags = head[4];
                    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
                    let fin = flags & FLAG_FIN != 0;
                    self.rx = if word & 0x8000_0000 != 0 {
                        let version = ((word >> 16) & 0x7fff) as u16;
                        if version != VERSION {
                            return Err(self.f.fail(format!(
                                "the API server spoke SPDY version {version}, not 3"
                            )));
                        }
                        Rx::Control {
                            kind: (word & 0xffff) as u16,
                            left: len,
                            got: 0,
                        }
                    } else {
                        match word {
                            DATA_STREAM => Rx::Data { left: len, fin },
                            ERROR_STREAM => Rx::Error { left: len, fin },
                            _ => Rx::Skip { left: len },
                        }
                    };
                    if let Rx::Control { kind, left: 0, .. } = self.rx {
                        self.control(kind, 0)?;
                        self.rx = Rx::Head;
                    }
                }
                Rx::Skip { left } => {
                    let n = left.min(self.rbuf.len());
                    self.rbuf.advance(n);
                    if n == left {
                        self.rx = Rx::Head;
                    } else {
                        self.rx = Rx::Skip { left: left - n };
                        return Ok(false);
                    }
                }
                Rx::Error { left, fin } => {
                    let n = left.min(self.rbuf.len());
                    let keep = n.min(ERROR_TEXT_MAX.saturating_sub(self.error_text.len()));
                    self.error_text.extend_from_slice(&self.rbuf[..keep]);
                    self.rbuf.advance(n);
                    if n < left {
                        self.rx = Rx::Error {
                            left: left - n,
                            fin,
                        };
                        return Ok(false);
                    }
                    self.rx = Rx::Head;
                    if !self.error_text.is_empty() {
                        let text = String::from_utf8_lossy(&self.error_text).trim().to_string();
                        return Err(self.f.fail(text));
                    }
                }
                Rx::Control { kind, left, got } => {
                    let n = left.min(self.rbuf.len());
                    let keep = n.min(8 - got.min(8));
                    self.ctl_head[got..got + keep].copy_from_slice(&self.rbuf[..keep]);
                    self.rbuf.advance(n);
                    if n < left {
                        self.rx = Rx::Control {
                            kind,
                            left: left - n,
                            got: got + keep,
                        };
                        return Ok(false);
                    }
                    self.rx = Rx::Head;
                    self.control(kind, got + keep)?;
                }
            }
        }
    }

    /// A whole control frame was read; `got` of its first bytes are in `ctl_head`.
    fn control(&mut self, kind: u16, got: usize) -> io::Result<()> {
        let word = (got >= 4).then(|| {
            u32::from_be_bytes([
                self.ctl_head[0],
                self.ctl_head[1],
                self.ctl_head[2],
                self.ctl_head[3],
            ])
        });
        match (kind, word) {
            (SYN_REPLY, Some(w)) => match w & 0x7fff_ffff {
                ERROR_STREAM => self.replied[0] = true,
                DATA_STREAM => self.replied[1] = true,
                _ => {}
            },
            (RST_STREAM, Some(w)) => {
                let stream = w & 0x7fff_ffff;
                if stream == ERROR_STREAM || stream == DATA_STREAM {
                    let status = if got >= 8 {
                        u32::from_be_bytes([
                            self.ctl_head[4],
                            self.ctl_head[5],
                            self.ctl_head[6],
                            self.ctl_head[7],
                        ])
                    } else {
                        0
                    };
                    return Err(self.f.fail(format!(
                        "the API server reset the port-forward's {} stream (status {status})",
                        if stream == DATA_STREAM {
                            "data"
                        } else {
                            "error"
                        }
                    )));
                }
            }
            // Ours are odd; an even id is the server's, to be echoed.
            (PING, Some(id)) if id % 2 == 0 => self.ctl.put_slice(&ping(id)),
            (SYN_REPLY | RST_STREAM | PING, None) => {
                return Err(self.f.fail(format!(
                    "the API server sent a short SPDY frame (type {kind})"
                )));
            }
            // SETTINGS, WINDOW_UPDATE, HEADERS, GOAWAY (streams already open go on), our own
            // PING's answer, and anything newer carry nothing for this port.
            _ => {}
        }
        Ok(())
    }

    /// Writes what is queued: the frame under way, control frames, then the gathered DATA.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.out.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.out.advance(n);
            } else if !self.wire.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wire))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wire.advance(n);
            } else if !self.ctl.is_empty() {
                self.out = self.ctl.split().freeze();
            } else if self.tx.len() > 8 {
                let len = self.tx.len() - 8;
                self.tx[..8].copy_from_slice(&data_head(DATA_STREAM, 0, len));
                std::mem::swap(&mut self.tx, &mut self.wire);
                // Written out: `reserve` takes its whole capacity back, without allocating.
                self.tx.clear();
            } else {
                return Poll::Ready(Ok(()));
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await?;
        self.io.flush().await
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for SpdyIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            this.f.check()?;
            let data = this.parse()?;
            if !this.ctl.is_empty() {
                // A PING to answer: now, not when the caller next writes.
                let _ = this.poll_send(cx);
            }
            if data {
                let Rx::Data { left, fin } = this.rx else {
                    unreachable!("parse reports data only inside a data frame")
                };
                let n = left.min(this.rbuf.len()).min(buf.remaining());
                buf.put_slice(&this.rbuf.split_to(n));
                this.rx = Rx::Data {
                    left: left - n,
                    fin,
                };
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SpdyIo<T> {
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
        if this.tx.len() >= 8 + FRAME_MAX {
            ready!(this.poll_send(cx))?;
        }
        if this.tx.is_empty() {
            this.tx.reserve(8 + FRAME_MAX.min(buf.len()));
            this.tx.put_bytes(0, 8);
        }
        let n = buf.len().min(8 + FRAME_MAX - this.tx.len());
        this.tx.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.f.check()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends what is gathered, then FIN on the data stream: the pod side reads its end, and
    /// what it still sends keeps arriving.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            ready!(this.poll_send(cx))?;
            this.ctl.put_slice(&data_head(DATA_STREAM, FLAG_FIN, 0));
            this.closed = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }
}
