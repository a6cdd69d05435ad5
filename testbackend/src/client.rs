//! `ktx-testbackend client`: real clients of every protocol the backend speaks, for places
//! that have none (a pod of the FROM-scratch test backend image in the e2e cluster).
//!
//! ```text
//! ktx-testbackend client grpc-unary grpc-bidi ws --addr 10.0.0.7:8080 \
//!     --header version=foobar --expect developer --retry-for 60s
//! ```
//! Each call runs in turn and prints `CALL: answered by NAME (detail)`: the backend names itself
//! in every answer. With `--expect NAME`, a call answered by another backend is tried again
//! until `--retry-for` has passed, then the run fails naming who answered instead (exit code 1).
//! Errors (refused, reset, a wrong echo) are retried the same way.
//!
//! The calls themselves are in `client/calls.rs`; this file is the command line and the retry
//! loop. It routes nothing: it is the near end of a test as the backend is the far end.

mod calls;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use tokio::time::Instant;

use crate::grpc::ConnectError;
use crate::ws::WsError;

/// What to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Call {
    /// gRPC `ktx.test.Echo/Unary` over h2c.
    GrpcUnary,
    /// gRPC `ServerStream`: one request, several replies.
    GrpcServerStream,
    /// gRPC `ClientStream`: several requests, one reply.
    GrpcClientStream,
    /// gRPC `BidiStream`: each request sent after the previous reply arrived.
    GrpcBidi,
    /// WebSocket at `/ws` (HTTP/1.1 Upgrade): greeting, then echoes.
    Ws,
    /// `GET /` over HTTP/1.1.
    Http1,
    /// `GET /` over h2c (HTTP/2 with prior knowledge).
    H2c,
    /// Raw TCP (the backend's `--tcp-listen`): wait for the banner, then an echo. Ignores
    /// `--header`.
    Tcp,
    /// `GET /bytes?n=<--bytes>` over HTTP/1.1, the body counted and dropped (exactly that
    /// length, or an error); says the MiB/s from before the connect to the last byte, as
    /// curl's speed does. Tried once whatever `--retry-for` says: it is a measurement.
    Download,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

/// `ktx-testbackend client`: call a test backend (directly or through a router) and say which
/// backend answered.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// What to call, in this order.
    #[arg(value_enum, required = true)]
    pub calls: Vec<Call>,

    /// Where: HOST:PORT (an IP or a name to resolve).
    #[arg(long)]
    pub addr: String,

    /// A request header (gRPC metadata) to send with every call, NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// The backend that must answer every call.
    #[arg(long, value_name = "NAME")]
    pub expect: Option<String>,

    /// Keep trying a call that fails or is answered by the wrong backend for this long
    /// (`500ms`, `60s`, `2m`); `0s` tries once.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub retry_for: Duration,

    /// Deadline of one try of one call.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Body length a `download` asks for and must get.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub bytes: u64,
}

/// What one call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The backend that answered.
    pub backend: String,
    /// What was checked on the way (replies counted, echoes compared).
    pub detail: String,
}

impl Answer {
    fn new(backend: impl Into<String>, detail: impl Into<String>) -> Self {
        Answer {
            backend: backend.into(),
            detail: detail.into(),
        }
    }
}

/// Why a call, or the whole run, failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    GrpcConnect(#[from] ConnectError),
    #[error("gRPC status {}: {}", .0.code(), .0.message())]
    Grpc(#[from] tonic::Status),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("I/O: {0}")]
    Io(std::io::Error),
    #[error("not the test backend's answer: {0}")]
    Unexpected(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("expected backend {expected:?}, answered by {:?} ({})", .got.backend, .got.detail)]
    WrongBackend { expected: String, got: Answer },
    #[error("{call} to {addr} failed after {tries} tries in {elapsed:.1?}: {last}")]
    Failed {
        call: Call,
        addr: String,
        tries: u32,
        elapsed: Duration,
        last: Box<ClientError>,
    },
}

/// Runs every call of `args` in turn, printing one line per call on stdout (and each failed
/// try on stderr); the answers, or the first call that did not succeed in time.
pub async fn run(args: &ClientArgs) -> Result<Vec<(Call, Answer)>, ClientError> {
    let mut answers = Vec::with_capacity(args.calls.len());
    for &call in &args.calls {
        let answer = call_with_retries(call, args).await?;
        println!("{call}: answered by {} ({})", answer.backend, answer.detail);
        answers.push((call, answer));
    }
    Ok(answers)
}

async fn call_with_retries(call: Call, args: &ClientArgs) -> Result<Answer, ClientError> {
    let start = Instant::now();
    // A measurement is taken once: a retry would report the try that went well.
    let retry_for = match call {
        Call::Download => Duration::ZERO,
        _ => args.retry_for,
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match try_once(call, args).await {
            Ok(answer) => match &args.expect {
                Some(expected) if *expected != answer.backend => ClientError::WrongBackend {
                    expected: expected.clone(),
                    got: answer,
                },
                _ => return Ok(answer),
            },
            Err(error) => error,
        };
        let elapsed = start.elapsed();
        if elapsed + RETRY_PAUSE > retry_for {
            return Err(ClientError::Failed {
                call,
                addr: args.addr.clone(),
                tries,
                elapsed,
                last: Box::new(error),
            });
        }
        eprintln!("{call}: try {tries}: {error}; trying again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Between two tries of one call.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

async fn try_once(call: Call, args: &ClientArgs) -> Result<Answer, ClientError> {
    let attempt = async {
        let addr = resolve(&args.addr).await?;
        calls::call(call, addr, &args.headers, args.bytes).await
    };
    tokio::time::timeout(args.timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout(args.timeout))?
}

async fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let resolve_error = |reason: String| ClientError::Resolve {
        addr: addr.to_owned(),
        reason,
    };
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_error("no address".to_owned()))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let valid_name = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
    if !valid_name || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(format!(
            "{s:?}: the name must be a header name and the value visible ASCII"
        ));
    }
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

/// `500ms`, `60s`, `2m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 60s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: the unit must be ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("VERSION=foo bar"),
            Ok(("version".to_owned(), "foo bar".to_owned()))
        );
        assert_eq!(parse_header("x="), Ok(("x".to_owned(), String::new())));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name=x").is_err());
        assert!(parse_header("x=line\nbreak").is_err());
    }

    #[test]
    fn calls_are_named_as_on_the_command_line() {
        assert_eq!(Call::GrpcServerStream.to_string(), "grpc-server-stream");
        assert_eq!(Call::H2c.to_string(), "h2c");
    }
}
