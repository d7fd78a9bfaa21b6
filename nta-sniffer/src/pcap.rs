//! `--write FILE.pcap`: descriptors as packets in a classic pcap file.
//!
//! # Design notes
//!
//! Classic pcap: link type RAW (101, the packet starts with its IP
//! header), nanosecond timestamps from the descriptor's `timestamp_ns`.
//! The file header is the `pcap-file` crate's; each record's 16-byte
//! header (seconds, nanoseconds, captured and original length, native byte
//! order as the file header says) is written here, because a record's
//! bytes are not contiguous: IP/TCP headers come from [`crate::packet`]
//! and, for a held packet, the payload stays where it lies in the pool.
//! Records queue in an arena with the in-place payloads between them, and
//! go out with vectored writes (`writev`: for a file the kernel copies the
//! payload straight from the mapping, and this process never copies it)
//! when the reader settles, before it publishes its consumer index and so
//! lets the server free the held chunks. A copied payload (snapshot reads,
//! hexdump alongside, pieces of a payload above [`MAX_PIECE`]) is copied
//! into the arena once.
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
//! The queue is written at every settle (each drain of a ring), when it
//! holds 1024 slices or 1 MiB, and at the end ([`PcapOut::finish`]), so a
//! sniffer that stops for any reason but SIGKILL leaves a complete file,
//! and even a killed one leaves a file complete up to its last drain.

use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use nta_net::export::proto::{Descriptor, FLAG_IPV6, FLAG_TCP, FLAG_TX};
use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, TsResolution};
use rustc_hash::FxHashMap;

use crate::filter::addresses;
use crate::packet::{headers_for, write_headers, Ends, Transport, HEADROOM, MAX_PIECE};

/// Connections whose sequence state is kept.
pub const MAX_FLOWS: usize = 65536;

/// A connection, as five words hashed in one pass (a key of two `IpAddr`s
/// and two ports hashed field by field was a tenth of the sniffer's time
/// per packet): local and peer address (an IPv4 one in the low half of its
/// first word, the rest of the descriptor's 16 bytes ignored), then the
/// ports and the family. Compared word by word without a branch: the
/// derived comparison called `memcmp`, 5% of a capture's samples.
#[derive(Clone, Copy, Debug, Eq)]
struct FlowKey([u64; 5]);

impl std::hash::Hash for FlowKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.iter().for_each(|w| state.write_u64(*w));
    }
}

impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, other: &FlowKey) -> bool {
        self.0.iter().zip(&other.0).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl FlowKey {
    fn of(d: &Descriptor) -> FlowKey {
        let v6 = d.flags & FLAG_IPV6 != 0;
        let words = |a: &[u8; 16]| {
            let (lo, hi) = a.split_at(8);
            let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
            let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
            if v6 {
                (lo, hi)
            } else {
                (lo & 0xffff_ffff, 0)
            }
        };
        let ((l0, l1), (p0, p1)) = (words(&d.local_addr), words(&d.peer_addr));
        let ports = u64::from(d.local_port) | u64::from(d.peer_port) << 16 | u64::from(v6) << 32;
        FlowKey([l0, l1, p0, p1, ports])
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowState {
    /// Highest stream end seen, received direction.
    rx_end: u64,
    /// Highest stream end seen, transmitted direction.
    tx_end: u64,
}

fn pcap_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// One piece of the output: bytes of the arena, or a payload left where it
/// lies in a held chunk of the pool.
#[derive(Clone, Copy, Debug)]
enum Part {
    Arena { start: usize, end: usize },
    InPlace { ptr: *const u8, len: usize },
}

/// Parts queued before a write is forced (one `writev` takes at most
/// 1024 slices).
const MAX_PARTS: usize = 1024;
/// Arena bytes queued before a write is forced.
const MAX_ARENA: usize = 1 << 20;

/// A pcap file being written.
pub struct PcapOut<W: Write> {
    writer: W,
    /// Record headers, IP/TCP headers and copied payloads, in file order
    /// with the in-place payloads between them (`parts`).
    arena: Vec<u8>,
    parts: Vec<Part>,
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

/// Where a payload comes from.
#[derive(Clone, Copy)]
enum Payload {
    /// In `PcapOut::buf[HEADROOM..]`.
    Copied(Option<u64>),
    /// In a held chunk: address, length, checksum sum.
    InPlace(*const u8, usize, u64),
}

impl<W: Write> PcapOut<W> {
    /// Starts a file on `writer` (writes the file header).
    pub fn new(mut writer: W) -> io::Result<PcapOut<W>> {
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            snaplen: 65535,
            ..PcapHeader::default()
        };
        header.write_to(&mut writer).map_err(pcap_err)?;
        Ok(PcapOut {
            writer,
            arena: Vec::with_capacity(MAX_ARENA),
            parts: Vec::with_capacity(MAX_PARTS),
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
        let len = self.buf.len() - HEADROOM;
        self.write_packet(d, len, Payload::Copied(payload_sum))
    }

    /// Writes the packet descriptor `d` describes with its payload left
    /// where it lies: the file gets the `len` bytes at `ptr` when the queue
    /// is written ([`PcapOut::flush`], or when it is full), without a copy
    /// in this process. `payload_sum` is their checksum sum.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, and unchanged, until the next
    /// [`PcapOut::flush`] (or [`PcapOut::finish`]) returns: the reader
    /// holds the chunk and publishes its consumer index only after that.
    /// `len` is at most [`MAX_PIECE`].
    pub unsafe fn write_in_place(
        &mut self,
        d: &Descriptor,
        ptr: *const u8,
        len: usize,
        payload_sum: u64,
    ) -> io::Result<()> {
        debug_assert!(len <= MAX_PIECE);
        self.write_packet(d, len, Payload::InPlace(ptr, len, payload_sum))
    }

    fn write_packet(&mut self, d: &Descriptor, len: usize, payload: Payload) -> io::Result<()> {
        let (local, peer) = addresses(d);
        let tx = d.flags & FLAG_TX != 0;
        let ends = if tx {
            Ends { src: local, dst: peer, src_port: d.local_port, dst_port: d.peer_port }
        } else {
            Ends { src: peer, dst: local, src_port: d.peer_port, dst_port: d.local_port }
        };
        let ts = Duration::from_nanos(d.timestamp_ns);
        if d.flags & FLAG_TCP == 0 {
            return self.write_pieces(&ends, ts, len, payload, |_| Transport::Udp);
        }
        let key = FlowKey::of(d);
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
            let (from_local, from_peer) = if tx { (ends, ends.reversed()) } else { (ends.reversed(), ends) };
            self.handshake(from_local, from_peer, ts)?;
        }
        let ack = Some(1u32.wrapping_add(ack_end as u32));
        let first_seq = 1u32.wrapping_add(d.stream_offset as u32);
        self.write_pieces(&ends, ts, len, payload, |piece_start| Transport::Tcp {
            seq: first_seq.wrapping_add(piece_start as u32),
            ack,
            syn: false,
            psh: true,
        })
    }

    /// The handshake of a connection first seen at its start: `from_local`
    /// and `from_peer` are its two directions.
    fn handshake(&mut self, from_local: Ends, from_peer: Ends, ts: Duration) -> io::Result<()> {
        let steps = [
            (from_peer, Transport::Tcp { seq: 0, ack: None, syn: true, psh: false }),
            (from_local, Transport::Tcp { seq: 0, ack: Some(1), syn: true, psh: false }),
            (from_peer, Transport::Tcp { seq: 1, ack: Some(1), syn: false, psh: false }),
        ];
        for (ends, transport) in steps {
            let mut head = [0u8; HEADROOM];
            let start = headers_for(&mut head, 0, &ends, &transport, 0).map_err(io::Error::other)?;
            self.record(ts, HEADROOM - start, &head[start..])?;
        }
        Ok(())
    }

    fn write_pieces(
        &mut self,
        ends: &Ends,
        ts: Duration,
        len: usize,
        payload: Payload,
        transport: impl Fn(usize) -> Transport,
    ) -> io::Result<()> {
        match payload {
            Payload::InPlace(ptr, len, sum) => {
                let mut head = [0u8; HEADROOM];
                let start = headers_for(&mut head, len, ends, &transport(0), sum).map_err(io::Error::other)?;
                // The record's bytes so far, then the payload in place: a
                // flush may only come after both (see `record`).
                self.queue_record(ts, HEADROOM - start + len, &head[start..])?;
                self.parts.push(Part::InPlace { ptr, len });
                self.flush_if_full()
            }
            Payload::Copied(sum) if len <= MAX_PIECE => {
                let start = write_headers(&mut self.buf, ends, &transport(0), sum).map_err(io::Error::other)?;
                let packet = std::mem::take(&mut self.buf);
                let result = self.record(ts, packet.len() - start, &packet[start..]);
                self.buf = packet;
                result
            }
            Payload::Copied(_) => {
                let mut at = 0;
                while at < len {
                    let n = MAX_PIECE.min(len - at);
                    self.piece.clear();
                    self.piece.resize(HEADROOM, 0);
                    self.piece.extend_from_slice(&self.buf[HEADROOM + at..HEADROOM + at + n]);
                    let start = write_headers(&mut self.piece, ends, &transport(at), None).map_err(io::Error::other)?;
                    let piece = std::mem::take(&mut self.piece);
                    let result = self.record(ts, piece.len() - start, &piece[start..]);
                    self.piece = piece;
                    result?;
                    at += n;
                }
                Ok(())
            }
        }
    }

    /// Queues a whole record of `bytes` (see [`PcapOut::queue_record`])
    /// and writes the queue out if it is full.
    fn record(&mut self, ts: Duration, len: usize, bytes: &[u8]) -> io::Result<()> {
        self.queue_record(ts, len, bytes)?;
        self.flush_if_full()
    }

    /// Queues the start of a record of `len` bytes: its 16-byte pcap
    /// record header (seconds, nanoseconds, captured and original length,
    /// in the file header's byte order, which is native) and then `bytes`,
    /// copied into the arena. An in-place payload, if any, is queued after
    /// it by the caller, `len` counting it.
    fn queue_record(&mut self, ts: Duration, len: usize, bytes: &[u8]) -> io::Result<()> {
        let secs = u32::try_from(ts.as_secs()).map_err(|_| io::Error::other("timestamp past 2106"))?;
        let start = self.arena.len();
        for v in [secs, ts.subsec_nanos(), len as u32, len as u32] {
            self.arena.extend_from_slice(&v.to_ne_bytes());
        }
        self.arena.extend_from_slice(bytes);
        match self.parts.last_mut() {
            Some(Part::Arena { end, .. }) if *end == start => *end = self.arena.len(),
            _ => self.parts.push(Part::Arena { start, end: self.arena.len() }),
        }
        self.packets += 1;
        Ok(())
    }

    /// Writes the queue out if it holds `MAX_PARTS` slices (less the two a
    /// record may add) or `MAX_ARENA` bytes.
    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.parts.len() + 2 >= MAX_PARTS || self.arena.len() >= MAX_ARENA {
            self.flush_queue()?;
        }
        Ok(())
    }

    /// Writes every queued part with vectored writes (`writev` for a
    /// file), in order.
    fn flush_queue(&mut self) -> io::Result<()> {
        let mut bufs: Vec<&[u8]> = self
            .parts
            .iter()
            .map(|part| match *part {
                Part::Arena { start, end } => &self.arena[start..end],
                // SAFETY: `write_in_place`'s caller keeps the bytes mapped
                // and unchanged until this flush returns; only the kernel
                // reads them (no Rust read of shared memory happens here).
                Part::InPlace { ptr, len } => unsafe { std::slice::from_raw_parts(ptr, len) },
            })
            .collect();
        let mut first = 0;
        while first < bufs.len() {
            let slices: Vec<IoSlice<'_>> = bufs[first..].iter().map(|b| IoSlice::new(b)).collect();
            let mut n = match self.writer.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Skip what was written; a slice written in part keeps its rest.
            while first < bufs.len() && n >= bufs[first].len() {
                n -= bufs[first].len();
                first += 1;
            }
            if n > 0 {
                bufs[first] = &bufs[first][n..];
            }
        }
        drop(bufs);
        self.parts.clear();
        self.arena.clear();
        Ok(())
    }

    /// Writes out everything queued: after it returns, no in-place payload
    /// is referred to any more (the reader calls it before it publishes a
    /// consumer index or unmaps a segment).
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_queue()
    }

    /// Flushes the file if the last flush was a second ago or more.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        self.flush_queue()?;
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.last_flush = Instant::now();
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Writes out the queue and flushes the writer.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush_queue()?;
        self.writer.flush()
    }
}
