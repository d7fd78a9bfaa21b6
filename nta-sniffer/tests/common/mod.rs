//! A fake exporter: speaks proto.rs over a real Unix socket, with memfds
//! for the hold region, rings and segments, sealed as the real server
//! seals them. It can also write garbage. Used by the end-to-end tests;
//! the sniffer under test runs as a child process, so the two sides share
//! memory across processes as they do in production.

#![allow(dead_code)]

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use nta_net::export::proto::{self, *};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};

pub const SEGMENT_BYTES: usize = 2 << 20;

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nta-sniffer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct FakeServer {
    listener: OwnedFd,
    pub path: PathBuf,
}

/// A memfd of `len` bytes named `name`, mapped read-write.
pub fn memfd(name: &str, len: usize) -> (File, MmapMut) {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    let file = File::from(fd);
    // SAFETY: a fresh memfd only this test maps writable.
    let map = unsafe { MmapMut::map_mut(&file).unwrap() };
    (file, map)
}

/// Seals `file` as the server seals a segment: no new writable mapping,
/// no size change.
pub fn seal(file: &File) {
    rustix::fs::fcntl_add_seals(file, SealFlags::FUTURE_WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .unwrap();
}

/// A read-only descriptor of `file`, opened again through /proc.
pub fn read_only(file: &File) -> OwnedFd {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    OwnedFd::from(File::open(path).unwrap())
}

pub struct Ring {
    pub file: File,
    pub map: MmapMut,
    pub slots: u64,
    pub head: u64,
}

impl Ring {
    fn put_u64(&mut self, at: usize, v: u64) {
        self.map[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Publishes `d` at the head (seq set to index + 1).
    pub fn publish(&mut self, mut d: Descriptor) -> u64 {
        let index = self.head;
        d.seq = index + 1;
        self.write_slot(index, &d.encode());
        self.set_head(index + 1);
        index
    }
    pub fn write_slot(&mut self, index: u64, raw: &[u8; SLOT_BYTES]) {
        let at = RING_HEADER + (index % self.slots) as usize * SLOT_BYTES;
        self.map[at..at + SLOT_BYTES].copy_from_slice(raw);
    }
    pub fn set_head(&mut self, head: u64) {
        self.head = head;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.put_u64(RING_HEAD, head);
    }
    /// Invalidates a snapshot descriptor (its chunk was freed).
    pub fn invalidate(&mut self, index: u64) {
        let at = RING_HEADER + (index % self.slots) as usize * SLOT_BYTES;
        self.put_u64(at, 0);
    }
}

pub struct Segment {
    pub file: File,
    pub map: MmapMut,
    pub generation: u64,
}

pub struct Conn {
    pub fd: OwnedFd,
    pub hold: Option<(File, MmapMut)>,
    pub rings: Vec<Ring>,
    pub segments: std::collections::HashMap<u32, Segment>,
}

impl FakeServer {
    pub fn bind(path: &Path) -> FakeServer {
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(path).unwrap()).unwrap();
        rustix::net::listen(&listener, 8).unwrap();
        FakeServer { listener, path: path.to_path_buf() }
    }

    /// Accepts one reader, waiting at most 20 s.
    pub fn accept(&self) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    return Conn { fd, hold: None, rings: Vec::new(), segments: Default::default() };
                }
                Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

pub fn send_with_fds(fd: impl AsFd, msg: &[u8], fds: &[&OwnedFd]) {
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
    }
    rustix::net::sendmsg(fd, &[IoSlice::new(msg)], &mut control, SendFlags::NOSIGNAL).unwrap();
}

impl Conn {
    /// Receives one message (blocking, at most 20 s).
    pub fn recv(&self) -> Option<(proto::Header, Vec<u8>)> {
        let timeout = rustix::event::Timespec { tv_sec: 20, tv_nsec: 0 };
        let mut pfd = [rustix::event::PollFd::new(&self.fd, rustix::event::PollFlags::IN)];
        rustix::event::poll(&mut pfd, Some(&timeout)).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::<u8>::uninit(); 64];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got =
            rustix::net::recvmsg(&self.fd, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::DONTWAIT).ok()?;
        if got.bytes == 0 {
            return None;
        }
        let (h, p) = proto::parse(&buf[..got.bytes])?;
        Some((h, p.to_vec()))
    }

    /// Reads the Attach.
    pub fn read_attach(&self) -> Attach {
        let (h, p) = self.recv().expect("an Attach");
        assert_eq!(h.kind, Kind::Attach);
        Attach::decode(&p).unwrap()
    }

    pub fn send_error(&self, code: u32, text: &str) {
        let msg = proto::message(Kind::Error, &ErrorMsg { code, text: text.into() }.encode());
        send_with_fds(&self.fd, &msg, &[]);
    }

    /// Creates the hold region and `rings` rings and sends the Hello.
    pub fn hello(&mut self, rings: u32, slots: u32, mode: u32, lease_ms: u64) {
        let (hold_file, mut hold_map) = memfd("nta-hold-0", HOLD_BYTES);
        hold_map[0..8].copy_from_slice(&HOLD_MAGIC.to_le_bytes());
        let mut ring_fds = Vec::new();
        for r in 0..rings {
            let (file, mut map) = memfd(&format!("nta-ring-0-{r}"), ring_bytes(slots as usize));
            map[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
            map[RING_SLOTS..RING_SLOTS + 4].copy_from_slice(&slots.to_le_bytes());
            map[RING_SLOT_SIZE..RING_SLOT_SIZE + 4].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
            seal(&file);
            ring_fds.push(read_only(&file));
            self.rings.push(Ring { file, map, slots: u64::from(slots), head: 0 });
        }
        let hello = Hello {
            reader: 0,
            rings,
            slots,
            slot_bytes: SLOT_BYTES as u32,
            segment_bytes: SEGMENT_BYTES as u64,
            lease_ms,
            hold_quota: 1 << 20,
            mode,
            hold_bytes: HOLD_BYTES as u32,
        };
        let hold_fd = OwnedFd::from(hold_file.try_clone().unwrap());
        let mut fds = vec![&hold_fd];
        fds.extend(ring_fds.iter());
        send_with_fds(&self.fd, &proto::message(Kind::Hello, &hello.encode()), &fds);
        self.hold = Some((hold_file, hold_map));
    }

    /// Maps, seals and announces a segment.
    pub fn add_segment(&mut self, slot: u32, generation: u64) {
        let (file, map) = memfd(&format!("nta-seg-{slot}"), SEGMENT_BYTES);
        seal(&file);
        let fd = read_only(&file);
        let msg = SegmentMsg { segment: slot, backing: 0, generation, len: SEGMENT_BYTES as u64 };
        send_with_fds(&self.fd, &proto::message(Kind::Segment, &msg.encode()), &[&fd]);
        self.segments.insert(slot, Segment { file, map, generation });
    }

    pub fn release(&mut self, slot: u32) {
        let seg = self.segments.remove(&slot).unwrap();
        let msg = Released { segment: slot, generation: seg.generation };
        send_with_fds(&self.fd, &proto::message(Kind::Released, &msg.encode()), &[]);
    }

    /// Writes `bytes` at `offset` in segment `slot` (through the
    /// writable mapping made before the seal).
    pub fn write_bytes(&mut self, slot: u32, offset: usize, bytes: &[u8]) {
        self.segments.get_mut(&slot).unwrap().map[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    pub fn generation(&self, slot: u32) -> u64 {
        self.segments[&slot].generation
    }

    /// Ring `r`'s consumer index in the hold region.
    pub fn consumer(&self, r: usize) -> u64 {
        let map = &self.hold.as_ref().unwrap().1;
        let at = HOLD_CONSUMER + 8 * r;
        // SAFETY: 8-aligned, in bounds; the reader writes this word.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(map.as_ptr().add(at) as *mut u64) }
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn heartbeat(&self) -> u64 {
        let map = &self.hold.as_ref().unwrap().1;
        // SAFETY: 8-aligned, in bounds; the reader writes this word.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(map.as_ptr().add(HOLD_HEARTBEAT) as *mut u64) }
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends a Stats reply with `text` and an occupancy file of `bytes`.
    pub fn send_stats(&self, text: &str, occupancy: &[u8]) {
        let (file, mut map) = memfd("nta-occupancy", occupancy.len());
        map.copy_from_slice(occupancy);
        drop(map);
        seal(&file);
        let fd = read_only(&file);
        send_with_fds(&self.fd, &proto::message(Kind::Stats, text.as_bytes()), &[&fd]);
    }
}

/// A TCP descriptor for `len` bytes at `offset` of segment `slot`.
pub fn tcp_descriptor(
    slot: u32,
    generation: u64,
    offset: u32,
    len: u32,
    tx: bool,
    stream_offset: u64,
    peer_port: u16,
) -> Descriptor {
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let mut peer_addr = [0u8; 16];
    peer_addr[..4].copy_from_slice(&[127, 0, 0, 2]);
    Descriptor {
        seq: 0,
        generation,
        timestamp_ns: 1_700_000_000_000_000_000 + u64::from(offset),
        stream_offset,
        segment: slot,
        offset,
        len,
        flags: FLAG_TCP | if tx { FLAG_TX } else { 0 },
        local_port: 80,
        peer_port,
        local_addr,
        peer_addr,
    }
}

pub fn sniffer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nta-sniffer"))
}

pub fn spawn(args: &[&str]) -> Child {
    sniffer().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for `child` at most `limit`, killing it if it overruns.
pub fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("sniffer overran {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The transport checksum of an IP packet as written and as etherparse
/// recomputes it.
pub fn transport_checksums(sliced: &etherparse::SlicedPacket) -> (u16, u16) {
    use etherparse::{NetSlice, TransportSlice};
    match (&sliced.net, &sliced.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
            (t.checksum(), t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap())
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) => {
            (t.checksum(), t.to_header().calc_checksum_ipv6(&ip.header().to_header(), t.payload()).unwrap())
        }
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
            (u.checksum(), u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap())
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(u))) => {
            (u.checksum(), u.to_header().calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap())
        }
        other => panic!("not an IP packet with TCP or UDP: {other:?}"),
    }
}

/// Reads a pcap file: (source port, destination port, payload) per packet.
/// Every packet's transport checksum must be right.
pub fn read_pcap(path: &Path) -> Vec<(u16, u16, Vec<u8>)> {
    let file = File::open(path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    assert_eq!(reader.header().datalink, pcap_file::DataLink::RAW);
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        let sliced = etherparse::SlicedPacket::from_ip(&packet.data).unwrap();
        let (got, want) = transport_checksums(&sliced);
        assert_eq!(got, want, "transport checksum");
        let (sp, dp, payload) = match sliced.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => (t.source_port(), t.destination_port(), t.payload().to_vec()),
            etherparse::TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), u.payload().to_vec()),
            other => panic!("unexpected transport {other:?}"),
        };
        out.push((sp, dp, payload));
    }
    out
}
