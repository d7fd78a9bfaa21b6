//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`) fed with buffers from
//! a [`BufSource`]: with the NTA pool, pool chunks.
//!
//! # Glossary
//!
//! - *entry*: a 16-byte `io_uring_buf` {addr, len, bid} in the shared ring.
//! - *bid*: buffer id, our index into `slots`; the kernel reports it in the
//!   CQE of the receive that consumed the buffer.
//! - *tail*: how many entries we have published. The kernel keeps the head.
//!
//! # Invariants
//!
//! - `slots[bid].is_some()` iff buffer `bid` was published and its CQE has
//!   not been seen yet (the kernel owns its memory).
//! - `given + empty_bids.len() == ring_entries`, where `given` is the number
//!   of `Some` slots: every bid is either in the ring or waiting for a refill.
//! - A published buffer's memory does not move (the [`RxBuf`] contract).
//!
//! # Refill
//!
//! A receive completion takes its buffer out ([`BufRing::take`]); the next
//! [`BufRing::refill`] allocates a fresh chunk for every empty bid and
//! publishes them all with one release store of the tail. When the source is
//! exhausted, refill stops early; the ring may run dry, and multishot
//! receives then end with `ENOBUFS`, which the servers count and re-arm after
//! a later refill succeeds.
//!
//! # Teardown
//!
//! Buffers may only be freed once the kernel can no longer write to them:
//! after every receive using the group has completed and the ring is
//! unregistered ([`BufRing::unregister`]). A ring dropped while still
//! registered leaks its buffers and entry memory instead of risking a late
//! kernel write into freed memory.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use crate::sys::AnonMap;
use crate::{BufSource, RxBuf};

/// A registered provided-buffer ring. See the module notes.
#[derive(Debug)]
pub struct BufRing<S: BufSource> {
    entries: AnonMap,
    ring_entries: u16,
    /// Our tail: entries published so far, modulo 2^16.
    tail: u16,
    slots: Vec<Option<S::Buf>>,
    empty_bids: Vec<u16>,
    source: S,
    buf_bytes: usize,
    bgid: u16,
    registered: bool,
    /// Refills that found the source exhausted.
    refill_failures: u64,
}

impl<S: BufSource> BufRing<S> {
    /// Registers a ring of `ring_entries` (a power of two) as buffer group
    /// `bgid`, and fills it with buffers of `buf_bytes` from `source`.
    pub fn register(
        submitter: &Submitter<'_>,
        bgid: u16,
        ring_entries: u16,
        source: S,
        buf_bytes: usize,
    ) -> io::Result<Self> {
        if !ring_entries.is_power_of_two() || ring_entries > 1 << 15 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring entries must be a power of two <= 32768"));
        }
        let entry_bytes = std::mem::size_of::<BufRingEntry>();
        let entries = AnonMap::new(usize::from(ring_entries) * entry_bytes)?;
        // SAFETY: `entries` is page-aligned, zeroed, sized for `ring_entries`
        // entries, and outlives the registration (see `Drop`).
        unsafe {
            submitter.register_buf_ring_with_flags(entries.as_ptr() as u64, ring_entries, bgid, 0)?;
        }
        let mut ring = BufRing {
            entries,
            ring_entries,
            tail: 0,
            slots: (0..ring_entries).map(|_| None).collect(),
            empty_bids: (0..ring_entries).rev().collect(),
            source,
            buf_bytes,
            bgid,
            registered: true,
            refill_failures: 0,
        };
        ring.refill();
        Ok(ring)
    }

    /// The buffer group id to pass to receive operations.
    #[inline]
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Buffers currently in the kernel's hands.
    #[inline]
    pub fn available(&self) -> usize {
        usize::from(self.ring_entries) - self.empty_bids.len()
    }

    /// Refills that stopped because the source was exhausted.
    pub fn refill_failures(&self) -> u64 {
        self.refill_failures
    }

    /// Takes back buffer `bid`, into which the kernel wrote `len_bytes`.
    ///
    /// # Panics
    ///
    /// If `bid` is not in the kernel's hands (a corrupted CQE).
    #[inline]
    pub fn take(&mut self, bid: u16, len_bytes: usize) -> S::Buf {
        let mut buf = self.slots[usize::from(bid)].take().expect("CQE names a buffer that was not provided");
        self.empty_bids.push(bid);
        assert!(len_bytes <= buf.capacity(), "kernel reported more bytes than the buffer holds");
        // SAFETY: the kernel wrote `len_bytes` bytes from the address we
        // published, which is the start of the empty buffer's spare room;
        // `len_bytes <= capacity` was just checked.
        unsafe { buf.set_len(len_bytes) };
        buf
    }

    /// Provides a fresh buffer for every empty bid, then publishes the tail.
    /// Returns how many bids are still empty (the source ran out).
    pub fn refill(&mut self) -> usize {
        if self.empty_bids.is_empty() {
            return 0;
        }
        let before = self.tail;
        while let Some(&bid) = self.empty_bids.last() {
            let Ok(buf) = self.source.try_alloc(self.buf_bytes) else {
                self.refill_failures += 1;
                break;
            };
            self.empty_bids.pop();
            self.push(bid, buf);
        }
        if self.tail != before {
            self.publish_tail();
        }
        self.empty_bids.len()
    }

    /// Writes entry `tail` for `buf` as `bid` (not yet visible to the kernel).
    #[inline]
    fn push(&mut self, bid: u16, mut buf: S::Buf) {
        debug_assert!(buf.is_empty());
        let len = u32::try_from(buf.capacity()).unwrap_or(u32::MAX);
        let addr = buf.spare_ptr() as u64;
        let index = usize::from(self.tail & (self.ring_entries - 1));
        // SAFETY: `index < ring_entries`, so the entry lies inside the mapping;
        // the kernel only reads entries between its head and our published
        // tail, and this one is past the published tail.
        let entry = unsafe { &mut *self.entries.as_ptr().cast::<BufRingEntry>().add(index) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(bid);
        self.slots[usize::from(bid)] = Some(buf);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the kernel.
    #[inline]
    fn publish_tail(&self) {
        let base = self.entries.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the ring's first entry, inside our mapping; the
        // tail field overlays that entry's `resv` and is aligned for u16.
        let tail = unsafe { BufRingEntry::tail(base) }.cast_mut();
        // SAFETY: the kernel reads the tail concurrently, so it is accessed
        // atomically; it is valid for the mapping's lifetime.
        let tail = unsafe { AtomicU16::from_ptr(tail) };
        // Release: the entries written by `push` happen-before the kernel's
        // acquire load of the tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring. Call it only once no receive using this group is
    /// in flight; afterwards the buffers are freed on drop.
    pub fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        while self.registered {
            match submitter.unregister_buf_ring(self.bgid) {
                Ok(()) => self.registered = false,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<S: BufSource> Drop for BufRing<S> {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still write into these buffers: leak them.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::replace(&mut self.entries, AnonMap::dangling()));
        }
    }
}
