//! Size-indexed free lists with a bitmap of non-empty lists.
//!
//! Invariant (as in rlsf): bit `i` of `nonempty` is set iff `heads[i]` is not
//! null. Every extent on list `i` has a size that maps to `i` (see
//! `size_class`). Lists are doubly linked through the extents' own headers,
//! so removing a known extent (a neighbour being merged) is O(1).
//!
//! In checked mode every header a list operation touches is verified
//! against its checksum before it is used and resealed after it changes
//! (see `extent`).

use crate::checked::corruption;
use crate::extent::{checksum, FreeHdr};
use std::ptr;

/// `WORDS * 64` free lists.
#[derive(Debug)]
pub struct FreeLists<const WORDS: usize> {
    nonempty: [u64; WORDS],
    heads: [[*mut FreeHdr; 64]; WORDS],
    checked: bool,
}

/// Writes `hdr`'s checksum.
///
/// # Safety
/// `hdr` is null or the header of a free extent the caller owns.
#[inline]
unsafe fn seal(hdr: *mut FreeHdr) {
    if !hdr.is_null() {
        // SAFETY: per the caller.
        unsafe { (*hdr).check = checksum(hdr) };
    }
}

/// Panics with "heap corruption" unless `hdr` (null, or a listed header)
/// matches its checksum.
///
/// # Safety
/// `hdr` is null or points into mapped pool memory.
#[inline]
pub unsafe fn verify(hdr: *const FreeHdr) {
    // SAFETY: per the caller.
    if !hdr.is_null() && unsafe { (*hdr).check != checksum(hdr) } {
        corruption(hdr.cast(), "a free extent's header does not match its checksum");
    }
}

impl<const WORDS: usize> FreeLists<WORDS> {
    pub const fn new(checked: bool) -> Self {
        Self { nonempty: [0; WORDS], heads: [[ptr::null_mut(); 64]; WORDS], checked }
    }

    /// First list at or above `from` that is not empty.
    #[inline]
    pub fn find_ge(&self, from: usize) -> Option<usize> {
        let mut w = from >> 6;
        if w >= WORDS {
            return None;
        }
        let mut word = self.nonempty[w] & (!0u64 << (from & 63));
        loop {
            if word != 0 {
                return Some((w << 6) + word.trailing_zeros() as usize);
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            word = self.nonempty[w];
        }
    }

    /// Highest non-empty list.
    pub fn last_nonempty(&self) -> Option<usize> {
        (0..WORDS)
            .rev()
            .find(|&w| self.nonempty[w] != 0)
            .map(|w| (w << 6) + 63 - self.nonempty[w].leading_zeros() as usize)
    }

    /// Head of list `idx` (null when empty).
    #[inline]
    pub fn head(&self, idx: usize) -> *mut FreeHdr {
        self.heads[idx >> 6][idx & 63]
    }

    /// Pushes `hdr` on list `idx`.
    ///
    /// # Safety
    /// `hdr` must be the header of a free extent that is on no list.
    #[inline]
    pub unsafe fn push(&mut self, idx: usize, hdr: *mut FreeHdr) {
        let checked = self.checked;
        let slot = &mut self.heads[idx >> 6][idx & 63];
        let old = *slot;
        // SAFETY: `hdr` and `old` (when not null) are headers of free extents
        // this shard owns.
        unsafe {
            if checked {
                verify(old);
            }
            (*hdr).next = old;
            (*hdr).prev = ptr::null_mut();
            if !old.is_null() {
                (*old).prev = hdr;
            }
            if checked {
                seal(hdr);
                seal(old);
            }
        }
        *slot = hdr;
        self.nonempty[idx >> 6] |= 1 << (idx & 63);
    }

    /// Unlinks `hdr` from list `idx`.
    ///
    /// # Safety
    /// `hdr` must currently be on list `idx`.
    #[inline]
    pub unsafe fn remove(&mut self, idx: usize, hdr: *mut FreeHdr) {
        // SAFETY: `hdr` is on list `idx`, so its links point at headers on
        // the same list (or are null).
        unsafe {
            if self.checked {
                verify(hdr);
            }
            let (next, prev) = ((*hdr).next, (*hdr).prev);
            if self.checked {
                verify(next);
                verify(prev);
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            if prev.is_null() {
                debug_assert_eq!(self.head(idx), hdr);
                self.heads[idx >> 6][idx & 63] = next;
                if next.is_null() {
                    self.nonempty[idx >> 6] &= !(1 << (idx & 63));
                }
            } else {
                (*prev).next = next;
            }
            if self.checked {
                seal(next);
                seal(prev);
            }
        }
    }

    /// Whether bit and head agree for every list (the module invariant).
    pub fn bitmap_consistent(&self) -> bool {
        (0..WORDS * 64).all(|i| (self.nonempty[i >> 6] >> (i & 63) & 1 == 1) != self.head(i).is_null())
    }
}
