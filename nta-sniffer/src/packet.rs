//! Synthesizes the IP and TCP/UDP headers a descriptor implies.
//!
//! # Design notes
//!
//! The pool holds payloads, not packets: what went over the wire (or came
//! from it) was a stream of bytes or a datagram. To make a pcap that
//! Wireshark dissects, each payload gets an IPv4 or IPv6 header and a TCP
//! or UDP header built from the descriptor's flow, with correct checksums.
//! The headers are written in place, by hand (they are fixed 20- and
//! 40-byte layouts; the tests parse them back with etherparse), and the
//! checksums come from [`crate::checksum`]: this runs once per packet at
//! hundreds of thousands of packets a second. Received buffers go peer → local,
//! transmitted ones local → peer.
//!
//! The payload is copied from shared memory straight into a packet buffer
//! at [`HEADROOM`], and the headers are written in front of it afterwards
//! ([`write_headers`]), so the payload is copied once. IP's 16-bit length
//! limits a packet to 65535 bytes; longer payloads are split into pieces of
//! at most [`MAX_PIECE`] bytes (each piece then needs a copy of its own).

use std::net::IpAddr;

use etherparse::IpNumber;

use crate::checksum;

const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;

/// Room in front of a payload for the largest headers (IPv6 + TCP).
pub const HEADROOM: usize = IPV6_LEN + TCP_LEN;

/// Largest payload in one synthesized packet.
pub const MAX_PIECE: usize = 65_000;

/// Who sent the packet to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Ends {
    /// The other direction.
    pub fn reversed(&self) -> Ends {
        Ends { src: self.dst, dst: self.src, src_port: self.dst_port, dst_port: self.src_port }
    }
}

/// The transport header to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP with these fields.
    Tcp {
        /// Sequence number of the first payload byte.
        seq: u32,
        /// Acknowledgment number (`None`: the ACK flag is clear).
        ack: Option<u32>,
        /// SYN flag.
        syn: bool,
        /// PSH flag.
        psh: bool,
    },
    /// UDP.
    Udp,
}

/// The ones'-complement sum of `v`'s big-endian 16-bit words (an address,
/// or a 32-bit TCP field), as [`checksum::add`] of its bytes would count.
#[inline]
fn words_sum(v: u128) -> u64 {
    (0..8).map(|i| (v >> (16 * i)) as u64 & 0xffff).sum()
}

/// Writes the headers for the payload in `buf[HEADROOM..]` into the bytes
/// just before it; returns where the packet starts. `payload_sum`, when
/// given, is the payload's [`checksum::add`] sum from 0, taken by the
/// caller (the reader sums a payload as it copies it); otherwise it is
/// summed here. Fails if the payload
/// is longer than [`MAX_PIECE`], `buf` has no headroom, or the two
/// addresses are of different families. No allocation: the headers are
/// written in place and the checksums summed with [`checksum`].
pub fn write_headers(
    buf: &mut [u8],
    ends: &Ends,
    transport: &Transport,
    payload_sum: Option<u64>,
) -> Result<usize, String> {
    if buf.len() < HEADROOM || buf.len() - HEADROOM > MAX_PIECE {
        return Err(format!("packet buffer of {} bytes", buf.len()));
    }
    let (head, payload) = buf.split_at_mut(HEADROOM);
    let payload_sum = payload_sum.unwrap_or_else(|| checksum::add(0, payload));
    headers_for(head.try_into().expect("HEADROOM bytes"), payload.len(), ends, transport, payload_sum)
}

/// Writes, at the end of `head`, the headers for a payload of
/// `payload_len` bytes whose [`checksum::add`] sum from 0 is `payload_sum`
/// and which lies elsewhere (the pcap writer leaves a held payload where
/// it is in the pool); returns where in `head` the headers start. Fails as
/// [`write_headers`] does.
pub fn headers_for(
    head: &mut [u8; HEADROOM],
    payload_len: usize,
    ends: &Ends,
    transport: &Transport,
    payload_sum: u64,
) -> Result<usize, String> {
    if payload_len > MAX_PIECE {
        return Err(format!("payload of {payload_len} bytes"));
    }
    let (number, transport_len) = match transport {
        Transport::Tcp { .. } => (IpNumber::TCP.0, TCP_LEN),
        Transport::Udp => (IpNumber::UDP.0, UDP_LEN),
    };
    let l4_len = transport_len + payload_len;
    // The pseudo-header's sum: addresses, protocol, transport length.
    let (ip_len, pseudo) = match (ends.src, ends.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let ip = &mut head[HEADROOM - transport_len - IPV4_LEN..HEADROOM - transport_len];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((IPV4_LEN + l4_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]);
            ip[6..8].copy_from_slice(&[0x40, 0]); // don't fragment
            ip[8] = 64;
            ip[9] = number;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let addrs = words_sum(u32::from(src).into()) + words_sum(u32::from(dst).into());
            let fields = 0x4500 + (IPV4_LEN + l4_len) as u64 + 0x4000 + (64 << 8 | u64::from(number));
            ip[10..12].copy_from_slice(&checksum::finish(fields + addrs).to_be_bytes());
            (IPV4_LEN, addrs + u64::from(number) + l4_len as u64)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let ip = &mut head[HEADROOM - transport_len - IPV6_LEN..HEADROOM - transport_len];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = number;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            let addrs = words_sum(src.into()) + words_sum(dst.into());
            (IPV6_LEN, addrs + u64::from(number) + l4_len as u64)
        }
        _ => return Err("source and destination are of different address families".into()),
    };
    let l4 = &mut head[HEADROOM - transport_len..];
    l4[0..2].copy_from_slice(&ends.src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&ends.dst_port.to_be_bytes());
    let ports = u64::from(ends.src_port) + u64::from(ends.dst_port);
    let (at, fields) = match *transport {
        Transport::Tcp { seq, ack, syn, psh } => {
            let ack = ack.map(|a| (a, 1u8));
            let (ack_no, ack_flag) = ack.unwrap_or((0, 0));
            let flags = ack_flag << 4 | u8::from(psh) << 3 | u8::from(syn) << 1;
            l4[4..8].copy_from_slice(&seq.to_be_bytes());
            l4[8..12].copy_from_slice(&ack_no.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = flags;
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            l4[18..20].copy_from_slice(&[0, 0]);
            let header = u64::from(u16::from_be_bytes([5 << 4, flags])) + 65535;
            (16, words_sum(seq.into()) + words_sum(ack_no.into()) + header)
        }
        Transport::Udp => {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (6, l4_len as u64)
        }
    };
    // The sums come from the values, not from reading back the bytes just
    // written: a wide load over narrow stores cannot be forwarded from the
    // store buffer and waits for them. Reading back, this function was 11.5%
    // of a capture's samples (most of them on those loads); now about 3.5%.
    let mut sum = checksum::finish(pseudo + ports + fields + payload_sum);
    if sum == 0 && matches!(transport, Transport::Udp) {
        sum = 0xffff; // UDP: 0 means "no checksum"
    }
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(HEADROOM - transport_len - ip_len)
}
