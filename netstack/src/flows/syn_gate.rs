//! Holds each new connection's SYN until its dial has an answer.
//!
//! `ipstack` answers a SYN at once. To connect the machine's client only when the cluster side
//! accepted, this wrapper sits between the TUN device and the stack: a SYN for a new flow is kept
//! back while [`Dial`] runs; when the dial succeeds the stream is parked for the stack's accept
//! loop and the SYN is handed to the stack (which answers SYN-ACK); when it fails, the wrapper
//! writes a RST+ACK for the SYN back to the device, so `connect()` fails with "connection
//! refused" at once (`curl` exits in milliseconds rather than after a hang). Retransmitted SYNs
//! of a flow still dialing are dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::dial::Dial;

/// (client, destination)
pub type FlowKey = (SocketAddr, SocketAddr);

type ParkedMap<S> = HashMap<FlowKey, (S, OwnedSemaphorePermit, Instant)>;

/// Dialed streams waiting for the stack to accept their flow (with their flow slot).
pub struct Parked<S> {
    map: Mutex<ParkedMap<S>>,
}

impl<S> Default for Parked<S> {
    fn default() -> Self {
        Parked {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<S> Parked<S> {
    /// Takes the stream dialed for `key`, dropping any parked longer than `stale`.
    pub fn take(&self, key: &FlowKey, stale: Duration) -> Option<(S, OwnedSemaphorePermit)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, _, at)| at.elapsed() < stale);
        map.remove(key).map(|(s, p, _)| (s, p))
    }

    fn put(&self, key: FlowKey, stream: S, permit: OwnedSemaphorePermit) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, (stream, permit, Instant::now()));
    }
}

enum Verdict {
    /// Hand this SYN to the stack.
    Admit(Vec<u8>),
    /// Write this RST back to the machine.
    Refuse(Vec<u8>),
}

/// The device as the stack sees it.
pub struct SynGate<T, D: Dial> {
    inner: T,
    dial: Arc<D>,
    parked: Arc<Parked<D::Stream>>,
    slots: Arc<Semaphore>,
    dialing: HashSet<FlowKey>,
    verdicts_tx: mpsc::UnboundedSender<(FlowKey, Verdict)>,
    verdicts: mpsc::UnboundedReceiver<(FlowKey, Verdict)>,
    admit: VecDeque<Vec<u8>>,
    refuse: VecDeque<Vec<u8>>,
}

impl<T, D: Dial> SynGate<T, D> {
    pub fn new(
        inner: T,
        dial: Arc<D>,
        parked: Arc<Parked<D::Stream>>,
        slots: Arc<Semaphore>,
    ) -> Self {
        let (verdicts_tx, verdicts) = mpsc::unbounded_channel();
        SynGate {
            inner,
            dial,
            parked,
            slots,
            dialing: HashSet::new(),
            verdicts_tx,
            verdicts,
            admit: VecDeque::new(),
            refuse: VecDeque::new(),
        }
    }
}

/// A TCP SYN (without ACK): its flow key and sequence number.
fn new_flow(packet: &[u8]) -> Option<(FlowKey, u32)> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    if !tcp.syn() || tcp.ack() || tcp.rst() {
        return None;
    }
    let key = (
        SocketAddr::new(src, tcp.source_port()),
        SocketAddr::new(dst, tcp.destination_port()),
    );
    Some((key, tcp.sequence_number()))
}

/// The RST+ACK that refuses a SYN, from the destination to the client.
fn reset_for((client, dst): FlowKey, seq: u32) -> Option<Vec<u8>> {
    let builder = match (dst.ip(), client.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => PacketBuilder::ipv4(from.octets(), to.octets(), 64),
        (IpAddr::V6(from), IpAddr::V6(to)) => PacketBuilder::ipv6(from.octets(), to.octets(), 64),
        _ => return None,
    };
    let builder = builder
        .tcp(dst.port(), client.port(), 0, 0)
        .rst()
        .ack(seq.wrapping_add(1));
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).ok()?;
    Some(out)
}

impl<T: AsyncWrite + Unpin, D: Dial> SynGate<T, D> {
    fn flush_refusals(&mut self, cx: &mut Context<'_>) {
        while let Some(rst) = self.refuse.front() {
            match Pin::new(&mut self.inner).poll_write(cx, rst) {
                Poll::Pending => return,
                Poll::Ready(_) => {
                    self.refuse.pop_front();
                }
            }
        }
    }

    fn start_dial(&mut self, key: FlowKey, seq: u32, syn: Vec<u8>) {
        let Some(rst) = reset_for(key, seq) else {
            return;
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(client = %key.0, dst = %key.1, "flow: too many flows, refusing");
            self.refuse.push_back(rst);
            return;
        };
        self.dialing.insert(key);
        let (dial, parked, tx) = (
            self.dial.clone(),
            self.parked.clone(),
            self.verdicts_tx.clone(),
        );
        tokio::spawn(async move {
            let verdict = match dial.dial(key.1).await {
                Ok(stream) => {
                    parked.put(key, stream, permit);
                    Verdict::Admit(syn)
                }
                Err(e) => {
                    tracing::debug!(client = %key.0, dst = %key.1, error = %e, "flow: dial failed, refusing");
                    Verdict::Refuse(rst)
                }
            };
            let _ = tx.send((key, verdict));
        });
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, D: Dial> AsyncRead for SynGate<T, D> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            while let Poll::Ready(Some((key, verdict))) = this.verdicts.poll_recv(cx) {
                this.dialing.remove(&key);
                match verdict {
                    Verdict::Admit(syn) => this.admit.push_back(syn),
                    Verdict::Refuse(rst) => this.refuse.push_back(rst),
                }
            }
            this.flush_refusals(cx);
            if let Some(syn) = this.admit.pop_front() {
                if syn.len() <= buf.remaining() {
                    buf.put_slice(&syn);
                }
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let packet = &buf.filled()[before..];
                    let Some((key, seq)) = new_flow(packet) else {
                        return Poll::Ready(Ok(()));
                    };
                    let syn = packet.to_vec();
                    buf.set_filled(before);
                    if !this.dialing.contains(&key) {
                        this.start_dial(key, seq, syn);
                    }
                    // held back (or a retransmission while dialing): read on
                }
                other => return other,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin, D: Dial> AsyncWrite for SynGate<T, D> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_answers_the_syn() {
        let syn = PacketBuilder::ipv4([10, 251, 0, 1], [10, 250, 0, 1], 64)
            .tcp(40000, 7999, 1234, 64240)
            .syn();
        let mut packet = Vec::new();
        syn.write(&mut packet, &[]).unwrap();
        let (key, seq) = new_flow(&packet).expect("a SYN");
        assert_eq!(key.1, "10.250.0.1:7999".parse().unwrap());
        let rst = reset_for(key, seq).unwrap();
        let sliced = SlicedPacket::from_ip(&rst).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("tcp")
        };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (7999, 40000));
        assert_eq!(tcp.acknowledgment_number(), 1235);
        assert!(new_flow(&rst).is_none(), "a RST is not a new flow");
        assert!(new_flow(b"\x45garbage").is_none());
    }
}
