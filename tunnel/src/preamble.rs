//! Reading and writing preamble frames on the TLS stream: the async shell around
//! [`crate::proto::frame`].
//!
//! Reads are exact (header, then body), so the HTTP/2 bytes that follow the preamble stay in
//! the stream for h2.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::frame::{decode, Decoded, Frame, FrameError, HEADER_LEN};

/// The preamble could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("read the preamble: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Writes frames as one TLS record and flushes.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Frame],
) -> std::io::Result<()> {
    let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    io.write_all(&bytes).await?;
    io.flush().await
}

/// Reads exactly one frame.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Result<Frame, PreambleError> {
    let mut buf = Vec::with_capacity(64);
    let mut need = HEADER_LEN;
    loop {
        let start = buf.len();
        buf.resize(need, 0);
        io.read_exact(&mut buf[start..]).await?;
        match decode(&buf)? {
            Decoded::Complete { frame, .. } => return Ok(frame),
            Decoded::Incomplete { needed } => need = needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{Accept, Hello, Role};
    use crate::proto::VersionRange;

    #[tokio::test]
    async fn reads_one_frame_and_leaves_the_rest() {
        let hello = Frame::Hello(Hello {
            role: Role::Shadow,
            protocol: VersionRange::CURRENT,
            software: "ktx-shadow 0.1.0".into(),
            purpose: None,
        });
        let accept = Frame::Accept(Accept { version: 1 });
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frames(&mut a, &[hello.clone(), accept.clone()])
            .await
            .unwrap();
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), hello);
        assert_eq!(read_frame(&mut b).await.unwrap(), accept);
        let mut rest = [0u8; 14];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn an_http2_client_is_not_a_peer() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert!(
            matches!(err, PreambleError::Frame(FrameError::BadMagic(_))),
            "{err}"
        );
    }
}
