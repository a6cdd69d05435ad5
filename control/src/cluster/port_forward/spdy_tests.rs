//! [`SpdyIo`] against a peer on an in-memory pipe that plays the streaming server's side of a
//! SPDY port-forward (spdystream's framing; the real server is in the e2e tests: every mesh
//! session rides on it).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::spdy::{SpdyIo, DATA_STREAM, ERROR_STREAM, FRAME_MAX};
use super::Transport;

const PORT: u16 = 8080;

/// The server's side: reads our frames, writes its own.
struct Server {
    io: DuplexStream,
    /// Whether the zlib header of our header blocks was seen.
    zlib_started: bool,
}

#[derive(Debug, PartialEq)]
enum Frame {
    Syn {
        stream: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Ping(u32),
    Other(u16),
}

impl Server {
    async fn frame(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), self.frame_now())
            .await
            .expect("a frame within 5 s")
    }

    async fn frame_now(&mut self) -> Frame {
        let mut head = [0u8; 8];
        self.io.read_exact(&mut head).await.unwrap();
        let word = u32::from_be_bytes(head[..4].try_into().unwrap());
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await.unwrap();
        if word & 0x8000_0000 == 0 {
            return Frame::Data {
                stream: word,
                fin: flags & 1 != 0,
                data: payload,
            };
        }
        assert_eq!((word >> 16) & 0x7fff, 3, "SPDY version 3");
        match word & 0xffff {
            1 => {
                let stream = u32::from_be_bytes(payload[..4].try_into().unwrap());
                assert_eq!(&payload[4..10], &[0; 6], "no associated stream, priority 0");
                let mut z = &payload[10..];
                if !self.zlib_started {
                    // zlib header without a preset dictionary (FDICT clear), valid check bits
                    assert_eq!(z[1] & 0x20, 0);
                    assert_eq!((u16::from(z[0]) * 256 + u16::from(z[1])) % 31, 0);
                    z = &z[2..];
                    self.zlib_started = true;
                }
                // one stored, non-final deflate block
                assert_eq!(z[0], 0);
                let n = u16::from_le_bytes([z[1], z[2]]);
                assert_eq!(u16::from_le_bytes([z[3], z[4]]), !n);
                let mut block = &z[5..];
                // then a sync flush: an empty stored block
                assert_eq!(
                    block.len(),
                    usize::from(n) + 5,
                    "the header block and a flush"
                );
                assert_eq!(&block[usize::from(n)..], &[0, 0, 0, 0xff, 0xff]);
                let take = |b: &mut &[u8]| {
                    let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
                    let s = String::from_utf8(b[4..4 + n].to_vec()).unwrap();
                    *b = &b[4 + n..];
                    s
                };
                let count = u32::from_be_bytes(block[..4].try_into().unwrap());
                block = &block[4..];
                let headers = (0..count)
                    .map(|_| (take(&mut block), take(&mut block)))
                    .collect();
                Frame::Syn { stream, headers }
            }
            6 => Frame::Ping(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            other => Frame::Other(other as u16),
        }
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) {
        let mut f = vec![0x80, 3];
        f.extend_from_slice(&kind.to_be_bytes());
        f.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        self.io.write_all(&f).await.unwrap();
    }

    /// SYN_REPLY to `stream` with a header block the client must skip unread (whatever the
    /// server's compressor wrote).
    async fn reply(&mut self, stream: u32) {
        let mut p = stream.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x38, 0xea, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x65, 0x1b]);
        self.control(2, 0, &p).await;
    }

    async fn data(&mut self, stream: u32, fin: bool, data: &[u8]) {
        let mut f = stream.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(fin) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.io.write_all(&f).await.unwrap();
    }
}

/// The ktx side (opened: both streams replied to) and the server's side.
async fn pair() -> (SpdyIo<DuplexStream>, Server) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let mut server = Server {
        io: server,
        zlib_started: false,
    };
    let open = SpdyIo::open(client, PORT, "port-forward to pod ns/p port 8080".into());
    let serve = async {
        for stream in [ERROR_STREAM, DATA_STREAM] {
            let Frame::Syn { stream: s, .. } = server.frame().await else {
                panic!("a SYN_STREAM first")
            };
            assert_eq!(s, stream);
        }
        server.reply(ERROR_STREAM).await;
        server.reply(DATA_STREAM).await;
    };
    let (io, ()) = tokio::join!(open, serve);
    (io.unwrap(), server)
}

#[tokio::test]
async fn opening_asks_for_an_error_and_a_data_stream_of_the_port_as_kubectl_does() {
    let (client, server) = tokio::io::duplex(1 << 20);
    let mut server = Server {
        io: server,
        zlib_started: false,
    };
    let open = tokio::spawn(SpdyIo::open(client, PORT, "pf".into()));
    let headers = |kind: &str| {
        vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), "8080".to_string()),
            ("requestid".to_string(), "0".to_string()),
        ]
    };
    assert_eq!(
        server.frame().await,
        Frame::Syn {
            stream: ERROR_STREAM,
            headers: headers("error")
        }
    );
    assert_eq!(
        server.frame().await,
        Frame::Syn {
            stream: DATA_STREAM,
            headers: headers("data")
        }
    );
    // Not open before the server replied to both.
    server.reply(ERROR_STREAM).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !open.is_finished(),
        "open waits for the data stream's reply"
    );
    server.reply(DATA_STREAM).await;
    let mut io = tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    io.write_all(b"x").await.unwrap();
    io.flush().await.unwrap();
    assert_eq!(
        server.frame().await,
        Frame::Data {
            stream: DATA_STREAM,
            fin: false,
            data: b"x".to_vec()
        }
    );
}

#[tokio::test]
async fn small_writes_go_out_as_one_data_frame_at_flush_and_big_ones_in_frames_of_frame_max() {
    let (mut io, mut server) = pair().await;
    for i in 0..10u8 {
        io.write_all(&[i; 100]).await.unwrap();
    }
    io.flush().await.unwrap();
    let Frame::Data { stream, data, .. } = server.frame().await else {
        panic!("data")
    };
    assert_eq!((stream, data.len()), (DATA_STREAM, 1000));

    let big = vec![7u8; 2 * FRAME_MAX + 10];
    let write = async {
        io.write_all(&big).await.unwrap();
        io.flush().await.unwrap();
    };
    let read = async {
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < big.len() {
            let Frame::Data { data, .. } = server.frame().await else {
                panic!("data")
            };
            sizes.push(data.len());
        }
        sizes
    };
    let ((), sizes) = tokio::join!(write, read);
    assert_eq!(sizes, vec![FRAME_MAX, FRAME_MAX, 10]);
}

#[tokio::test]
async fn data_from_the_pod_is_read_across_frames_and_fin_is_the_end() {
    let (mut io, mut server) = pair().await;
    server.data(DATA_STREAM, false, b"hello ").await;
    // Frames the port does not care about, between data frames.
    server
        .control(4, 0, &[0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 1, 0])
        .await; // SETTINGS
    server.control(9, 0, &[0, 0, 0, 3, 0, 1, 0, 0]).await; // WINDOW_UPDATE
    server.data(5, false, b"another stream").await;
    server.data(DATA_STREAM, true, b"world").await;
    let mut got = String::new();
    io.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello world");
}

#[tokio::test]
async fn the_pod_sides_error_fails_reads_and_writes_with_its_words() {
    let (mut io, mut server) = pair().await;
    server
        .data(
            ERROR_STREAM,
            false,
            b"error forwarding port 8080: connection refused",
        )
        .await;
    let e = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert!(e.to_string().contains("port-forward to pod ns/p"), "{e}");
    let e = io.write(b"x").await.unwrap_err();
    assert!(e.to_string().contains("connection refused"), "{e}");
}

#[tokio::test]
async fn a_servers_ping_is_answered_while_the_caller_only_reads() {
    let (mut io, mut server) = pair().await;
    server.control(6, 0, &2u32.to_be_bytes()).await;
    server.data(DATA_STREAM, false, b"x").await;
    let mut one = [0u8; 1];
    io.read_exact(&mut one).await.unwrap();
    assert_eq!(server.frame().await, Frame::Ping(2));
}

#[tokio::test]
async fn a_reset_data_stream_fails_the_read() {
    let (mut io, mut server) = pair().await;
    server.control(3, 0, &[0, 0, 0, 3, 0, 0, 0, 5]).await; // RST_STREAM data, CANCEL
    let e = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("reset the port-forward's data stream (status 5)"),
        "{e}"
    );
}

#[tokio::test]
async fn shutdown_sends_what_is_gathered_then_fin_and_reading_goes_on() {
    let (mut io, mut server) = pair().await;
    io.write_all(b"last words").await.unwrap();
    io.shutdown().await.unwrap();
    assert_eq!(
        server.frame().await,
        Frame::Data {
            stream: DATA_STREAM,
            fin: false,
            data: b"last words".to_vec()
        }
    );
    assert_eq!(
        server.frame().await,
        Frame::Data {
            stream: DATA_STREAM,
            fin: true,
            data: vec![]
        }
    );
    assert!(io.write(b"more").await.is_err(), "nothing after shutdown");
    server.data(DATA_STREAM, true, b"answer").await;
    let mut got = Vec::new();
    io.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"answer");
}

#[tokio::test]
async fn a_connection_cut_inside_a_frame_is_an_error_not_an_end() {
    let (mut io, mut server) = pair().await;
    let mut f = DATA_STREAM.to_be_bytes().to_vec();
    f.extend_from_slice(&100u32.to_be_bytes());
    f.extend_from_slice(&[1; 10]);
    server.io.write_all(&f).await.unwrap();
    drop(server);
    let mut got = Vec::new();
    let e = io.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_connection_cut_inside_a_frame_header_is_an_error_too() {
    let (mut io, mut server) = pair().await;
    server.data(DATA_STREAM, false, b"whole").await;
    server.io.write_all(&[0, 0, 0]).await.unwrap();
    drop(server);
    let mut got = Vec::new();
    let e = io.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(got, b"whole");
}

#[tokio::test]
async fn another_spdy_version_is_refused() {
    let (mut io, mut server) = pair().await;
    server
        .io
        .write_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2])
        .await
        .unwrap();
    let e = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(e.to_string().contains("SPDY version 2"), "{e}");
}

#[tokio::test]
async fn a_server_that_closes_before_replying_fails_the_open() {
    let (client, server) = tokio::io::duplex(1 << 20);
    let open = SpdyIo::open(client, PORT, "pf".into());
    let close = async move {
        let mut server = server;
        let mut buf = [0u8; 256];
        let _ = server.read(&mut buf).await;
        drop(server);
    };
    let (r, ()) = tokio::join!(open, close);
    let e = r.unwrap_err();
    assert!(
        e.to_string().contains("closed the port-forward before"),
        "{e}"
    );
}

#[test]
fn the_transport_is_auto_unless_pinned_and_a_typo_says_what_to_use() {
    assert_eq!(Transport::parse(None), Ok(Transport::Auto));
    assert_eq!(Transport::parse(Some("auto")), Ok(Transport::Auto));
    assert_eq!(Transport::parse(Some("spdy")), Ok(Transport::Spdy));
    assert_eq!(
        Transport::parse(Some("websocket")),
        Ok(Transport::WebSocket)
    );
    let e = Transport::parse(Some("spdy3")).unwrap_err();
    assert!(e.contains("auto, spdy or websocket"), "{e}");
}

/// The requests a stand-in API server got: method, path, `Upgrade` header.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// An API server on loopback that refuses every upgrade with a Status (`spdy_status` for the
/// SPDY POST, 403 for anything else), and records what it was asked.
async fn refusing_api_server(spdy_status: u16) -> (kube::Client, Seen) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let upgrade = req
                        .headers()
                        .get(http::header::UPGRADE)
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .unwrap_or_default();
                    log.lock().unwrap().push((
                        req.method().to_string(),
                        req.uri().path().to_string(),
                        upgrade.clone(),
                    ));
                    let status = if upgrade.starts_with("SPDY") {
                        spdy_status
                    } else {
                        403
                    };
                    let body = format!(
                        r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"refused {upgrade}","reason":"Forbidden","code":{status}}}"#
                    );
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), seen)
}

#[tokio::test]
async fn a_refused_spdy_upgrade_is_followed_by_the_websocket_unless_spdy_is_pinned() {
    use super::PortForwardConnector;

    let (client, seen) = refusing_api_server(400).await;
    let connector = PortForwardConnector::new(client.clone(), "ns", "shadow-1", 7766);
    let Err(e) = connector.open_with(Transport::Auto).await else {
        panic!("the stand-in refuses everything")
    };
    // The WebSocket's refusal is what the user reads: the API server's own words.
    assert!(e.to_string().contains("refused websocket"), "{e}");
    assert!(e.to_string().contains("pod ns/shadow-1 port 7766"), "{e}");
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(
        asked[0],
        (
            "POST".into(),
            "/api/v1/namespaces/ns/pods/shadow-1/portforward".into(),
            "SPDY/3.1".into()
        )
    );
    assert_eq!(
        (asked[1].0.as_str(), asked[1].2.as_str()),
        ("GET", "websocket")
    );

    seen.lock().unwrap().clear();
    let Err(e) = connector.open_with(Transport::Spdy).await else {
        panic!("the stand-in refuses everything")
    };
    assert!(e.to_string().contains("400"), "{e}");
    assert!(e.to_string().contains("KTX_PORT_FORWARD=spdy"), "{e}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no WebSocket when SPDY is pinned"
    );

    seen.lock().unwrap().clear();
    assert!(connector.open_with(Transport::WebSocket).await.is_err());
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].2, "websocket");
}
