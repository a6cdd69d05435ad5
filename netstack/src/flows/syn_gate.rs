//! Reads each packet from the machine before the stack does: a SYN of a new flow is held back
//! until its dial has an answer, and a refused dial is answered with a RST crafted here.
//!
//! A TCP stack answers a SYN at once. To connect the machine's client only when the cluster side
//! accepted, [`classify`] tells the stack loop which packets open a flow; the loop dials, and only
//! on success creates the socket and hands it the (possibly retransmitted) SYN. On refusal,
//! [`reset_for`] is written back to the device so `connect()` fails with "connection refused" at
//! once (`curl` exits in milliseconds rather than after a hang).
//!
//! Every packet is checked here (IP header checksum, TCP checksum over the pseudo-header): the
//! kernel hands the TUN what a local process wrote, so a bad packet is a bug or an attack, and is
//! dropped, never a panic. Only TCP over IPv4 or IPv6 (no extension headers) goes further.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, IpRepr, Ipv4Packet, Ipv6Packet, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

/// (client, destination)
pub type FlowKey = (SocketAddr, SocketAddr);

/// What one packet from the machine is, for the stack loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A SYN without ACK: opens the flow `key`, client sequence number `seq`.
    Syn { key: FlowKey, seq: u32 },
    /// Any other valid TCP segment of flow `key`; `rst` when it resets the flow.
    Segment { key: FlowKey },
    /// Not TCP, malformed, or a bad checksum: dropped.
    Drop,
}

/// Classifies one IP packet read from the device.
pub fn classify(packet: &[u8]) -> Packet {
    let Some((src, dst, tcp)) = tcp_of(packet) else {
        return Packet::Drop;
    };
    let Ok(seg) = TcpPacket::new_checked(tcp) else {
        return Packet::Drop;
    };
    if !seg.verify_checksum(&src, &dst) {
        return Packet::Drop;
    }
    let key = (
        SocketAddr::new(src.into(), seg.src_port()),
        SocketAddr::new(dst.into(), seg.dst_port()),
    );
    if seg.syn() && !seg.ack() && !seg.rst() {
        Packet::Syn {
            key,
            seq: seg.seq_number().0 as u32,
        }
    } else {
        Packet::Segment { key }
    }
}

/// The addresses and the TCP bytes of a checked IP packet carrying TCP.
fn tcp_of(packet: &[u8]) -> Option<(IpAddress, IpAddress, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if !ip.verify_checksum() || ip.next_header() != IpProtocol::Tcp || ip.more_frags() {
                return None;
            }
            if ip.frag_offset() != 0 {
                return None;
            }
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            Some((src, dst, ip.payload()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            Some((src, dst, ip.payload()))
        }
        _ => None,
    }
}

/// The RST+ACK that refuses a SYN, from the destination to the client.
pub fn reset_for((client, dst): FlowKey, seq: u32) -> Option<Vec<u8>> {
    let (from, to): (IpAddress, IpAddress) = match (dst.ip(), client.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => (from.into(), to.into()),
        (IpAddr::V6(from), IpAddr::V6(to)) => (from.into(), to.into()),
        _ => return None,
    };
    let tcp = TcpRepr {
        src_port: dst.port(),
        dst_port: client.port(),
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(TcpSeqNumber(seq.wrapping_add(1) as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    Some(packet(from, to, &tcp))
}

/// One IP packet (version after `from`, TTL 64) carrying `tcp`, checksums computed.
pub fn packet(from: IpAddress, to: IpAddress, tcp: &TcpRepr) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let ip = IpRepr::new(from, to, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out[..], &caps);
    let header = ip.header_len();
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut out[header..]),
        &from,
        &to,
        &caps,
    );
    out
}

/// Rewrites a data segment (no SYN, FIN or RST) into the same segment without its payload: a pure
/// ACK with the segment's sequence number, window and options. False (and the packet untouched)
/// for anything else. Checksums are computed anew.
///
/// For a flow whose receive window is closed: smoltcp drops a data segment it has no room for
/// *with its ACK* (RFC 9293 3.10.7.4 says to "make special allowance to accept valid ACKs"). A
/// client that has data pending sends its ACKs on exactly those segments, so the ACK for what the
/// stack sent never lands, the stack's send buffer stays full, the destination is not read, and
/// the destination stops reading what the stack writes: both directions stall for good. Without
/// the payload (which the stack would drop anyway), smoltcp takes the segment as an ACK.
pub fn strip_payload(packet: &mut Vec<u8>) -> bool {
    let caps = ChecksumCapabilities::default();
    let Some((src, dst, tcp)) = tcp_of(packet) else {
        return false;
    };
    let Ok(seg) = TcpPacket::new_checked(tcp) else {
        return false;
    };
    let Ok(mut repr) = TcpRepr::parse(&seg, &src, &dst, &caps) else {
        return false;
    };
    if repr.payload.is_empty() || !matches!(repr.control, TcpControl::None | TcpControl::Psh) {
        return false;
    }
    repr.payload = &[];
    repr.control = TcpControl::None;
    *packet = self::packet(src, dst, &repr);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(src: &str, dst: &str, seq: u32) -> Vec<u8> {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (from, to): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
        let tcp = TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: None,
            window_len: 64240,
            window_scale: Some(7),
            max_seg_size: Some(1460),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        packet(from, to, &tcp)
    }

    #[test]
    fn a_refusal_answers_the_syn() {
        let packet = syn("10.251.0.1:40000", "10.250.0.1:7999", 1234);
        let Packet::Syn { key, seq } = classify(&packet) else {
            panic!("a SYN: {:?}", classify(&packet))
        };
        assert_eq!(key.1, "10.250.0.1:7999".parse().unwrap());
        assert_eq!(seq, 1234);
        let rst = reset_for(key, seq).unwrap();
        let Packet::Segment { key: back } = classify(&rst) else {
            panic!("a valid segment: {:?}", classify(&rst))
        };
        assert_eq!(back, (key.1, key.0));
        let ip = Ipv4Packet::new_checked(&rst[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.src_port(), tcp.dst_port()), (7999, 40000));
        assert_eq!(tcp.ack_number().0, 1235);
    }

    #[test]
    fn ipv6_syns_are_classified_and_refused() {
        let packet = syn("[fd00::1]:40000", "[fd00::2]:80", u32::MAX);
        let Packet::Syn { key, seq } = classify(&packet) else {
            panic!("a SYN")
        };
        let rst = reset_for(key, seq).unwrap();
        assert!(matches!(classify(&rst), Packet::Segment { .. }));
    }

    #[test]
    fn bad_packets_are_dropped_not_trusted() {
        let good = syn("10.251.0.1:40000", "10.250.0.1:80", 7);
        let mut bad_tcp = good.clone();
        let last = bad_tcp.len() - 1;
        bad_tcp[last] ^= 0xff;
        assert_eq!(classify(&bad_tcp), Packet::Drop, "TCP checksum");
        let mut bad_ip = good.clone();
        bad_ip[8] ^= 0x01; // TTL: breaks the header checksum
        assert_eq!(classify(&bad_ip), Packet::Drop, "IP checksum");
        assert_eq!(classify(b"\x45garbage"), Packet::Drop);
        assert_eq!(classify(&[]), Packet::Drop);
        assert_eq!(classify(&good[..good.len() - 3]), Packet::Drop, "truncated");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_classify_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = classify(&bytes);
        }
    }
}
