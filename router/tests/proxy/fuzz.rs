//! Bounded fuzzing of the HTTP/1 front end through the real proxy (proptest: the workspace is
//! on stable). Each case sends one seed of `tests/corpus/http1/`, mutated, on a fresh
//! connection to a router in front of the strict recording upstream, then closes its sending
//! side. Properties: the router never panics, always finishes with the connection (answers
//! and/or closes) in bounded time, never forwards more requests than the client sent request
//! lines, and, for bytes it serves as HTTP/1 (not passed through as plain TCP by the sniffer,
//! e.g. `PO\nST …`), never forwards anything the upstream cannot parse strictly.
//! `PROPTEST_CASES` sets the number of cases (default 96: a few seconds).

use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::*;

const WORKER: &str = "router-fuzz";
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn seeds() -> Vec<Vec<u8>> {
    // Read at run time: a build shared between two checkouts (one cache, two paths) would
    // otherwise read the other checkout's corpus, or a deleted one.
    let dir = std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/corpus/http1");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("the corpus is in the repo")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 5, "corpus missing");
    out
}

/// Fragments that matter to HTTP/1 framing.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"\r\n ",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Connection: host, content-length\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"ffffffffffffffff\r\n",
    b"\x00",
    b"\xff",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Flip(usize, u8),
    Truncate(usize),
}

fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let len = b.len().max(1);
        match *e {
            Edit::Insert(at, t) => {
                let at = at % (b.len() + 1);
                b.splice(at..at, TOKENS[t].iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(b.len());
                b.drain(at.min(end)..end);
            }
            Edit::Flip(at, x) => {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = x;
                }
            }
            Edit::Truncate(at) => b.truncate(at % len),
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Edit::Insert(at, t)),
            (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        0..6,
    )
}

fn request_lines(bytes: &[u8]) -> usize {
    bytes.windows(6).filter(|w| w == b" HTTP/").count() + usize::from(bytes.starts_with(b"HTTP/"))
}

async fn one_case(front: &Front, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut s = TcpStream::connect(front.addr()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let (_, closed) = read_replies(&mut s, Duration::from_secs(3)).await;
    prop_assert!(
        closed,
        "connection still open 3 s after the client finished: {:?}",
        String::from_utf8_lossy(bytes)
    );
    Ok(())
}

#[test]
fn http1_front_end_survives_mutated_requests() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(WORKER) {
            PANICS.lock().unwrap().push(info.to_string());
        }
        previous(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(WORKER)
        .enable_all()
        .build()
        .unwrap();
    let (up, front) = rt.block_on(async {
        let up = Recorder::spawn(Answer::AfterBody).await;
        let front = Front::start(up.addr, |c| {
            c.header_read_timeout = Duration::from_millis(500);
        })
        .await;
        (up, front)
    });
    let seeds = seeds();
    let sent_lines = std::cell::Cell::new(0usize);
    // Inputs the sniffer passes through as plain TCP: the upstream gets them verbatim.
    let passthrough = std::cell::RefCell::new(Vec::<String>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(0..seeds.len(), edits()), |(seed, edits)| {
            let bytes = mutate(&seeds[seed], &edits);
            sent_lines.set(sent_lines.get() + request_lines(&bytes));
            rt.block_on(one_case(&front, &bytes))?;
            let panics = PANICS.lock().unwrap().clone();
            prop_assert!(panics.is_empty(), "router panicked: {panics:?}");
            if ktx_router::sniff::sniff(&bytes[..bytes.len().min(64)])
                != ktx_router::sniff::Sniffed::Http1
            {
                passthrough
                    .borrow_mut()
                    .push(String::from_utf8_lossy(&bytes).into_owned());
            }
            Ok(())
        })
        .unwrap();
    // Every case's connection is closed, so what the router forwarded has arrived.
    let sent_lines = sent_lines.get();
    let seen = up.seen().len();
    assert!(
        seen <= sent_lines,
        "{seen} requests forwarded for {sent_lines} request lines sent"
    );
    assert!(
        seen > 0,
        "no case reached the upstream: the harness tests nothing"
    );
    // Whatever the upstream could not parse came verbatim from a passed-through input; none
    // of it came from the HTTP/1 path.
    let passthrough = passthrough.into_inner();
    for g in up.garbage() {
        let first = g.split("\r\n").next().unwrap_or("");
        let first = first.split(": ").next().unwrap_or(first);
        assert!(
            passthrough.iter().any(|p| p.contains(first)),
            "the router forwarded what the upstream cannot parse: {g:?}"
        );
    }
    drop(front);
    drop(rt);
}
