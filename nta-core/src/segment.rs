//! Segments: the pool's memory, mapped from memfds into one reserved range.
//!
//! # Layout
//!
//! The pool reserves `capacity` bytes of 2 MiB aligned address space once.
//! Segment `i` occupies `base + i * 2 MiB` and, when the pool is exportable,
//! is a `MAP_SHARED` view of a memfd of its own, `nta-seg-<i>`, sealed
//! against new writers once the pool is first exported (see `export`). A
//! reader process maps the same file read-only and finds a chunk at the
//! same offset in it.
//! Segment metadata (`NodeMeta`) lives in a separate private array indexed
//! by `i`.
//!
//! # Backing, per segment
//!
//! `HugePages::Try` asks for a hugetlb page first; when none is reserved it
//! falls back to shmem advised with `MADV_HUGEPAGE` (counted as THP only when
//! the kernel's `shmem_enabled` setting permits it), else plain 4 KiB pages.
//! Falling back is never an error. `Require` fails the allocation instead,
//! and `Off` never tries hugetlb or THP.
//!
//! # Life cycle
//!
//! ```text
//! Unmapped --acquire--> Owned(shard) --release--> Free (mapped, wholly free)
//!     ^  \                                         |   ^
//!     |   +--acquire_run--> Run --release_run-------+   |
//!     +------- above the retain watermark --------------+
//! ```
//!
//! Free segments are parked mapped. Up to `retain_bytes` of them stay
//! mapped for reuse; beyond that, a segment that stays parked for the
//! release delay (default 1 s, checked whenever a segment is released) has
//! its mapping dropped and its memfd closed (the pages are freed once no
//! reader maps them) and its range made inaccessible again, so RSS falls. `Pool::trim` releases them at once. The delay
//! keeps a workload that frees and reallocates hundreds of megabytes in a
//! burst from faulting it all back in each time (mimalloc purges with a
//! delay for the same reason). The retained ones keep their mapping but
//! give their pages back once parked for the purge delay (default 10 s,
//! see `purge`). All of this is the cold path and runs under one
//! futex lock (see `lock`); the allocation fast path never touches it.
//!
//! # Runs: buffers above 2 MiB
//!
//! A request larger than a huge node takes a *run*: `k` adjacent segment
//! slots, each Unmapped or parked Free, which the range's contiguity makes
//! one contiguous buffer (and, for exportable pools, one contiguous range of
//! the memfd, since slot `i` maps file offset `i * 2 MiB`). Runs are taken
//! from the top of the range down, ordinary segments from the bottom up, so
//! the two rarely interleave. The head segment records the run's length in
//! segments and the requested bytes; all `k` segments are in state `Run`,
//! owned by no shard, with all-free bitmaps. A run is freed whole (its
//! segments are parked), shrinks by parking its trailing segments, and
//! grows in place when the slots after it are free.
//!
//! Invariants: `mapped == |Owned| + |Free| + |Run|`;
//! `mapped_bytes == mapped * 2 MiB <= capacity`; a slot's `unmapped` bit is
//! set iff its state is Unmapped; a Free or Run segment has all-free
//! bitmaps and no owner.

use crate::bitmap;
use crate::export::{SegmentExport, SegmentListener};
use crate::granule::{HUGE_GRANULES, HUGE_NODE_BYTES, HUGE_NODE_SHIFT, PAGES_PER_HUGE, PAGE_NODE_BYTES};
use crate::lock::{FutexGuard, FutexLock};
use crate::meta_array::MetaArray;
use crate::node::{NodeMeta, NO_OWNER, NO_SEGMENT};
use crate::sys::{self, MapSource};
use crate::HugePages;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

/// What memory a segment is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Backing {
    /// 2 MiB pages from the hugetlb pool (`MFD_HUGETLB` / `MAP_HUGETLB`).
    Hugetlb = 1,
    /// Regular pages advised for transparent huge pages.
    Thp = 2,
    /// 4 KiB pages.
    Small = 3,
}

impl Backing {
    fn from_u8(v: u8) -> Option<Backing> {
        match v {
            1 => Some(Backing::Hugetlb),
            2 => Some(Backing::Thp),
            3 => Some(Backing::Small),
            _ => None,
        }
    }
}

/// Where a segment is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegmentState {
    Unmapped = 0,
    Owned = 1,
    Free = 2,
    Run = 3,
}

/// Segments mapped (of 4 KiB pages) before the pool starts populating new
/// ones as it maps them: a pool that has grown past this is taking memory
/// by the megabyte, and one `MADV_POPULATE_WRITE` costs less than 512 page
/// faults (a memfd's fault goes through shmem and is dearer than an
/// anonymous one). The first ones stay lazy, so a small working set keeps
/// its small footprint. Measured (2026-12-06, `nta-bench replay`, 3 runs
/// each): the tshark trace (100 MB live) 102-113 ms against 115-118 ms,
/// peak resident +2%; with 2 instead of 8 the redis trace (8 MB live) took
/// 19% more resident memory for no time gained; P2 (36 MB live)
/// resident/live 1.033 -> 1.043.
const POPULATE_AFTER: usize = 8;

/// Counters of runs (buffers above 2 MiB), which no shard owns. Written
/// under the table lock, so `validate` (which holds it) sees them agree
/// with the runs; read by anyone with relaxed loads.
#[derive(Debug, Default)]
pub struct RunCounters {
    /// `segments * 2 MiB` over live runs.
    pub in_use_bytes: AtomicU64,
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
    /// Live runs.
    pub runs: AtomicU64,
}

/// The segment table held (see [`Segments::hold`]).
pub struct TableGuard<'a>(#[allow(dead_code)] FutexGuard<'a, Stacks>);

/// The parked stack; everything else the lock guards lives in atomics.
struct Stacks {
    /// Mapped, wholly free segments, linked through `NodeMeta::next`.
    free_top: u32,
    free_count: usize,
}

/// The segment table of one pool.
pub struct Segments {
    base: NonNull<u8>,
    count: usize,
    metas: MetaArray<NodeMeta>,
    /// Memfd segments (exportable pools) or private anonymous memory.
    exportable: bool,
    /// Set (under the table lock, never cleared) when the segments are
    /// first exported: from then on every segment is sealed (see `export`).
    exported: AtomicBool,
    /// Bytes of free pages given back to the OS so far ([`Segments::discard`]).
    discarded: AtomicU64,
    /// When the next parked segment's purge falls due (ms, see `purge`), or
    /// `u64::MAX` when no parked segment waits for one. Lowered when a
    /// segment is parked, recomputed by each walk of the parked stack
    /// (both under the lock); read without the lock by the shards' slow
    /// paths.
    purge_due_ms: AtomicU64,
    purge_delay_ms: u64,
    /// Per slot: the segment's memfd plus one, or 0 for none (written under
    /// the lock). Offset by one so that the table starts all zero and its
    /// pages stay untouched until a segment is mapped.
    fds: MetaArray<AtomicI32>,
    /// Last generation handed out.
    generations: AtomicU64,
    /// Sees segments mapped and released (see `export`).
    listener: FutexLock<Option<Arc<dyn SegmentListener>>>,
    hugepages: HugePages,
    thp: bool,
    /// The whole capacity is mapped for good (`PoolBuilder::premap`). Its
    /// range may be registered with io_uring or a device, which pins the
    /// pages, and a page dropped under a pin would part the device's view
    /// from ours: such a pool never gives a page back.
    premapped: bool,
    retain_segments: usize,
    release_delay_ms: u64,
    epoch: std::time::Instant,
    stacks: FutexLock<Stacks>,
    /// One bit per slot: set iff the slot is Unmapped (written under the lock).
    unmapped: MetaArray<AtomicU64>,
    runs: RunCounters,
    mapped: AtomicUsize,
    by_backing: [AtomicUsize; 4],
}

// SAFETY: the raw base pointer designates memory owned by the table; all
// mutable state is behind atomics or the mutex.
unsafe impl Send for Segments {}
// SAFETY: see Send.
unsafe impl Sync for Segments {}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("base", &self.base)
            .field("count", &self.count)
            .field("mapped", &self.mapped.load(Relaxed))
            .finish()
    }
}

impl Segments {
    /// Reserves address space and metadata for `count` segments. Nothing is
    /// mapped until the first allocation.
    pub fn new(
        count: usize,
        hugepages: HugePages,
        exportable: bool,
        premapped: bool,
        retain_bytes: usize,
        release_delay_ms: u64,
        purge_delay_ms: u64,
    ) -> std::io::Result<Segments> {
        let bytes = count * HUGE_NODE_BYTES;
        let base = sys::reserve_aligned(bytes, HUGE_NODE_BYTES)?;
        let cleanup = |e| {
            // SAFETY: the reservation was made above and is not used.
            unsafe { sys::unmap(base, bytes) };
            e
        };
        // SAFETY: all-zero NodeMeta is valid: atomics at zero, Unmapped, no owner.
        let metas = unsafe { MetaArray::<NodeMeta>::zeroed(count) }.map_err(cleanup)?;
        // SAFETY: an all-zero AtomicI32 is valid (0: no descriptor).
        let fds = unsafe { MetaArray::<AtomicI32>::zeroed(count) }.map_err(cleanup)?;
        if exportable {
            // One descriptor per mapped segment, plus room for the program.
            sys::raise_fd_limit(count + 1024);
        }
        let thp = hugepages != HugePages::Off && sys::thp_enabled(exportable);
        let words = count.div_ceil(64);
        let unmapped = MetaArray::new(words, |w| {
            let bits = (count - w * 64).min(64);
            AtomicU64::new(if bits == 64 { !0 } else { (1u64 << bits) - 1 })
        })
        .map_err(cleanup)?;
        Ok(Segments {
            base,
            count,
            metas,
            exportable,
            exported: AtomicBool::new(false),
            discarded: AtomicU64::new(0),
            purge_due_ms: AtomicU64::new(u64::MAX),
            purge_delay_ms,
            fds,
            generations: AtomicU64::new(0),
            listener: FutexLock::new(None),
            hugepages,
            thp,
            premapped,
            retain_segments: retain_bytes / HUGE_NODE_BYTES,
            release_delay_ms,
            epoch: std::time::Instant::now(),
            stacks: FutexLock::new(Stacks { free_top: NO_SEGMENT, free_count: 0 }),
            unmapped,
            runs: RunCounters::default(),
            mapped: AtomicUsize::new(0),
            by_backing: Default::default(),
        })
    }

    /// Start of the reserved range.
    #[inline]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Number of segment slots (capacity / 2 MiB).
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Metadata of segment `seg`.
    #[inline]
    pub fn meta(&self, seg: usize) -> &NodeMeta {
        &self.metas[seg]
    }

    /// The segment slot containing `addr`, if it lies in the reservation.
    #[inline]
    pub fn segment_of(&self, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.base.as_ptr() as usize);
        let seg = off >> HUGE_NODE_SHIFT;
        (seg < self.count).then_some(seg)
    }

    /// For an address in the range: its node's metadata and its granule
    /// there (masked, so below `HUGE_GRANULES`). The free fast paths'
    /// lookup: a subtraction, a shift and one bounds check.
    #[inline]
    fn node_granule(&self, addr: usize) -> Option<(&NodeMeta, usize)> {
        let off = addr.wrapping_sub(self.base.as_ptr() as usize);
        let seg = off >> HUGE_NODE_SHIFT;
        if seg >= self.count {
            return None;
        }
        let g = (off >> crate::granule::GRANULE_SHIFT) & (HUGE_GRANULES - 1);
        // SAFETY: `seg < count == metas.len()` (checked above).
        Some((unsafe { self.metas.get_unchecked(seg) }, g))
    }

    /// For an address in the range: whether its granule starts a chunk (a
    /// live or parked one). The sized free fast path's check.
    #[inline]
    pub fn starts_chunk(&self, addr: usize) -> Option<bool> {
        let (m, g) = self.node_granule(addr)?;
        // SAFETY: `g >> 6 < HUGE_GRANULES / 64` (`g` is masked), the length
        // of the bitmap.
        let word = unsafe { m.start.get_unchecked(g >> 6) };
        Some(word.load(Relaxed) >> (g & 63) & 1 == 1)
    }

    /// For an address in the range that starts a chunk: its length in
    /// granules if at most `limit`, read without the owner's lock (see
    /// [`NodeMeta::chunk_granules_unlocked`]). `None` for anything else (not
    /// a chunk start, longer, or the owner busy), which the caller takes
    /// the locked way.
    ///
    /// A chunk that starts at `addr` must stay live during the call.
    #[inline]
    pub fn live_chunk_granules(&self, addr: usize, limit: usize) -> Option<usize> {
        let (m, g) = self.node_granule(addr)?;
        m.chunk_granules_unlocked(g, limit)
    }

    /// Address of granule `g` of segment `seg`.
    #[inline]
    pub fn addr(&self, seg: usize, g: usize) -> *mut u8 {
        debug_assert!(seg < self.count && g <= HUGE_GRANULES);
        // SAFETY: stays within (or one past) the reservation.
        unsafe { self.base.as_ptr().add((seg << HUGE_NODE_SHIFT) + (g << crate::granule::GRANULE_SHIFT)) }
    }

    /// Bytes currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.mapped.load(Relaxed) * HUGE_NODE_BYTES
    }

    /// Mapped segments by backing: (hugetlb, thp, small).
    pub fn backing_counts(&self) -> (usize, usize, usize) {
        let b = &self.by_backing;
        (b[1].load(Relaxed), b[2].load(Relaxed), b[3].load(Relaxed))
    }

    /// Bytes of node metadata for the segments currently mapped. (Metadata
    /// address space of unmapped slots is reserved but never touched.)
    pub fn metadata_bytes(&self) -> usize {
        self.mapped.load(Relaxed) * std::mem::size_of::<NodeMeta>()
    }

    /// The segment table, locked.
    fn stacks(&self) -> FutexGuard<'_, Stacks> {
        self.stacks.lock()
    }

    /// Holds the table still (no segment changes state, no run comes or
    /// goes) until the guard drops: `validate`'s walk. Nothing that takes
    /// the table lock may be called meanwhile on this thread.
    pub fn hold(&self) -> TableGuard<'_> {
        TableGuard(self.stacks.lock())
    }

    /// The run counters.
    pub fn runs(&self) -> &RunCounters {
        &self.runs
    }

    /// Takes the table lock without a guard (fork `prepare`).
    pub fn lock_for_fork(&self) {
        self.stacks.lock_raw();
    }

    /// Releases the lock taken by [`Segments::lock_for_fork`].
    ///
    /// # Safety
    /// Only in the fork `parent` and `child` handlers after `lock_for_fork`.
    pub unsafe fn unlock_for_fork(&self) {
        // SAFETY: per the caller.
        unsafe { self.stacks.unlock_raw() }
    }

    fn set_unmapped(&self, seg: usize, on: bool) {
        bitmap::assign(&self.unmapped, seg, on);
    }

    fn is_unmapped(&self, seg: usize) -> bool {
        bitmap::test(&self.unmapped, seg)
    }

    /// Whether any wholly free segment is parked in the table.
    pub fn has_free(&self) -> bool {
        self.stacks().free_count > 0
    }

    /// Whether `acquire` would find a segment (parked, or a slot to map).
    pub fn has_room(&self) -> bool {
        let st = self.stacks();
        st.free_count > 0 || bitmap::next_set(&self.unmapped, 0, self.count) < self.count
    }

    /// State of segment `seg`.
    pub fn state(&self, seg: usize) -> SegmentState {
        match self.meta(seg).state.load(Acquire) {
            1 => SegmentState::Owned,
            2 => SegmentState::Free,
            3 => SegmentState::Run,
            _ => SegmentState::Unmapped,
        }
    }

    /// Backing of a mapped segment.
    pub fn backing(&self, seg: usize) -> Option<Backing> {
        Backing::from_u8(self.meta(seg).backing.load(Relaxed))
    }

    fn addr_nn(&self, seg: usize) -> NonNull<u8> {
        // SAFETY: segment addresses are inside the non-null reservation.
        unsafe { NonNull::new_unchecked(self.addr(seg, 0)) }
    }

    /// Maps slot `seg` with the best backing available: for an exportable
    /// pool a new memfd (hugetlb first), mapped and, once the pool has been
    /// exported, sealed; else private anonymous memory. Records the
    /// descriptor (lock held).
    fn map(&self, seg: usize) -> Option<Backing> {
        let addr = self.addr_nn(seg);
        let mut name_buf = [0u8; 48];
        let name = sys::numbered_name(&mut name_buf, "nta-seg-", seg);
        let m = self.meta(seg);
        let attempt = |hugetlb: bool| -> Option<Option<OwnedFd>> {
            if !self.exportable {
                // SAFETY: the slot is Unmapped, so nothing uses its range.
                let mapped =
                    unsafe { sys::map_segment(addr, HUGE_NODE_BYTES, MapSource::Anonymous { hugetlb }, hugetlb) };
                return mapped.ok().map(|()| None);
            }
            let fd = sys::memfd(name, HUGE_NODE_BYTES, hugetlb).ok()?;
            let source = MapSource::Memfd { fd: fd.as_raw_fd(), offset: 0 };
            // SAFETY: as above; a failure leaves the range reserved.
            unsafe { sys::map_segment(addr, HUGE_NODE_BYTES, source, hugetlb) }.ok()?;
            m.sealed.store(0, Relaxed);
            if self.exported.load(Relaxed) {
                self.seal(seg, fd.as_raw_fd());
            }
            Some(Some(fd))
        };
        let (backing, fd) = 'mapped: {
            if self.hugepages != HugePages::Off {
                if let Some(fd) = attempt(true) {
                    break 'mapped (Backing::Hugetlb, fd);
                }
            }
            if self.hugepages == HugePages::Require {
                return None;
            }
            let fd = attempt(false)?;
            let thp = self.thp && sys::advise_hugepage(addr, HUGE_NODE_BYTES).is_ok();
            if !thp && self.mapped.load(Relaxed) >= POPULATE_AFTER {
                // SAFETY: the range was just mapped, readable and writable.
                unsafe { sys::populate(addr, HUGE_NODE_BYTES) };
            }
            (if thp { Backing::Thp } else { Backing::Small }, fd)
        };
        self.fds[seg].store(fd.map_or(-1, IntoRawFd::into_raw_fd) + 1, Relaxed);
        m.generation.store(self.generations.fetch_add(1, Relaxed) + 1, Release);
        Some(backing)
    }

    /// Seals the memfd `fd` of mapped slot `seg` against new writers (lock
    /// held, our writable mapping made). A kernel without
    /// `F_SEAL_FUTURE_WRITE` leaves it unsealed, and the export says so.
    fn seal(&self, seg: usize, fd: i32) {
        let sealed = sys::seal_read_only(fd).is_ok();
        self.meta(seg).sealed.store(sealed as u8, Relaxed);
    }

    /// Gives back the pages of `seg`'s bytes `from..to` (page aligned,
    /// free memory nobody reads: inside a free extent of the segment's
    /// owner, who calls this under its shard's lock, a parked segment, or
    /// the tail of a run past its length, by the run's owner).
    /// Only segments on 4 KiB pages that are not sealed qualify, in a pool
    /// that is not premapped: a hugetlb or THP page would be split or
    /// cannot be punched, a sealed memfd refuses, and pinned pages must
    /// stay. Returns whether the pages went.
    ///
    /// # Safety
    /// Nothing may read or write `from..to` until it is allocated again: it
    /// lies in a free extent, clear of its boundary tags, in a parked
    /// segment, or past a run's length.
    pub unsafe fn discard(&self, seg: usize, from: usize, to: usize) -> bool {
        debug_assert!(from % PAGE_NODE_BYTES == 0 && to % PAGE_NODE_BYTES == 0 && from < to && to <= HUGE_NODE_BYTES);
        let m = self.meta(seg);
        if self.premapped || self.backing(seg) != Some(Backing::Small) || m.sealed.load(Relaxed) != 0 {
            return false;
        }
        // SAFETY: inside the mapped segment (`to <= 2 MiB`).
        let addr = unsafe { NonNull::new_unchecked(self.addr(seg, 0).add(from)) };
        // SAFETY: per the caller, the range holds no data anyone needs. A
        // seal racing with us (an exporter attaching) makes the call fail
        // with EPERM, which leaves the pages as they were.
        let ok = unsafe { sys::discard(addr, to - from, self.exportable) }.is_ok();
        if ok {
            self.discarded.fetch_add((to - from) as u64, Relaxed);
        }
        ok
    }

    /// Bytes of free pages given back so far ([`Segments::discard`]).
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded.load(Relaxed)
    }

    /// The export record of mapped slot `seg`, with a fresh read-only
    /// descriptor (lock held).
    fn export_of(&self, seg: usize) -> std::io::Result<SegmentExport> {
        let m = self.meta(seg);
        let fd = self.fds[seg].load(Relaxed) - 1;
        if fd < 0 {
            return Err(std::io::Error::other("the pool is not exportable (private memory)"));
        }
        Ok(SegmentExport {
            segment: seg as u32,
            generation: m.generation.load(Relaxed),
            len: HUGE_NODE_BYTES,
            backing: Backing::from_u8(m.backing.load(Relaxed)).unwrap_or(Backing::Small),
            sealed: m.sealed.load(Relaxed) != 0,
            fd: sys::reopen_read_only(fd)?,
        })
    }

    /// Installs (or removes) the segment listener and returns every mapped
    /// segment at that instant, atomically with respect to changes. The
    /// first listener seals every segment mapped so far, and every later
    /// one as it is mapped (see `export`).
    pub fn watch(&self, listener: Option<Arc<dyn SegmentListener>>) -> std::io::Result<Vec<SegmentExport>> {
        let _st = self.stacks();
        let mut now = Vec::new();
        if listener.is_some() {
            self.exported.store(true, Relaxed);
            for seg in (0..self.count).filter(|&s| !self.is_unmapped(s)) {
                let fd = self.fds[seg].load(Relaxed) - 1;
                if fd >= 0 && self.meta(seg).sealed.load(Relaxed) == 0 {
                    self.seal(seg, fd);
                }
                now.push(self.export_of(seg)?);
            }
        }
        *self.listener.lock() = listener;
        Ok(now)
    }

    /// The generation of slot `seg` (0 when unmapped).
    #[inline]
    pub fn generation(&self, seg: usize) -> u64 {
        self.meta(seg).generation.load(Acquire)
    }

    fn notify_mapped(&self, seg: usize) {
        let listener = self.listener.lock().clone();
        if let Some(l) = listener {
            if let Ok(e) = self.export_of(seg) {
                l.mapped(e);
            }
        }
    }

    fn notify_released(&self, seg: usize) {
        let listener = self.listener.lock().clone();
        if let Some(l) = listener {
            l.released(seg as u32, self.generation(seg));
        }
    }

    /// Takes a wholly free segment for `shard`, mapping a new one if the
    /// capacity allows. The whole node is free: every `free` bit is set.
    #[cold]
    pub fn acquire(&self, shard: usize) -> Option<usize> {
        let mut st = self.stacks();
        let seg = if st.free_top != NO_SEGMENT {
            let seg = st.free_top as usize;
            st.free_top = self.meta(seg).next.load(Relaxed);
            st.free_count -= 1;
            seg
        } else {
            let seg = bitmap::next_set(&self.unmapped, 0, self.count);
            if seg == self.count {
                return None;
            }
            self.map_slot(seg)?;
            seg
        };
        let m = self.meta(seg);
        m.owner.store(shard as u32 + 1, Release);
        m.state.store(SegmentState::Owned as u8, Release);
        Some(seg)
    }

    /// Maps an Unmapped slot with all-free bitmaps (the lock is held).
    fn map_slot(&self, seg: usize) -> Option<()> {
        debug_assert!(self.is_unmapped(seg));
        let backing = self.map(seg)?;
        self.set_unmapped(seg, false);
        let m = self.meta(seg);
        bitmap::set_range(&m.free, 0, HUGE_GRANULES);
        bitmap::clear_range(&m.start, 0, HUGE_GRANULES);
        bitmap::clear_range(&m.pages, 0, PAGES_PER_HUGE);
        m.backing.store(backing as u8, Relaxed);
        self.by_backing[backing as usize].fetch_add(1, Relaxed);
        self.mapped.fetch_add(1, Relaxed);
        self.notify_mapped(seg);
        Some(())
    }

    /// Whether slot `seg` can join a run: Unmapped, or parked Free.
    fn run_eligible(&self, seg: usize) -> bool {
        self.is_unmapped(seg) || self.state(seg) == SegmentState::Free
    }

    /// Takes slots `from..to` (all eligible) into a run: maps the Unmapped
    /// ones, unparks the Free ones. On a mapping failure, gives back what
    /// it took and returns false.
    fn take_slots(&self, st: &mut Stacks, from: usize, to: usize) -> bool {
        // Unpark the parked ones first (one walk of the parked stack).
        let (mut prev, mut cur) = (NO_SEGMENT, st.free_top);
        while cur != NO_SEGMENT {
            let next = self.meta(cur as usize).next.load(Relaxed);
            if (from..to).contains(&(cur as usize)) {
                if prev == NO_SEGMENT {
                    st.free_top = next;
                } else {
                    self.meta(prev as usize).next.store(next, Relaxed);
                }
                st.free_count -= 1;
                self.meta(cur as usize).state.store(SegmentState::Run as u8, Release);
            } else {
                prev = cur;
            }
            cur = next;
        }
        for seg in from..to {
            if self.is_unmapped(seg) {
                if self.map_slot(seg).is_none() {
                    // Park what we took; the caller fails the allocation.
                    for s in from..to {
                        if self.state(s) == SegmentState::Run {
                            self.park(st, s);
                        }
                    }
                    return false;
                }
                self.meta(seg).state.store(SegmentState::Run as u8, Release);
            }
        }
        true
    }

    /// Takes a run of `segments` adjacent slots for a buffer of `len`
    /// bytes, searching from the top of the range down. Returns the head.
    #[cold]
    pub fn acquire_run(&self, segments: usize, len: usize) -> Option<usize> {
        if segments == 0 || segments > self.count {
            return None;
        }
        let mut st = self.stacks();
        let mut end = self.count;
        while end >= segments {
            // The highest slot of end-segments..end that cannot join, if any:
            // the next window ends below it.
            match (end - segments..end).rev().find(|&s| !self.run_eligible(s)) {
                Some(blocker) => end = blocker,
                None => {
                    let head = end - segments;
                    if !self.take_slots(&mut st, head, end) {
                        return None;
                    }
                    let m = self.meta(head);
                    m.run_segments.store(segments as u32, Relaxed);
                    m.run_len.store(len as u64, Relaxed);
                    let r = &self.runs;
                    r.in_use_bytes.fetch_add((segments * HUGE_NODE_BYTES) as u64, Relaxed);
                    r.allocs.fetch_add(1, Relaxed);
                    r.runs.fetch_add(1, Relaxed);
                    return Some(head);
                }
            }
        }
        None
    }

    /// Length of the run headed by `head` in segments, and its requested
    /// bytes; `None` if `head` is not a run head.
    pub fn run(&self, head: usize) -> Option<(usize, usize)> {
        let m = self.meta(head);
        let k = m.run_segments.load(Relaxed) as usize;
        (self.state(head) == SegmentState::Run && k > 0).then(|| (k, m.run_len.load(Relaxed) as usize))
    }

    /// Frees the run headed by `head`: every segment is parked, and those
    /// beyond the watermark go back to the OS after the release delay.
    /// False (nothing changes) if `head` is no longer a run head: a double
    /// free that raced with the first.
    #[cold]
    pub fn release_run(&self, head: usize) -> bool {
        let mut st = self.stacks();
        let m = self.meta(head);
        let k = m.run_segments.load(Relaxed) as usize;
        if self.state(head) != SegmentState::Run || k == 0 {
            return false;
        }
        m.run_segments.store(0, Relaxed);
        let r = &self.runs;
        r.in_use_bytes.fetch_sub((k * HUGE_NODE_BYTES) as u64, Relaxed);
        r.frees.fetch_add(1, Relaxed);
        r.runs.fetch_sub(1, Relaxed);
        for seg in head..head + k {
            self.park(&mut st, seg);
        }
        self.purge(&mut st, false);
        true
    }

    /// Resizes the run headed by `head` to `segments` segments and `len`
    /// bytes, in place: trailing segments are parked, or the slots after
    /// the run are taken. False (and nothing changes) when they are not
    /// free.
    #[cold]
    pub fn resize_run(&self, head: usize, segments: usize, len: usize) -> bool {
        let mut st = self.stacks();
        let m = self.meta(head);
        let k = m.run_segments.load(Relaxed) as usize;
        if self.state(head) != SegmentState::Run || k == 0 {
            return false;
        }
        let segments = segments.max(1);
        if segments > k {
            let end = head + segments;
            if end > self.count || !(head + k..end).all(|s| self.run_eligible(s)) {
                return false;
            }
            if !self.take_slots(&mut st, head + k, end) {
                return false;
            }
        } else {
            for seg in head + segments..head + k {
                self.park(&mut st, seg);
            }
            self.purge(&mut st, false);
        }
        let r = &self.runs;
        r.in_use_bytes.fetch_add((segments * HUGE_NODE_BYTES) as u64, Relaxed);
        r.in_use_bytes.fetch_sub((k * HUGE_NODE_BYTES) as u64, Relaxed);
        m.run_segments.store(segments as u32, Relaxed);
        m.run_len.store(len as u64, Relaxed);
        true
    }

    /// Parks a wholly free, ownerless segment on the free stack (lock held).
    fn park(&self, st: &mut Stacks, seg: usize) {
        let m = self.meta(seg);
        m.owner.store(NO_OWNER, Release);
        m.state.store(SegmentState::Free as u8, Release);
        let now = self.now_ms();
        m.parked_ms.store(now, Relaxed);
        m.purged.store(0, Relaxed);
        let due = now.saturating_add(self.purge_delay_ms);
        self.purge_due_ms.fetch_min(due, Relaxed);
        m.next.store(st.free_top, Relaxed);
        st.free_top = seg as u32;
        st.free_count += 1;
    }

    /// Takes back a wholly free segment from its shard and parks it.
    /// When `may_unmap`, parked segments beyond the retain watermark that
    /// have stayed unused for the release delay go back to the OS.
    #[cold]
    pub fn release(&self, seg: usize, may_unmap: bool) {
        debug_assert!(bitmap::all_set(&self.meta(seg).free, 0, HUGE_GRANULES));
        let mut st = self.stacks();
        self.park(&mut st, seg);
        if may_unmap {
            self.purge(&mut st, false);
        }
    }

    /// Releases every parked segment beyond the retain watermark now,
    /// whatever its age (`Pool::trim`).
    #[cold]
    pub fn purge_now(&self) {
        let mut st = self.stacks();
        self.purge(&mut st, true);
    }

    /// Gives every parked segment back to the OS now, the retained ones
    /// too, unless the pool is premapped (its retain watermark is the
    /// whole capacity): the decay of an idle pool (`decay`).
    #[cold]
    pub fn purge_idle(&self) {
        if self.retain_segments >= self.count {
            return;
        }
        let mut st = self.stacks();
        self.purge_keeping(&mut st, true, 0);
    }

    /// Gives back the pages of every parked segment that stays mapped (the
    /// retained ones; see [`Segments::discard`] for which qualify): parked
    /// memory holds nothing, not even boundary tags, until a shard takes
    /// the segment. Returns the bytes given back.
    #[cold]
    pub fn discard_parked(&self) -> usize {
        self.purge_parked(u64::MAX, 0)
    }

    /// Whether a parked segment may still hold pages (see `purge`): one
    /// relaxed load, for the shards' slow paths.
    #[inline]
    pub fn parked_dirty(&self) -> bool {
        self.purge_due_ms.load(Relaxed) != u64::MAX
    }

    /// Whether wholly free memory gives its pages back after a delay (not
    /// when the purge delay is `u64::MAX`).
    #[inline]
    pub fn purging(&self) -> bool {
        self.purge_delay_ms != u64::MAX
    }

    /// The purge delay, in ms (see `purge`).
    pub fn purge_delay_ms(&self) -> u64 {
        self.purge_delay_ms
    }

    /// Gives back the pages of the parked segments whose purge delay has
    /// passed at `now_ms`, if any has (see `purge`).
    pub fn purge_parked_due(&self, now_ms: u64) {
        if now_ms >= self.purge_due_ms.load(Relaxed) {
            self.purge_parked(now_ms, self.purge_delay_ms);
        }
    }

    /// Gives back the pages of every parked segment that has stayed parked
    /// for `delay_ms` at `now_ms` and has not given them back yet (see
    /// `purge`). Returns the bytes given back.
    #[cold]
    pub fn purge_parked(&self, now_ms: u64, delay_ms: u64) -> usize {
        let st = self.stacks();
        let (mut bytes, mut due, mut cur) = (0, u64::MAX, st.free_top);
        while cur != NO_SEGMENT {
            let m = self.meta(cur as usize);
            if m.purged.load(Relaxed) == 0 {
                let parked = m.parked_ms.load(Relaxed);
                if now_ms.saturating_sub(parked) >= delay_ms {
                    // SAFETY: a parked segment is wholly free and owned by
                    // nobody, and it stays so while we hold the table.
                    if unsafe { self.discard(cur as usize, 0, HUGE_NODE_BYTES) } {
                        bytes += HUGE_NODE_BYTES;
                    }
                    m.purged.store(1, Relaxed);
                } else {
                    due = due.min(parked.saturating_add(delay_ms));
                }
            }
            cur = m.next.load(Relaxed);
        }
        self.purge_due_ms.store(due, Relaxed);
        drop(st);
        bytes
    }

    /// Milliseconds since the pool started: the clock of release and purge
    /// delays.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Keeps the `retain` most recently parked segments; of the others,
    /// gives back those parked at least the release delay ago (all when
    /// `force`). Cold and O(parked segments).
    fn purge(&self, st: &mut Stacks, force: bool) {
        self.purge_keeping(st, force, self.retain_segments);
    }

    /// [`Segments::purge`] keeping the `retain` most recently parked.
    fn purge_keeping(&self, st: &mut Stacks, force: bool, retain: usize) {
        if st.free_count <= retain {
            return;
        }
        let now = self.now_ms();
        let (mut kept, mut prev, mut cur) = (0, NO_SEGMENT, st.free_top);
        while cur != NO_SEGMENT {
            let m = self.meta(cur as usize);
            let next = m.next.load(Relaxed);
            let old = now.saturating_sub(m.parked_ms.load(Relaxed)) >= self.release_delay_ms;
            if kept < retain || !(force || old) || !self.unmap_parked(cur as usize) {
                kept += 1;
                prev = cur;
            } else {
                if prev == NO_SEGMENT {
                    st.free_top = next;
                } else {
                    self.meta(prev as usize).next.store(next, Relaxed);
                }
                st.free_count -= 1;
                m.next.store(NO_SEGMENT, Relaxed);
            }
            cur = next;
        }
    }

    /// Gives a parked segment's memory back to the OS; false (and the
    /// segment stays parked) if the kernel refused.
    fn unmap_parked(&self, seg: usize) -> bool {
        let m = self.meta(seg);
        self.notify_released(seg);
        // SAFETY: the segment is parked: wholly free and owned by no shard,
        // so no chunk in it is live and nothing touches it until `acquire`
        // maps it again.
        if unsafe { sys::release_segment(self.addr_nn(seg), HUGE_NODE_BYTES) }.is_err() {
            return false;
        }
        let fd = self.fds[seg].swap(0, Relaxed) - 1;
        if fd >= 0 {
            // SAFETY: the table owned this descriptor; nothing else uses it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if let Some(b) = Backing::from_u8(m.backing.load(Relaxed)) {
            self.by_backing[b as usize].fetch_sub(1, Relaxed);
        }
        m.backing.store(0, Relaxed);
        m.generation.store(0, Release);
        m.state.store(SegmentState::Unmapped as u8, Release);
        self.set_unmapped(seg, true);
        self.mapped.fetch_sub(1, Relaxed);
        true
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        // SAFETY: the pool is gone, so no chunk is live any more.
        unsafe { sys::unmap(self.base, self.count * HUGE_NODE_BYTES) };
        for fd in self.fds.iter() {
            // A load, not a swap: slots never mapped stay untouched pages.
            let fd = fd.load(Relaxed) - 1;
            if fd >= 0 {
                // SAFETY: the table owned this descriptor.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
}
