//! [`PortForwardIo`] against a WebSocket peer on loopback that plays the API server's side of a
//! port-forward (the real path is in the e2e tests: every mesh session rides on it).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::io::MESSAGE_MAX;
use super::PortForwardIo;

const PORT: u16 = 8080;

type Ws = WebSocketStream<TcpStream>;

/// The ktx side (under test) and the API server's side of one WebSocket.
async fn pair() -> (PortForwardIo<Ws>, Ws) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = WebSocketStream::from_raw_socket(client.unwrap(), Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(server.unwrap().0, Role::Server, None).await;
    let io = PortForwardIo::new(client, PORT, "port-forward to pod ns/p port 8080".into());
    (io, server)
}

fn message(channel: u8, payload: &[u8]) -> Message {
    let mut m = vec![channel];
    m.extend_from_slice(payload);
    Message::binary(m)
}

/// What the API server sends first: the port on the data and on the error channel.
async fn prefixes(server: &mut Ws) {
    server.send(message(0, &PORT.to_le_bytes())).await.unwrap();
    server.send(message(1, &PORT.to_le_bytes())).await.unwrap();
}

/// The next binary message the server gets, within 5 s.
async fn next_binary(server: &mut Ws) -> Vec<u8> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), server.next())
            .await
            .expect("a message within 5 s")
            .expect("the WebSocket is open")
            .unwrap();
        if let Message::Binary(b) = m {
            return b.to_vec();
        }
    }
}

#[tokio::test]
async fn small_writes_go_out_as_one_message_at_flush() {
    let (mut io, mut server) = pair().await;
    for i in 0..10u8 {
        io.write_all(&[i; 1024]).await.unwrap();
    }
    io.flush().await.unwrap();
    let got = next_binary(&mut server).await;
    assert_eq!(
        got.len(),
        1 + 10 * 1024,
        "one message: the channel byte and all ten writes"
    );
    assert_eq!(got[0], 0, "data goes on channel 0");
    assert!(got[1..]
        .chunks(1024)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
}

#[tokio::test]
async fn a_large_write_is_cut_into_messages_of_at_most_the_maximum() {
    let (mut io, mut server) = pair().await;
    let data: Vec<u8> = (0..(MESSAGE_MAX * 5 / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    let writer = tokio::spawn(async move {
        io.write_all(&data).await.unwrap();
        io.flush().await.unwrap();
        (io, data)
    });
    let mut got = Vec::new();
    let mut messages = 0;
    while got.len() < MESSAGE_MAX * 5 / 2 {
        let m = next_binary(&mut server).await;
        assert!(m.len() <= MESSAGE_MAX, "a message of {} bytes", m.len());
        assert_eq!(m[0], 0);
        got.extend_from_slice(&m[1..]);
        messages += 1;
    }
    let (_io, data) = writer.await.unwrap();
    assert_eq!(got, data);
    assert_eq!(messages, 3, "2.5 × the maximum goes in three messages");
}

#[tokio::test]
async fn reads_skip_the_port_prefixes_and_join_messages() {
    let (mut io, mut server) = pair().await;
    prefixes(&mut server).await;
    server.send(message(0, b"hello")).await.unwrap();
    server.send(Message::Ping(vec![1, 2].into())).await.unwrap();
    server.send(message(0, b" world")).await.unwrap();
    server.send(Message::Close(None)).await.unwrap();
    let mut got = String::new();
    io.read_to_string(&mut got).await.unwrap();
    assert_eq!(
        got, "hello world",
        "the prefixes are not data; the close is the end"
    );
}

#[tokio::test]
async fn a_read_into_a_small_buffer_keeps_the_rest_of_the_message() {
    let (mut io, mut server) = pair().await;
    prefixes(&mut server).await;
    server.send(message(0, b"abcdef")).await.unwrap();
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"abcd");
    let mut rest = [0u8; 2];
    io.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"ef");
}

#[tokio::test]
async fn the_pod_sides_error_fails_reads_and_writes_with_its_words() {
    let (mut io, mut server) = pair().await;
    prefixes(&mut server).await;
    let words = "error forwarding port 8080 to pod abc: connection refused";
    server.send(message(1, words.as_bytes())).await.unwrap();
    let err = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    let text = err.to_string();
    assert!(text.contains(words) && text.contains("pod ns/p"), "{text}");
    let err = io.write(b"x").await.unwrap_err();
    assert!(err.to_string().contains(words), "{err}");
}

#[tokio::test]
async fn a_first_message_naming_another_port_is_refused() {
    let (mut io, mut server) = pair().await;
    server
        .send(message(0, &9090u16.to_le_bytes()))
        .await
        .unwrap();
    let err = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("not port 8080"), "{err}");
}

#[tokio::test]
async fn an_unknown_channel_is_refused() {
    let (mut io, mut server) = pair().await;
    prefixes(&mut server).await;
    server.send(message(4, b"data")).await.unwrap();
    let err = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(err.to_string().contains("channel 4"), "{err}");
}

#[tokio::test]
async fn shutdown_sends_what_is_gathered_then_closes() {
    let (mut io, mut server) = pair().await;
    io.write_all(b"last words").await.unwrap();
    io.shutdown().await.unwrap();
    assert_eq!(next_binary(&mut server).await, b"\0last words");
    let m = server.next().await.unwrap().unwrap();
    assert!(m.is_close(), "then the close: {m:?}");
    assert!(
        io.write(b"x").await.is_err(),
        "nothing is written after shutdown"
    );
}
