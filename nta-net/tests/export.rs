//! The exporter against a minimal reader written here from the protocol
//! notes (`nta_net::export::proto`): attach, segments, descriptors, holds
//! that postpone frees, snapshots invalidated on free, leases, and hostile
//! readers (junk messages, garbage consumer indexes, wrong versions).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use nta_core::Pool;
use nta_net::export::proto::{self, Descriptor, Kind};
use nta_net::export::{ExportConfig, Exporter};
use nta_net::{hook, Direction, Flow, PacketBuf, Protocol};

fn sock_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nta-export-test-{}-{name}.sock", std::process::id()))
}

fn pool() -> Pool {
    Pool::builder().capacity(64 << 20).shards(1).build().unwrap()
}

/// Receives one packet and its descriptors (blocking, 5 s at most).
fn recv(sock: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut pfd = [libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(pfd.as_mut_ptr(), 1, 5000) }, 1, "no message within 5 s");
    let mut buf = vec![0u8; proto::MAX_MESSAGE];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: live buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    let mut fds = Vec::new();
    // SAFETY: walks the control bytes the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
            for i in 0..bytes / 4 {
                fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.cast::<i32>().add(i))));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (buf, fds)
}

fn send(sock: &OwnedFd, kind: Kind, payload: &[u8]) {
    let m = proto::message(kind, payload);
    // SAFETY: a live buffer.
    let n = unsafe { libc::send(sock.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
    assert_eq!(n as usize, m.len());
}

fn connect(path: &PathBuf) -> OwnedFd {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    s.connect(&socket2::SockAddr::unix(path).unwrap()).unwrap();
    OwnedFd::from(s)
}

/// A mapping of a descriptor (read-only or read-write).
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: &OwnedFd, len: usize, write: bool) -> std::io::Result<Map> {
        let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Map { ptr: p.cast(), len })
    }
    fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at + 8 <= self.len);
        // SAFETY: in bounds, aligned, accessed atomically.
        unsafe { &*self.ptr.add(at).cast::<AtomicU64>() }
    }
    fn slot(&self, index: u64, slots: u64) -> Descriptor {
        let at = proto::RING_HEADER + (index % slots) as usize * proto::SLOT_BYTES;
        let mut b = [0u8; proto::SLOT_BYTES];
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&self.word(at + 8 * i).load(Acquire).to_le_bytes());
        }
        Descriptor::decode(&b)
    }
    fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        assert!(at + len <= self.len);
        // SAFETY: in bounds; the test reads bytes the server does not
        // change while they are held.
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }.to_vec()
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

struct Reader {
    sock: OwnedFd,
    hello: proto::Hello,
    hold: Map,
    rings: Vec<Map>,
    segments: Vec<(proto::SegmentMsg, OwnedFd)>,
}

fn attach(path: &PathBuf, mode: u32) -> Reader {
    let sock = connect(path);
    send(&sock, Kind::Attach, &proto::Attach { version: u32::from(proto::VERSION), mode }.encode());
    let (m, mut fds) = recv(&sock);
    let (h, p) = proto::parse(&m).unwrap();
    assert_eq!(h.kind, Kind::Hello, "{:?}", proto::ErrorMsg::decode(p));
    let hello = proto::Hello::decode(p).unwrap();
    assert_eq!(fds.len(), 1 + hello.rings as usize);
    let hold = Map::new(&fds.remove(0), proto::HOLD_BYTES, true).unwrap();
    assert_eq!(hold.word(0).load(Relaxed), proto::HOLD_MAGIC);
    let ring_len = proto::ring_bytes(hello.slots as usize);
    let rings = fds.iter().map(|f| Map::new(f, ring_len, false).unwrap()).collect();
    // A read-only ring cannot be mapped writable.
    assert!(Map::new(&fds[0], ring_len, true).is_err());
    Reader { sock, hello, hold, rings, segments: Vec::new() }
}

impl Reader {
    /// Takes Segment messages until none is waiting.
    fn segments(&mut self) {
        loop {
            let mut pfd = [libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 100) } != 1 {
                return;
            }
            let (m, mut fds) = recv(&self.sock);
            let (h, p) = proto::parse(&m).unwrap();
            if h.kind == Kind::Segment {
                self.segments.push((proto::SegmentMsg::decode(p).unwrap(), fds.remove(0)));
            }
        }
    }
    fn head(&self) -> u64 {
        self.rings[0].word(proto::RING_HEAD).load(Acquire)
    }
    fn consume_to(&self, index: u64) {
        self.hold.word(proto::HOLD_CONSUMER).store(index, Release);
    }
    /// Asks for the stats; whether the occupancy file marks every granule
    /// of `segment` bytes `offset..offset + len` as held.
    fn held_in_occupancy(&self, segment: u32, offset: usize, len: usize) -> bool {
        send(&self.sock, Kind::StatsRequest, &[]);
        let (fds, p) = loop {
            let (m, fds) = recv(&self.sock);
            let (h, p) = proto::parse(&m).unwrap();
            if h.kind == Kind::Stats {
                break (fds, p.to_vec());
            }
        };
        assert!(String::from_utf8(p).unwrap().contains("pool_held_bytes"));
        // SAFETY: fstat into a zeroed struct of a valid fd.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fds[0].as_raw_fd(), &mut st), 0);
            st.st_size as usize
        };
        let occ = Map::new(&fds[0], size, false).unwrap();
        let (nodes, record) = (occ.word(8).load(Relaxed) as u32 as usize, (occ.word(8).load(Relaxed) >> 32) as usize);
        assert_eq!(record, proto::OCC_RECORD_HELD);
        let rec = (0..nodes)
            .map(|i| proto::OCC_HEADER + i * record)
            .find(|&at| occ.word(at).load(Relaxed) as u32 == segment)
            .expect("the segment has a record");
        (offset / 32..(offset + len).div_ceil(32)).all(|g| {
            let w = occ.word(rec + proto::OCC_RECORD + 8 * (g / 64)).load(Relaxed);
            w >> (g % 64) & 1 == 1
        })
    }
    fn beat(&self) {
        self.hold.word(proto::HOLD_HEARTBEAT).fetch_add(1, Relaxed);
    }
}

fn flow() -> Flow {
    Flow::new("127.0.0.1:80".parse().unwrap(), "127.0.0.1:4242".parse().unwrap(), Protocol::Tcp, Direction::Rx)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One test at a time: the publish hook is process-wide.
static SERIAL: parking_lot::Mutex<()> = parking_lot::const_mutex(());

#[test]
fn a_held_buffer_is_read_in_place_and_its_free_waits_for_the_reader() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("hold");
    let ex = Exporter::bind(&path, &pool).unwrap();
    let mode = std::fs::metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let mut r = attach(&path, proto::MODE_HOLD);
    wait_until("the reader is attached", || ex.readers() == 1 && hook::is_active());
    let mut buf = PacketBuf::with_capacity(&pool, 1500);
    bytes::BufMut::put_slice(&mut buf, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    r.segments();
    hook::publish(flow, &buf, Some(1000));
    let base = pool.stats().in_use_bytes;
    drop(buf); // the application is done with it: the free is postponed
    assert_eq!(pool.stats().in_use_bytes, base, "a held chunk stays allocated");
    assert_eq!(ex.postponed_chunks(), 1);
    assert!(ex.held_bytes() > 0);
    ex.validate().unwrap();
    assert_eq!(r.head(), 1);
    let d = r.rings[0].slot(0, u64::from(r.hello.slots));
    assert_eq!((d.seq, d.len, d.local_port, d.peer_port, d.stream_offset), (1, 27, 80, 4242, 1000));
    assert_ne!(d.flags & proto::FLAG_HELD, 0);
    assert_ne!(d.flags & proto::FLAG_TCP, 0);
    let (seg, fd) = r.segments.iter().find(|(s, _)| s.segment == d.segment).expect("the segment was announced");
    assert_eq!(seg.generation, d.generation);
    // The reader maps the segment read-only and reads the bytes where they lie.
    let m = Map::new(fd, seg.len as usize, false).unwrap();
    assert_eq!(m.bytes(d.offset as usize, d.len as usize), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(Map::new(fd, seg.len as usize, true).is_err(), "a segment cannot be mapped writable");
    // SAFETY: plain syscall on our fd.
    assert_ne!(unsafe { libc::mprotect(m.ptr.cast(), m.len, libc::PROT_READ | libc::PROT_WRITE) }, 0);
    // The occupancy file marks the held chunk's granules.
    assert!(r.held_in_occupancy(d.segment, d.offset as usize, d.len as usize));
    // Consuming the descriptor releases the hold: the free completes.
    r.consume_to(1);
    wait_until("the postponed free completes", || ex.postponed_chunks() == 0);
    pool.collect();
    assert!(pool.stats().in_use_bytes < base);
    assert_eq!(ex.held_bytes(), 0);
    assert!(!r.held_in_occupancy(d.segment, d.offset as usize, d.len as usize));
    ex.validate().unwrap();
    pool.validate().unwrap();
    drop(r);
    wait_until("the reader is gone", || ex.readers() == 0);
}

#[test]
fn a_snapshot_descriptor_is_invalidated_when_its_chunk_is_freed() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("snap");
    let ex = Exporter::bind(&path, &pool).unwrap();
    let r = attach(&path, proto::MODE_SNAPSHOT);
    wait_until("the reader is attached", hook::is_active);
    let mut buf = PacketBuf::with_capacity(&pool, 100);
    bytes::BufMut::put_slice(&mut buf, b"hello");
    hook::publish(flow, &buf, None);
    let slots = u64::from(r.hello.slots);
    assert_eq!(r.rings[0].slot(0, slots).seq, 1);
    assert_eq!(r.rings[0].slot(0, slots).flags & proto::FLAG_HELD, 0);
    drop(buf);
    assert_eq!(r.rings[0].slot(0, slots).seq, 0, "the free zeroed the slot's seq");
    assert_eq!(ex.postponed_chunks(), 0);
    ex.validate().unwrap();
}

#[test]
fn past_the_quota_descriptors_are_snapshots_and_a_full_ring_drops() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("quota");
    let cfg = ExportConfig { hold_quota: 1000, ring_slots: 4, ..ExportConfig::default() };
    let ex = Exporter::bind_with(&path, &pool, cfg).unwrap();
    let r = attach(&path, proto::MODE_HOLD);
    wait_until("the reader is attached", hook::is_active);
    let bufs: Vec<PacketBuf> = (0..6)
        .map(|_| {
            let mut b = PacketBuf::with_capacity(&pool, 600);
            bytes::BufMut::put_slice(&mut b, &[7u8; 600]);
            b
        })
        .collect();
    for b in &bufs {
        hook::publish(flow, b, None);
    }
    let slots = u64::from(r.hello.slots);
    let held: Vec<bool> = (0..4).map(|i| r.rings[0].slot(i, slots).flags & proto::FLAG_HELD != 0).collect();
    assert_eq!(held, [true, false, false, false], "600 B held, the next 600 B would pass the 1000 B quota");
    assert_eq!(r.rings[0].word(proto::RING_DROPS).load(Relaxed), 2);
    assert_eq!(r.rings[0].word(proto::RING_UNHELD).load(Relaxed), 3);
    assert_eq!(ex.counters().dropped, 2);
    ex.validate().unwrap();
    drop(bufs);
    assert_eq!(ex.postponed_chunks(), 1);
}

#[test]
fn a_reader_that_stops_beating_or_writes_garbage_loses_its_holds() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("lease");
    let cfg = ExportConfig { lease: Duration::from_millis(300), ..ExportConfig::default() };
    let ex = Exporter::bind_with(&path, &pool, cfg).unwrap();
    for garbage in [false, true] {
        let r = attach(&path, proto::MODE_HOLD);
        wait_until("the reader is attached", || ex.readers() == 1 && hook::is_active());
        let mut buf = PacketBuf::with_capacity(&pool, 100);
        bytes::BufMut::put_slice(&mut buf, b"held");
        hook::publish(flow, &buf, None);
        drop(buf);
        assert_eq!(ex.postponed_chunks(), 1);
        if garbage {
            // Beating, but the consumer index jumps past the head, and the
            // rest of the region is random.
            r.beat();
            for i in 2..proto::HOLD_BYTES / 8 {
                r.hold.word(8 * i).store(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64), Relaxed);
            }
            r.consume_to(u64::MAX - 3);
        }
        wait_until("the reader is evicted", || ex.readers() == 0);
        assert_eq!(ex.postponed_chunks(), 0, "eviction completes the postponed free");
        let slots = u64::from(r.hello.slots);
        assert_eq!(r.rings[0].slot(0, slots).seq, 0, "an evicted reader's descriptors read as torn");
        assert_eq!(ex.held_bytes(), 0);
        drop(r);
    }
    assert_eq!(ex.counters().evicted, 2);
    pool.collect();
    pool.validate().unwrap();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn junk_wrong_versions_and_busy_are_refused_with_an_error() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("junk");
    let cfg = ExportConfig { max_readers: 1, ..ExportConfig::default() };
    let ex = Exporter::bind_with(&path, &pool, cfg).unwrap();
    let expect_error = |sock: &OwnedFd, code: u32| {
        let (m, _) = recv(sock);
        let (h, p) = proto::parse(&m).unwrap();
        assert_eq!(h.kind, Kind::Error);
        let e = proto::ErrorMsg::decode(p).unwrap();
        assert_eq!(e.code, code, "{}", e.text);
    };
    // Junk as the first message.
    let s = connect(&path);
    // SAFETY: a live buffer.
    unsafe { libc::send(s.as_raw_fd(), b"\xff\x00junkjunkjunk".as_ptr().cast(), 14, 0) };
    expect_error(&s, proto::ERR_MALFORMED);
    // Another version.
    let s = connect(&path);
    send(&s, Kind::Attach, &proto::Attach { version: 99, mode: 0 }.encode());
    expect_error(&s, proto::ERR_VERSION);
    // One reader is the limit here.
    let r = attach(&path, proto::MODE_SNAPSHOT);
    let s = connect(&path);
    send(&s, Kind::Attach, &proto::Attach { version: 1, mode: 0 }.encode());
    expect_error(&s, proto::ERR_BUSY);
    // Random packets from an attached reader end its session, nothing else.
    // SAFETY: a live buffer.
    unsafe { libc::send(r.sock.as_raw_fd(), [0x5au8; 300].as_ptr().cast(), 300, 0) };
    wait_until("the junk-sending reader is gone", || ex.readers() == 0);
    assert_eq!(ex.counters().refused, 3);
    // The exporter still serves.
    let r = attach(&path, proto::MODE_SNAPSHOT);
    send(&r.sock, Kind::StatsRequest, &[]);
    let (m, fds) = recv(&r.sock);
    let (h, p) = proto::parse(&m).unwrap();
    assert_eq!(h.kind, Kind::Stats);
    let text = String::from_utf8(p.to_vec()).unwrap();
    assert!(text.contains("pool_in_use_bytes ") && text.contains("export_readers 1"), "{text}");
    assert_eq!(fds.len(), 1);
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and struct.
    assert_eq!(unsafe { libc::fstat(fds[0].as_fd().as_raw_fd(), &mut st) }, 0);
    let occ = Map::new(&fds[0], st.st_size as usize, false).unwrap();
    assert_eq!(occ.word(0).load(Relaxed), proto::OCC_MAGIC);
    let nodes = occ.word(8).load(Relaxed) as u32;
    assert_eq!(st.st_size as usize, proto::OCC_HEADER + nodes as usize * proto::OCC_RECORD_HELD);
}

#[test]
fn a_second_exporter_on_a_live_path_is_refused_and_a_stale_one_replaced() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("inuse");
    let ex = Exporter::bind(&path, &pool).unwrap();
    let err = Exporter::bind(&path, &pool).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    drop(ex);
    assert!(!path.exists(), "the socket file is removed on drop");
    // A stale socket file (nobody listening) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let _ex = Exporter::bind(&path, &pool).unwrap();
}

#[test]
fn a_buffer_above_2_mib_is_published_one_descriptor_per_segment_and_slices_hold_their_chunk() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("run");
    let ex = Exporter::bind(&path, &pool).unwrap();
    let mut r = attach(&path, proto::MODE_HOLD);
    wait_until("the reader is attached", || ex.readers() == 1 && hook::is_active());
    let len = (5 << 20) / 2; // 2.5 MiB: a run of two segments
    let mut big = PacketBuf::with_capacity(&pool, len);
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bytes::BufMut::put_slice(&mut big, &body);
    r.segments();
    hook::publish(flow, &big, Some(7));
    let slots = u64::from(r.hello.slots);
    assert_eq!(r.head(), 2, "one descriptor per segment");
    let (a, b) = (r.rings[0].slot(0, slots), r.rings[0].slot(1, slots));
    assert_eq!((a.offset, b.offset, b.segment), (0, 0, a.segment + 1));
    assert_eq!(a.len as usize + b.len as usize, len);
    assert_eq!((a.stream_offset, b.stream_offset), (7, 7 + u64::from(a.len)));
    r.segments();
    for d in [a, b] {
        let (seg, fd) = r.segments.iter().find(|(s, _)| s.segment == d.segment).expect("announced");
        assert_eq!(seg.generation, d.generation);
        let m = Map::new(fd, seg.len as usize, false).unwrap();
        let from = (d.stream_offset - 7) as usize;
        assert_eq!(m.bytes(d.offset as usize, d.len as usize), &body[from..from + d.len as usize]);
    }
    // A slice from the middle of a frozen buffer holds the whole chunk.
    let mut small = PacketBuf::with_capacity(&pool, 1000);
    bytes::BufMut::put_slice(&mut small, &[9u8; 1000]);
    let frozen = small.freeze();
    let middle = frozen.slice(300..700);
    drop(frozen);
    hook::publish(flow, &middle, None);
    assert_eq!(r.head(), 3);
    let before = pool.stats().in_use_bytes;
    drop((big, middle));
    assert_eq!(ex.postponed_chunks(), 2, "both chunks wait for the reader");
    assert_eq!(pool.stats().in_use_bytes, before);
    ex.validate().unwrap();
    r.consume_to(3);
    wait_until("the postponed frees complete", || ex.postponed_chunks() == 0);
    pool.collect();
    assert!(pool.stats().in_use_bytes < before);
    ex.validate().unwrap();
    pool.validate().unwrap();
}

#[test]
fn a_silent_connection_delays_nobody_and_is_refused_after_a_second() {
    let _g = SERIAL.lock();
    let pool = pool();
    let path = sock_path("silent");
    let ex = Exporter::bind(&path, &pool).unwrap();
    let silent = connect(&path);
    std::thread::sleep(Duration::from_millis(50)); // accepted, waiting
    let t = Instant::now();
    let r = attach(&path, proto::MODE_HOLD);
    assert!(t.elapsed() < Duration::from_millis(500), "attach took {:?} behind a silent peer", t.elapsed());
    wait_until("the reader is counted", || ex.readers() == 1);
    let (m, _) = recv(&silent);
    let (h, p) = proto::parse(&m).unwrap();
    assert_eq!(h.kind, Kind::Error);
    let e = proto::ErrorMsg::decode(p).unwrap();
    assert!(e.code == proto::ERR_MALFORMED && e.text.contains("no attach message"), "{}", e.text);
    assert!(t.elapsed() >= Duration::from_millis(800), "refused only after the wait");
    drop(r);
    wait_until("the reader is gone", || ex.readers() == 0);
}

#[test]
fn binding_seals_nothing_and_the_first_reader_gets_sealed_segments() {
    let _g = SERIAL.lock();
    let pool = Pool::builder().capacity(64 << 20).shards(1).hugepages(nta_core::HugePages::Off).build().unwrap();
    pool.bind_current_thread(0);
    let path = sock_path("lazy-seal");
    let exporter = Exporter::bind(&path, &pool).unwrap();
    // Before anyone attaches, the pool is not sealed: the pages of a free
    // extent between two live chunks go back to the OS.
    let left = pool.alloc(8192).unwrap();
    let big = pool.alloc(1 << 20).unwrap();
    let right = pool.alloc(8192).unwrap();
    // SAFETY: fresh chunks; the big one is freed once, with its length.
    unsafe {
        big.as_ptr().write_bytes(0x22, 1 << 20);
        pool.free_sized(big, 1 << 20);
    }
    pool.trim();
    assert!(pool.stats().discarded_bytes > 0, "an exporter nobody attached to must not seal the pool");
    let mut r = attach(&path, proto::MODE_HOLD);
    r.segments();
    assert!(!r.segments.is_empty(), "the reader is told of the segments mapped before it attached");
    for (msg, fd) in &r.segments {
        // SAFETY: fcntl on a descriptor we were handed.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_FUTURE_WRITE, 0, "segment {} is sealed before a reader gets it", msg.segment);
        assert!(Map::new(fd, nta_core::HUGE_NODE_BYTES, true).is_err(), "no writable mapping");
    }
    // Sealed now: a trim gives back nothing more.
    let before = pool.stats().discarded_bytes;
    pool.trim();
    assert_eq!(pool.stats().discarded_bytes, before);
    drop(r);
    drop(exporter);
    // SAFETY: live chunks, freed once.
    unsafe {
        pool.free_sized(left, 8192);
        pool.free_sized(right, 8192);
    }
    pool.validate().unwrap();
}
