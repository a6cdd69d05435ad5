//! The stack's view of the TUN device: two packet queues.
//!
//! smoltcp is poll-driven and never does I/O itself. The stack loop reads a batch of packets from
//! the TUN into [`Queues::rx`] (after the SYN gate looked at them), polls the interface, and
//! writes what it queued in [`Queues::tx`] back to the TUN. `tx` is bounded: once it holds
//! [`TX_QUEUE`] packets, `transmit` says "no room" and smoltcp keeps the rest in its socket
//! buffers until the loop has flushed (a reply to a received packet may exceed it by the batch
//! size). Buffers are recycled so a steady flow allocates nothing.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Packets smoltcp may queue for the TUN before it must wait for a flush.
pub const TX_QUEUE: usize = 256;

/// Recycled buffers kept at most.
const POOL: usize = 512;

pub struct Queues {
    mtu: usize,
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    tx_pool: Vec<Vec<u8>>,
    /// `transmit` refused for lack of room since the last [`Queues::take_full`].
    full: bool,
}

impl Queues {
    pub fn new(mtu: usize) -> Self {
        Queues {
            mtu,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: Vec::new(),
            tx_pool: Vec::new(),
            full: false,
        }
    }

    /// A buffer for one packet (empty, with room for one MTU).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.mtu))
    }

    /// Returns a buffer to the pool.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Returns a sent packet's buffer for smoltcp's next one.
    pub fn recycle_tx(&mut self, mut buf: Vec<u8>) {
        if self.tx_pool.len() < POOL {
            buf.clear();
            self.tx_pool.push(buf);
        }
    }

    /// True once if smoltcp had more to send than [`TX_QUEUE`] allowed.
    pub fn take_full(&mut self) -> bool {
        std::mem::take(&mut self.full)
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                pool: &mut self.pool,
            },
            TxToken {
                tx: &mut self.tx,
                pool: &mut self.tx_pool,
                mtu: self.mtu,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        if self.tx.len() >= TX_QUEUE {
            self.full = true;
            return None;
        }
        Some(TxToken {
            tx: &mut self.tx,
            pool: &mut self.tx_pool,
            mtu: self.mtu,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // checksums: verified on receive, computed on send (the defaults)
        caps
    }
}

pub struct RxToken<'a> {
    packet: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet);
        if self.pool.len() < POOL {
            let mut packet = self.packet;
            packet.clear();
            self.pool.push(packet);
        }
        r
    }
}

pub struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
    mtu: usize,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self
            .pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(len.max(self.mtu)));
        packet.resize(len, 0);
        let r = f(&mut packet);
        self.tx.push_back(packet);
        r
    }
}
