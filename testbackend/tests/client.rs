//! `ktx-testbackend client` against real backends on loopback: every call names the backend
//! that answered, a wrong expectation fails naming who answered instead, retries wait for a
//! backend that comes up late, and the binary's exit code says all of it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ktx_testbackend::client::{self, Call, ClientArgs, ClientError};
use ktx_testbackend::{spawn, spawn_tcp};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn args(calls: &[Call], addr: SocketAddr, expect: Option<&str>) -> ClientArgs {
    ClientArgs {
        calls: calls.to_vec(),
        addr: addr.to_string(),
        headers: vec![("version".to_owned(), "foobar".to_owned())],
        expect: expect.map(str::to_owned),
        retry_for: Duration::ZERO,
        timeout: Duration::from_secs(5),
        bytes: 1024 * 1024,
    }
}

const HTTP_CALLS: [Call; 7] = [
    Call::GrpcUnary,
    Call::GrpcServerStream,
    Call::GrpcClientStream,
    Call::GrpcBidi,
    Call::Ws,
    Call::Http1,
    Call::H2c,
];

#[tokio::test]
async fn every_call_names_the_backend_that_answered() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let answers = client::run(&args(&HTTP_CALLS, backend.addr(), Some("alpha"))).await?;
    let calls: Vec<Call> = answers.iter().map(|(call, _)| *call).collect();
    assert_eq!(calls, HTTP_CALLS);
    for (call, answer) in &answers {
        assert_eq!(answer.backend, "alpha", "{call}: {answer:?}");
    }
    // Four gRPC calls, one WebSocket, and each HTTP call reached the backend for real.
    let stats = backend.stats().snapshot();
    assert_eq!((stats.grpc_calls, stats.websockets), (4, 1));
    assert_eq!(stats.requests, 7);
    Ok(())
}

#[tokio::test]
async fn tcp_reads_the_banner_then_gets_its_bytes_back() -> Result<(), Error> {
    let tcp = spawn_tcp("raw", any_port()).await?;
    let answers = client::run(&args(&[Call::Tcp], tcp.addr(), Some("raw"))).await?;
    assert_eq!(answers[0].1.backend, "raw");
    Ok(())
}

#[tokio::test]
async fn a_wrong_backend_fails_naming_who_answered() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    for call in HTTP_CALLS {
        let error = client::run(&args(&[call], backend.addr(), Some("beta")))
            .await
            .expect_err("alpha answered, beta was expected");
        let ClientError::Failed { last, tries, .. } = &error else {
            panic!("{call}: {error}");
        };
        assert_eq!(*tries, 1, "{call}: no --retry-for, one try");
        match last.as_ref() {
            ClientError::WrongBackend { expected, got } => {
                assert_eq!((expected.as_str(), got.backend.as_str()), ("beta", "alpha"));
            }
            other => panic!("{call}: {other}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn not_a_test_backend_is_an_error_not_a_name() -> Result<(), Error> {
    // A raw TCP port speaks no HTTP: the HTTP call must fail, not report some name.
    let tcp = spawn_tcp("raw", any_port()).await?;
    let mut args = args(&[Call::Http1], tcp.addr(), None);
    args.timeout = Duration::from_secs(2);
    let error = client::run(&args)
        .await
        .expect_err("a banner is no HTTP answer");
    assert!(matches!(error, ClientError::Failed { .. }), "{error}");
    Ok(())
}

#[tokio::test]
async fn retries_wait_for_a_backend_that_starts_late() -> Result<(), Error> {
    // Hold a free port, let it go, and start the backend on it only after the client began.
    let addr = std::net::TcpListener::bind(any_port())?.local_addr()?;
    let mut args = args(&[Call::GrpcUnary], addr, Some("late"));
    args.retry_for = Duration::from_secs(20);
    let client = tokio::spawn(async move { client::run(&args).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _backend = spawn("late", addr).await?;
    let answers = client.await??;
    assert_eq!(answers[0].1.backend, "late");
    Ok(())
}

#[tokio::test]
async fn a_download_gets_every_byte_and_says_its_speed() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let answers = client::run(&args(&[Call::Download], backend.addr(), Some("alpha"))).await?;
    let detail = &answers[0].1.detail;
    assert!(
        detail.starts_with("1048576 bytes in ") && detail.ends_with(" MiB/s"),
        "{detail}"
    );
    assert_eq!(backend.stats().snapshot().requests, 1);
    Ok(())
}

/// A server that answers every connection's request with `head` and `body`, then closes.
async fn answers_with(head: String, body: usize) -> Result<SocketAddr, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(any_port()).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request).await;
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'x'; body]).await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn a_short_download_is_an_error_tried_once() -> Result<(), Error> {
    let n: usize = 1024 * 1024;
    let head = |length: usize| {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\nx-ktx-backend: liar\r\n\r\n")
    };
    // Cut off before its announced length; and a whole answer one byte short of what was
    // asked for.
    for (length, sent) in [(n, n / 2), (n - 1, n - 1)] {
        let addr = answers_with(head(length), sent).await?;
        let mut args = args(&[Call::Download], addr, None);
        args.retry_for = Duration::from_secs(20);
        let error = client::run(&args)
            .await
            .expect_err("fewer bytes than asked for");
        let ClientError::Failed { tries, last, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(*tries, 1, "a measurement is not retried: {error}");
        if length == n - 1 {
            assert!(
                last.to_string().contains("liar sent 1048575 bytes"),
                "{last}"
            );
        }
    }
    Ok(())
}

/// The e2e tests read only the exit code and the output of the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_on_a_wrong_backend() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let addr = backend.addr().to_string();
    let run = move |expect: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ktx-testbackend"))
                .args(["client", "grpc-bidi", "ws", "--addr", &addr])
                .args(["--header", "version=foobar", "--expect", expect])
                .output()
        })
    };
    let good = run("alpha").await??;
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{good:?}");
    assert!(
        stdout.contains("grpc-bidi: answered by alpha") && stdout.contains("ws: answered by alpha"),
        "{stdout}"
    );

    let bad = run("beta").await??;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        stderr.contains("grpc-bidi to")
            && stderr.contains(r#"expected backend "beta", answered by "alpha""#),
        "{stderr}"
    );
    Ok(())
}
