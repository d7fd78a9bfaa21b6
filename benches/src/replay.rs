//! Replays a parsed [`Trace`] on a peer, its threads concurrently.
//!
//! Design notes:
//! - **Plan.** Before anything runs, the trace is split into one list of
//!   steps per trace thread (`t N` lines), in trace order, and every block
//!   (slot) gets a table entry: its pointer, its length and `done`, the
//!   number of operations on it completed so far. Plan and table are written
//!   once before the baseline is read, so their pages are resident already
//!   and do not count as the allocator's.
//! - **Concurrency.** Each trace thread gets a worker thread of its own, which
//!   calls [`Peer::bind_thread`] with its number; all start at one barrier
//!   and run their steps as fast as they can, at the same time.
//! - **Ordering.** Only per block: a step on a block whose previous operation
//!   ran on another thread waits (spin, then yield) until that block's `done`
//!   reaches the step's position (Acquire), and a step whose block moves to
//!   another thread next publishes `done` (Release) after it. The trace's
//!   line order is a total order consistent with every such wait, so the
//!   earliest unfinished line never waits: the replay cannot deadlock. A
//!   block allocated on one thread and freed on another is a real remote
//!   free, as in the traced program.
//! - **Touch.** Every allocated byte is written once (`a`: the whole block;
//!   a growing `r`: the new tail), as the traced program would, so resident
//!   figures see the pages a real program faults in.
//!
//! Figures ([`ReplayResult`]):
//! - `ops`: `a`, `f` and `r` lines that called the allocator (a line naming
//!   a block whose allocation failed is skipped, and counted in
//!   `skipped_ops` instead);
//! - `elapsed_ns`: wall time from the first worker leaving the barrier to
//!   the last one finishing (spawn and join outside; waits for another
//!   thread's block inside, as in the traced program);
//! - `peak_live_requested_bytes`: peak, in trace order, of the requested
//!   bytes of live blocks, leaving out failed requests;
//! - `peak_resident_bytes`: peak RSS above the baseline, exact (the kernel's
//!   high-water mark is reset at the baseline, see [`crate::mem_stats`]),
//!   plus the peak of hugetlb pages above the baseline, sampled every
//!   [`HUGETLB_SAMPLE_MS`] ms by a helper thread when the peer may map any
//!   (NTA with hugepages on; never in the default tables);
//! - `failed_allocs` (and the largest failed request): `a` or growing `r`
//!   lines the allocator refused.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::mem_stats::{hugetlb_bytes, peak_rss_bytes, reset_peak_rss, resident_bytes};
use crate::peers::Peer;
use crate::report::Json;
use crate::spsc::spin_until;
use crate::trace::{Trace, TraceOp, TRACE_THREADS};

/// Milliseconds between two hugetlb samples (only for peers that may map
/// hugetlb pages).
pub const HUGETLB_SAMPLE_MS: u64 = 5;

/// What a replay measured (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayResult {
    /// Trace threads that ran (one worker each).
    pub threads: u64,
    /// Memory operations that called the allocator.
    pub ops: u64,
    /// Operations skipped because their block's allocation had failed.
    pub skipped_ops: u64,
    /// Wall time of the concurrent run.
    pub elapsed_ns: u64,
    /// Peak requested bytes of live blocks (trace order, failures left out).
    pub peak_live_requested_bytes: u64,
    /// Peak RSS above the baseline.
    pub peak_rss_bytes: Option<u64>,
    /// Peak hugetlb bytes above the baseline (0 when none can be mapped).
    pub peak_hugetlb_bytes: u64,
    /// Allocations and growing resizes that returned `None`.
    pub failed_allocs: u64,
    /// The largest request among them, in bytes.
    pub largest_failed_request_bytes: u64,
}

impl ReplayResult {
    /// Peak resident bytes above the baseline: RSS plus hugetlb.
    pub fn peak_resident_bytes(&self) -> Option<u64> {
        self.peak_rss_bytes.map(|rss| rss + self.peak_hugetlb_bytes)
    }

    /// The result as the one JSON line `nta-bench replay` prints.
    pub fn to_json(&self, alloc: &str) -> Json {
        Json::obj(vec![
            ("alloc", Json::str(alloc)),
            ("threads", Json::Int(self.threads)),
            ("ops", Json::Int(self.ops)),
            ("skipped_ops", Json::Int(self.skipped_ops)),
            ("elapsed_ns", Json::Int(self.elapsed_ns)),
            ("peak_live_requested_bytes", Json::Int(self.peak_live_requested_bytes)),
            ("peak_resident_bytes", Json::opt_int(self.peak_resident_bytes())),
            ("peak_rss_bytes", Json::opt_int(self.peak_rss_bytes)),
            ("peak_hugetlb_bytes", Json::Int(self.peak_hugetlb_bytes)),
            ("failed_allocs", Json::Int(self.failed_allocs)),
            ("largest_failed_request_bytes", Json::Int(self.largest_failed_request_bytes)),
        ])
    }
}

/// `Step::wait_for` of a step that need not wait.
const NO_WAIT: u32 = u32::MAX;

/// One memory operation in a thread's list.
#[derive(Clone, Copy, Debug)]
struct Step {
    op: TraceOp,
    /// Index of the line in `Trace::ops`, to report failures.
    trace_index: usize,
    /// Position of this operation among its block's operations (0: the `a`).
    position: u32,
    /// Wait until the block's `done` reaches this (another thread did the
    /// previous operation), or [`NO_WAIT`].
    wait_for: u32,
    /// Store `done = position + 1` afterwards (the next operation on the
    /// block runs on another thread).
    publish: bool,
}

/// A block's entry in the table shared by the workers. `ptr` and `len` are
/// only touched by the thread whose turn it is; `done` hands the turn over.
#[derive(Debug, Default)]
struct SlotCell {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    done: AtomicU32,
}

/// The per-thread step lists (see the module docs).
struct Plan {
    /// (trace thread, its steps), for each thread with at least one step.
    threads: Vec<(usize, Vec<Step>)>,
}

impl Plan {
    fn new(trace: &Trace) -> Plan {
        let mut lists: Vec<Vec<Step>> = vec![Vec::new(); TRACE_THREADS];
        // Per slot: operations seen so far, and (thread, index in its list)
        // of the last one.
        let mut seen: Vec<u32> = vec![0; trace.slots];
        let mut last: Vec<(u8, u32)> = vec![(0, 0); trace.slots];
        let mut thread = 0usize;
        for (trace_index, &op) in trace.ops.iter().enumerate() {
            let slot = match op {
                TraceOp::Thread(next) => {
                    thread = next;
                    continue;
                }
                TraceOp::Alloc { slot, .. } | TraceOp::Free { slot } | TraceOp::Resize { slot, .. } => slot,
            };
            let position = seen[slot];
            let mut wait_for = NO_WAIT;
            if position > 0 {
                let (last_thread, last_index) = last[slot];
                if usize::from(last_thread) != thread {
                    wait_for = position;
                    lists[usize::from(last_thread)][last_index as usize].publish = true;
                }
            }
            seen[slot] = position + 1;
            last[slot] = (thread as u8, lists[thread].len() as u32);
            lists[thread].push(Step { op, trace_index, position, wait_for, publish: false });
        }
        Plan { threads: lists.into_iter().enumerate().filter(|(_, steps)| !steps.is_empty()).collect() }
    }
}

/// What one worker did.
#[derive(Default)]
struct WorkerOutcome {
    ops: u64,
    skipped_ops: u64,
    /// (trace index, requested bytes) of each refused request.
    failures: Vec<(usize, usize)>,
    start: Option<Instant>,
    end: Option<Instant>,
}

/// Writes `len` bytes at `ptr`.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
#[inline]
unsafe fn write_bytes(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded contract.
    unsafe { std::ptr::write_bytes(ptr, 0xA5, len) };
}

/// Runs one thread's steps.
fn run_steps<P: Peer + ?Sized>(peer: &P, steps: &[Step], cells: &[SlotCell]) -> WorkerOutcome {
    let mut outcome = WorkerOutcome { start: Some(Instant::now()), ..WorkerOutcome::default() };
    for step in steps {
        let (slot, request) = match step.op {
            TraceOp::Alloc { slot, len } => (slot, Some(len)),
            TraceOp::Resize { slot, new_len } => (slot, Some(new_len)),
            TraceOp::Free { slot } => (slot, None),
            TraceOp::Thread(_) => continue,
        };
        let cell = &cells[slot];
        if step.wait_for != NO_WAIT {
            // Acquire: pairs with the Release store of the thread that did
            // the block's previous operation, making its ptr/len visible.
            spin_until(|| (cell.done.load(Ordering::Acquire) >= step.wait_for).then_some(()));
        }
        // Relaxed: this thread has the block's turn (program order or the
        // Acquire above), so no other thread touches ptr/len now.
        let ptr = NonNull::new(cell.ptr.load(Ordering::Relaxed));
        let len = cell.len.load(Ordering::Relaxed);
        match (step.op, ptr) {
            (TraceOp::Alloc { len, .. }, _) => {
                outcome.ops += 1;
                match peer.alloc(len) {
                    Some(fresh) => {
                        // SAFETY: fresh is a new block of len bytes.
                        unsafe { write_bytes(fresh.as_ptr(), len) };
                        cell.ptr.store(fresh.as_ptr(), Ordering::Relaxed);
                        cell.len.store(len, Ordering::Relaxed);
                    }
                    None => outcome.failures.push((step.trace_index, request.unwrap_or(0))),
                }
            }
            (TraceOp::Free { .. }, Some(ptr)) => {
                outcome.ops += 1;
                // SAFETY: the parser guarantees one free per allocation, after
                // it; the block is live with length len.
                unsafe { peer.free(ptr, len) };
                cell.ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
            }
            (TraceOp::Resize { new_len, .. }, Some(ptr)) => {
                outcome.ops += 1;
                // SAFETY: the block is live with length len.
                match unsafe { peer.resize(ptr, len, new_len) } {
                    Some(moved) => {
                        if new_len > len {
                            // SAFETY: moved is valid for new_len bytes.
                            unsafe { write_bytes(moved.as_ptr().add(len), new_len - len) };
                        }
                        cell.ptr.store(moved.as_ptr(), Ordering::Relaxed);
                        cell.len.store(new_len, Ordering::Relaxed);
                    }
                    None => outcome.failures.push((step.trace_index, new_len)),
                }
            }
            // The block's allocation failed: nothing to free or resize.
            _ => outcome.skipped_ops += 1,
        }
        if step.publish {
            cell.done.store(step.position + 1, Ordering::Release);
        }
    }
    outcome.end = Some(Instant::now());
    outcome
}

/// Peak of live requested bytes in trace order, leaving out the requests in
/// `failed` (sorted trace indices).
fn peak_live(trace: &Trace, failed: &[usize]) -> u64 {
    let mut lens: Vec<Option<usize>> = vec![None; trace.slots];
    let (mut live, mut peak) = (0u64, 0u64);
    for (index, op) in trace.ops.iter().enumerate() {
        let ok = failed.binary_search(&index).is_err();
        match *op {
            TraceOp::Alloc { slot, len } if ok => {
                lens[slot] = Some(len);
                live += len as u64;
            }
            TraceOp::Resize { slot, new_len } if ok => {
                if let Some(old) = lens[slot] {
                    lens[slot] = Some(new_len);
                    live = live - old as u64 + new_len as u64;
                }
            }
            TraceOp::Free { slot } => {
                if let Some(old) = lens[slot].take() {
                    live -= old as u64;
                }
            }
            _ => {}
        }
        peak = peak.max(live);
    }
    peak
}

/// Replays `trace` on `peer` (see the module docs) and frees whatever the
/// trace left live.
pub fn replay<P: Peer + ?Sized>(peer: &P, trace: &Trace) -> ReplayResult {
    let plan = Plan::new(trace);
    let cells: Vec<SlotCell> = (0..trace.slots).map(|_| SlotCell::default()).collect();
    // Touch every entry (atomic stores are never elided), so that the table's
    // pages are resident before the baseline.
    for cell in &cells {
        cell.done.store(0, Ordering::Relaxed);
    }
    let barrier = Barrier::new(plan.threads.len() + 1);
    let sample_hugetlb = peer.may_map_hugetlb();
    let stop_sampler = AtomicBool::new(false);
    let peak_hugetlb = AtomicU64::new(0);
    let mut base_rss = None;
    let mut hwm_reset = false;
    let outcomes: Vec<WorkerOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = plan
            .threads
            .iter()
            .map(|(thread, steps)| {
                let (barrier, cells) = (&barrier, &cells);
                scope.spawn(move || {
                    peer.bind_thread(*thread);
                    barrier.wait();
                    run_steps(peer, steps, cells)
                })
            })
            .collect();
        let base_hugetlb = if sample_hugetlb { hugetlb_bytes().unwrap_or(0) } else { 0 };
        let sampler = sample_hugetlb.then(|| {
            let (stop, peak) = (&stop_sampler, &peak_hugetlb);
            scope.spawn(move || loop {
                let now = hugetlb_bytes().unwrap_or(0).saturating_sub(base_hugetlb);
                peak.fetch_max(now, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(HUGETLB_SAMPLE_MS));
            })
        });
        base_rss = resident_bytes();
        hwm_reset = reset_peak_rss();
        barrier.wait();
        // A panic in a worker is a bug in a peer or in this crate; propagate it.
        let outcomes = workers.into_iter().map(|worker| worker.join().expect("replay worker panicked")).collect();
        stop_sampler.store(true, Ordering::Relaxed);
        if let Some(sampler) = sampler {
            sampler.join().expect("hugetlb sampler panicked");
        }
        outcomes
    });
    let peak_rss_bytes = match (hwm_reset, base_rss, peak_rss_bytes()) {
        (true, Some(base), Some(peak)) => Some(peak.saturating_sub(base)),
        _ => None,
    };
    let start = outcomes.iter().filter_map(|o| o.start).min();
    let end = outcomes.iter().filter_map(|o| o.end).max();
    let mut failures: Vec<(usize, usize)> = outcomes.iter().flat_map(|o| o.failures.iter().copied()).collect();
    failures.sort_unstable();
    let failed_indices: Vec<usize> = failures.iter().map(|&(index, _)| index).collect();
    for cell in &cells {
        if let Some(ptr) = NonNull::new(cell.ptr.load(Ordering::Relaxed)) {
            // SAFETY: every block still in the table is live with this
            // length, and is freed once (the workers have been joined).
            unsafe { peer.free(ptr, cell.len.load(Ordering::Relaxed)) };
        }
    }
    peer.settle();
    ReplayResult {
        threads: plan.threads.len() as u64,
        ops: outcomes.iter().map(|o| o.ops).sum(),
        skipped_ops: outcomes.iter().map(|o| o.skipped_ops).sum(),
        elapsed_ns: match (start, end) {
            (Some(start), Some(end)) => crate::workloads::nanos(end.saturating_duration_since(start)),
            _ => 0,
        },
        peak_live_requested_bytes: peak_live(trace, &failed_indices),
        peak_rss_bytes,
        peak_hugetlb_bytes: peak_hugetlb.load(Ordering::Relaxed),
        failed_allocs: failures.len() as u64,
        largest_failed_request_bytes: failures.iter().map(|&(_, bytes)| bytes as u64).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{MempoolModel, Pow2Model, SystemPeer};
    use crate::trace::parse;

    const TRACE: &[u8] = b"a 1 100\na 2 300\nr 1 1000\nf 2\na 3 50\nt 1\nf 1\nt 0\nf 3\na 4 5000\n";

    #[test]
    fn replay_accounts_peak_live_bytes() {
        let trace = parse(TRACE).unwrap();
        let result = replay(&SystemPeer, &trace);
        assert_eq!(result.ops, 8);
        assert_eq!(result.threads, 2);
        // Peaks: 100+300=400, then 1000+300=1300, then 1000+50=1050, then 5000.
        assert_eq!(result.peak_live_requested_bytes, 5000);
        assert_eq!(result.failed_allocs, 0);
        assert_eq!(result.skipped_ops, 0);
    }

    #[test]
    fn failed_allocations_are_counted_and_their_lines_not_executed() {
        let trace = parse(b"a 1 100\na 2 5000000\nr 2 10\nf 2\nf 1\n").unwrap();
        let result = replay(&Pow2Model::new(None), &trace);
        assert_eq!(result.failed_allocs, 1);
        assert_eq!(result.largest_failed_request_bytes, 5_000_000);
        // a 1, a 2 (refused), f 1 called the allocator; r 2 and f 2 did not.
        assert_eq!(result.ops, 3);
        assert_eq!(result.skipped_ops, 2);
        assert_eq!(result.peak_live_requested_bytes, 100);
    }

    #[test]
    fn a_refused_grow_keeps_the_old_length() {
        // The mempool refuses anything above 2048 B, so the grow fails and
        // the block stays 100 B long, live until its free.
        let trace = parse(b"a 1 100\nr 1 4000\na 2 1000\nf 1\nf 2\n").unwrap();
        let result = replay(&MempoolModel::new(None), &trace);
        assert_eq!(result.failed_allocs, 1);
        assert_eq!(result.ops, 5);
        assert_eq!(result.peak_live_requested_bytes, 1100);
    }

    #[test]
    fn the_plan_waits_only_where_a_block_changes_thread() {
        let trace = parse(b"a 1 10\na 2 10\nt 1\nr 1 20\nf 1\nt 0\nf 2\n").unwrap();
        let plan = Plan::new(&trace);
        let (zero, one) = (&plan.threads[0].1, &plan.threads[1].1);
        // Thread 0: a 1 publishes (block 1 moves to thread 1); a 2 and f 2 do not.
        assert!(zero[0].publish && !zero[1].publish && !zero[2].publish);
        assert!(zero.iter().all(|step| step.wait_for == NO_WAIT));
        // Thread 1: r 1 waits for the a; f 1 follows on the same thread.
        assert_eq!((one[0].wait_for, one[0].position), (1, 1));
        assert_eq!(one[1].wait_for, NO_WAIT);
    }

    /// Many blocks handed back and forth between four threads: every one is
    /// freed exactly once, whatever the interleaving (the pow2 model's held
    /// bytes would not return to a steady state otherwise, and a double free
    /// would corrupt its lists).
    #[test]
    fn concurrent_threads_hand_blocks_over_in_order() {
        let mut text = String::new();
        for round in 0..2000u64 {
            let thread = round % 4;
            text.push_str(&format!("t {thread}\na {round} {}\n", 16 + round % 700));
            text.push_str(&format!("t {}\nr {round} {}\n", (thread + 1) % 4, 8 + round % 900));
            if round >= 3 {
                text.push_str(&format!("t {}\nf {}\n", (thread + 2) % 4, round - 3));
            }
        }
        let trace = parse(text.as_bytes()).unwrap();
        let peer = Pow2Model::new(None);
        for _ in 0..3 {
            let result = replay(&peer, &trace);
            assert_eq!(result.failed_allocs, 0);
            assert_eq!(result.threads, 4);
            assert_eq!(result.ops, trace.memory_ops());
        }
    }
}
