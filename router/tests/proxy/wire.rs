//! Raw HTTP/1.1 on both sides of the router, for tests about framing: a recording upstream that
//! parses what reaches it strictly (so a smuggled request shows up as a request of its own), and
//! a raw client that counts the responses it gets back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::support::{config, temp_path, wait_ready, write_routes, RemoveOnDrop};

/// One request as the upstream parsed it off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request line, e.g. `POST /early HTTP/1.1`.
    pub line: String,
    /// Header lines as received, names lower-cased: `(name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How the recording upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Reads the whole request, then answers `200 ok`.
    AfterBody,
    /// Answers `404` as soon as the head is in, before reading the body (then keeps reading,
    /// strictly, as a server that drains would).
    Early,
    /// Answers `404` as soon as the head is in and closes the connection, body unread (what a
    /// hyper server such as ktx-testbackend does when its handler ignores the body).
    EarlyThenClose,
    /// Answers `404` as soon as the head is in, waits this long without reading, then closes
    /// (an upstream that gives up on a body it does not want, e.g. after a read timeout).
    EarlyThenCloseAfter(Duration),
}

/// An upstream that records every request it parses, on every connection.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Lines it could not parse as HTTP/1.1 (framing errors reaching the upstream).
    garbage: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Recorder {
    pub async fn spawn(answer: Answer) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let garbage = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (s, g, c) = (seen.clone(), garbage.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(record_conn(sock, answer, s.clone(), g.clone(), c.clone()));
            }
        });
        Recorder {
            addr,
            seen,
            garbage,
            changed,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn garbage(&self) -> Vec<String> {
        self.garbage.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were recorded (bounded: 5 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            let now = self.seen();
            if now.len() >= n {
                return now;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.seen();
            }
        }
    }
}

async fn record_conn(
    mut sock: TcpStream,
    answer: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
    garbage: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut sock, &mut buf).await else {
            if !buf.is_empty() {
                garbage
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                changed.notify_waiters();
            }
            return;
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let Some((line, headers)) = parse_head(&head) else {
            garbage
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            changed.notify_waiters();
            return;
        };
        if answer == Answer::Early {
            let _ = sock
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
        if let Answer::EarlyThenClose | Answer::EarlyThenCloseAfter(_) = answer {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            if let Answer::EarlyThenCloseAfter(d) = answer {
                tokio::time::sleep(d).await;
            }
            seen.lock().unwrap().push(Seen {
                line,
                headers,
                body: Vec::new(),
            });
            changed.notify_waiters();
            return;
        }
        let body = match read_body(&mut sock, &mut buf, &headers).await {
            Ok(b) => b,
            // A body cut short is a client that went away mid-request: not a framing error.
            Err(why) if why.starts_with("body cut short") => return,
            Err(why) => {
                garbage.lock().unwrap().push(format!("{line}: {why}"));
                changed.notify_waiters();
                return;
            }
        };
        seen.lock().unwrap().push(Seen {
            line,
            headers,
            body,
        });
        changed.notify_waiters();
        if answer == Answer::AfterBody
            && sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; returns its length (with the blank line).
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Strict RFC 9112 head parsing: CRLF only, no obs-fold, `name: value` with a token name and
/// a value of visible characters, spaces, tabs and obs-text (bytes 0x80–0xFF).
fn parse_head(head: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let mut head = head.strip_suffix(b"\r\n\r\n")?;
    let mut split = Vec::new();
    while let Some(i) = find(head, b"\r\n") {
        split.push(&head[..i]);
        head = &head[i + 2..];
    }
    split.push(head);
    if split
        .iter()
        .any(|l| l.contains(&b'\n') || l.contains(&b'\r'))
    {
        return None;
    }
    let mut lines = split.into_iter();
    let line = std::str::from_utf8(lines.next()?).ok()?;
    if line
        .bytes()
        .any(|b| !(0x21..0x7f).contains(&b) && b != b' ')
        || line.split(' ').count() != 3
    {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.starts_with(b" ") || l.starts_with(b"\t") {
            return None;
        }
        let colon = l.iter().position(|&b| b == b':')?;
        let (n, v) = (&l[..colon], &l[colon + 1..]);
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(b);
        if n.is_empty() || !n.iter().all(token) {
            return None;
        }
        if v.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return None;
        }
        headers.push((
            String::from_utf8_lossy(n).to_ascii_lowercase(),
            String::from_utf8_lossy(v).trim().to_string(),
        ));
    }
    Some((line.to_string(), headers))
}

async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>, need: usize) -> Result<(), String> {
    while buf.len() < need {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("body cut short at {} of {need} bytes", buf.len())),
        }
    }
    Ok(())
}

async fn read_body(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    if !te.is_empty() {
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err(format!("transfer-encoding {te:?}"));
        }
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                let need = buf.len() + 1;
                fill(sock, buf, need).await?;
            };
            let size_line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // No trailers are sent by the router in these tests: expect the final CRLF.
                fill(sock, buf, 2).await?;
                if &buf[..2] != b"\r\n" {
                    return Err("trailers or garbage after the last chunk".into());
                }
                buf.drain(..2);
                return Ok(body);
            }
            fill(sock, buf, size + 2).await?;
            body.extend_from_slice(&buf[..size]);
            if &buf[size..size + 2] != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
            buf.drain(..size + 2);
        }
    }
    match cl.as_slice() {
        [] => Ok(Vec::new()),
        [one] => {
            let n: usize = one.parse().map_err(|_| format!("content-length {one:?}"))?;
            fill(sock, buf, n).await?;
            Ok(buf.drain(..n).collect())
        }
        many => Err(format!("content-length {many:?}")),
    }
}

/// A router whose default target is `upstream`, with no rules.
pub struct Front {
    pub router: ktx_router::Router,
    _routes: RemoveOnDrop,
}

impl Front {
    pub async fn start(upstream: SocketAddr, tune: impl FnOnce(&mut ktx_router::Config)) -> Front {
        let routes = temp_path("routes.yaml");
        write_routes(
            &routes,
            &format!("default: {{ addrs: [\"{upstream}\"] }}\nrules: []\n"),
        );
        let mut cfg = config(&routes);
        tune(&mut cfg);
        let router = ktx_router::Router::start(cfg).await.unwrap();
        wait_ready(router.admin_addr).await;
        Front {
            router,
            _routes: RemoveOnDrop(routes),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.router.listen_addrs[0]
    }
}

/// One response as the raw client read it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Reads responses from `s` until the router closes (or `wait` passes). Returns them and
/// whether the connection was closed by the router.
pub async fn read_replies(s: &mut TcpStream, wait: Duration) -> (Vec<Reply>, bool) {
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (parse_replies(&raw), closed)
}

/// Splits a byte stream into responses (Content-Length or chunked framing; else to the end).
pub fn parse_replies(mut raw: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Some(end) = find(raw, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        raw = &raw[end + 4..];
        let lower = head.to_ascii_lowercase();
        let cl = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = if let Some(n) = cl {
            let n = n.min(raw.len());
            let b = raw[..n].to_vec();
            raw = &raw[n..];
            b
        } else if lower.contains("transfer-encoding: chunked") {
            let mut b = Vec::new();
            while let Some(i) = find(raw, b"\r\n") {
                let size =
                    usize::from_str_radix(&String::from_utf8_lossy(&raw[..i]), 16).unwrap_or(0);
                raw = &raw[i + 2..];
                let take = (size + 2).min(raw.len());
                b.extend_from_slice(&raw[..size.min(raw.len())]);
                raw = &raw[take..];
                if size == 0 {
                    break;
                }
            }
            b
        } else {
            let b = raw.to_vec();
            raw = &[];
            b
        };
        out.push(Reply { status, body });
    }
    out
}
