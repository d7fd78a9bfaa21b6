//! `--write FILE.pcap`: descriptors as packets in a classic pcap file.
//!
//! # Design notes
//!
//! The file is written with the `pcap-file` crate: link type RAW (101, the
//! packet starts with its IP header), nanosecond timestamps from the
//! descriptor's `timestamp_ns`. Headers come from [`crate::packet`].
//!
//! TCP sequence numbers come from the descriptor's `stream_offset`:
//! `seq = ISN + 1 + stream_offset` with `ISN = 0` in both directions. The
//! first time a connection shows up with `stream_offset == 0`, a
//! three-way handshake is synthesized in front of it (SYN from the peer,
//! SYN-ACK from us, ACK), taking the peer as the client as it is for a
//! server; Wireshark then tracks the stream from its start and reassembles
//! it. Each data packet acknowledges the other direction's bytes as far as
//! the capture has seen them. A connection first seen in mid-stream gets no
//! handshake. Flow state is forgotten when more than [`MAX_FLOWS`] are
//! tracked (acks then restart from what is seen again).
//!
//! The writer flushes at most once a second ([`PcapOut::flush_if_due`])
//! and at the end ([`PcapOut::finish`]), so a sniffer that stops for any
//! reason but SIGKILL leaves a complete file, and even a killed one leaves
//! a file that is complete up to its last second.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nta_net::export::proto::{Descriptor, FLAG_TCP, FLAG_TX};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use rustc_hash::FxHashMap;

use crate::filter::addresses;
use crate::packet::{write_headers, Ends, Transport, HEADROOM, MAX_PIECE};

/// Connections whose sequence state is kept.
pub const MAX_FLOWS: usize = 65536;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct FlowKey {
    local: IpAddr,
    peer: IpAddr,
    local_port: u16,
    peer_port: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowState {
    /// Highest stream end seen, received direction.
    rx_end: u64,
    /// Highest stream end seen, transmitted direction.
    tx_end: u64,
}

/// A `Write` the pcap writer and we share, so we can flush it.
struct SharedWriter<W>(Rc<RefCell<W>>);

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// A pcap file being written.
pub struct PcapOut<W: Write> {
    writer: PcapWriter<SharedWriter<W>>,
    inner: Rc<RefCell<W>>,
    buf: Vec<u8>,
    piece: Vec<u8>,
    flows: FxHashMap<FlowKey, FlowState>,
    last_flush: Instant,
    /// Packets written (handshakes and pieces included).
    pub packets: u64,
}

impl<W: Write> std::fmt::Debug for PcapOut<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapOut").field("packets", &self.packets).finish()
    }
}

fn pcap_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<W: Write> PcapOut<W> {
    /// Starts a file on `writer` (writes the file header).
    pub fn new(writer: W) -> io::Result<PcapOut<W>> {
        let inner = Rc::new(RefCell::new(writer));
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(SharedWriter(inner.clone()), header).map_err(pcap_err)?;
        Ok(PcapOut {
            writer,
            inner,
            buf: Vec::new(),
            piece: Vec::new(),
            flows: FxHashMap::default(),
            last_flush: Instant::now(),
            packets: 0,
        })
    }

    /// A buffer for the next payload of `len` bytes (it sits after room
    /// for the headers, so the payload is copied only once).
    pub fn payload_buf(&mut self, len: usize) -> &mut [u8] {
        self.buf.resize(HEADROOM + len, 0);
        &mut self.buf[HEADROOM..]
    }

    /// The payload last put in [`PcapOut::payload_buf`].
    pub fn payload(&self) -> &[u8] {
        self.buf.get(HEADROOM..).unwrap_or(&[])
    }

    /// Writes the payload last put in [`PcapOut::payload_buf`] as the
    /// packet(s) descriptor `d` describes; `payload_sum`, if known, is the
    /// payload's checksum sum (see [`write_headers`]).
    pub fn write(&mut self, d: &Descriptor, payload_sum: Option<u64>) -> io::Result<()> {
        let (local, peer) = addresses(d);
        let tx = d.flags & FLAG_TX != 0;
        let ends = if tx {
            Ends { src: local, dst: peer, src_port: d.local_port, dst_port: d.peer_port }
        } else {
            Ends { src: peer, dst: local, src_port: d.peer_port, dst_port: d.local_port }
        };
        let ts = Duration::from_nanos(d.timestamp_ns);
        let len = self.buf.len() - HEADROOM;
        if d.flags & FLAG_TCP == 0 {
            return self.write_pieces(&ends, ts, len, payload_sum, |_| Transport::Udp);
        }
        let key = FlowKey { local, peer, local_port: d.local_port, peer_port: d.peer_port };
        if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(&key) {
            self.flows.clear();
        }
        let mut new_flow = false;
        let state = self.flows.entry(key).or_insert_with(|| {
            new_flow = true;
            FlowState::default()
        });
        let end = d.stream_offset.saturating_add(len as u64);
        let ack_end = if tx {
            state.tx_end = state.tx_end.max(end);
            state.rx_end
        } else {
            state.rx_end = state.rx_end.max(end);
            state.tx_end
        };
        if new_flow && d.stream_offset == 0 {
            self.handshake(&key, ts)?;
        }
        let ack = Some(1u32.wrapping_add(ack_end as u32));
        let first_seq = 1u32.wrapping_add(d.stream_offset as u32);
        self.write_pieces(&ends, ts, len, payload_sum, |piece_start| Transport::Tcp {
            seq: first_seq.wrapping_add(piece_start as u32),
            ack,
            syn: false,
            psh: true,
        })
    }

    fn handshake(&mut self, key: &FlowKey, ts: Duration) -> io::Result<()> {
        let from_peer = Ends { src: key.peer, dst: key.local, src_port: key.peer_port, dst_port: key.local_port };
        let from_local = Ends { src: key.local, dst: key.peer, src_port: key.local_port, dst_port: key.peer_port };
        let steps = [
            (from_peer, Transport::Tcp { seq: 0, ack: None, syn: true, psh: false }),
            (from_local, Transport::Tcp { seq: 0, ack: Some(1), syn: true, psh: false }),
            (from_peer, Transport::Tcp { seq: 1, ack: Some(1), syn: false, psh: false }),
        ];
        for (ends, transport) in steps {
            self.piece.clear();
            self.piece.resize(HEADROOM, 0);
            let start = write_headers(&mut self.piece, &ends, &transport, Some(0)).map_err(io::Error::other)?;
            let packet = PcapPacket::new(ts, (self.piece.len() - start) as u32, &self.piece[start..]);
            self.writer.write_packet(&packet).map_err(pcap_err)?;
            self.packets += 1;
        }
        Ok(())
    }

    fn write_pieces(
        &mut self,
        ends: &Ends,
        ts: Duration,
        len: usize,
        payload_sum: Option<u64>,
        transport: impl Fn(usize) -> Transport,
    ) -> io::Result<()> {
        if len <= MAX_PIECE {
            let start = write_headers(&mut self.buf, ends, &transport(0), payload_sum).map_err(io::Error::other)?;
            let packet = PcapPacket::new(ts, (self.buf.len() - start) as u32, &self.buf[start..]);
            self.writer.write_packet(&packet).map_err(pcap_err)?;
            self.packets += 1;
            return Ok(());
        }
        let mut at = 0;
        while at < len {
            let n = MAX_PIECE.min(len - at);
            self.piece.clear();
            self.piece.resize(HEADROOM, 0);
            self.piece.extend_from_slice(&self.buf[HEADROOM + at..HEADROOM + at + n]);
            let start = write_headers(&mut self.piece, ends, &transport(at), None).map_err(io::Error::other)?;
            let packet = PcapPacket::new(ts, (self.piece.len() - start) as u32, &self.piece[start..]);
            self.writer.write_packet(&packet).map_err(pcap_err)?;
            self.packets += 1;
            at += n;
        }
        Ok(())
    }

    /// Flushes if the last flush was a second ago or more.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.last_flush = Instant::now();
            self.inner.borrow_mut().flush()?;
        }
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> io::Result<()> {
        self.inner.borrow_mut().flush()
    }
}
