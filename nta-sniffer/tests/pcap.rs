//! The pcap writer: files re-parsed with pcap-file and etherparse (not the
//! writer's own code) hold the right payloads, ports, sequence numbers and
//! checksums-valid headers.

use nta_net::export::proto::{Descriptor, FLAG_IPV6, FLAG_TCP, FLAG_TX};
use nta_sniffer::pcap::PcapOut;

fn desc(flags: u32, stream_offset: u64, len: u32) -> Descriptor {
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let mut peer_addr = [0u8; 16];
    peer_addr[..4].copy_from_slice(&[127, 0, 0, 9]);
    if flags & FLAG_IPV6 != 0 {
        local_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        peer_addr = "::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    }
    Descriptor {
        seq: 1,
        timestamp_ns: 1_700_000_000_123_456_789,
        stream_offset,
        len,
        flags,
        local_port: 8080,
        peer_port: 5555,
        local_addr,
        peer_addr,
        ..Default::default()
    }
}

struct Packet {
    src_port: u16,
    dst_port: u16,
    seq: Option<u32>,
    syn: bool,
    payload: Vec<u8>,
    ipv6: bool,
}

fn write(descs: &[(Descriptor, Vec<u8>)]) -> Vec<Packet> {
    let mut file = Vec::new();
    {
        let mut out = PcapOut::new(&mut file).unwrap();
        for (d, payload) in descs {
            out.payload_buf(payload.len()).copy_from_slice(payload);
            out.write(d, None).unwrap();
        }
        out.finish().unwrap();
    }
    let mut reader = pcap_file::pcap::PcapReader::new(&file[..]).unwrap();
    let mut packets = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        assert_eq!(p.timestamp.as_nanos(), 1_700_000_000_123_456_789);
        let sliced = etherparse::SlicedPacket::from_ip(&p.data).unwrap();
        let ipv6 = matches!(sliced.net, Some(etherparse::NetSlice::Ipv6(_)));
        if let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net {
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
        }
        // The transport checksums, recomputed by etherparse.
        let want = match (&sliced.net, &sliced.transport) {
            (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) => {
                Some((t.checksum(), t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap()))
            }
            (Some(etherparse::NetSlice::Ipv6(ip)), Some(etherparse::TransportSlice::Tcp(t))) => {
                Some((t.checksum(), t.to_header().calc_checksum_ipv6(&ip.header().to_header(), t.payload()).unwrap()))
            }
            (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) => {
                Some((u.checksum(), u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap()))
            }
            (Some(etherparse::NetSlice::Ipv6(ip)), Some(etherparse::TransportSlice::Udp(u))) => {
                Some((u.checksum(), u.to_header().calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap()))
            }
            _ => None,
        };
        let (got, want) = want.expect("an IP packet with TCP or UDP");
        assert_eq!(got, want, "transport checksum");
        packets.push(match sliced.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => Packet {
                src_port: t.source_port(),
                dst_port: t.destination_port(),
                seq: Some(t.sequence_number()),
                syn: t.syn(),
                payload: t.payload().to_vec(),
                ipv6,
            },
            etherparse::TransportSlice::Udp(u) => Packet {
                src_port: u.source_port(),
                dst_port: u.destination_port(),
                seq: None,
                syn: false,
                payload: u.payload().to_vec(),
                ipv6,
            },
            other => panic!("{other:?}"),
        });
    }
    packets
}

#[test]
fn a_tcp_exchange_gets_a_handshake_and_sequence_numbers_from_stream_offsets() {
    let req = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
    let packets = write(&[
        (desc(FLAG_TCP, 0, req.len() as u32), req.clone()),
        (desc(FLAG_TCP | FLAG_TX, 0, resp.len() as u32), resp.clone()),
        (desc(FLAG_TCP, req.len() as u64, 3), b"abc".to_vec()),
    ]);
    assert_eq!(packets.len(), 6);
    assert!(packets[0].syn && packets[1].syn && !packets[2].syn);
    assert_eq!((packets[3].src_port, packets[3].dst_port, packets[3].seq), (5555, 8080, Some(1)));
    assert_eq!(packets[3].payload, req);
    assert_eq!((packets[4].src_port, packets[4].dst_port, packets[4].seq), (8080, 5555, Some(1)));
    assert_eq!(packets[4].payload, resp);
    assert_eq!(packets[5].seq, Some(1 + req.len() as u32));
}

#[test]
fn a_connection_first_seen_sending_gets_the_handshake_the_right_way_round_once() {
    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
    let mut later = desc(FLAG_TCP, 0, 3);
    // Bytes past an IPv4 address are not part of it: the same connection.
    later.local_addr[4..].fill(0xAB);
    later.peer_addr[9] = 7;
    let packets = write(&[(desc(FLAG_TCP | FLAG_TX, 0, resp.len() as u32), resp.clone()), (later, b"abc".to_vec())]);
    assert_eq!(packets.len(), 5, "one handshake, then the two packets");
    // SYN from the peer, SYN-ACK from us, ACK from the peer.
    let ports: Vec<_> = packets[..3].iter().map(|p| (p.src_port, p.dst_port, p.syn)).collect();
    assert_eq!(ports, [(5555, 8080, true), (8080, 5555, true), (5555, 8080, false)]);
    assert_eq!((packets[3].src_port, packets[3].seq, &packets[3].payload), (8080, Some(1), &resp));
    assert_eq!((packets[4].src_port, packets[4].seq, packets[4].syn), (5555, Some(1), false));
}

#[test]
fn long_payloads_are_split_and_udp_and_ipv6_work() {
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let packets = write(&[
        (desc(FLAG_TCP | FLAG_TX, 1000, big.len() as u32), big.clone()),
        (desc(FLAG_IPV6, 0, 5), b"hello".to_vec()),
        (desc(FLAG_IPV6 | FLAG_TCP, 7, 2), b"hi".to_vec()),
    ]);
    // Mid-stream (offset 1000): no handshake; 3 pieces.
    let pieces: Vec<_> = packets.iter().take_while(|p| !p.ipv6).collect();
    assert_eq!(pieces.len(), 3);
    let joined: Vec<u8> = pieces.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(joined, big);
    assert_eq!(pieces[1].seq, Some(1001 + pieces[0].payload.len() as u32));
    let udp = &packets[3];
    assert_eq!((udp.ipv6, udp.seq, udp.src_port, udp.payload.as_slice()), (true, None, 5555, &b"hello"[..]));
    let tcp6 = &packets[4];
    assert_eq!((tcp6.ipv6, tcp6.seq, tcp6.payload.as_slice()), (true, Some(8), &b"hi"[..]));
}

/// A writer that takes at most 7 bytes per call, vectored or not.
struct Trickle(Vec<u8>);

impl std::io::Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same packets written with their payloads copied, and left in place
/// (as held payloads are, for writev), to a writer that takes everything
/// and to one that takes 7 bytes a call, make the same file.
#[test]
fn in_place_payloads_and_short_writes_make_the_same_file() {
    let payloads: Vec<Vec<u8>> =
        (0..40u32).map(|i| (0..(i * 37 % 1500)).map(|b| (b * 7 + i) as u8).collect()).collect();
    let descs: Vec<Descriptor> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let flags = FLAG_TCP | if i % 2 == 1 { FLAG_TX } else { 0 };
            desc(flags, payloads[..i].iter().map(|q| q.len() as u64).sum::<u64>(), p.len() as u32)
        })
        .collect();
    let sum = |p: &[u8]| nta_sniffer::checksum::add(0, p);
    let mut copied = Vec::new();
    {
        let mut out = PcapOut::new(&mut copied).unwrap();
        for (d, p) in descs.iter().zip(&payloads) {
            out.payload_buf(p.len()).copy_from_slice(p);
            out.write(d, Some(sum(p))).unwrap();
        }
        out.finish().unwrap();
    }
    for trickle in [false, true] {
        let mut sink = Trickle(Vec::new());
        let mut whole = Vec::new();
        {
            let writer: Box<dyn std::io::Write> = if trickle { Box::new(&mut sink) } else { Box::new(&mut whole) };
            let mut out = PcapOut::new(writer).unwrap();
            for (i, (d, p)) in descs.iter().zip(&payloads).enumerate() {
                if i % 3 == 0 {
                    out.payload_buf(p.len()).copy_from_slice(p);
                    out.write(d, None).unwrap();
                } else {
                    // SAFETY: `payloads` outlives the flush below.
                    unsafe { out.write_in_place(d, p.as_ptr(), p.len(), sum(p)).unwrap() };
                }
                if i % 10 == 9 {
                    out.flush().unwrap();
                }
            }
            out.finish().unwrap();
        }
        let got = if trickle { &sink.0 } else { &whole };
        assert!(got == &copied, "trickle={trickle}: {} bytes against {}", got.len(), copied.len());
    }
    assert_eq!(write(&descs.iter().cloned().zip(payloads.iter().cloned()).collect::<Vec<_>>()).len(), 40 + 3);
}
