//! Synthesizes the IP and TCP/UDP headers a descriptor implies.
//!
//! # Design notes
//!
//! The pool holds payloads, not packets: what went over the wire (or came
//! from it) was a stream of bytes or a datagram. To make a pcap that
//! Wireshark dissects, each payload gets an IPv4 or IPv6 header and a TCP
//! or UDP header built from the descriptor's flow, with correct checksums
//! (etherparse computes them). Received buffers go peer → local,
//! transmitted ones local → peer.
//!
//! The payload is copied from shared memory straight into a packet buffer
//! at [`HEADROOM`], and the headers are written in front of it afterwards
//! ([`write_headers`]), so the payload is copied once. IP's 16-bit length
//! limits a packet to 65535 bytes; longer payloads are split into pieces of
//! at most [`MAX_PIECE`] bytes (each piece then needs a copy of its own).

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, UdpHeader};

/// Room in front of a payload for the largest headers (IPv6 + TCP).
pub const HEADROOM: usize = Ipv6Header::LEN + TcpHeader::MIN_LEN;

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

/// Writes the headers for the payload in `buf[HEADROOM..]` into the bytes
/// just before it; returns where the packet starts. Fails if the payload
/// is longer than [`MAX_PIECE`], `buf` has no headroom, or the two
/// addresses are of different families.
pub fn write_headers(buf: &mut [u8], ends: &Ends, transport: &Transport) -> Result<usize, String> {
    if buf.len() < HEADROOM || buf.len() - HEADROOM > MAX_PIECE {
        return Err(format!("packet buffer of {} bytes", buf.len()));
    }
    let (head, payload) = buf.split_at_mut(HEADROOM);
    let payload: &[u8] = payload;
    let too_big = |e: etherparse::err::ValueTooBigError<usize>| e.to_string();
    let tcp = |seq: u32, ack: Option<u32>, syn: bool, psh: bool| {
        let mut h = TcpHeader::new(ends.src_port, ends.dst_port, seq, 65535);
        h.syn = syn;
        h.psh = psh;
        if let Some(a) = ack {
            h.ack = true;
            h.acknowledgment_number = a;
        }
        h
    };
    let transport_bytes: Vec<u8>;
    let number = match transport {
        Transport::Tcp { .. } => IpNumber::TCP,
        Transport::Udp => IpNumber::UDP,
    };
    let transport_len = match transport {
        Transport::Tcp { .. } => TcpHeader::MIN_LEN,
        Transport::Udp => UdpHeader::LEN,
    };
    let ip_payload_len = (transport_len + payload.len()) as u16;
    let ip_bytes: Vec<u8> = match (ends.src, ends.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip =
                Ipv4Header::new(ip_payload_len, 64, number, src.octets(), dst.octets()).map_err(|e| e.to_string())?;
            ip.header_checksum = ip.calc_header_checksum();
            transport_bytes = match *transport {
                Transport::Tcp { seq, ack, syn, psh } => {
                    let mut h = tcp(seq, ack, syn, psh);
                    h.checksum = h.calc_checksum_ipv4(&ip, payload).map_err(too_big)?;
                    h.to_bytes().to_vec()
                }
                Transport::Udp => UdpHeader::with_ipv4_checksum(ends.src_port, ends.dst_port, &ip, payload)
                    .map_err(too_big)?
                    .to_bytes()
                    .to_vec(),
            };
            ip.to_bytes().to_vec()
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: ip_payload_len,
                next_header: number,
                hop_limit: 64,
                source: src.octets(),
                destination: dst.octets(),
            };
            transport_bytes = match *transport {
                Transport::Tcp { seq, ack, syn, psh } => {
                    let mut h = tcp(seq, ack, syn, psh);
                    h.checksum = h.calc_checksum_ipv6(&ip, payload).map_err(too_big)?;
                    h.to_bytes().to_vec()
                }
                Transport::Udp => UdpHeader::with_ipv6_checksum(ends.src_port, ends.dst_port, &ip, payload)
                    .map_err(too_big)?
                    .to_bytes()
                    .to_vec(),
            };
            ip.to_bytes().to_vec()
        }
        _ => return Err("source and destination are of different address families".into()),
    };
    let start = HEADROOM - ip_bytes.len() - transport_bytes.len();
    head[start..start + ip_bytes.len()].copy_from_slice(&ip_bytes);
    head[start + ip_bytes.len()..].copy_from_slice(&transport_bytes);
    Ok(start)
}
