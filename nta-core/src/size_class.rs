//! Mapping extent sizes to free-list indices.
//!
//! Two families of lists, both indexed by size in granules:
//!
//! - **Exact lists** (page-node level), as in NTA's array of lists: extents
//!   of `g` granules live in list `g - 1`, for `g` in `1..=128`. A request for
//!   `g` granules takes the first non-empty list at or above `g - 1`, so the
//!   fit is the best fit.
//! - **TLSF lists** (huge-node level), after Masmano et al., "TLSF: a new
//!   dynamic memory allocator for real-time systems" (2004): a first level by
//!   power of two and 16 linear second-level subdivisions. Sizes below 16
//!   granules map one-to-one. Insertion rounds the size down to its class;
//!   search rounds the request up to the next class boundary, so any extent in
//!   the found list fits without walking it (good fit in O(1)).
//!
//! Both families keep a bitmap of non-empty lists (see `free_list`), so a
//! fit is found with a few bit scans and no list walking.

use crate::granule::{HUGE_GRANULES, PAGE_GRANULES};

/// Number of exact lists.
pub const EXACT_LISTS: usize = PAGE_GRANULES;
/// log2 of the number of second-level TLSF subdivisions.
pub const SL_BITS: u32 = 4;
const SL_COUNT: usize = 1 << SL_BITS;
/// First-level classes: sizes `< 16` form class 0, then one per power of two
/// up to `HUGE_GRANULES` (2^16), which is class 13.
pub const FL_COUNT: usize = (HUGE_GRANULES.trailing_zeros() - SL_BITS + 2) as usize;
/// Number of TLSF lists (rounded up to whole bitmap words).
pub const TLSF_LISTS: usize = (FL_COUNT * SL_COUNT).next_multiple_of(64);

const _: () = assert!(FL_COUNT == 14);

/// Exact-list index for an extent or a request of `granules`.
#[inline]
pub const fn exact_index(granules: usize) -> usize {
    debug_assert!(granules >= 1 && granules <= PAGE_GRANULES);
    granules - 1
}

/// TLSF list that an extent of `granules` is inserted into (rounds down).
#[inline]
pub const fn tlsf_insert_index(granules: usize) -> usize {
    debug_assert!(granules >= 1 && granules <= HUGE_GRANULES);
    if granules < SL_COUNT {
        granules
    } else {
        let f = usize::BITS - 1 - granules.leading_zeros();
        let fl = (f - SL_BITS + 1) as usize;
        let sl = (granules >> (f - SL_BITS)) & (SL_COUNT - 1);
        fl * SL_COUNT + sl
    }
}

/// TLSF list at which a search for `granules` starts (rounds up), or `None`
/// when no class can hold the request.
#[inline]
pub const fn tlsf_search_index(granules: usize) -> Option<usize> {
    if granules > HUGE_GRANULES {
        return None;
    }
    if granules < SL_COUNT {
        return Some(granules);
    }
    let f = usize::BITS - 1 - granules.leading_zeros();
    let rounded = granules + (1 << (f - SL_BITS)) - 1;
    let idx = tlsf_insert_index(if rounded > HUGE_GRANULES { HUGE_GRANULES } else { rounded });
    // Rounding up may skip past sizes that exist; the caller falls back to
    // walking the request's own class when the search fails.
    Some(idx)
}

/// Smallest extent size that maps to TLSF list `idx`.
#[cfg(test)]
pub const fn tlsf_class_min(idx: usize) -> usize {
    let (fl, sl) = (idx / SL_COUNT, idx % SL_COUNT);
    if fl == 0 {
        sl
    } else {
        let f = fl as u32 + SL_BITS - 1;
        (1 << f) + (sl << (f - SL_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlsf_classes_are_monotonic_and_cover() {
        let mut prev = 0;
        for g in 1..=HUGE_GRANULES {
            let i = tlsf_insert_index(g);
            assert!(i >= prev, "g={g}");
            assert!(i < FL_COUNT * SL_COUNT);
            assert!(tlsf_class_min(i) <= g, "g={g} i={i}");
            prev = i;
            // Every extent in the search list (or above) fits the request.
            let s = tlsf_search_index(g).unwrap();
            assert!(tlsf_class_min(s) >= g || s == tlsf_insert_index(g) && g < 16, "g={g}");
        }
        assert_eq!(tlsf_insert_index(HUGE_GRANULES), 13 * 16);
        assert_eq!(tlsf_search_index(HUGE_GRANULES + 1), None);
    }
}
