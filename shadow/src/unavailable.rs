//! What the shadow does with a connection that ktx did not take: nothing listens on the
//! developer's port (the process is being rebuilt), ktx did not answer in time (a laptop that
//! sleeps, a paused API server), or the tunnel failed before ktx answered. In every case the
//! developer's process saw none of the connection's bytes, so the session's policy can still
//! apply, exactly as the router applies it when the shadow itself is down:
//!
//! - `fallback`: the connection goes to the original workload (the stuntman Service), the bytes
//!   read so far first, then both ways until either side closes;
//! - `reject`: an HTTP/1.1 or HTTP/2 answer `503` naming the session (gRPC clients read it as
//!   `UNAVAILABLE`), and a reset for anything else;
//! - `reset` (no policy given): the connection is reset, as before this existed.
//!
//! What it does not own: deciding that ktx did not take a connection (`ktx_tunnel::shadow`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ktx_tunnel::shadow::NotTaken;
use ktx_tunnel::splice::abort;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Connecting to the fallback address may take at most this long.
const FALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A rejected connection is answered for at most this long, then closed.
const REJECT_FOR: Duration = Duration::from_secs(2);
/// A rejected connection's first bytes are awaited at most this long to tell its protocol.
const SNIFF_FOR: Duration = Duration::from_secs(1);
/// ... and at most this many of them are read for that.
const SNIFF_MAX: usize = 64;
/// After a rejection, at most this much of the request is read (and dropped) before the close,
/// so the client reads the answer instead of a reset.
const REJECT_DRAIN: usize = 64 * 1024;

/// The session's policy for connections ktx did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Reset the connection.
    Reset,
    /// Send it to the original workload.
    Fallback(Vec<FallbackRoute>),
    /// Answer 503 naming the session.
    Reject,
}

/// Where connections of one service port go when ktx does not take them: `PORT=IP:PORT`, or
/// `*=IP:PORT` for every port without a route of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackRoute {
    pub port: Option<u16>,
    pub to: SocketAddr,
}

impl FromStr for FallbackRoute {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, to) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected PORT=IP:PORT or *=IP:PORT"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("'{s}': '{p}' is not a port number"))?,
            ),
        };
        let to = to
            .parse()
            .map_err(|_| format!("'{s}': '{to}' is not an IP:PORT address"))?;
        Ok(FallbackRoute { port, to })
    }
}

impl Policy {
    /// The policy the flags ask for: `fallback` needs at least one route.
    pub fn from_flags(name: &str, routes: &[FallbackRoute]) -> Result<Policy, String> {
        match name {
            "reset" => Ok(Policy::Reset),
            "reject" => Ok(Policy::Reject),
            "fallback" if routes.is_empty() => Err(
                "--on-unavailable fallback needs --fallback PORT=IP:PORT (where the original \
                 workload is)"
                    .into(),
            ),
            "fallback" => Ok(Policy::Fallback(routes.to_vec())),
            other => Err(format!(
                "--on-unavailable '{other}': expected fallback, reject or reset"
            )),
        }
    }

    fn fallback_for(&self, port: u16) -> Option<SocketAddr> {
        let Policy::Fallback(routes) = self else {
            return None;
        };
        routes
            .iter()
            .find(|r| r.port == Some(port))
            .or_else(|| routes.iter().find(|r| r.port.is_none()))
            .map(|r| r.to)
    }
}

/// A session's policy and its name (for the 503's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub policy: Policy,
    pub session: String,
}

impl Default for Unavailable {
    fn default() -> Self {
        Unavailable {
            policy: Policy::Reset,
            session: String::new(),
        }
    }
}

/// What became of a connection ktx did not take (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    FellBack,
    Rejected,
    Reset,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::FellBack => "fallback",
            Outcome::Rejected => "reject",
            Outcome::Reset => "reset",
        }
    }
}

impl Unavailable {
    /// Applies the policy to `nt`, which arrived on service port `port`; returns once the
    /// connection is over.
    pub async fn handle(&self, nt: NotTaken, port: u16, on_outcome: impl FnOnce(Outcome)) {
        match &self.policy {
            Policy::Fallback(_) => match self.policy.fallback_for(port) {
                Some(to) => {
                    on_outcome(Outcome::FellBack);
                    fallback(nt, to).await
                }
                None => {
                    on_outcome(Outcome::Reset);
                    abort(&nt.socket)
                }
            },
            Policy::Reject => reject(nt, &self.session, on_outcome).await,
            Policy::Reset => {
                on_outcome(Outcome::Reset);
                abort(&nt.socket)
            }
        }
    }
}

async fn fallback(nt: NotTaken, to: SocketAddr) {
    let NotTaken { mut socket, .. } = nt;
    let mut upstream = match tokio::time::timeout(FALLBACK_CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%to, error = %e, "cannot reach the original workload for a fallback");
            return abort(&socket);
        }
        Err(_) => {
            tracing::warn!(%to, "the original workload did not accept a fallback in time");
            return abort(&socket);
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await {
        tracing::debug!(%to, error = %e, "fallback connection ended with an error");
        abort(&socket);
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a rejected connection say about its protocol.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    H2,
    Http1,
    /// Neither, and no more bytes can make it one.
    Other,
    /// Too few bytes to tell yet.
    Undecided,
}

fn sniff(b: &[u8]) -> Sniffed {
    if b.starts_with(H2_PREFACE) {
        return Sniffed::H2;
    }
    // "PRI * HTTP/2.0" looks like an HTTP/1 request line: wait for the whole preface.
    let could_be_h2 = H2_PREFACE.starts_with(b);
    if looks_like_http1(b) && !could_be_h2 {
        return Sniffed::Http1;
    }
    let method = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    // A method token so far, maybe followed by its space: an HTTP/1 request in the making.
    let could_be_http1 =
        method == b.len() || (method > 0 && method + 1 == b.len() && b[method] == b' ');
    if could_be_h2 || could_be_http1 {
        Sniffed::Undecided
    } else {
        Sniffed::Other
    }
}

/// Reads the client's first bytes until they say which protocol to answer in, for at most
/// [`SNIFF_FOR`]: ktx's refusal can come back before the request's first bytes did.
async fn sniff_first(socket: &mut TcpStream) -> (Sniffed, Bytes) {
    let mut buf = BytesMut::new();
    let _ = tokio::time::timeout(SNIFF_FOR, async {
        while sniff(&buf) == Sniffed::Undecided && buf.len() < SNIFF_MAX {
            buf.reserve(SNIFF_MAX - buf.len());
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    (sniff(&buf), buf.freeze())
}

async fn reject(nt: NotTaken, session: &str, on_outcome: impl FnOnce(Outcome)) {
    let NotTaken { mut socket, why } = nt;
    let (sniffed, sent) = sniff_first(&mut socket).await;
    let text = format!(
        "ktx-shadow: session '{session}' is not available ({why}); its rule answers 503 \
         (onUnavailable: reject). Is the developer's process running?\n"
    );
    // Counted before answering: the client may act on the answer at once.
    match sniffed {
        Sniffed::H2 => {
            on_outcome(Outcome::Rejected);
            reject_h2(Rewind::new(sent, socket), session, Bytes::from(text)).await;
        }
        Sniffed::Http1 => {
            on_outcome(Outcome::Rejected);
            reject_h1(socket, session, &text).await;
        }
        Sniffed::Other | Sniffed::Undecided => {
            on_outcome(Outcome::Reset);
            abort(&socket);
        }
    }
}

/// A method token, a space, then something: what an HTTP/1 request starts with.
fn looks_like_http1(b: &[u8]) -> bool {
    let Some(sp) = b.iter().position(|c| *c == b' ') else {
        return false;
    };
    sp > 0 && b[..sp].iter().all(|c| c.is_ascii_uppercase()) && b.len() > sp + 1
}

async fn reject_h1(mut socket: TcpStream, session: &str, text: &str) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nx-ktx-error: shadow\r\nx-ktx-session: {}\r\nconnection: close\r\n\r\n",
        text.len(),
        header_safe(session),
    );
    let answered = tokio::time::timeout(REJECT_FOR, async {
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(text.as_bytes()).await?;
        socket.shutdown().await?;
        // Read (and drop) a little of what the client still sends, so that closing with unread
        // bytes does not reset the answer away before the client reads it.
        let mut sink = [0u8; 8192];
        let mut left = REJECT_DRAIN;
        while left > 0 {
            let n = socket.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        abort(&socket);
    }
}

async fn reject_h2(io: Rewind, session: &str, text: Bytes) {
    let session = header_safe(session);
    let served = tokio::time::timeout(REJECT_FOR, async {
        let mut conn = h2::server::handshake(io).await?;
        while let Some(stream) = conn.accept().await {
            let (_req, mut respond) = stream?;
            let resp = http::Response::builder()
                .status(http::StatusCode::SERVICE_UNAVAILABLE)
                .header("content-type", "text/plain; charset=utf-8")
                .header("x-ktx-error", "shadow")
                .header("x-ktx-session", session.as_str())
                .body(())
                .expect("static status and checked header values make a valid response");
            if let Ok(mut body) = respond.send_response(resp, false) {
                let _ = body.send_data(text.clone(), true);
            }
            // One connection, one refusal round: later streams go elsewhere.
            conn.graceful_shutdown();
        }
        Ok::<(), h2::Error>(())
    })
    .await;
    if let Ok(Err(e)) = served {
        tracing::debug!(error = %e, "h2 rejection ended with an error");
    }
}

/// The session name as a header value: visible ASCII only.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

/// A socket whose first reads return bytes that were already read from it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_say_the_protocol_or_that_more_are_needed() {
        assert_eq!(sniff(b""), Sniffed::Undecided);
        assert_eq!(sniff(b"GE"), Sniffed::Undecided);
        assert_eq!(sniff(b"GET"), Sniffed::Undecided);
        assert_eq!(sniff(b"GET "), Sniffed::Undecided);
        assert_eq!(sniff(b"GET /"), Sniffed::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniffed::Undecided);
        assert_eq!(sniff(H2_PREFACE), Sniffed::H2);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniffed::Other);
        assert_eq!(sniff(b"get /"), Sniffed::Other);
        assert_eq!(sniff(b"GET\r\n"), Sniffed::Other);
    }

    #[test]
    fn fallback_routes_parse_and_pick_by_port() {
        let routes: Vec<FallbackRoute> = ["8080=10.96.0.7:80", "*=10.96.0.7:9000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = Policy::from_flags("fallback", &routes).unwrap();
        assert_eq!(p.fallback_for(8080), Some("10.96.0.7:80".parse().unwrap()));
        assert_eq!(
            p.fallback_for(1234),
            Some("10.96.0.7:9000".parse().unwrap())
        );
        assert!("8080".parse::<FallbackRoute>().is_err());
        assert!("x=1.2.3.4:5".parse::<FallbackRoute>().is_err());
        assert!("80=orders:80".parse::<FallbackRoute>().is_err());
        assert!(Policy::from_flags("fallback", &[]).is_err());
        assert!(Policy::from_flags("sometimes", &[]).is_err());
        assert_eq!(Policy::from_flags("reject", &[]), Ok(Policy::Reject));
    }

    #[test]
    fn http1_is_recognised_by_its_method() {
        assert!(looks_like_http1(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http1(b"POST /x"));
        assert!(!looks_like_http1(b""));
        assert!(!looks_like_http1(b"\x16\x03\x01 tls"));
        assert!(!looks_like_http1(b"get / HTTP/1.1"));
    }
}
