//! SOCKS5 (RFC 1928): CONNECT only, no authentication, addresses or domain names (resolved by
//! the proxy, as `socks5h://` clients expect).

use std::net::{Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{connect, ConnectError};
use crate::dial::{Dial, DialError};
use crate::names::NameTable;

const VERSION: u8 = 0x05;
const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;

/// Reply codes (RFC 1928 §6).
pub const SUCCEEDED: u8 = 0x00;
pub const GENERAL_FAILURE: u8 = 0x01;
pub const NOT_ALLOWED: u8 = 0x02;
pub const HOST_UNREACHABLE: u8 = 0x04;
pub const CONNECTION_REFUSED: u8 = 0x05;
pub const TTL_EXPIRED: u8 = 0x06;
pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
pub const ADDRESS_NOT_SUPPORTED: u8 = 0x08;

/// The reply code for a failed connect.
pub fn reply_code(err: &ConnectError) -> u8 {
    match err {
        ConnectError::NoSuchHost { .. } => HOST_UNREACHABLE,
        ConnectError::Dial(DialError::Refused { .. }) => CONNECTION_REFUSED,
        ConnectError::Dial(DialError::Unreachable { .. }) => TTL_EXPIRED,
        ConnectError::Dial(DialError::Forbidden { .. }) => NOT_ALLOWED,
        ConnectError::Dial(DialError::Down { .. }) => GENERAL_FAILURE,
    }
}

/// What the client asked, once its negotiation and request are read.
enum Asked {
    Connect {
        host: String,
        port: u16,
    },
    /// A request the proxy answers with this code and no dial.
    Reply(u8),
    /// Nothing to answer (no acceptable method, or a request that is not SOCKS5).
    Nothing,
}

/// Negotiates (within `deadline`: the client's bytes only), connects (bounded by the dial's
/// own timeout) and replies; `None` when the client got an error reply.
pub async fn handshake<D: Dial>(
    conn: &mut TcpStream,
    dial: &D,
    names: &NameTable,
    deadline: tokio::time::Instant,
) -> std::io::Result<Option<D::Stream>> {
    let asked = tokio::time::timeout_at(deadline, read_request(conn))
        .await
        .map_err(|_| super::handshake_timed_out())??;
    let (host, port) = match asked {
        Asked::Connect { host, port } => (host, port),
        Asked::Reply(code) => return reply::<D>(conn, code).await,
        Asked::Nothing => return Ok(None),
    };
    match connect(dial, names, &host, port).await {
        Ok(remote) => {
            reply::<D>(conn, SUCCEEDED).await?;
            Ok(Some(remote))
        }
        Err(e) => {
            tracing::debug!(%host, port, error = %e, "socks5: connect failed");
            reply::<D>(conn, reply_code(&e)).await
        }
    }
}

async fn read_request(conn: &mut TcpStream) -> std::io::Result<Asked> {
    let [_version, n_methods] = read_array(conn).await?;
    let mut methods = vec![0u8; usize::from(n_methods)];
    conn.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        conn.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
        return Ok(Asked::Nothing);
    }
    conn.write_all(&[VERSION, NO_AUTH]).await?;

    let [version, cmd, _reserved, atyp] = read_array(conn).await?;
    if version != VERSION {
        return Ok(Asked::Nothing);
    }
    let host = match atyp {
        0x01 => Ipv4Addr::from(read_array::<4>(conn).await?).to_string(),
        0x04 => Ipv6Addr::from(read_array::<16>(conn).await?).to_string(),
        0x03 => {
            let [len] = read_array(conn).await?;
            let mut name = vec![0u8; usize::from(len)];
            conn.read_exact(&mut name).await?;
            match String::from_utf8(name) {
                Ok(name) => name,
                Err(_) => return Ok(Asked::Reply(ADDRESS_NOT_SUPPORTED)),
            }
        }
        _ => return Ok(Asked::Reply(ADDRESS_NOT_SUPPORTED)),
    };
    let port = u16::from_be_bytes(read_array(conn).await?);
    if cmd != CMD_CONNECT {
        return Ok(Asked::Reply(COMMAND_NOT_SUPPORTED));
    }
    Ok(Asked::Connect { host, port })
}

async fn reply<D: Dial>(conn: &mut TcpStream, code: u8) -> std::io::Result<Option<D::Stream>> {
    // BND.ADDR/BND.PORT: 0.0.0.0:0, clients do not use them for CONNECT.
    conn.write_all(&[VERSION, code, 0, 0x01, 0, 0, 0, 0, 0, 0])
        .await?;
    Ok(None)
}

async fn read_array<const N: usize>(conn: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    conn.read_exact(&mut buf).await?;
    Ok(buf)
}
