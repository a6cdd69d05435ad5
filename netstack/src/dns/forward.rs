//! Relays queries that are not cluster names to the previous resolvers, byte for byte.
//!
//! Each upstream gets `forward_timeout`; the first answer whose id matches wins. At most
//! `max_forwards` relays run at once; past that the client gets SERVFAIL at once (UDP) or the
//! connection is closed (TCP), so a dead upstream cannot pile up tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::DnsConfig;

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Forwarder {
    pub fn new(config: &DnsConfig) -> Self {
        Forwarder {
            upstreams: config
                .upstreams
                .iter()
                .copied()
                .filter(|u| *u != config.listen)
                .collect(),
            timeout: config.forward_timeout,
            slots: Arc::new(Semaphore::new(config.max_forwards)),
        }
    }

    /// The upstream's answer, or SERVFAIL when none answered (None: the query had no id).
    pub async fn udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        let id = query.get(..2)?;
        let Ok(_slot) = self.slots.try_acquire() else {
            return servfail(query);
        };
        for &upstream in &self.upstreams {
            let attempt = async {
                let bind: SocketAddr = if upstream.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(bind).await.ok()?;
                sock.connect(upstream).await.ok()?;
                sock.send(query).await.ok()?;
                let mut buf = vec![0u8; 65535];
                loop {
                    let n = sock.recv(&mut buf).await.ok()?;
                    if buf.get(..2) == Some(id) {
                        return Some(buf[..n].to_vec());
                    }
                }
            };
            if let Ok(Some(answer)) = tokio::time::timeout(self.timeout, attempt).await {
                return Some(answer);
            }
            tracing::debug!(%upstream, "dns: upstream did not answer");
        }
        servfail(query)
    }

    /// The upstream's answer over TCP, or SERVFAIL.
    pub async fn tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        let Ok(_slot) = self.slots.try_acquire() else {
            return servfail(query);
        };
        let framed = super::tcp_framed(query)?;
        for &upstream in &self.upstreams {
            let attempt = async {
                let mut conn = TcpStream::connect(upstream).await.ok()?;
                conn.write_all(&framed).await.ok()?;
                let n = conn.read_u16().await.ok()?;
                let mut answer = vec![0u8; usize::from(n)];
                conn.read_exact(&mut answer).await.ok()?;
                Some(answer)
            };
            if let Ok(Some(answer)) = tokio::time::timeout(self.timeout, attempt).await {
                return Some(answer);
            }
            tracing::debug!(%upstream, "dns: upstream did not answer over TCP");
        }
        servfail(query)
    }
}

fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut out = Message::error_msg(
        msg.metadata.id,
        msg.metadata.op_code,
        ResponseCode::ServFail,
    );
    out.metadata.recursion_desired = msg.metadata.recursion_desired;
    out.add_queries(msg.queries);
    out.to_vec().ok()
}
