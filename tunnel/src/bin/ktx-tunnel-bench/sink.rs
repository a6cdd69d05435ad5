//! `sink`: the developer's process stand-in. The first byte of a connection picks the mode:
//! `D` + u64 (big endian): send that many bytes, then close; `U` + u64: read that many bytes,
//! answer `ok`, close; `E`: echo until EOF.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 * 1024;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve(s).await;
        });
    }
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut op = [0u8; 1];
    s.read_exact(&mut op).await?;
    match op[0] {
        b'D' => {
            let n = s.read_u64().await?;
            let buf = vec![0x5a; CHUNK];
            let mut left = n;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                s.write_all(&buf[..k]).await?;
                left -= k as u64;
            }
            s.shutdown().await
        }
        b'U' => {
            let n = s.read_u64().await?;
            let mut buf = vec![0; CHUNK];
            let mut left = n;
            while left > 0 {
                let k = s.read(&mut buf[..left.min(CHUNK as u64) as usize]).await?;
                if k == 0 {
                    break;
                }
                left -= k as u64;
            }
            s.write_all(b"ok").await?;
            s.shutdown().await
        }
        b'E' => {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        _ => Ok(()),
    }
}
