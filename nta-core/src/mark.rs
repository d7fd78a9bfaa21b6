//! The parked mark: how a double free of a cached or queued chunk is caught.
//!
//! # The problem
//!
//! A chunk freed into a thread cache, a shard's quick cache or a remote-free
//! queue is *parked*: free to its user, but still marked allocated in its
//! node's bitmaps (its start bit stays set; see `thread_cache`,
//! `quick_cache`, `remote`). The bitmap check that catches a double free of
//! a merged chunk therefore cannot see a second free of a parked one, and
//! parking the same chunk twice hands it to two owners later.
//!
//! # The mark (after glibc's tcache key, 2.29)
//!
//! While a chunk is parked, its second word (bytes 8..16; every chunk has
//! at least 32) holds `key ^ tag`:
//!
//! - `key` is a per-pool secret: 64 random bits from the kernel with the top
//!   bit set (no user-space pointer has it, so a stale free-list link never
//!   looks like a mark) and the low 16 bits clear;
//! - `tag` (16 bits) names where the chunk is parked: a thread slot, a
//!   shard's quick cache, or a shard's remote queue, and which one.
//!
//! Every free reads that word first (the free writes the chunk's first
//! word anyway, so the cache line is already being fetched). A word that is
//! not a mark is the common case and costs a compare. A word that decodes
//! to a valid tag is *confirmed* on a cold path that looks in the place the
//! tag names (see `PoolInner::confirm_parked`): found there, it is a double
//! free and panics; not found, the word was user data that happened to equal
//! the mark (probability 2^-48 per free for random data, and the key is
//! secret), and the free goes on. So the check has no false positives.
//!
//! Invariant: a chunk's second word holds a mark iff the chunk is parked.
//! Every path that takes a chunk out of a cache or queue (allocation, flush,
//! drain, steal) clears the word before the chunk is used or merged.
//!
//! The confirmation can reach every place a chunk can be parked, including
//! another thread's cache (through the steal protocol of `thread_slot`), so
//! a double free is caught whichever thread frees twice, sized or unsized.
//! Two threads freeing the same chunk at the same instant race past the
//! check; that is a data race in the caller and is not detected.

use crate::sys;

/// Tags: kind in bits 12..16, index in bits 0..12.
const KIND_SHIFT: u32 = 12;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// Where a parked chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parked {
    /// In thread slot `i` of the pool.
    ThreadSlot(usize),
    /// In shard `i`'s quick cache.
    Quick(usize),
    /// On shard `i`'s remote-free queue.
    Remote(usize),
}

impl Parked {
    #[inline]
    const fn tag(self) -> u64 {
        match self {
            Parked::ThreadSlot(i) => 1 << KIND_SHIFT | i as u64,
            Parked::Quick(i) => 2 << KIND_SHIFT | i as u64,
            Parked::Remote(i) => 3 << KIND_SHIFT | i as u64,
        }
    }
}

/// A pool's secret.
#[derive(Clone, Copy, Debug)]
pub struct Key(u64);

impl Key {
    /// A fresh random key.
    pub fn random() -> Key {
        Key((sys::random_u64() | 1 << 63) & !0xFFFF)
    }

    /// The word that marks a chunk parked at `at`.
    #[inline]
    pub const fn mark(self, at: Parked) -> u64 {
        self.0 ^ at.tag()
    }

    /// Decodes a chunk's second word: where it claims to be parked, if it is
    /// a mark at all.
    #[inline]
    pub fn decode(self, word: u64) -> Option<Parked> {
        let tag = word ^ self.0;
        if tag >> 16 != 0 {
            return None;
        }
        Self::decode_slow(tag)
    }

    #[cold]
    fn decode_slow(tag: u64) -> Option<Parked> {
        let i = (tag & INDEX_MASK) as usize;
        match tag >> KIND_SHIFT {
            1 => Some(Parked::ThreadSlot(i)),
            2 => Some(Parked::Quick(i)),
            3 => Some(Parked::Remote(i)),
            _ => None,
        }
    }
}

/// Reads a chunk's mark word.
///
/// # Safety
/// `chunk` must point at least 16 readable bytes, 8-byte aligned.
#[inline]
pub unsafe fn read(chunk: *const u8) -> u64 {
    // SAFETY: per the caller.
    unsafe { chunk.cast::<u64>().add(1).read() }
}

/// Writes a chunk's mark word.
///
/// # Safety
/// `chunk` must point at least 16 writable bytes, 8-byte aligned, that the
/// caller owns.
#[inline]
pub unsafe fn write(chunk: *mut u8, word: u64) {
    // SAFETY: per the caller.
    unsafe { chunk.cast::<u64>().add(1).write(word) }
}

/// Clears a chunk's mark word (the chunk leaves its cache or queue).
///
/// # Safety
/// As for [`write()`].
#[inline]
pub unsafe fn clear(chunk: *mut u8) {
    // SAFETY: per the caller.
    unsafe { write(chunk, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_decode_and_other_words_do_not() {
        let k = Key::random();
        for at in [Parked::ThreadSlot(0), Parked::ThreadSlot(255), Parked::Quick(7), Parked::Remote(4095)] {
            assert_eq!(k.decode(k.mark(at)), Some(at));
        }
        assert_eq!(k.decode(0), None);
        assert_eq!(k.decode(0x7fff_1234_5678_9ab0), None, "a user-space pointer is never a mark");
        assert_eq!(k.decode(k.mark(Parked::Quick(1)) ^ 1 << 20), None);
        assert_eq!(k.decode(k.0), None, "kind 0 is not a tag");
    }
}
