//! Purging: wholly free memory gives its pages back after a delay, from the
//! pool's own calls, while the pool is busy.
//!
//! # Design notes
//!
//! Two kinds of memory are wholly free and yet stay resident in a busy pool:
//!
//! - the wholly free huge node each shard keeps on its lists
//!   ([`KEEP_WHOLE_NODES`](crate::heap::KEEP_WHOLE_NODES)), so that a node
//!   emptied and refilled by the same burst does not go to the segment
//!   table and back;
//! - the parked segments the table retains (`retain_bytes`, 64 MiB by
//!   default), so that a pool cycling through its memory does not map it
//!   again.
//!
//! Both keep their *mapping* for that reason, but nothing in them is read
//! until they are carved again, so their pages can go after a while
//! (by default 10 s, [`DEFAULT_PURGE_DELAY_MS`]): mimalloc purges such
//! memory after 10 ms, jemalloc decays it over about 10 s. Decay
//! (`decay`) covers a pool that goes quiet; this covers a pool that keeps
//! working with a smaller working set than it once had.
//!
//! **When.** A node that becomes wholly free and stays on a shard's lists
//! marks the shard dirty. The shard's slow paths (the calls that take its
//! lock: thread-cache refills and overflows, sizes above the caches) call
//! [`PoolInner::maintain`](crate::inner::PoolInner), which costs three
//! loads (purging on, the shard's state, the table's) and a branch while
//! nothing is dirty, and one load when purging is off. While something is
//! dirty, every
//! [`PURGE_TICKS`]-th call reads the clock. The first reading notes the
//! time; a reading at least the purge delay later gives the pages back, if
//! the node is still wholly free. A node dirtied again in between starts
//! the wait over, so a node that empties on every request of a busy server
//! is never purged while the server keeps it busy. Parked segments carry
//! the time they were parked, and go by the same delay.
//!
//! **What.** The whole node keeps the page of its header and the page of
//! its footer (`Heap::discard_extents`); a parked segment holds nothing
//! and gives back all of it. Segments that cannot give pages back (hugetlb
//! or THP pages, sealed ones, a premapped pool's; see `Segments::discard`)
//! are left alone.
//!
//! **Cost.** A purged node that is carved again faults its pages back in:
//! about 510 page faults for a whole node. The delay bounds how often that
//! can happen to a node that sits free between uses.

/// A dirty shard reads the clock on every this many slow-path calls.
pub const PURGE_TICKS: u32 = 64;

/// Purge delay when the builder sets none: jemalloc's decay time. mimalloc
/// purges after 10 ms, but a page of a memfd segment costs more to fault
/// back in than an anonymous one, and the retained segments exist so that
/// a pool that empties and fills again does not fault its memory back in:
/// with 10 ms, P4's allocations (cells of 1M objects, each freed before
/// the next) took three times as long; with 1 s, 1.2 times.
pub const DEFAULT_PURGE_DELAY_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing wholly free with resident pages that we know of.
    Clean,
    /// A node became wholly free since the last clock reading.
    Dirtied,
    /// Wholly free (and not dirtied again) since this time, in ms.
    Since(u64),
}

/// The purge state of one shard's wholly free nodes.
#[derive(Debug)]
pub struct Purge {
    state: State,
    ticks: u32,
}

impl Purge {
    pub const fn new() -> Self {
        Purge { state: State::Clean, ticks: 0 }
    }

    /// A node became wholly free and stays on the shard's lists.
    #[inline]
    pub fn dirtied(&mut self) {
        self.state = State::Dirtied;
    }

    /// Whether anything waits for a purge.
    #[inline]
    pub fn pending(&self) -> bool {
        self.state != State::Clean
    }

    /// Counts one slow-path call; true on every [`PURGE_TICKS`]-th.
    #[inline]
    pub fn tick(&mut self) -> bool {
        self.ticks = self.ticks.wrapping_add(1);
        self.ticks % PURGE_TICKS == 0
    }

    /// Given the clock (`now_ms`) and whether a wholly free node is on the
    /// lists, whether to give its pages back now. Moves the state on.
    pub fn due(&mut self, now_ms: u64, delay_ms: u64, any_whole: bool) -> bool {
        if !any_whole {
            self.state = State::Clean;
            return false;
        }
        match self.state {
            State::Clean => false,
            State::Dirtied => {
                self.state = State::Since(now_ms);
                false
            }
            State::Since(t) if now_ms.saturating_sub(t) >= delay_ms => {
                self.state = State::Clean;
                true
            }
            State::Since(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_purged_once_after_the_delay() {
        let mut p = Purge::new();
        assert!(!p.pending());
        p.dirtied();
        assert!(p.pending());
        assert!(!p.due(100, 10, true), "the first reading only notes the time");
        assert!(!p.due(109, 10, true));
        assert!(p.due(110, 10, true));
        assert!(!p.pending());
        assert!(!p.due(500, 10, true), "purged once, not again");
    }

    #[test]
    fn dirtying_again_starts_the_wait_over() {
        let mut p = Purge::new();
        p.dirtied();
        assert!(!p.due(100, 10, true));
        p.dirtied();
        assert!(!p.due(108, 10, true));
        assert!(!p.due(117, 10, true));
        assert!(p.due(118, 10, true));
    }

    #[test]
    fn a_node_taken_again_is_not_purged() {
        let mut p = Purge::new();
        p.dirtied();
        assert!(!p.due(100, 10, true));
        assert!(!p.due(200, 10, false), "no wholly free node left");
        assert!(!p.pending());
        assert!(!p.due(300, 10, true));
    }

    #[test]
    fn the_clock_is_read_once_per_ticks() {
        let mut p = Purge::new();
        let n = (0..PURGE_TICKS * 3).filter(|_| p.tick()).count();
        assert_eq!(n, 3);
    }
}
