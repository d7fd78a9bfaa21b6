//! The export surface: what another process needs to read the pool's
//! memory, and what an exporter needs to postpone frees. nta-core knows
//! nothing of sockets; `nta-net`'s exporter builds on this.
//!
//! # Segments as sealed memfds
//!
//! An exportable pool maps each 2 MiB segment from a memfd of its own,
//! named `nta-seg-<slot>` (so `/proc/PID/maps` shows what each mapping
//! is). The pool maps it read-write. The first [`Pool::watch_segments`]
//! (an exporter attaching) seals every segment mapped so far with
//! `F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, and
//! from then on every new segment is sealed as soon as it is mapped,
//! before any reader hears of it: the pool's own mapping keeps writing,
//! but no new writable mapping of the file can ever be made, not even
//! through a read-write re-open, and the file cannot be resized. What an
//! exporter hands a reader is a *read-only* open file description of it
//! ([`SegmentExport::fd`]), so that even `mprotect(PROT_WRITE)` on the
//! reader's mapping fails. A reader therefore only ever sees sealed files.
//!
//! Why seal at the first export and not at the first mapping: a sealed
//! file cannot have holes punched in it. Until it is sealed, the pages of
//! a large free extent inside a live segment can go back to the OS
//! (`Pool::trim`, decay); once sealed, a segment gives memory back only
//! whole, when it is released. Sealing is for good: a pool that was
//! exported once keeps sealing its segments after the exporter detaches.
//!
//! Why one memfd per segment (and not one per pool, premapped and sealed
//! once): per segment, releasing means dropping the pool's mapping and
//! closing its descriptor; the pages are freed once readers unmap too. A
//! reader that still maps a released segment keeps reading its old bytes,
//! never another segment's: a slot mapped again gets a new file and a new
//! generation.
//!
//! # Generations
//!
//! Every time a slot is mapped it gets a new, pool-wide unique generation
//! (never 0); when it is released, its generation becomes 0. A descriptor
//! of a chunk carries the generation its segment had ([`Pool::locate`]), so
//! a reader can tell a descriptor that refers to a segment it no longer (or
//! does not yet) maps.
//!
//! # Listening to segment changes
//!
//! [`Pool::watch_segments`] installs a [`SegmentListener`] and returns the
//! segments mapped at that instant, atomically (no change is missed or
//! seen twice). `mapped` is called after a new segment is sealed and
//! before any chunk in it is handed out; `released` before the pool drops
//! its mapping. Both run under the segment table's lock, on whatever thread
//! grew or shrank the pool: they must be quick and must not call back into
//! the pool.
//!
//! # Postponed frees
//!
//! [`Pool::set_free_hook`] installs a [`FreeHook`] that sees every free
//! (after the double-free and pointer checks) and may *postpone* it: the
//! chunk then stays allocated until the hook's owner completes the free
//! with [`Pool::free_postponed`]. This is NTA's "postponed free" for a
//! sniffer that holds a packet. Without a hook the free paths pay nothing
//! for it (the flag shares the load that checked mode already costs); with
//! one, every free calls the hook once its checks passed (a sized free on
//! its thread-cache path, before the chunk is parked there), and a free the
//! hook declines goes on as usual.
//!
//! Nothing here can break the pool's invariants: the fds are read-only and
//! sealed, the listener only observes, and a postponed chunk is simply a
//! live chunk until it is freed.
//!
//! [`Pool::locate`]: crate::Pool::locate
//! [`Pool::watch_segments`]: crate::Pool::watch_segments
//! [`Pool::set_free_hook`]: crate::Pool::set_free_hook
//! [`Pool::free_postponed`]: crate::Pool::free_postponed

use crate::segment::Backing;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

/// One mapped segment, as a reader maps it.
#[derive(Debug)]
pub struct SegmentExport {
    /// The segment's slot: its bytes are at `slot * 2 MiB` in the pool's
    /// range ([`crate::Pool::memory_range`]).
    pub segment: u32,
    /// The slot's generation (see the module notes); never 0.
    pub generation: u64,
    /// Bytes in the segment (2 MiB).
    pub len: usize,
    /// What the memory is.
    pub backing: Backing,
    /// Whether the file is sealed against new writers (false only on
    /// kernels without `F_SEAL_FUTURE_WRITE`, before Linux 5.1; an exporter
    /// should refuse to export such a segment).
    pub sealed: bool,
    /// A read-only descriptor of the segment's memfd, offset 0.
    pub fd: OwnedFd,
}

/// Where a chunk lies, for a descriptor a reader can resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkLocation {
    /// The segment slot.
    pub segment: u32,
    /// Byte offset of the chunk in its segment.
    pub offset: u32,
    /// The segment's generation now.
    pub generation: u64,
    /// The shard that owns the chunk's node, or `None` for a buffer above
    /// 2 MiB (a run, which no shard owns).
    pub shard: Option<u32>,
}

/// Observes segments being mapped and released (see the module notes).
pub trait SegmentListener: Send + Sync {
    /// A segment was mapped and sealed; `segment.fd` is a fresh read-only
    /// descriptor the listener may keep or drop.
    fn mapped(&self, segment: SegmentExport);
    /// The segment `segment` of generation `generation` is about to be
    /// unmapped by the pool.
    fn released(&self, segment: u32, generation: u64);
}

/// Sees frees and may postpone them (see the module notes).
pub trait FreeHook: Send + Sync {
    /// Called for every free of a valid chunk while the hook is installed:
    /// `chunk` is the chunk's start and `len` the `free_sized` length, if
    /// the free had one. The chunk is live during the call (its size is
    /// [`crate::Pool::usable_size`], which takes a shard lock: the free path
    /// does not pay for it unless the hook asks). Return true to postpone
    /// the free: the chunk stays allocated, and the hook's owner must later
    /// call [`crate::Pool::free_postponed`] for it (once).
    ///
    /// The call runs under the pool's hook lock: the hook must not free a
    /// chunk of this pool nor call [`crate::Pool::set_free_hook`] (either
    /// would deadlock), and `set_free_hook` returns only once no call of
    /// the old hook is in progress.
    fn on_free(&self, chunk: NonNull<u8>, len: Option<usize>) -> bool;
}
