//! The exporter: a Unix socket a reader attaches to, one thread that
//! serves it, and the hooks through which the pool and the drivers feed
//! it (see the module notes of [`crate::export`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nta_core::{Backing, FreeHook, Pool, SegmentExport, SegmentListener};
use parking_lot::Mutex;

use super::clock::WallClock;
use super::proto::{self, Descriptor, Kind};
use super::region::Region;
use super::session::{self, Published, Session};
use super::tracker::{Slot, Tracker};
use crate::hook::{self, Subscriber, Subscription};
use crate::{sys, Direction, Flow, Protocol};

/// How an [`Exporter`] treats its readers.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// A reader whose heartbeat stops this long loses its holds.
    pub lease: Duration,
    /// Bytes each reader may hold; past it, descriptors are snapshots.
    pub hold_quota: u64,
    /// Slots per descriptor ring.
    pub ring_slots: usize,
    /// Readers attached at once.
    pub max_readers: usize,
    /// Uids allowed besides our own.
    pub allow_uids: Vec<u32>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            lease: Duration::from_secs(2),
            hold_quota: 64 << 20,
            ring_slots: 4096,
            max_readers: 4,
            allow_uids: Vec::new(),
        }
    }
}

/// Running totals of an exporter (a snapshot: [`Exporter::counters`]).
/// They are kept under the exporter's lock, which every counted event
/// holds anyway, so counting costs no atomic operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCounters {
    /// Descriptors written to rings.
    pub published: u64,
    /// Descriptors dropped because a ring was full.
    pub dropped: u64,
    /// Descriptors published without a hold (snapshot mode or quota).
    pub unheld: u64,
    /// Buffers that were not in the pool (nothing to export).
    pub not_in_pool: u64,
    /// Chunk frees postponed by a hold.
    pub postponed: u64,
    /// Postponed frees completed.
    pub completed: u64,
    /// Connections refused (uid, version, busy, malformed).
    pub refused: u64,
    /// Readers detached for a stopped heartbeat, a garbage index or a
    /// dead socket.
    pub evicted: u64,
}

struct SegmentEntry {
    generation: u64,
    backing: u32,
    fd: OwnedFd,
}

#[derive(Default)]
struct State {
    tracker: Tracker,
    counts: ExportCounters,
    sessions: Vec<Session>,
    segments: BTreeMap<u32, SegmentEntry>,
    /// While the first `watch` is between installing the listener and
    /// recording its snapshot: the segments released meanwhile (slot,
    /// generation), which the snapshot must not bring back.
    released_during_watch: Option<Vec<(u32, u64)>>,
    next_reader: u32,
}

impl State {
    fn invalidate(&self, slots: &[Slot]) {
        for s in slots {
            if let Some(sess) = self.sessions.iter().find(|x| x.id == s.reader) {
                if let Some(ring) = sess.rings.get(s.ring as usize) {
                    ring.invalidate(s.index);
                }
            }
        }
        if !slots.is_empty() {
            // The zeroed seqs must be visible before the memory is reused.
            std::sync::atomic::fence(SeqCst);
        }
    }
}

struct Shared {
    pool: Pool,
    config: ExportConfig,
    state: Mutex<State>,
    held_bytes: AtomicU64,
    readers: AtomicUsize,
    stop: AtomicBool,
    /// Whether the segment listener is installed (from the first attach on;
    /// only the exporter thread sets it).
    watching: AtomicBool,
    /// Descriptor timestamps.
    clock: WallClock,
}

impl Shared {
    /// Completes frees that became due (outside the lock). Sized ones go to
    /// the calling thread's cache: the publishing thread reuses them at
    /// once; the exporter thread, which allocates nothing, then flushes
    /// its cache ([`Shared::complete_here`]).
    fn complete(&self, due: Vec<(usize, Option<usize>)>) {
        for (chunk, len) in due {
            // SAFETY: the hook postponed this chunk's free and the tracker
            // hands each postponed chunk out once.
            unsafe { self.pool.free_postponed(NonNull::new_unchecked(chunk as *mut u8), len) };
        }
    }

    /// [`Shared::complete`] on the exporter thread: what it completed must
    /// not stay parked in its own thread cache.
    fn complete_here(&self, due: Vec<(usize, Option<usize>)>) {
        let any = !due.is_empty();
        self.complete(due);
        if any {
            self.pool.collect();
        }
    }

    fn sync_held(&self, st: &State) {
        self.held_bytes.store(st.sessions.iter().map(|s| s.held_bytes).sum(), Relaxed);
    }
}

/// The pool's free hook while readers are attached.
struct Holds(Arc<Shared>);

impl FreeHook for Holds {
    fn on_free(&self, chunk: NonNull<u8>, len: Option<usize>) -> bool {
        let mut st = self.0.state.lock();
        let mut invalid = Vec::new();
        let postponed = st.tracker.on_free(chunk.as_ptr() as usize, len, |s| invalid.push(s));
        st.invalidate(&invalid);
        if postponed {
            st.counts.postponed += 1;
        }
        postponed
    }
}

/// Announces segment changes to every reader.
struct Segments(Arc<Shared>);

fn backing_code(b: Backing) -> u32 {
    u32::from(b == Backing::Hugetlb)
}

impl SegmentListener for Segments {
    fn mapped(&self, seg: SegmentExport) {
        let mut st = self.0.state.lock();
        let msg = proto::message(
            Kind::Segment,
            &proto::SegmentMsg {
                segment: seg.segment,
                backing: backing_code(seg.backing),
                generation: seg.generation,
                len: seg.len as u64,
            }
            .encode(),
        );
        for s in &mut st.sessions {
            s.send(&msg, &[&seg.fd]);
        }
        let entry = SegmentEntry { generation: seg.generation, backing: backing_code(seg.backing), fd: seg.fd };
        st.segments.insert(seg.segment, entry);
    }

    fn released(&self, segment: u32, generation: u64) {
        let mut st = self.0.state.lock();
        st.segments.remove(&segment);
        if let Some(list) = &mut st.released_during_watch {
            list.push((segment, generation));
        }
        let msg = proto::message(Kind::Released, &proto::Released { segment, generation }.encode());
        for s in &mut st.sessions {
            s.send(&msg, &[]);
        }
    }
}

/// The drivers' published buffers, turned into descriptors.
struct Publisher(Arc<Shared>);

fn addr_bytes(a: &SocketAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        SocketAddr::V4(v) => b[..4].copy_from_slice(&v.ip().octets()),
        SocketAddr::V6(v) => b = v.ip().octets(),
    }
    b
}

impl Subscriber for Publisher {
    fn on_buffer(&self, flow: &Flow, data: &[u8]) {
        self.on_packet(flow, data, None)
    }

    fn on_packet(&self, flow: &Flow, data: &[u8], stream_offset: Option<u64>) {
        let sh = &*self.0;
        let chunk = (!data.is_empty()).then(|| sh.pool.chunk_start(data.as_ptr())).flatten();
        let Some(chunk) = chunk else {
            sh.state.lock().counts.not_in_pool += 1;
            return;
        };
        let mut flags = 0;
        if flow.direction == Direction::Tx {
            flags |= proto::FLAG_TX;
        }
        if flow.protocol == Protocol::Tcp {
            flags |= proto::FLAG_TCP;
        }
        if flow.local.is_ipv6() {
            flags |= proto::FLAG_IPV6;
        }
        let template = Descriptor {
            seq: 0,
            generation: 0,
            timestamp_ns: sh.clock.stamp(),
            stream_offset: 0,
            segment: 0,
            offset: 0,
            len: 0,
            flags,
            local_port: flow.local.port(),
            peer_port: flow.peer.port(),
            local_addr: addr_bytes(&flow.local),
            peer_addr: addr_bytes(&flow.peer),
        };
        let mut due = Vec::new();
        let mut invalid = Vec::new();
        let mut st = sh.state.lock();
        let State { tracker, sessions, counts, .. } = &mut *st;
        // One descriptor per segment the bytes lie in: a reader maps
        // segments one by one, and only a buffer above 2 MiB (a run of
        // segments) spans more than one.
        let mut done = 0;
        while done < data.len() {
            let at = data[done..].as_ptr();
            let Some(loc) = sh.pool.locate(at) else {
                counts.not_in_pool += 1;
                break;
            };
            let piece = (nta_core::HUGE_NODE_BYTES - loc.offset as usize).min(data.len() - done);
            let d = Descriptor {
                generation: loc.generation,
                stream_offset: stream_offset.map_or(0, |o| o + done as u64),
                segment: loc.segment,
                offset: loc.offset,
                len: piece as u32,
                ..template
            };
            // The chunk's shard's ring (a run has no shard: ring 0).
            let ring = loc.shard.unwrap_or(0) as usize;
            for s in sessions.iter_mut() {
                let r = ring % s.rings.len();
                match s.publish(r, d, chunk.as_ptr() as usize, at as usize + piece, tracker, &mut due, &mut invalid) {
                    Published::Held => counts.published += 1,
                    Published::Snapshot => {
                        counts.unheld += 1;
                        counts.published += 1;
                    }
                    Published::Dropped => counts.dropped += 1,
                    Published::Skipped => {}
                }
            }
            done += piece;
        }
        st.invalidate(&invalid);
        st.counts.completed += due.len() as u64;
        sh.sync_held(&st);
        drop(st);
        sh.complete(due);
    }
}

/// Serves the pool to sniffers (see [`crate::export`]).
pub struct Exporter {
    shared: Arc<Shared>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("path", &self.path).field("readers", &self.readers()).finish()
    }
}

impl Exporter {
    /// Listens on `path` with the default [`ExportConfig`].
    pub fn bind(path: impl AsRef<Path>, pool: &Pool) -> io::Result<Exporter> {
        Exporter::bind_with(path, pool, ExportConfig::default())
    }

    /// Listens on `path` (a Unix `SOCK_SEQPACKET` socket, mode 0600) and
    /// starts serving readers. A stale socket file at `path` (nobody
    /// listening) is replaced; a live one is an `AddrInUse` error.
    pub fn bind_with(path: impl AsRef<Path>, pool: &Pool, config: ExportConfig) -> io::Result<Exporter> {
        let path = path.as_ref().to_path_buf();
        if !pool.is_exportable() {
            return Err(io::Error::other("the pool is private (exportable(false)): nothing to export"));
        }
        if config.ring_slots == 0 || config.max_readers == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring_slots and max_readers must be positive"));
        }
        let listener = listen(&path)?;
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            config,
            state: Mutex::new(State::default()),
            held_bytes: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            clock: WallClock::new(),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new().name("nta-export".into()).spawn(move || serve(&sh, &listener))?;
        Ok(Exporter { shared, path, thread: Some(thread) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readers attached now.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Relaxed)
    }

    /// Bytes readers hold now (their chunks' frees wait).
    pub fn held_bytes(&self) -> u64 {
        self.shared.held_bytes.load(Relaxed)
    }

    /// Running totals, now.
    pub fn counters(&self) -> ExportCounters {
        self.shared.state.lock().counts
    }

    /// Chunks whose free is postponed now.
    pub fn postponed_chunks(&self) -> usize {
        self.shared.state.lock().tracker.postponed()
    }

    /// Checks the exporter's invariants (the tracker's and every
    /// session's); the error names the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let st = self.shared.state.lock();
        st.tracker.validate()?;
        for s in &st.sessions {
            s.validate()?;
        }
        Ok(())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.shared.pool.watch_segments(None);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn listen(path: &Path) -> io::Result<socket2::Socket> {
    use socket2::{Domain, SockAddr, Socket, Type};
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket file: live if someone accepts on it, else stale.
            let probe = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
            if probe.connect(&SockAddr::unix(path)?).is_ok() {
                let what = format!("{} is in use by a live exporter", path.display());
                return Err(io::Error::new(io::ErrorKind::AddrInUse, what));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            let what = format!("{} exists and is not a socket", path.display());
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, what));
        }
        Err(_) => {}
    }
    let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    sock.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    sock.listen(16)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The exporter thread: accepts readers, answers their requests, polls
/// their heartbeats and consumer indexes, and evicts the dead.
fn serve(sh: &Arc<Shared>, listener: &socket2::Socket) {
    let mut subscription: Option<Subscription> = None;
    let mut buf = vec![0u8; proto::MAX_MESSAGE];
    // Connections that have not sent their Attach yet: polled with the
    // rest, so a silent one never stalls the thread (or anyone's lease).
    let mut waiting: Vec<(OwnedFd, Instant)> = Vec::new();
    while !sh.stop.load(Relaxed) {
        let mut fds = vec![libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let ids: Vec<(u32, i32)> = sh.state.lock().sessions.iter().map(|s| (s.id, s.sock.as_raw_fd())).collect();
        fds.extend(ids.iter().map(|&(_, fd)| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
        fds.extend(waiting.iter().map(|(c, _)| libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        let _ = sys::poll(&mut fds, 5);
        for (i, &(id, _)) in ids.iter().enumerate() {
            if fds[i + 1].revents != 0 {
                request(sh, id, &mut buf);
            }
        }
        let ready: Vec<bool> = fds[1 + ids.len()..].iter().map(|p| p.revents != 0).collect();
        let now = Instant::now();
        for ((conn, since), ready) in std::mem::take(&mut waiting).into_iter().zip(ready) {
            if ready {
                attach(sh, conn, &mut buf);
            } else if now.duration_since(since) >= ATTACH_WAIT {
                refuse(sh, &conn, proto::ERR_MALFORMED, format!("no attach message within {ATTACH_WAIT:?}"));
            } else {
                waiting.push((conn, since));
            }
        }
        if fds[0].revents != 0 {
            while let Ok((conn, _)) = listener.accept() {
                let conn = OwnedFd::from(conn);
                if waiting.len() >= MAX_WAITING {
                    refuse(sh, &conn, proto::ERR_BUSY, format!("{MAX_WAITING} connections are attaching already"));
                } else {
                    waiting.push((conn, now));
                }
            }
        }
        tick(sh);
        // The hooks are installed only while someone is attached.
        let attached = sh.readers.load(Relaxed) > 0;
        if attached && subscription.is_none() {
            sh.pool.set_free_hook(Some(Arc::new(Holds(sh.clone()))));
            subscription = Some(hook::subscribe(Arc::new(Publisher(sh.clone()))));
        } else if !attached && subscription.is_some() {
            subscription = None;
            sh.pool.set_free_hook(None);
        }
    }
    drop(subscription);
    sh.pool.set_free_hook(None);
    let mut st = sh.state.lock();
    for s in &mut st.sessions {
        s.doomed.get_or_insert(session::STOPPING);
    }
    drop(st);
    evict(sh);
}

fn refuse(sh: &Shared, conn: &OwnedFd, code: u32, text: String) {
    sh.state.lock().counts.refused += 1;
    let msg = proto::message(Kind::Error, &proto::ErrorMsg { code, text }.encode());
    let _ = sys::send_with_fds(conn.as_fd(), &msg, &[]);
}

/// How long a new connection may take to send its Attach message.
const ATTACH_WAIT: Duration = Duration::from_secs(1);
/// Connections waiting to send their Attach message at once.
const MAX_WAITING: usize = 16;

/// Installs the segment listener and records every segment mapped now,
/// once: at the first attach, not at bind, because watching seals the
/// pool's segments (see `nta_core::export`), and a pool nobody has read
/// yet can still give the pages of its free extents back to the OS.
fn watch(sh: &Arc<Shared>) -> io::Result<()> {
    if sh.watching.load(Relaxed) {
        return Ok(());
    }
    // Not under the state lock: the listener takes it under the pool's
    // segment table lock.
    sh.state.lock().released_during_watch = Some(Vec::new());
    let now = sh.pool.watch_segments(Some(Arc::new(Segments(sh.clone()))));
    let mut st = sh.state.lock();
    let released = st.released_during_watch.take().unwrap_or_default();
    for seg in now? {
        // The listener may have run between the snapshot and this lock: a
        // segment it announced since is newer than the snapshot's, and one
        // it released must not come back.
        if released.contains(&(seg.segment, seg.generation)) {
            continue;
        }
        let entry = SegmentEntry { generation: seg.generation, backing: backing_code(seg.backing), fd: seg.fd };
        st.segments.entry(seg.segment).or_insert(entry);
    }
    sh.watching.store(true, Relaxed);
    Ok(())
}

/// A new connection whose Attach message arrived (it is readable): the
/// message, the peer's credentials, then Hello and the segments.
fn attach(sh: &Arc<Shared>, conn: OwnedFd, buf: &mut [u8]) {
    let n = match sys::recv_packet(conn.as_fd(), buf) {
        Ok(n) => n,
        Err(e) => return refuse(sh, &conn, proto::ERR_MALFORMED, format!("no attach message: {e}")),
    };
    let attach = match proto::parse(&buf[..n]) {
        Some((h, p)) if h.kind == Kind::Attach => match proto::Attach::decode(p) {
            Some(a) if a.version == u32::from(proto::VERSION) && h.version == proto::VERSION => a,
            Some(a) => {
                let text =
                    format!("protocol version {} not supported; the server speaks {}", a.version, proto::VERSION);
                return refuse(sh, &conn, proto::ERR_VERSION, text);
            }
            None => return refuse(sh, &conn, proto::ERR_MALFORMED, "short attach message".into()),
        },
        _ => return refuse(sh, &conn, proto::ERR_MALFORMED, "the first message must be an attach".into()),
    };
    // The credentials are checked once the reader said what it wants, so
    // that the refusal is the answer it reads (nothing of ours was sent).
    let me = sys::effective_uid();
    match sys::peer_uid(conn.as_fd()) {
        Ok(uid) if uid == me || sh.config.allow_uids.contains(&uid) => {}
        Ok(uid) => {
            return refuse(sh, &conn, proto::ERR_PERMISSION, format!("uid {uid} may not attach (server uid {me})"))
        }
        Err(e) => return refuse(sh, &conn, proto::ERR_PERMISSION, format!("no peer credentials: {e}")),
    }
    if sh.readers.load(Relaxed) >= sh.config.max_readers {
        return refuse(sh, &conn, proto::ERR_BUSY, format!("{} readers are attached already", sh.config.max_readers));
    }
    if let Err(e) = watch(sh) {
        return refuse(sh, &conn, proto::ERR_BUSY, format!("cannot export the pool's segments: {e}"));
    }
    let mode = if attach.mode == proto::MODE_HOLD { proto::MODE_HOLD } else { proto::MODE_SNAPSHOT };
    let rings = sh.pool.shard_count().clamp(1, proto::MAX_RINGS);
    let mut st = sh.state.lock();
    let id = st.next_reader;
    let session = Session::new(id, conn, mode, rings, sh.config.ring_slots, sh.config.hold_quota);
    let mut session = match session.and_then(|s| s.hello_fds().map(|f| (s, f))) {
        Ok((s, fds)) => {
            let hello = proto::Hello {
                reader: id,
                rings: rings as u32,
                slots: sh.config.ring_slots as u32,
                slot_bytes: proto::SLOT_BYTES as u32,
                segment_bytes: nta_core::HUGE_NODE_BYTES as u64,
                lease_ms: sh.config.lease.as_millis() as u64,
                hold_quota: sh.config.hold_quota,
                mode,
                hold_bytes: proto::HOLD_BYTES as u32,
            };
            let mut s = s;
            s.send(&proto::message(Kind::Hello, &hello.encode()), &fds.iter().collect::<Vec<_>>());
            s
        }
        Err(e) => {
            drop(st);
            eprintln!("nta-export: cannot set up a reader: {e}");
            return;
        }
    };
    for (&segment, e) in &st.segments {
        let msg = proto::SegmentMsg {
            segment,
            backing: e.backing,
            generation: e.generation,
            len: nta_core::HUGE_NODE_BYTES as u64,
        };
        session.send(&proto::message(Kind::Segment, &msg.encode()), &[&e.fd]);
    }
    st.next_reader += 1;
    st.sessions.push(session);
    sh.readers.store(st.sessions.len(), Relaxed);
}

/// A reader's socket is readable (or closed).
fn request(sh: &Shared, id: u32, buf: &mut [u8]) {
    let sock = {
        let st = sh.state.lock();
        match st.sessions.iter().find(|s| s.id == id) {
            Some(s) => s.sock.try_clone(),
            None => return,
        }
    };
    let Ok(sock) = sock else { return };
    let doom = match sys::recv_packet(sock.as_fd(), buf) {
        Ok(0) => Some(session::CLOSED),
        Ok(n) => match proto::parse(&buf[..n]) {
            Some((h, _)) if h.kind == Kind::StatsRequest => {
                match stats_reply(sh) {
                    Ok((text, fd)) => {
                        let msg = proto::message(Kind::Stats, text.as_bytes());
                        let mut st = sh.state.lock();
                        if let Some(s) = st.sessions.iter_mut().find(|s| s.id == id) {
                            s.send(&msg, &[&fd]);
                        }
                    }
                    Err(e) => eprintln!("nta-export: cannot build the stats: {e}"),
                }
                None
            }
            Some((h, _)) if h.kind == Kind::Detach => Some(session::DETACHED),
            _ => Some("it sent a malformed message"),
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some("its socket failed"),
    };
    if let Some(why) = doom {
        let mut st = sh.state.lock();
        if let Some(s) = st.sessions.iter_mut().find(|s| s.id == id) {
            s.doomed.get_or_insert(why);
        }
    }
}

/// Heartbeats, consumer indexes, evictions.
fn tick(sh: &Shared) {
    sh.clock.resync();
    let now = Instant::now();
    let mut due = Vec::new();
    let mut invalid = Vec::new();
    let mut st = sh.state.lock();
    let State { tracker, sessions, .. } = &mut *st;
    for s in sessions.iter_mut() {
        s.check_lease(now, sh.config.lease);
        for r in 0..s.rings.len() {
            s.advance_idle(r, tracker, &mut due, &mut invalid);
        }
    }
    st.invalidate(&invalid);
    st.counts.completed += due.len() as u64;
    sh.sync_held(&st);
    drop(st);
    sh.complete_here(due);
    evict(sh);
}

/// Removes doomed sessions: their holds drop and postponed frees complete.
fn evict(sh: &Shared) {
    let mut due = Vec::new();
    let mut invalid = Vec::new();
    let mut st = sh.state.lock();
    if st.sessions.iter().all(|s| s.doomed.is_none()) {
        return;
    }
    let State { tracker, sessions, counts, .. } = &mut *st;
    let mut evicted = Vec::new();
    sessions.retain_mut(|s| match s.doomed {
        Some(why) => {
            s.retire_all(tracker, &mut due, &mut invalid);
            if !session::is_orderly(why) {
                counts.evicted += 1;
                evicted.push((s.id, why));
            }
            false
        }
        None => true,
    });
    st.invalidate(&invalid);
    st.counts.completed += due.len() as u64;
    sh.readers.store(st.sessions.len(), Relaxed);
    sh.sync_held(&st);
    drop(st);
    sh.complete_here(due);
    for (id, why) in evicted {
        eprintln!("nta-export: reader {id} detached: {why}");
    }
}

/// The Stats reply: `name value` lines and a sealed occupancy file.
fn stats_reply(sh: &Shared) -> io::Result<(String, OwnedFd)> {
    let s = sh.pool.stats();
    let occ = sh.pool.occupancy();
    let c = sh.state.lock().counts;
    let mut text = String::new();
    for (name, v) in [
        ("pool_in_use_bytes", s.in_use_bytes),
        ("pool_free_bytes", s.free_bytes),
        ("pool_mapped_bytes", s.mapped_bytes),
        ("pool_largest_free_bytes", s.largest_free_bytes),
        ("pool_metadata_bytes", s.metadata_bytes),
        ("pool_segments_hugetlb", s.segments_hugetlb),
        ("pool_segments_thp", s.segments_thp),
        ("pool_segments_small", s.segments_small),
        ("pool_remote_frees_queued", s.remote_frees_queued),
        ("pool_remote_frees_drained", s.remote_frees_drained),
        ("pool_shards", sh.pool.shard_count() as u64),
        ("pool_held_bytes", sh.held_bytes.load(Relaxed)),
        ("export_readers", sh.readers.load(Relaxed) as u64),
        ("export_published_total", c.published),
        ("export_dropped_total", c.dropped),
        ("export_unheld_total", c.unheld),
        ("export_postponed_frees_total", c.postponed),
    ] {
        text.push_str(&format!("{name} {v}\n"));
    }
    let held = held_bitmaps(sh);
    let len = proto::OCC_HEADER + occ.len() * proto::OCC_RECORD_HELD;
    let region = Region::new("nta-occupancy", len.next_multiple_of(8))?;
    let mut at = proto::OCC_HEADER;
    let mut header = [0u8; proto::OCC_HEADER];
    header[..8].copy_from_slice(&proto::OCC_MAGIC.to_le_bytes());
    header[8..12].copy_from_slice(&(occ.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(proto::OCC_RECORD_HELD as u32).to_le_bytes());
    region.write(0, &header);
    let mut rec = Vec::with_capacity(proto::OCC_RECORD_HELD);
    for n in &occ {
        rec.clear();
        rec.extend_from_slice(&(n.segment as u32).to_le_bytes());
        rec.extend_from_slice(&n.owner.map_or(u32::MAX, |o| o as u32).to_le_bytes());
        rec.extend_from_slice(&n.backing.map_or(0, backing_code).to_le_bytes());
        rec.extend_from_slice(&0u32.to_le_bytes());
        for w in n.free.iter().chain(&n.start).chain(&n.pages) {
            rec.extend_from_slice(&w.to_le_bytes());
        }
        rec.resize(proto::OCC_RECORD, 0);
        if let Some(words) = held.get(&(n.segment as u32)) {
            for w in words {
                rec.extend_from_slice(&w.to_le_bytes());
            }
        }
        rec.resize(proto::OCC_RECORD_HELD, 0);
        region.write(at, &rec);
        at += proto::OCC_RECORD_HELD;
    }
    region.seal(true)?;
    let fd = region.read_only_fd()?;
    Ok((text, fd))
}

/// The occupancy file's held bitmaps: per segment, the granules from each
/// held chunk's start through the last byte its descriptors cover (for a
/// chunk trimmed to what it received, as rx buffers are, the whole chunk).
/// Read under the exporter's lock, with no pool lock taken.
fn held_bitmaps(sh: &Shared) -> BTreeMap<u32, Vec<u64>> {
    const GRANULE: usize = nta_core::HUGE_NODE_BYTES / proto::OCC_GRANULES;
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let st = sh.state.lock();
    st.tracker.for_each_held(|chunk, end| {
        let mut at = chunk;
        while at < end {
            let Some(loc) = sh.pool.locate(at as *const u8) else { break };
            let piece = (nta_core::HUGE_NODE_BYTES - loc.offset as usize).min(end - at);
            let words = out.entry(loc.segment).or_insert_with(|| vec![0; proto::OCC_GRANULES / 64]);
            let first = loc.offset as usize / GRANULE;
            let last = (loc.offset as usize + piece).div_ceil(GRANULE);
            for g in first..last {
                words[g / 64] |= 1 << (g % 64);
            }
            at += piece;
        }
    });
    out
}
