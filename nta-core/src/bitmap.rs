//! Bit operations over per-node bitmaps.
//!
//! Node bitmaps are arrays of `AtomicU64` so that readers outside the owning
//! shard (occupancy snapshots, `usable_size`, checked-mode diagnostics) can
//! look at them without a data race. Only the shard that owns a node writes
//! its bitmaps, so writers use plain `load` + `store` (no read-modify-write
//! instruction): the atomics cost nothing on the owner's path.
//!
//! Bit `i` lives in word `i / 64` at position `i % 64` (LSB first).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Reads bit `i`.
#[inline]
pub fn test(words: &[AtomicU64], i: usize) -> bool {
    words[i >> 6].load(Relaxed) & (1 << (i & 63)) != 0
}

#[inline]
fn range_masks(start: usize, end: usize, mut f: impl FnMut(usize, u64)) {
    debug_assert!(start <= end);
    if start == end {
        return;
    }
    let (first, last) = (start >> 6, (end - 1) >> 6);
    let lo = !0u64 << (start & 63);
    let hi = !0u64 >> (63 - ((end - 1) & 63));
    if first == last {
        f(first, lo & hi);
    } else {
        f(first, lo);
        for w in first + 1..last {
            f(w, !0);
        }
        f(last, hi);
    }
}

/// Sets bits `start..end`. Owner-only (not an atomic RMW).
#[inline]
pub fn set_range(words: &[AtomicU64], start: usize, end: usize) {
    range_masks(start, end, |w, m| {
        let old = words[w].load(Relaxed);
        words[w].store(old | m, Relaxed);
    });
}

/// Clears bits `start..end`. Owner-only (not an atomic RMW).
#[inline]
pub fn clear_range(words: &[AtomicU64], start: usize, end: usize) {
    range_masks(start, end, |w, m| {
        let old = words[w].load(Relaxed);
        words[w].store(old & !m, Relaxed);
    });
}

/// Sets or clears bit `i`. Owner-only.
#[inline]
pub fn assign(words: &[AtomicU64], i: usize, value: bool) {
    let m = 1u64 << (i & 63);
    let old = words[i >> 6].load(Relaxed);
    words[i >> 6].store(if value { old | m } else { old & !m }, Relaxed);
}

/// Whether every bit in `start..end` is set.
pub fn all_set(words: &[AtomicU64], start: usize, end: usize) -> bool {
    let mut ok = true;
    range_masks(start, end, |w, m| ok &= words[w].load(Relaxed) & m == m);
    ok
}

/// Whether every bit in `start..end` is clear.
pub fn all_clear(words: &[AtomicU64], start: usize, end: usize) -> bool {
    let mut ok = true;
    range_masks(start, end, |w, m| ok &= words[w].load(Relaxed) & m == 0);
    ok
}

/// The first `i` in `from..limit` where `a[i] | b[i]` is set, or `limit`.
///
/// This is how a chunk's end is found from the start and free bitmaps: the
/// chunk runs until the next chunk start or the next free granule.
#[inline]
pub fn next_set_either(a: &[AtomicU64], b: &[AtomicU64], from: usize, limit: usize) -> usize {
    let mut i = from;
    while i < limit {
        let w = i >> 6;
        let word = (a[w].load(Relaxed) | b[w].load(Relaxed)) & (!0u64 << (i & 63));
        if word != 0 {
            return ((w << 6) + word.trailing_zeros() as usize).min(limit);
        }
        i = (w + 1) << 6;
    }
    limit
}

/// The first `i` in `from..limit` where bit `i` is set, or `limit`.
pub fn next_set(words: &[AtomicU64], from: usize, limit: usize) -> usize {
    let mut i = from;
    while i < limit {
        let w = i >> 6;
        let word = words[w].load(Relaxed) & (!0u64 << (i & 63));
        if word != 0 {
            return ((w << 6) + word.trailing_zeros() as usize).min(limit);
        }
        i = (w + 1) << 6;
    }
    limit
}

/// The first `i` in `from..limit` where bit `i` is clear, or `limit`.
pub fn next_clear(words: &[AtomicU64], from: usize, limit: usize) -> usize {
    let mut i = from;
    while i < limit {
        let w = i >> 6;
        let word = !words[w].load(Relaxed) & (!0u64 << (i & 63));
        if word != 0 {
            return ((w << 6) + word.trailing_zeros() as usize).min(limit);
        }
        i = (w + 1) << 6;
    }
    limit
}

/// The last `i` in `low..=from` where bit `i` is set, if any.
pub fn prev_set(words: &[AtomicU64], low: usize, from: usize) -> Option<usize> {
    let mut w = from >> 6;
    let mut word = words[w].load(Relaxed) & (!0u64 >> (63 - (from & 63)));
    loop {
        if word != 0 {
            let i = (w << 6) + 63 - word.leading_zeros() as usize;
            return (i >= low).then_some(i);
        }
        if w == 0 || (w << 6) <= low {
            return None;
        }
        w -= 1;
        word = words[w].load(Relaxed);
    }
}

/// Counts the set bits in `start..end`.
#[cfg(test)]
pub fn count(words: &[AtomicU64], start: usize, end: usize) -> usize {
    let mut n = 0;
    range_masks(start, end, |w, m| n += (words[w].load(Relaxed) & m).count_ones() as usize);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(n: usize) -> Vec<AtomicU64> {
        (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn ranges() {
        let b = bits(256);
        set_range(&b, 3, 130);
        assert!(!test(&b, 2));
        assert!(test(&b, 3) && test(&b, 64) && test(&b, 129));
        assert!(!test(&b, 130));
        assert_eq!(count(&b, 0, 256), 127);
        assert!(all_set(&b, 3, 130));
        clear_range(&b, 10, 70);
        assert_eq!(count(&b, 0, 256), 67);
        assert!(all_clear(&b, 10, 70));
        assert_eq!(next_set_either(&b, &bits(256), 10, 256), 70);
        assert_eq!(next_set_either(&b, &bits(256), 130, 200), 200);
        assert_eq!(next_set(&b, 0, 256), 3);
        assert_eq!(next_set(&b, 10, 256), 70);
        assert_eq!(next_set(&b, 130, 150), 150);
        assert_eq!(next_clear(&b, 3, 256), 10);
        assert_eq!(next_clear(&b, 70, 256), 130);
        assert_eq!(next_clear(&b, 0, 2), 0);
        assign(&b, 199, true);
        assert_eq!(next_set_either(&bits(256), &b, 130, 256), 199);
        assert_eq!(prev_set(&b, 0, 255), Some(199));
        assert_eq!(prev_set(&b, 0, 198), Some(129));
        assert_eq!(prev_set(&b, 0, 69), Some(9));
        assert_eq!(prev_set(&b, 5, 9), Some(9));
        assert_eq!(prev_set(&b, 0, 2), None);
        assert_eq!(prev_set(&b, 130, 198), None);
        assert_eq!(prev_set(&b, 10, 69), None);
    }
}
