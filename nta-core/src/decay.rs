//! Decay: an idle pool gives its memory back without being called.
//!
//! # Design notes
//!
//! A pool returns free memory to the OS only from its own calls: a free
//! segment beyond the retain watermark goes back after the release delay
//! when something frees or trims. An application that goes quiet keeps
//! everything it once used mapped: chunks parked in its threads' caches,
//! in the shards' quick caches and remote queues, wholly free nodes, and up
//! to `retain_bytes` of free segments. jemalloc's answer is decay (dirty
//! pages are purged over ~10 s) and a background thread.
//!
//! [`PoolBuilder::decay`](crate::PoolBuilder::decay) (off by default)
//! starts one thread per pool, `nta-decay`, holding only a weak reference.
//! Every quarter of the decay time (between 10 ms and 1 s) it sums the
//! pool's operation counters (allocs and frees of every shard and thread
//! slot, relaxed loads, no lock). Once they have not moved for the decay
//! time, it decays the pool once:
//!
//! 1. takes over every thread cache (the reclaim path's step 1: the owner
//!    threads may be blocked or gone idle; the take-over is the one the
//!    exhaustion path uses while they run);
//! 2. drains every shard's remote queue and quick cache and hands wholly
//!    free nodes to the segment table (reclaim step 2);
//! 3. gives every parked segment back to the OS, the retained ones too
//!    (a premapped pool keeps its mapping);
//! 4. gives back every page that lies wholly inside a free extent, clear
//!    of its boundary tags, in the segments that stay
//!    (`Heap::discard_free`): the extent keeps the page of its header and
//!    the page of its footer, and the rest is punched out of the memfd
//!    (`MADV_REMOVE`) or dropped (`MADV_DONTNEED`, private pools). Only
//!    4 KiB-page segments that are not sealed qualify, in a pool that is not
//!    premapped: a hugetlb or THP page would have to be split, a pool that
//!    has been exported seals its segments (see `export`), and a premapped
//!    pool's pages may be pinned by io_uring.
//!
//! It then waits for new activity before it decays again. The thread exits
//! at its next wake-up after the last `Pool` handle is dropped.
//!
//! **The bound.** After decay, the pool maps only segments that hold live
//! chunks: mapped − in use is the free space inside those segments (at
//! most 2 MiB each, less the live bytes). Of that, what stays resident in
//! a pool never exported, on 4 KiB pages, is at most two pages per free
//! extent (the pages of its header and footer, which it often shares with
//! live chunks): resident − in use ≤ 8 KiB per free extent. An exported
//! pool's segments are sealed memfds, whose pages cannot be punched out;
//! there the bound is the free space itself.
//!
//! A forked child does not inherit the thread (threads do not survive
//! `fork`); an exportable pool's child is frozen anyway.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::inner::PoolInner;
use crate::reclaim;

/// Starts the decay thread of `pool`: it decays the pool once its
/// operation counters have not moved for `after`.
pub(crate) fn spawn(pool: &Arc<PoolInner>, after: Duration) -> std::io::Result<()> {
    let weak = Arc::downgrade(pool);
    let step = (after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::Builder::new().name("nta-decay".into()).spawn(move || run(&weak, after, step))?;
    Ok(())
}

fn run(weak: &Weak<PoolInner>, after: Duration, step: Duration) {
    let mut last = None;
    let mut quiet_since = Instant::now();
    let mut decayed = false;
    loop {
        std::thread::sleep(step);
        let Some(pool) = weak.upgrade() else { return };
        let ops = pool.op_count();
        if last != Some(ops) {
            last = Some(ops);
            quiet_since = Instant::now();
            decayed = false;
        } else if !decayed && quiet_since.elapsed() >= after {
            decay_now(&pool);
            decayed = true;
            // Our own frees (of stolen cache chunks) moved the counters.
            last = Some(pool.op_count());
        }
    }
}

/// Decays `pool` now (see the module notes).
pub(crate) fn decay_now(pool: &PoolInner) {
    if pool.is_frozen() {
        return;
    }
    reclaim::steal_thread_caches(pool);
    reclaim::drain_shards(pool);
    pool.segments().purge_idle();
    pool.discard_free();
}
