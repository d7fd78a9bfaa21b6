//! The allocators under test, all behind one trait.
//!
//! Glossary:
//! - **peer**: one allocator as the workloads see it, a value implementing
//!   [`Peer`]. NTA is a peer like the others.
//! - **held bytes**: what the allocator itself reports it holds from the OS,
//!   metadata included (NTA `mapped_bytes + metadata_bytes`, jemalloc
//!   `stats.resident`, mimalloc committed bytes, glibc `mallinfo2` arena +
//!   mmapped, the models' own chunk counts). Reports show resident memory
//!   (RSS plus hugetlb pages, [`crate::mem_stats`]) next to it.
//! - **capacity**: a hard cap on held bytes for the fill test (P3). NTA and the
//!   two models enforce it themselves; for glibc, mimalloc and jemalloc it is
//!   *emulated* by [`CapEmulated`], which adds up usable sizes and so sees
//!   internal fragmentation (size-class rounding) but never external.
//!
//! The workloads are generic over `P: Peer + ?Sized`; [`with_peer`] builds the
//! concrete type for a [`PeerKind`] and hands it to a [`PeerVisitor`], so the
//! hot loops make static calls and no peer pays for dynamic dispatch.

mod arena;
mod global;
mod mempool;
mod nta;
mod pow2;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub use nta_core::HugePages;

pub use global::{JemallocPeer, MimallocPeer, SystemPeer};
pub use mempool::{
    lcore_id, MempoolModel, MEMPOOL_CACHE_SIZE, MEMPOOL_DATA_ROOM_BYTES, MEMPOOL_ELEMENT_BYTES,
    MEMPOOL_FLUSH_THRESHOLD, MEMPOOL_HEADROOM_BYTES, MEMPOOL_LCORES,
};
pub use nta::NtaPeer;
pub use pow2::Pow2Model;

/// One allocator as every workload sees it.
///
/// All methods may be called from any thread (the cross-thread workload frees
/// on a thread other than the allocating one).
pub trait Peer: Send + Sync {
    /// Short name, as given to `--alloc`.
    fn name(&self) -> &'static str;

    /// Allocates `len` bytes (0 is treated as 1); `None` when the allocator is
    /// exhausted or cannot serve that size.
    fn alloc(&self, len: usize) -> Option<NonNull<u8>>;

    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` came from `alloc` or `resize` of this peer with length `len`
    /// (the last length it was given) and has not been freed since.
    unsafe fn free(&self, ptr: NonNull<u8>, len: usize);

    /// Frees a block, telling the allocator its length or not (as C's
    /// `free` does not), whatever `free` does by default. Only NTA has both
    /// ways (`Pool::free_sized`, `Pool::free`); the default is `free`.
    ///
    /// # Safety
    /// As for [`Peer::free`].
    #[inline]
    unsafe fn free_as(&self, ptr: NonNull<u8>, len: usize, unsized_free: bool) {
        let _ = unsized_free;
        // SAFETY: forwarded.
        unsafe { self.free(ptr, len) }
    }

    /// Whether [`Peer::free`] frees without the length (NTA with
    /// `--nta-unsized-frees`); P1 then compares both ways in one run.
    fn frees_unsized(&self) -> bool {
        false
    }

    /// Shrinks or grows a block, in place where the allocator can. On success
    /// the block is at the returned pointer (the old one is then invalid); on
    /// `None` the old block is untouched and still `old_len` long.
    ///
    /// # Safety
    /// As for [`Peer::free`], with `old_len` the block's current length.
    unsafe fn resize(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>>;

    /// Bytes usable in the block (at least `len`), for capacity emulation.
    ///
    /// # Safety
    /// As for [`Peer::free`]; the block stays allocated.
    unsafe fn usable_size(&self, ptr: NonNull<u8>, len: usize) -> usize;

    /// Bytes the allocator holds by its own accounting, or `None` when it
    /// keeps no such figure.
    fn held_bytes(&self) -> Option<u64>;

    /// Whether `held_bytes` is specific to this peer (`false` when it is a
    /// process-wide figure that other code also moves, such as glibc's arena).
    fn held_bytes_is_exact(&self) -> bool {
        true
    }

    /// Whether the peer may map hugetlb pages, which RSS does not show (the
    /// replay then samples them).
    fn may_map_hugetlb(&self) -> bool {
        false
    }

    /// Called once by each worker thread of a multi-threaded workload with its
    /// index (0, 1, ...), before its first allocation.
    fn bind_thread(&self, _thread_index: usize) {}

    /// Settles deferred work (NTA's remote-free queues) before a measurement.
    fn settle(&self) {}

    /// The address ranges a fragmentation map of this peer shows, as
    /// (start, length) pairs, given its live blocks as (address, length).
    /// Empty when the peer has no map (the general-purpose allocators).
    fn map_regions(&self, _live_blocks: &[(usize, usize)]) -> Vec<(usize, usize)> {
        Vec::new()
    }

    /// Whether the page at `address` (inside a map region) belongs to the
    /// allocator; pages that do not are drawn grey.
    fn owns_page(&self, _address: usize) -> bool {
        true
    }
}

/// Which allocator to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum PeerKind {
    /// nta-core's `Pool`.
    Nta,
    /// glibc malloc (`std::alloc::System`).
    System,
    /// mimalloc, called directly (not the global allocator).
    Mimalloc,
    /// jemalloc (tikv-jemallocator), called directly.
    Jemalloc,
    /// The power-of-two segregated-fit reference model.
    Pow2,
    /// The DPDK-style fixed-size mempool reference model.
    Mempool,
}

impl PeerKind {
    /// Every peer, NTA first.
    pub const ALL: [PeerKind; 6] =
        [PeerKind::Nta, PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc, PeerKind::Pow2, PeerKind::Mempool];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Nta => "nta",
            PeerKind::System => "system",
            PeerKind::Mimalloc => "mimalloc",
            PeerKind::Jemalloc => "jemalloc",
            PeerKind::Pow2 => "pow2",
            PeerKind::Mempool => "mempool",
        }
    }

    /// Whether a capacity given to this peer is enforced by the allocator
    /// itself (`true`) or emulated by [`CapEmulated`] (`false`).
    pub fn enforces_capacity(self) -> bool {
        matches!(self, PeerKind::Nta | PeerKind::Pow2 | PeerKind::Mempool)
    }
}

/// How to build a peer.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerConfig {
    /// Hard cap on held bytes, or `None` for an allocator that grows freely.
    pub capacity_bytes: Option<usize>,
    /// NTA shard count (`None`: nta-core's default, one per CPU).
    pub nta_shards: Option<usize>,
    /// NTA tuning away from nta-core's defaults (diagnostics only).
    pub nta_tuning: NtaTuning,
}

/// NTA builder settings that differ from nta-core's defaults.
///
/// One of them is on by default: the comparison runs NTA with
/// [`HugePages::Off`], on 4 KiB pages like the other peers (whose THP the
/// command line turns off, see [`crate::mem_stats::disable_thp`]), so that
/// no allocator gets 2 MiB pages the others do not (`--hugepages` gives
/// every allocator its huge pages instead; reports say which).
/// The others are diagnostics (`--nta-private`, `--nta-retain-bytes`,
/// `--nta-shards`, `--nta-unsized-frees`), to find out where NTA's time goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtaTuning {
    /// Hugepage policy of the pool (default here: `Off`, see above).
    pub hugepages: HugePages,
    /// `Some(false)`: private anonymous segments instead of memfd.
    pub exportable: Option<bool>,
    /// Wholly free bytes kept mapped before segments go back to the OS.
    pub retain_bytes: Option<usize>,
    /// Shard count for every workload but P3 (which always uses one).
    pub shards: Option<usize>,
    /// Frees without the length (`Pool::free`) instead of `free_sized`.
    pub unsized_frees: bool,
}

impl Default for NtaTuning {
    fn default() -> Self {
        Self { hugepages: HugePages::Off, exportable: None, retain_bytes: None, shards: None, unsized_frees: false }
    }
}

impl NtaTuning {
    /// Whether any diagnostic setting (everything but the hugepage policy)
    /// moves NTA away from nta-core's defaults.
    pub fn has_diagnostics(&self) -> bool {
        self.exportable.is_some() || self.retain_bytes.is_some() || self.shards.is_some() || self.unsized_frees
    }

    /// The command-line arguments that give a child process (`worker`,
    /// `replay`) these settings.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.exportable == Some(false) {
            args.push("--nta-private".to_string());
        }
        if let Some(bytes) = self.retain_bytes {
            args.extend(["--nta-retain-bytes".to_string(), bytes.to_string()]);
        }
        if let Some(shards) = self.shards {
            args.extend(["--nta-shards".to_string(), shards.to_string()]);
        }
        if self.unsized_frees {
            args.push("--nta-unsized-frees".to_string());
        }
        args.extend(["--nta-hugepages".to_string(), hugepages_name(self.hugepages).to_string()]);
        args
    }
}

/// Parses `--nta-hugepages`: `off`, `try` or `require`.
pub fn parse_hugepages(text: &str) -> Result<HugePages, String> {
    match text {
        "off" => Ok(HugePages::Off),
        "try" => Ok(HugePages::Try),
        "require" => Ok(HugePages::Require),
        other => Err(format!("`{other}` is not one of off, try, require")),
    }
}

/// The name of a hugepage policy as `--nta-hugepages` takes it.
pub fn hugepages_name(policy: HugePages) -> &'static str {
    match policy {
        HugePages::Off => "off",
        HugePages::Try => "try",
        HugePages::Require => "require",
    }
}

/// A computation that runs on any peer; see [`with_peer`].
pub trait PeerVisitor {
    /// What the computation returns.
    type Output;
    /// Runs on the built peer.
    fn visit<P: Peer>(self, peer: &P) -> Self::Output;
}

/// Why a peer could not be built.
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

/// Builds the peer `kind` as configured and runs `visitor` on it; the peer is
/// dropped (and its memory released) afterwards.
pub fn with_peer<V: PeerVisitor>(kind: PeerKind, config: PeerConfig, visitor: V) -> Result<V::Output, BuildError> {
    match (kind, config.capacity_bytes) {
        (PeerKind::Nta, _) => Ok(visitor.visit(&NtaPeer::new(config)?)),
        (PeerKind::Pow2, capacity) => Ok(visitor.visit(&Pow2Model::new(capacity))),
        (PeerKind::Mempool, capacity) => Ok(visitor.visit(&MempoolModel::new(capacity))),
        (PeerKind::System, None) => Ok(visitor.visit(&SystemPeer)),
        (PeerKind::Mimalloc, None) => Ok(visitor.visit(&MimallocPeer)),
        (PeerKind::Jemalloc, None) => Ok(visitor.visit(&JemallocPeer)),
        (PeerKind::System, Some(cap)) => Ok(visitor.visit(&CapEmulated::new(SystemPeer, cap))),
        (PeerKind::Mimalloc, Some(cap)) => Ok(visitor.visit(&CapEmulated::new(MimallocPeer, cap))),
        (PeerKind::Jemalloc, Some(cap)) => Ok(visitor.visit(&CapEmulated::new(JemallocPeer, cap))),
    }
}

/// A peer with an emulated capacity: an allocation fails when the usable
/// bytes of all live blocks would exceed the cap.
///
/// This sees size-class rounding but not external fragmentation or metadata,
/// so it flatters the wrapped allocator; reports say "emulated" next to it.
/// A resize is accounted but never refused (P3, the only capped workload,
/// does not resize).
#[derive(Debug)]
pub struct CapEmulated<P> {
    inner: P,
    capacity_bytes: u64,
    usable_bytes: AtomicU64,
}

impl<P: Peer> CapEmulated<P> {
    /// Wraps `inner` with a cap of `capacity_bytes` usable bytes.
    pub fn new(inner: P, capacity_bytes: usize) -> Self {
        Self { inner, capacity_bytes: capacity_bytes as u64, usable_bytes: AtomicU64::new(0) }
    }
}

impl<P: Peer> Peer for CapEmulated<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn alloc(&self, len: usize) -> Option<NonNull<u8>> {
        let ptr = self.inner.alloc(len)?;
        // SAFETY: ptr was just allocated by inner with length len.
        let usable = unsafe { self.inner.usable_size(ptr, len) } as u64;
        // Relaxed: the counter is a budget, not a synchronisation point.
        let before = self.usable_bytes.fetch_add(usable, Ordering::Relaxed);
        if before + usable > self.capacity_bytes {
            self.usable_bytes.fetch_sub(usable, Ordering::Relaxed);
            // SAFETY: ptr is live, came from inner with length len.
            unsafe { self.inner.free(ptr, len) };
            return None;
        }
        Some(ptr)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller upholds free's contract, which is inner's.
        let usable = unsafe { self.inner.usable_size(ptr, len) } as u64;
        self.usable_bytes.fetch_sub(usable, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { self.inner.free(ptr, len) }
    }

    unsafe fn resize(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller upholds resize's contract, which is inner's.
        let old_usable = unsafe { self.inner.usable_size(ptr, old_len) } as u64;
        // SAFETY: as above.
        let new_ptr = unsafe { self.inner.resize(ptr, old_len, new_len) }?;
        // SAFETY: new_ptr is live with length new_len.
        let new_usable = unsafe { self.inner.usable_size(new_ptr, new_len) } as u64;
        self.usable_bytes.fetch_add(new_usable, Ordering::Relaxed);
        self.usable_bytes.fetch_sub(old_usable, Ordering::Relaxed);
        Some(new_ptr)
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, len: usize) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.inner.usable_size(ptr, len) }
    }

    fn held_bytes(&self) -> Option<u64> {
        Some(self.usable_bytes.load(Ordering::Relaxed))
    }
}

/// Writes one byte in the first and one in the last cache line of a block, as
/// a NIC writing a header and a trailer would.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes (`len >= 1`).
#[inline]
pub unsafe fn touch(ptr: NonNull<u8>, len: usize) {
    // SAFETY: offsets 0 and len - 1 lie inside the block.
    unsafe {
        ptr.as_ptr().write_volatile(len as u8);
        ptr.as_ptr().add(len.max(1) - 1).write_volatile(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_args_carry_every_setting_to_a_child() {
        assert_eq!(NtaTuning::default().args(), ["--nta-hugepages", "off"]);
        let all = NtaTuning {
            hugepages: HugePages::Try,
            exportable: Some(false),
            retain_bytes: Some(4096),
            shards: Some(3),
            unsized_frees: true,
        };
        assert_eq!(
            all.args(),
            [
                "--nta-private",
                "--nta-retain-bytes",
                "4096",
                "--nta-shards",
                "3",
                "--nta-unsized-frees",
                "--nta-hugepages",
                "try"
            ]
        );
    }
}
