//! The invariant walk behind `Pool::validate`.
//!
//! With every shard held, every remote queue drained, and every thread slot
//! taken over (the steal protocol of `thread_slot`: owners go the shard
//! way meanwhile, and wait for the shards we hold), it checks:
//!
//! 1. Segment states: `mapped == |Owned| + |Free|`; a Free segment is wholly
//!    free with no page nodes, and if its pages wait for their purge the
//!    table knows that some do (see `purge`); an Owned segment's owner is a
//!    real shard, and no change of its bitmaps is open (`bits_seq` even, see
//!    `node`).
//! 2. Per level region (each page node, and the huge-level spans between
//!    them): every maximal run of free granules is exactly one free extent
//!    whose header and footer give the run's length — so no two free
//!    extents are adjacent; no free granule is a chunk start; every used run
//!    begins at a chunk start; no page node is wholly free.
//! 3. Free lists: every listed extent is one found in step 2, at the right
//!    level, on the list its size maps to, in a node its shard owns; every
//!    extent found in step 2 is listed exactly once; list bitmaps agree with
//!    list heads; `whole_free` counts the wholly free huge nodes listed.
//! 4. Counters: per shard, `page_nodes` equals what the walk counted; the
//!    sums of `in_use_granules` over shards and thread slots equal the
//!    walk's. Chunks parked in quick caches and thread caches, and chunks
//!    pending on their page nodes, are used in the bitmaps but free in the
//!    counters, and each must be a real chunk of the right size; the
//!    pending records, chains and lists must agree (see `pending`); each
//!    thread slot's per-size counts and byte total must match its stacks
//!    (`ThreadSlot::check`).
//!
//! 5. Runs: a run head records its length; its segments are in state Run,
//!    owned by no shard, with all-free bitmaps; the run counters equal the
//!    walk's sums.
//!
//! So the walk is exact while other threads use the pool: nothing it reads
//! can change under it.

use crate::bitmap;
use crate::extent::{footer_before, header_size};
use crate::granule::*;
use crate::inner::PoolInner;
use crate::node::NO_OWNER;
use crate::segment::SegmentState;
use crate::size_class::{exact_index, tlsf_insert_index};
use crate::thread_slot;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

const ANY_SHARD: usize = usize::MAX;

#[derive(Default, Clone, Copy)]
struct Tally {
    in_use: u64,
    pages: u64,
}

/// Checks every invariant; the error names the first violation found.
pub fn validate(inner: &PoolInner) -> Result<(), String> {
    if inner.is_frozen() {
        return Err("the pool is frozen (a forked child's copy of an exportable pool) and is not walked".into());
    }
    let mut guards = inner.lock_all();
    for g in guards.iter_mut() {
        if let Err((p, why)) = inner.drain(g) {
            return Err(format!("remote queue of shard {} held an invalid chunk {p:p}: {why}", g.shard().index()));
        }
    }
    let slots = inner.thread_slots();
    for slot in slots {
        slot.steal_begin();
    }
    thread_slot::wait_owners(slots.iter());
    // Last, the segment table: runs come and go under its lock alone.
    let table = inner.segments().hold();
    let result = walk(inner, &mut guards);
    drop(table);
    for slot in slots {
        slot.steal_end();
    }
    result
}

fn walk(inner: &PoolInner, guards: &mut [crate::shard::ShardGuard<'_>]) -> Result<(), String> {
    let nshards = inner.shard_count();
    let mut tally = vec![Tally::default(); nshards];
    // extent address -> (page level, granules, owner shard)
    let mut extents: HashMap<usize, (bool, usize, usize)> = HashMap::new();
    // Chunks parked in quick caches: address -> (granules, shard). They are
    // marked used in the bitmaps but already counted as free.
    let mut cached: HashMap<usize, (usize, usize)> = HashMap::new();
    for (shard, g) in guards.iter_mut().enumerate() {
        let mut dup = None;
        g.heap().quick().for_each(|p, n| {
            if cached.insert(p as usize, (n, shard)).is_some() {
                dup = Some(p);
            }
        });
        if let Some(p) = dup {
            return Err(format!("shard {shard}: chunk {p:p} is in the quick cache twice"));
        }
    }
    // Chunks pending on their page nodes (see `pending`): used in the
    // bitmaps, free in the counters, like quick-cached ones.
    let segs = inner.segments();
    let mut listed = std::collections::HashSet::new();
    for (shard, g) in guards.iter_mut().enumerate() {
        let mark_word = inner.key().mark(crate::mark::Parked::Quick(shard));
        let mut dup = None;
        // SAFETY: we hold the shard.
        let pages = unsafe {
            g.heap().pending().check(segs, mark_word, |seg, s, n| {
                if cached.insert(segs.addr(seg, s) as usize, (n, shard)).is_some() {
                    dup = Some((seg, s));
                }
            })
        }
        .map_err(|why| format!("shard {shard}: {why}"))?;
        if let Some((seg, s)) = dup {
            return Err(format!("shard {shard}: segment {seg} granule {s} is pending and cached"));
        }
        for id in pages {
            if !listed.insert(id) {
                return Err(format!("shard {shard}: page id {id} is on two shards' pending lists"));
            }
        }
    }
    // Chunks in thread caches may belong to any shard (ANY_SHARD).
    for (i, slot) in inner.thread_slots().iter().enumerate() {
        slot.check().map_err(|why| format!("thread slot {i}: {why}"))?;
        let mut dup = None;
        slot.for_each(|p, n| {
            if cached.insert(p as usize, (n, ANY_SHARD)).is_some() {
                dup = Some(p);
            }
        });
        if let Some(p) = dup {
            return Err(format!("chunk {p:p} is cached twice (thread cache)"));
        }
    }
    let mut mapped = 0;
    for seg in 0..segs.count() {
        let m = segs.meta(seg);
        if segs.state(seg) == SegmentState::Unmapped {
            continue;
        }
        for page in 0..PAGES_PER_HUGE {
            if (m.pend[page].load(Relaxed) != 0) != crate::pending::is_listed(&listed, seg, page) {
                return Err(format!("segment {seg} page {page}: pending record and pending list disagree"));
            }
        }
    }
    let (mut run_bytes, mut runs, mut run_left) = (0u64, 0u64, 0usize);
    for seg in 0..segs.count() {
        let m = segs.meta(seg);
        let owner = m.owner.load(Relaxed);
        if run_left > 0 && segs.state(seg) != SegmentState::Run {
            return Err(format!("segment {seg}: a run ends early (state {:?})", segs.state(seg)));
        }
        match segs.state(seg) {
            SegmentState::Unmapped => {
                if owner != NO_OWNER {
                    return Err(format!("segment {seg}: unmapped but owned by {owner}"));
                }
            }
            SegmentState::Run => {
                mapped += 1;
                if owner != NO_OWNER
                    || !bitmap::all_set(&m.free, 0, HUGE_GRANULES)
                    || !bitmap::all_clear(&m.start, 0, HUGE_GRANULES)
                {
                    return Err(format!("segment {seg}: in a run but owned or with chunk bitmaps"));
                }
                if run_left == 0 {
                    let Some((k, len)) = segs.run(seg) else {
                        return Err(format!("segment {seg}: run segment outside any run"));
                    };
                    if k == 0
                        || seg + k > segs.count()
                        || len > k * HUGE_NODE_BYTES
                        || (k > 1 && len <= (k - 1) * HUGE_NODE_BYTES)
                    {
                        return Err(format!("segment {seg}: run of {k} segments for {len} bytes"));
                    }
                    run_left = k;
                    runs += 1;
                    run_bytes += (k * HUGE_NODE_BYTES) as u64;
                } else if segs.run(seg).is_some() {
                    return Err(format!("segment {seg}: a run head inside another run"));
                }
                run_left -= 1;
                continue;
            }
            SegmentState::Free => {
                mapped += 1;
                if owner != NO_OWNER
                    || !bitmap::all_set(&m.free, 0, HUGE_GRANULES)
                    || !bitmap::all_clear(&m.pages, 0, PAGES_PER_HUGE)
                {
                    return Err(format!("segment {seg}: parked as free but not wholly free"));
                }
                if m.purged.load(Relaxed) == 0 && segs.purging() && !segs.parked_dirty() {
                    return Err(format!("segment {seg}: parked and not purged, but the table says none waits"));
                }
            }
            SegmentState::Owned => {
                mapped += 1;
                let shard = owner as usize;
                if owner == NO_OWNER || shard > nshards {
                    return Err(format!("segment {seg}: owned but owner field is {owner}"));
                }
                let bits_seq = m.bits_seq.load(Relaxed);
                if bits_seq & 1 != 0 {
                    return Err(format!("segment {seg}: a change of its bitmaps is still open (bits_seq {bits_seq})"));
                }
                let shard = shard - 1;
                let mut i = 0;
                while i < HUGE_GRANULES {
                    if m.in_page_node(i) {
                        walk_span(
                            inner,
                            seg,
                            (i, i + PAGE_GRANULES, true),
                            shard,
                            &mut tally[shard],
                            &mut extents,
                            &mut cached,
                        )?;
                        tally[shard].pages += 1;
                        i += PAGE_GRANULES;
                    } else {
                        let mut j = i;
                        while j < HUGE_GRANULES && !m.in_page_node(j) {
                            j += PAGE_GRANULES - (j % PAGE_GRANULES);
                        }
                        walk_span(inner, seg, (i, j, false), shard, &mut tally[shard], &mut extents, &mut cached)?;
                        i = j;
                    }
                }
            }
        }
    }
    if run_left != 0 {
        return Err("the last run ends past the pool".into());
    }
    let r = segs.runs();
    let counted_runs = (r.in_use_bytes.load(Relaxed), r.runs.load(Relaxed));
    if counted_runs != (run_bytes, runs) {
        return Err(format!("run counters say {counted_runs:?} (bytes, runs), the walk found {:?}", (run_bytes, runs)));
    }
    if mapped * HUGE_NODE_BYTES != segs.mapped_bytes() {
        return Err(format!("mapped segments {mapped} disagree with mapped_bytes {}", segs.mapped_bytes()));
    }
    let mut counted = 0u64;
    for (shard, g) in guards.iter_mut().enumerate() {
        let heap = g.heap();
        if !heap.lists_consistent() {
            return Err(format!("shard {shard}: free-list bitmap disagrees with list heads"));
        }
        let mut err = None;
        let mut whole = 0;
        heap.for_each_free(|page, idx, hdr| {
            if err.is_some() {
                return;
            }
            let addr = hdr as usize;
            match extents.remove(&addr) {
                None => err = Some(format!("shard {shard}: listed extent {addr:#x} is not a free run of its node")),
                Some((p, n, owner)) => {
                    let want = if page { exact_index(n) } else { tlsf_insert_index(n) };
                    if p != page || want != idx || owner != shard {
                        err = Some(format!(
                            "shard {shard}: extent {addr:#x} of {n} granules on list {idx} (page={page}), expected list {want} (page={p}) of shard {owner}"
                        ));
                    }
                    whole += usize::from(!page && n == HUGE_GRANULES);
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        if whole != heap.whole_free() {
            return Err(format!(
                "shard {shard}: whole_free {} but {whole} wholly free nodes listed",
                heap.whole_free()
            ));
        }
        let c = &g.shard().counters;
        let t = tally[shard];
        counted = counted.wrapping_add(c.in_use_granules.load(Relaxed));
        let pages = c.page_nodes.load(Relaxed);
        if pages != t.pages {
            return Err(format!("shard {shard}: page_nodes counter {pages} but the walk found {}", t.pages));
        }
    }
    // In-use counters move between shards and thread slots (a
    // thread may free what another shard allocated), so they are compared
    // in total.
    for slot in inner.thread_slots() {
        counted = counted.wrapping_add(slot.counters.in_use_granules.load(Relaxed));
    }
    let walked: u64 = tally.iter().map(|t| t.in_use).sum();
    if counted != walked {
        return Err(format!("counters say {counted} granules in use, the walk found {walked}"));
    }
    if let Some((addr, (n, shard))) = cached.into_iter().next() {
        return Err(format!("shard {shard}: quick-cached chunk {addr:#x} ({n} granules) is not a chunk of its nodes"));
    }
    if let Some((addr, (page, n, owner))) = extents.into_iter().next() {
        return Err(format!("free extent {addr:#x} ({n} granules, page={page}, shard {owner}) is on no free list"));
    }
    Ok(())
}

/// Walks one level region `lo..hi` of segment `seg`.
fn walk_span(
    inner: &PoolInner,
    seg: usize,
    (lo, hi, page): (usize, usize, bool),
    shard: usize,
    tally: &mut Tally,
    extents: &mut HashMap<usize, (bool, usize, usize)>,
    cached: &mut HashMap<usize, (usize, usize)>,
) -> Result<(), String> {
    let segs = inner.segments();
    let m = segs.meta(seg);
    let mut k = lo;
    while k < hi {
        if bitmap::test(&m.free, k) {
            let e = bitmap::next_clear(&m.free, k, hi);
            let n = e - k;
            if !bitmap::all_clear(&m.start, k, e) {
                return Err(format!("segment {seg} granules {k}..{e}: free granule marked as a chunk start"));
            }
            if page && n == PAGE_GRANULES {
                return Err(format!("segment {seg} granule {k}: wholly free page node was not returned"));
            }
            // SAFETY: the run is free memory of a mapped segment, so its
            // first and last granules hold the boundary tags.
            let (head, foot) = unsafe { (header_size(segs.addr(seg, k)), footer_before(segs.addr(seg, e))) };
            if head != n || foot != n {
                return Err(format!(
                    "segment {seg} granules {k}..{e} (page={page}): free run of {n} granules but header says {head} and footer {foot} (adjacent free extents or corrupt tags)"
                ));
            }
            extents.insert(segs.addr(seg, k) as usize, (page, n, shard));
            k = e;
        } else {
            if !bitmap::test(&m.start, k) {
                return Err(format!(
                    "segment {seg} granule {k} (page={page}): used run does not begin at a chunk start"
                ));
            }
            let end = bitmap::next_set_either(&m.start, &m.free, k + 1, hi);
            let g = end - k;
            match cached.remove(&(segs.addr(seg, k) as usize)) {
                Some((n, owner)) if n != g || (owner != shard && owner != ANY_SHARD) => {
                    return Err(format!(
                        "segment {seg} granule {k}: quick-cached as {n} granules of shard {owner}, but the chunk has {g} in shard {shard}"
                    ))
                }
                Some(_) => {}
                None => {
                    tally.in_use += g as u64;
                }
            }
            k = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{HugePages, Pool};
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn an_open_bitmap_change_is_reported() {
        let pool = Pool::builder().capacity(8 << 20).shards(1).hugepages(HugePages::Off).build().unwrap();
        let p = pool.alloc(100).unwrap();
        let segs = pool.inner().segments();
        let m = segs.meta(segs.segment_of(p.as_ptr() as usize).unwrap());
        assert_eq!(pool.validate(), Ok(()));
        let open = m.begin_bits();
        assert!(pool.validate().unwrap_err().contains("a change of its bitmaps is still open"));
        m.end_bits(open);
        assert_eq!(m.bits_seq.load(Relaxed) & 1, 0);
        assert_eq!(pool.validate(), Ok(()));
        // SAFETY: a live chunk, freed once.
        unsafe { pool.free(p) };
    }
}
