//! Where the server's payload buffers come from (`--alloc`): what the HTTP
//! layer needs from a [`BufSource`] beyond buffers.

use nta_core::{Pool, Stats};
use nta_net::{BufSource, HeapSource};

/// A buffer source the server can report on and bind workers to.
pub trait PayloadSource: BufSource {
    /// The pool's statistics, for `/stats`; `None` without a pool.
    fn pool_stats(&self) -> Option<Stats>;

    /// Called on worker thread `worker` before it serves.
    fn bind_worker(&self, worker: usize);

    /// A line for the banner.
    fn describe(&self) -> String;
}

impl PayloadSource for Pool {
    fn pool_stats(&self) -> Option<Stats> {
        Some(self.stats())
    }

    fn bind_worker(&self, worker: usize) {
        self.bind_current_thread(worker);
    }

    fn describe(&self) -> String {
        let stats = self.stats();
        let (_, capacity_bytes) = self.memory_range();
        format!(
            "NTA pool, {} MiB cap, {} shard(s); segments mapped: {} hugetlb, {} THP, {} 4 KiB-page (memfd)",
            capacity_bytes >> 20,
            self.shard_count(),
            stats.segments_hugetlb,
            stats.segments_thp,
            stats.segments_small
        )
    }
}

impl PayloadSource for HeapSource {
    fn pool_stats(&self) -> Option<Stats> {
        None
    }

    fn bind_worker(&self, _worker: usize) {}

    fn describe(&self) -> String {
        "system allocator (Vec<u8>), no pool".to_string()
    }
}
