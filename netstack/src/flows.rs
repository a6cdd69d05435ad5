//! The userspace TCP/IP stack on the TUN device: every TCP connection the machine opens to a
//! routed address becomes one [`Dial`] and one smoltcp socket bridged to the dialed stream.
//!
//! One task ([`serve`]) owns the TUN device, the smoltcp `Interface` (IP medium, "any IP": it
//! answers for every routed destination) and every socket. Each turn of its loop:
//! 1. waits for a batch of packets from the TUN, a dial's answer, a flow's wake-up (its socket or
//!    its stream became ready, see [`bridge`]) or smoltcp's next timer;
//! 2. passes each packet through the SYN gate ([`syn_gate`]): a SYN of a new flow starts a dial
//!    (at most [`FlowConfig::max_dialing`] at once; past that the SYN is dropped and the client
//!    retransmits) and is held back; bad packets are dropped;
//! 3. for each successful dial, adds a socket listening on the destination and hands it the SYN
//!    (smoltcp answers SYN-ACK); for each refusal, writes a RST;
//! 4. polls the interface, pumps every woken flow, polls again for what they queued, and writes
//!    the packets out to the TUN.
//!
//! Memory: a flow holds two socket buffers of [`FlowConfig::buffer`] bytes (the receive buffer's
//! free space is the window the client sees, so it cannot push more), the bridge holds none; at
//! most [`FlowConfig::max_flows`] flows exist (past that a SYN is refused with RST). UDP (other
//! than DNS, which the local resolver answers on loopback) and ICMP are out of scope and dropped.

use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub mod bridge;
pub mod device;
pub mod syn_gate;

use crate::dial::{Dial, DialError};
use crate::tun_device::TunDevice;
use bridge::{Flow, ReadyFlows, Status};
use device::Queues;
use syn_gate::{FlowKey, Packet};

/// Limits of the flows (ktx exposes each as a flag).
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// TCP connections carried at once (dialing or open); past it, new ones are reset.
    pub max_flows: usize,
    /// Dials in progress at once; past it, new SYNs are dropped (the client retries).
    pub max_dialing: usize,
    /// A flow with no byte moving either way for this long is reset.
    pub idle: Duration,
    /// Each flow's receive and send buffer, in bytes: the most a client can have in flight to
    /// a destination that does not read (the window), and the most queued for a client that
    /// does not read. A flow costs twice this.
    pub buffer: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 4096,
            max_dialing: 256,
            idle: Duration::from_secs(3600),
            buffer: 256 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("invalid stack configuration: {0}")]
    Config(String),
    #[error("read from the TUN device: {0}")]
    Device(#[source] io::Error),
}

/// Packets read from the TUN per turn of the loop, at most.
const READ_BATCH: usize = 64;

/// Polls of the stack per turn, each followed by pumping the flows it woke.
const PUMP_ROUNDS: usize = 8;

/// How often idle flows are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// A dial's answer, back in the stack loop.
struct Dialed<S> {
    key: FlowKey,
    syn: Vec<u8>,
    seq: u32,
    result: Result<S, DialError>,
}

/// Serves the device until reading it fails (or the future is dropped).
pub async fn serve<D: Dial>(
    tun: TunDevice,
    dial: Arc<D>,
    config: FlowConfig,
) -> Result<(), FlowError> {
    if config.max_flows == 0 || config.max_dialing == 0 || config.buffer < 1024 {
        return Err(FlowError::Config(format!(
            "max_flows and max_dialing must be positive and buffer at least 1 KiB: {config:?}"
        )));
    }
    let mtu = usize::from(tun.mtu);
    if mtu < 576 {
        return Err(FlowError::Config(format!("MTU {mtu} is below 576")));
    }
    let mut device = tun.device;
    let mut queues = Queues::new(mtu);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut queues, now());
    // "any IP": the interface answers for whatever destination the routes sent into the TUN;
    // it needs an address of its own to exist, never used as a source.
    iface.set_any_ip(true);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(192, 0, 0, 8), 32));
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut flows: HashMap<SocketHandle, Flow<D::Stream>> = HashMap::new();
    let mut by_key: HashMap<FlowKey, SocketHandle> = HashMap::new();
    let mut dialing: HashSet<FlowKey> = HashSet::new();
    let mut resetting: Vec<SocketHandle> = Vec::new();
    let ready = Arc::new(ReadyFlows::default());
    let (dialed_tx, mut dialed_rx) = mpsc::unbounded_channel::<Dialed<D::Stream>>();
    let mut incoming: Vec<Vec<u8>> = Vec::with_capacity(READ_BATCH);
    let mut woken: Vec<SocketHandle> = Vec::new();
    let mut answers: Vec<Dialed<D::Stream>> = Vec::new();
    let mut syns: Vec<(FlowKey, u32, Vec<u8>)> = Vec::new();
    let mut next_sweep = Instant::now() + SWEEP;

    loop {
        // 1. wait
        let busy = queues.take_full();
        let delay = if busy {
            Duration::ZERO
        } else {
            iface
                .poll_delay(now(), &sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(SWEEP)
                .min(next_sweep.saturating_duration_since(Instant::now()))
        };
        tokio::select! {
            biased;
            read = read_batch(&mut device, &mut queues, &mut incoming, mtu) => {
                read.map_err(FlowError::Device)?;
            }
            Some(answer) = dialed_rx.recv() => answers.push(answer),
            () = ready.notify.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
        while let Ok(answer) = dialed_rx.try_recv() {
            answers.push(answer);
        }

        // 2. dials' answers: a socket for the flow, its SYN handed to it; or a RST
        for Dialed {
            key,
            syn,
            seq,
            result,
        } in answers.drain(..)
        {
            dialing.remove(&key);
            match result {
                Ok(stream) => {
                    let handle = sockets.add(socket_for(key, config.buffer));
                    queues.rx.push_back(syn);
                    // one SYN per poll: several sockets may listen on one destination, each must
                    // take its own client's SYN
                    iface.poll(now(), &mut queues, &mut sockets);
                    let socket = sockets.get_mut::<tcp::Socket>(handle);
                    let took = socket.state() == tcp::State::SynReceived
                        && socket.remote_endpoint() == Some(key.0.into());
                    if !took {
                        tracing::debug!(client = %key.0, dst = %key.1, state = %socket.state(), "flow: the stack did not take the SYN, dropping");
                        sockets.remove(handle);
                        continue;
                    }
                    let mut flow = Flow::new(key, stream, handle, ready.clone());
                    flow.pump(socket);
                    flows.insert(handle, flow);
                    by_key.insert(key, handle);
                }
                Err(e) => {
                    tracing::debug!(client = %key.0, dst = %key.1, error = %e, "flow: dial failed, refusing");
                    if let Some(rst) = syn_gate::reset_for(key, seq) {
                        queues.tx.push_back(rst);
                    }
                }
            }
        }

        // 3. the packets read, through the SYN gate
        for packet in incoming.drain(..) {
            match syn_gate::classify(&packet) {
                Packet::Drop => queues.recycle(packet),
                Packet::Segment { .. } => queues.rx.push_back(packet),
                Packet::Syn { key, .. } if by_key.contains_key(&key) => queues.rx.push_back(packet),
                Packet::Syn { key, .. } if dialing.contains(&key) => queues.recycle(packet),
                Packet::Syn { key, seq } => syns.push((key, seq, packet)),
            }
        }

        // 4. the stack, then the flows it woke, then the stack again for what they queued
        for _ in 0..PUMP_ROUNDS {
            iface.poll(now(), &mut queues, &mut sockets);
            resetting.retain(|&handle| {
                // an aborted socket is removed once its RST went out
                let sent = sockets
                    .get::<tcp::Socket>(handle)
                    .remote_endpoint()
                    .is_none();
                if sent {
                    sockets.remove(handle);
                }
                !sent
            });
            ready.take(&mut woken);
            if woken.is_empty() {
                break;
            }
            for handle in woken.drain(..) {
                let Some(flow) = flows.get_mut(&handle) else {
                    continue;
                };
                let socket = sockets.get_mut::<tcp::Socket>(handle);
                let status = flow.pump(socket);
                if status == Status::Open {
                    continue;
                }
                let flow = flows.remove(&handle).expect("the flow was just pumped");
                by_key.remove(&flow.key);
                tracing::debug!(client = %flow.key.0, dst = %flow.key.1, up = flow.up, down = flow.down, ?status, "flow: done");
                if status == Status::ResetByDestination {
                    resetting.push(handle);
                } else {
                    sockets.remove(handle);
                }
            }
        }

        // 5. new flows, judged once the flows that just ended were removed
        for (key, seq, packet) in syns.drain(..) {
            if dialing.contains(&key) || by_key.contains_key(&key) {
                // a retransmission in the same batch
                queues.recycle(packet);
            } else if flows.len() + dialing.len() >= config.max_flows {
                tracing::debug!(client = %key.0, dst = %key.1, "flow: too many flows, refusing");
                if let Some(rst) = syn_gate::reset_for(key, seq) {
                    queues.tx.push_back(rst);
                }
                queues.recycle(packet);
            } else if dialing.len() >= config.max_dialing {
                tracing::debug!(client = %key.0, dst = %key.1, "flow: too many dials, dropping the SYN");
                queues.recycle(packet);
            } else {
                dialing.insert(key);
                let (dial, tx) = (dial.clone(), dialed_tx.clone());
                tokio::spawn(async move {
                    let result = dial.dial(key.1).await;
                    let _ = tx.send(Dialed {
                        key,
                        syn: packet,
                        seq,
                        result,
                    });
                });
            }
        }

        // 6. out to the machine
        while let Some(packet) = queues.tx.pop_front() {
            if let Err(e) = device.send(&packet).await {
                tracing::debug!(error = %e, "tun: write failed, packet dropped");
            }
            queues.recycle_tx(packet);
        }

        // 7. idle flows
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP;
            let expired: Vec<SocketHandle> = flows
                .iter()
                .filter(|(_, f)| f.last_active.elapsed() >= config.idle)
                .map(|(h, _)| *h)
                .collect();
            for handle in expired {
                if let Some(flow) = flows.remove(&handle) {
                    tracing::debug!(client = %flow.key.0, dst = %flow.key.1, "flow: idle, resetting");
                    by_key.remove(&flow.key);
                    sockets.get_mut::<tcp::Socket>(handle).abort();
                    resetting.push(handle);
                }
            }
        }
    }
}

/// A socket listening on the flow's destination, for the flow's SYN.
fn socket_for((_, dst): FlowKey, buffer: usize) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; buffer]),
        tcp::SocketBuffer::new(vec![0u8; buffer]),
    );
    // a relay: never hold bytes back (Nagle) nor ACKs (the window is what bounds the client)
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(None);
    let endpoint = IpListenEndpoint {
        addr: Some(dst.ip().into()),
        port: dst.port(),
    };
    if let Err(e) = socket.listen(endpoint) {
        tracing::debug!(%dst, error = %e, "flow: listen failed");
    }
    socket
}

/// Reads up to [`READ_BATCH`] packets: waits for the first, takes the rest that are ready.
async fn read_batch(
    device: &mut tun::AsyncDevice,
    queues: &mut Queues,
    into: &mut Vec<Vec<u8>>,
    mtu: usize,
) -> io::Result<()> {
    poll_fn(|cx| loop {
        let mut buf = queues.buffer();
        buf.resize(mtu + 64, 0);
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *device).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                buf.truncate(n);
                into.push(buf);
                if into.len() >= READ_BATCH {
                    return Poll::Ready(Ok(()));
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                queues.recycle(buf);
                return if into.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(()))
                };
            }
        }
    })
    .await
}

fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}
