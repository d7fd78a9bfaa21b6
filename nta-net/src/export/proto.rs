//! The export protocol, version 1: the messages on the export socket and
//! the layouts of the shared regions. Both ends use these definitions; the
//! reader (`nta-sniffer`) must still treat every byte it reads from shared
//! memory or the socket as untrusted, and the server treats the reader's
//! hold region the same way.
//!
//! # The socket
//!
//! A Unix `SOCK_SEQPACKET` socket, mode 0600. Every message is one packet of
//! at most [`MAX_MESSAGE`] bytes: a 12-byte [`Header`] (magic, version,
//! kind, payload length), then the payload, all little-endian. Descriptors
//! travel as `SCM_RIGHTS` with the message they belong to.
//!
//! 1. The reader sends [`Kind::Attach`] with the version it speaks and its
//!    mode ([`MODE_SNAPSHOT`] or [`MODE_HOLD`]).
//! 2. The server checks the peer's uid (`SO_PEERCRED`) and the version. On
//!    refusal it sends [`Kind::Error`] (a code and a text) and closes.
//! 3. Otherwise it sends [`Kind::Hello`] with `1 + rings` descriptors: the
//!    reader's hold region (read-write, `nta-hold-<reader>`), then one
//!    read-only ring per shard (`nta-ring-<reader>-<shard>`). Then one
//!    [`Kind::Segment`] per mapped segment, each with one read-only,
//!    sealed descriptor of the segment's memfd (`nta-seg-<slot>`).
//! 4. From then on the server sends [`Kind::Segment`] when a segment is
//!    mapped (before any chunk in it is published) and [`Kind::Released`]
//!    when one is released. A slot mapped again is a new file with a new
//!    generation, so a reader still mapping the old file never sees another
//!    segment's bytes there.
//! 5. The reader may send [`Kind::StatsRequest`]; the server answers with
//!    [`Kind::Stats`]: a text payload of `name value` lines (the same names
//!    as nta-httpd's `/stats`, without the `nta_` prefix) and one
//!    descriptor of a sealed, read-only occupancy file
//!    (`nta-occupancy`, layout below).
//! 6. [`Kind::Detach`] or closing the socket ends the session; the server
//!    then drops the reader's holds.
//!
//! # Descriptor rings
//!
//! One ring per shard and reader, written only by the server (the reader
//! maps it read-only), in a memfd of [`ring_bytes`]`(slots)` bytes:
//! a [`RING_HEADER`]-byte header (magic at 0, slot count at 8, slot size at
//! 12, the producer index `head` at [`RING_HEAD`], drop counters at
//! [`RING_DROPS`] and [`RING_UNHELD`]), then `slots` slots of [`SLOT_BYTES`].
//! Descriptor `i` lives in slot `i % slots`. The server stores a slot, then
//! `head = i + 1` (release); the reader loads `head` (acquire) and reads
//! slots below it.
//!
//! The ring is lossy: the server publishes descriptor `i` only if
//! `i - consumer < slots`, where `consumer` is the reader's consumer index
//! for that ring in its hold region; otherwise it counts a drop
//! (`RING_DROPS`) and moves on. A slow reader never blocks the server.
//!
//! # Holds and snapshots
//!
//! Every descriptor in a ring between the reader's consumer index and
//! `head` is *outstanding*. If the descriptor has [`FLAG_HELD`], the server
//! postpones the free of its chunk until the reader's consumer index passes
//! it: the reader reads the bytes in place, then advances the index. Held
//! bytes are bounded by the reader's quota ([`Hello::hold_quota`]); past
//! it, descriptors are published without `FLAG_HELD` (counted in
//! `RING_UNHELD`). A descriptor without `FLAG_HELD` is a *snapshot*: when
//! its chunk is freed, the server sets the slot's `seq` word to 0 before
//! the memory can be reused. A reader of a snapshot reads `seq`, copies the
//! bytes, reads `seq` again (acquire), and counts a torn read if it
//! changed.
//!
//! The reader keeps a heartbeat counter in its hold region and bumps it at
//! least every [`Hello::lease_ms`] / 4. If it stops changing for the lease,
//! or the socket closes, the server drops the reader's holds and completes
//! the postponed frees. A consumer index that goes backwards or past `head`
//! is garbage: the server detaches that reader the same way.
//!
//! # Hold region
//!
//! [`HOLD_BYTES`] bytes, mapped read-write by both: [`HOLD_HEARTBEAT`] (u64),
//! and the consumer index of ring `r` at [`HOLD_CONSUMER`]` + 8 * r` (u64).
//!
//! # Occupancy file
//!
//! A [`OCC_HEADER`]-byte header (magic u64 at 0, node count u32 at 8,
//! record size u32 at 12), then one [`OCC_RECORD`]-byte record per mapped
//! segment: segment u32, owner shard u32 (`u32::MAX`: none), backing u32
//! (0 shared memory, 1 hugetlb, 2 private), reserved u32, then the free
//! bitmap (one bit per 32-byte granule, 8 KiB), the start bitmap (8 KiB),
//! and the page-node bitmap (one bit per 4 KiB page, 64 bytes), as
//! little-endian u64 words.
//!
//! A record of at least [`OCC_RECORD_HELD`] bytes (what this server
//! writes) then carries the *held* bitmap (8 KiB): the granules of chunks
//! that some reader holds now, that is, with a held descriptor outstanding
//! (their free, if it came, is postponed). A reader steps over any bytes
//! past the fields it knows, so the record may grow again; one shorter
//! than [`OCC_RECORD_HELD`] (an older server) simply says nothing of holds.

/// First word of every message: `"NTAX"`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"NTAX");
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Largest message, header included.
pub const MAX_MESSAGE: usize = 4096;
/// Bytes of a message header.
pub const HEADER_BYTES: usize = 12;

/// Reader mode: no holds, every read checked against reuse.
pub const MODE_SNAPSHOT: u32 = 0;
/// Reader mode: descriptors are held (within the quota) until consumed.
pub const MODE_HOLD: u32 = 1;

/// Error code: the reader speaks another protocol version.
pub const ERR_VERSION: u32 = 1;
/// Error code: the peer's uid is not allowed.
pub const ERR_PERMISSION: u32 = 2;
/// Error code: too many readers are attached.
pub const ERR_BUSY: u32 = 3;
/// Error code: the message could not be parsed.
pub const ERR_MALFORMED: u32 = 4;

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Server: the session is open (payload [`Hello`]).
    Hello = 1,
    /// Server: a mapped segment (payload [`SegmentMsg`], one fd).
    Segment = 2,
    /// Server: a released segment (payload [`Released`]).
    Released = 3,
    /// Server: statistics text and one occupancy fd.
    Stats = 4,
    /// Server: refusal or failure (payload [`ErrorMsg`]), then close.
    Error = 5,
    /// Reader: open a session (payload [`Attach`]).
    Attach = 16,
    /// Reader: ask for [`Kind::Stats`].
    StatsRequest = 17,
    /// Reader: end the session.
    Detach = 18,
}

impl Kind {
    /// The kind with this number.
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Segment,
            3 => Kind::Released,
            4 => Kind::Stats,
            5 => Kind::Error,
            16 => Kind::Attach,
            17 => Kind::StatsRequest,
            18 => Kind::Detach,
            _ => return None,
        })
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's protocol version.
    pub version: u16,
    /// What follows.
    pub kind: Kind,
    /// Payload bytes after the header.
    pub len: u32,
}

fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn get_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Builds a message: header, then `payload`.
pub fn message(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_BYTES + payload.len());
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&VERSION.to_le_bytes());
    m.extend_from_slice(&(kind as u16).to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// Splits a received message into its header and payload. `None` for a
/// wrong magic, an unknown kind or a length that disagrees with the packet.
/// The version is returned as sent: the caller decides what it accepts.
pub fn parse(msg: &[u8]) -> Option<(Header, &[u8])> {
    if get_u32(msg, 0)? != MAGIC {
        return None;
    }
    let version = get_u16(msg, 4)?;
    let kind = Kind::from_u16(get_u16(msg, 6)?)?;
    let len = get_u32(msg, 8)?;
    let payload = msg.get(HEADER_BYTES..)?;
    if payload.len() != len as usize {
        return None;
    }
    Some((Header { version, kind, len }, payload))
}

/// [`Kind::Attach`] payload (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attach {
    /// The version the reader speaks.
    pub version: u32,
    /// [`MODE_SNAPSHOT`] or [`MODE_HOLD`].
    pub mode: u32,
}

impl Attach {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.mode.to_le_bytes());
        b
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Option<Attach> {
        Some(Attach { version: get_u32(b, 0)?, mode: get_u32(b, 4)? })
    }
}

/// [`Kind::Hello`] payload (48 bytes); its fds are the hold region, then
/// `rings` rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// This reader's number (names its memfds).
    pub reader: u32,
    /// Rings (one per shard) that follow the hold region's fd.
    pub rings: u32,
    /// Slots per ring.
    pub slots: u32,
    /// Bytes per slot ([`SLOT_BYTES`]).
    pub slot_bytes: u32,
    /// Bytes per segment (2 MiB).
    pub segment_bytes: u64,
    /// The lease: holds drop when the heartbeat stops this long.
    pub lease_ms: u64,
    /// Held bytes allowed to this reader.
    pub hold_quota: u64,
    /// The mode granted ([`MODE_SNAPSHOT`] or [`MODE_HOLD`]).
    pub mode: u32,
    /// Bytes of the hold region ([`HOLD_BYTES`]).
    pub hold_bytes: u32,
}

impl Hello {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        for v in [self.reader, self.rings, self.slots, self.slot_bytes] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.segment_bytes, self.lease_ms, self.hold_quota] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.mode.to_le_bytes());
        b.extend_from_slice(&self.hold_bytes.to_le_bytes());
        b
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Option<Hello> {
        Some(Hello {
            reader: get_u32(b, 0)?,
            rings: get_u32(b, 4)?,
            slots: get_u32(b, 8)?,
            slot_bytes: get_u32(b, 12)?,
            segment_bytes: get_u64(b, 16)?,
            lease_ms: get_u64(b, 24)?,
            hold_quota: get_u64(b, 32)?,
            mode: get_u32(b, 40)?,
            hold_bytes: get_u32(b, 44)?,
        })
    }
}

/// [`Kind::Segment`] payload (24 bytes), with one fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentMsg {
    /// The slot: descriptors name it.
    pub segment: u32,
    /// 0 shared memory, 1 hugetlb.
    pub backing: u32,
    /// The slot's generation (never 0).
    pub generation: u64,
    /// Bytes in the file.
    pub len: u64,
}

impl SegmentMsg {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.segment.to_le_bytes());
        b.extend_from_slice(&self.backing.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Option<SegmentMsg> {
        Some(SegmentMsg {
            segment: get_u32(b, 0)?,
            backing: get_u32(b, 4)?,
            generation: get_u64(b, 8)?,
            len: get_u64(b, 16)?,
        })
    }
}

/// [`Kind::Released`] payload (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The slot.
    pub segment: u32,
    /// The generation that ends.
    pub generation: u64,
}

impl Released {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&self.segment.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Option<Released> {
        Some(Released { segment: get_u32(b, 0)?, generation: get_u64(b, 8)? })
    }
}

/// [`Kind::Error`] payload: a code, then UTF-8 text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// One of the `ERR_` codes.
    pub code: u32,
    /// What went wrong, for a person.
    pub text: String,
}

impl ErrorMsg {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.code.to_le_bytes().to_vec();
        let text = self.text.as_bytes();
        b.extend_from_slice(&text[..text.len().min(MAX_MESSAGE - HEADER_BYTES - 4)]);
        b
    }
    /// Parses the wire form (invalid UTF-8 is replaced).
    pub fn decode(b: &[u8]) -> Option<ErrorMsg> {
        Some(ErrorMsg { code: get_u32(b, 0)?, text: String::from_utf8_lossy(b.get(4..)?).into_owned() })
    }
}

// ----- ring ------------------------------------------------------------

/// Ring magic at offset 0: `"NTARING1"`.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"NTARING1");
/// Bytes before the first slot.
pub const RING_HEADER: usize = 4096;
/// Offset of the slot count (u32).
pub const RING_SLOTS: usize = 8;
/// Offset of the slot size (u32).
pub const RING_SLOT_SIZE: usize = 12;
/// Offset of the producer index (u64, own cache line).
pub const RING_HEAD: usize = 64;
/// Offset of the count of descriptors dropped because the ring was full
/// (u64).
pub const RING_DROPS: usize = 128;
/// Offset of the count of descriptors published without a hold because
/// the quota was reached (u64).
pub const RING_UNHELD: usize = 136;
/// Bytes per slot.
pub const SLOT_BYTES: usize = 128;

/// Bytes of a ring of `slots` slots.
pub const fn ring_bytes(slots: usize) -> usize {
    RING_HEADER + slots * SLOT_BYTES
}

/// The descriptor is a transmitted buffer (else received).
pub const FLAG_TX: u32 = 1;
/// TCP (else UDP).
pub const FLAG_TCP: u32 = 2;
/// The addresses are IPv6 (else IPv4 in the first 4 bytes).
pub const FLAG_IPV6: u32 = 4;
/// The chunk is held until the reader consumes the descriptor.
pub const FLAG_HELD: u32 = 8;

/// One published buffer: where its bytes lie and whose they are. Slot
/// layout (128 bytes, little-endian): seq u64 at 0, generation u64 at 8,
/// timestamp_ns u64 at 16, stream_offset u64 at 24, segment u32 at 32,
/// offset u32 at 36, len u32 at 40, flags u32 at 44, local_port u16 at 48,
/// peer_port u16 at 50, local address 16 bytes at 64, peer address 16
/// bytes at 80; the rest is reserved (0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Ring index + 1 (0: invalidated snapshot; see the module notes).
    pub seq: u64,
    /// The segment's generation when published.
    pub generation: u64,
    /// Wall-clock time (`CLOCK_REALTIME`) in ns.
    pub timestamp_ns: u64,
    /// TCP: offset of the first byte in its direction's stream (bytes the
    /// connection carried that way before it); UDP: 0.
    pub stream_offset: u64,
    /// Segment slot.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u32,
    /// Bytes.
    pub len: u32,
    /// `FLAG_` bits.
    pub flags: u32,
    /// Our port.
    pub local_port: u16,
    /// The peer's port.
    pub peer_port: u16,
    /// Our address (IPv4: first 4 bytes).
    pub local_addr: [u8; 16],
    /// The peer's address (IPv4: first 4 bytes).
    pub peer_addr: [u8; 16],
}

/// Offset of `seq` in a slot.
pub const SLOT_SEQ: usize = 0;

impl Descriptor {
    /// The slot's bytes.
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.stream_offset.to_le_bytes());
        b[32..36].copy_from_slice(&self.segment.to_le_bytes());
        b[36..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.len.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b[48..50].copy_from_slice(&self.local_port.to_le_bytes());
        b[50..52].copy_from_slice(&self.peer_port.to_le_bytes());
        b[64..80].copy_from_slice(&self.local_addr);
        b[80..96].copy_from_slice(&self.peer_addr);
        b
    }

    /// Reads a slot's bytes as they are (no validation: the reader checks
    /// segment, offset, length and generation against what it maps).
    pub fn decode(b: &[u8; SLOT_BYTES]) -> Descriptor {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or([0; 2]));
        let mut local_addr = [0u8; 16];
        let mut peer_addr = [0u8; 16];
        local_addr.copy_from_slice(&b[64..80]);
        peer_addr.copy_from_slice(&b[80..96]);
        Descriptor {
            seq: u64_at(0),
            generation: u64_at(8),
            timestamp_ns: u64_at(16),
            stream_offset: u64_at(24),
            segment: u32_at(32),
            offset: u32_at(36),
            len: u32_at(40),
            flags: u32_at(44),
            local_port: u16_at(48),
            peer_port: u16_at(50),
            local_addr,
            peer_addr,
        }
    }
}

// ----- hold region -------------------------------------------------------

/// Bytes of a hold region.
pub const HOLD_BYTES: usize = 4096;
/// Hold region magic at offset 0: `"NTAHOLD1"` (written by the server).
pub const HOLD_MAGIC: u64 = u64::from_le_bytes(*b"NTAHOLD1");
/// Offset of the reader's heartbeat counter (u64).
pub const HOLD_HEARTBEAT: usize = 8;
/// Offset of ring 0's consumer index (u64); ring `r` at `+ 8 * r`.
pub const HOLD_CONSUMER: usize = 64;
/// Most rings a hold region has room for.
pub const MAX_RINGS: usize = (HOLD_BYTES - HOLD_CONSUMER) / 8;

// ----- occupancy file ------------------------------------------------------

/// Occupancy file magic at offset 0: `"NTAOCC01"`.
pub const OCC_MAGIC: u64 = u64::from_le_bytes(*b"NTAOCC01");
/// Bytes before the first record.
pub const OCC_HEADER: usize = 64;
/// Granules per segment (32-byte granules in 2 MiB).
pub const OCC_GRANULES: usize = 65536;
/// Pages per segment (4 KiB pages in 2 MiB).
pub const OCC_PAGES: usize = 512;
/// Bytes of one record: 16 bytes of fields, free and start bitmaps, page
/// bitmap.
pub const OCC_RECORD: usize = 16 + 2 * (OCC_GRANULES / 8) + OCC_PAGES / 8;
/// Bytes of a record that carries the held bitmap after the page bitmap.
pub const OCC_RECORD_HELD: usize = OCC_RECORD + OCC_GRANULES / 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let hello = Hello {
            reader: 3,
            rings: 2,
            slots: 4096,
            slot_bytes: SLOT_BYTES as u32,
            segment_bytes: 2 << 20,
            lease_ms: 2000,
            hold_quota: 64 << 20,
            mode: MODE_HOLD,
            hold_bytes: HOLD_BYTES as u32,
        };
        let m = message(Kind::Hello, &hello.encode());
        let (h, p) = parse(&m).unwrap();
        assert_eq!((h.kind, h.version), (Kind::Hello, VERSION));
        assert_eq!(Hello::decode(p), Some(hello));
        assert!(parse(&m[..m.len() - 1]).is_none());
        assert!(parse(b"junk").is_none());
        assert!(Hello::decode(&p[..40]).is_none());
        let d = Descriptor { seq: 7, len: 100, flags: FLAG_TCP | FLAG_HELD, local_port: 80, ..Default::default() };
        assert_eq!(Descriptor::decode(&d.encode()), d);
        const { assert!(MAX_RINGS >= 64) };
    }
}
