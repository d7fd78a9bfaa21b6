//! Replays a parsed [`Trace`] on a peer.
//!
//! Trace thread 0 runs on the calling thread; each other trace thread that
//! the trace names gets a worker thread of its own (which calls
//! [`Peer::bind_thread`] with its number), so a block allocated on one trace
//! thread and freed on another is freed remotely, as in the traced program.
//! Threads run one at a time, in trace order: a run of lines after a `t` is
//! handed to its thread, and the caller waits for it to finish.
//!
//! Figures:
//! - `ops`: `a`, `f` and `r` lines replayed;
//! - `elapsed_ns`: time spent inside those operations (summed over threads,
//!   hand-offs and footprint sampling excluded);
//! - `peak_live_requested_bytes`: peak of the requested bytes of live blocks
//!   (a resize counts its new size; a failed allocation counts nothing);
//! - `peak_footprint_bytes`: peak of the allocator's own held bytes (delta
//!   from the start), or of the RSS delta when it has no such figure, sampled
//!   every [`SAMPLE_EVERY`] operations and at each thread switch;
//! - `failed_allocs`: `a` or `r` lines the allocator could not serve. Later
//!   lines naming a block whose allocation failed are skipped.

use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Instant;

use crate::mem_stats::resident_bytes;
use crate::peers::Peer;
use crate::trace::{Trace, TraceOp, TRACE_THREADS};
use crate::workloads::nanos;

/// Operations between two footprint samples.
pub const SAMPLE_EVERY: usize = 256;

/// What a replay measured (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayResult {
    /// Memory operations replayed.
    pub ops: u64,
    /// Time inside the operations.
    pub elapsed_ns: u64,
    /// Peak requested bytes of live blocks.
    pub peak_live_requested_bytes: u64,
    /// Peak footprint delta.
    pub peak_footprint_bytes: u64,
    /// `"own"` when the footprint is the allocator's own figure, `"rss"` else.
    pub footprint_source: &'static str,
    /// Allocations and resizes that returned `None`.
    pub failed_allocs: u64,
}

/// A live block; `Send` so the slot table can move between threads.
#[derive(Clone, Copy)]
struct Block(NonNull<u8>, usize);

// SAFETY: blocks are owned by the slot table, which only one thread uses at a
// time (under the mutex), and every peer accepts frees from any thread.
unsafe impl Send for Block {}

struct State {
    slots: Vec<Option<Block>>,
    live_requested_bytes: u64,
    result: ReplayResult,
    base_held: Option<u64>,
    base_rss: Option<u64>,
}

impl State {
    fn sample<P: Peer + ?Sized>(&mut self, peer: &P) {
        let footprint = match (self.base_held, peer.held_bytes()) {
            (Some(base), Some(now)) => now.saturating_sub(base),
            _ => match (self.base_rss, resident_bytes()) {
                (Some(base), Some(now)) => now.saturating_sub(base),
                _ => 0,
            },
        };
        self.result.peak_footprint_bytes = self.result.peak_footprint_bytes.max(footprint);
    }

    fn apply<P: Peer + ?Sized>(&mut self, peer: &P, op: TraceOp) {
        match op {
            TraceOp::Alloc { slot, len } => match peer.alloc(len) {
                Some(ptr) => {
                    self.slots[slot] = Some(Block(ptr, len));
                    self.live_requested_bytes += len as u64;
                }
                None => self.result.failed_allocs += 1,
            },
            TraceOp::Free { slot } => {
                if let Some(Block(ptr, len)) = self.slots[slot].take() {
                    // SAFETY: the parser guarantees each slot is freed at most
                    // once and after its allocation; the block is live.
                    unsafe { peer.free(ptr, len) };
                    self.live_requested_bytes -= len as u64;
                }
            }
            TraceOp::Resize { slot, new_len } => {
                if let Some(Block(ptr, len)) = self.slots[slot] {
                    // SAFETY: the block is live with length len.
                    match unsafe { peer.resize(ptr, len, new_len) } {
                        Some(new_ptr) => {
                            self.slots[slot] = Some(Block(new_ptr, new_len));
                            self.live_requested_bytes = self.live_requested_bytes - len as u64 + new_len as u64;
                        }
                        None => self.result.failed_allocs += 1,
                    }
                }
            }
            TraceOp::Thread(_) => return,
        }
        self.result.ops += 1;
        self.result.peak_live_requested_bytes = self.result.peak_live_requested_bytes.max(self.live_requested_bytes);
    }

    /// Runs `ops` (none of them a thread switch), timing only the operations.
    fn run_batch<P: Peer + ?Sized>(&mut self, peer: &P, ops: &[TraceOp]) {
        for chunk in ops.chunks(SAMPLE_EVERY) {
            let start = Instant::now();
            for &op in chunk {
                self.apply(peer, op);
            }
            self.result.elapsed_ns += nanos(start.elapsed());
            self.sample(peer);
        }
    }
}

/// The runs of operations between thread switches: (thread, range of ops).
fn batches(trace: &Trace) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut batches = Vec::new();
    let mut thread = 0;
    let mut start = 0;
    for (index, op) in trace.ops.iter().enumerate() {
        if let TraceOp::Thread(next) = *op {
            if index > start {
                batches.push((thread, start..index));
            }
            thread = next;
            start = index + 1;
        }
    }
    if trace.ops.len() > start {
        batches.push((thread, start..trace.ops.len()));
    }
    batches
}

/// Replays `trace` on `peer` and frees whatever the trace left live.
pub fn replay<P: Peer + ?Sized>(peer: &P, trace: &Trace) -> ReplayResult {
    let state = Mutex::new(State {
        slots: vec![None; trace.slots],
        live_requested_bytes: 0,
        result: ReplayResult {
            footprint_source: if peer.held_bytes().is_some() { "own" } else { "rss" },
            ..Default::default()
        },
        base_held: peer.held_bytes(),
        base_rss: resident_bytes(),
    });
    let batches = batches(trace);
    let mut used = [false; TRACE_THREADS];
    for (thread, _) in &batches {
        used[*thread] = true;
    }
    // A poisoned lock can only follow a panic in a peer; keep its data.
    let lock = || state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let mut workers: Vec<Option<mpsc::Sender<std::ops::Range<usize>>>> = vec![None; TRACE_THREADS];
        for (thread, worker) in workers.iter_mut().enumerate().skip(1) {
            if !used[thread] {
                continue;
            }
            let (tx, rx) = mpsc::channel::<std::ops::Range<usize>>();
            let done_tx = done_tx.clone();
            let state = &state;
            scope.spawn(move || {
                peer.bind_thread(thread);
                for range in rx {
                    state.lock().unwrap_or_else(|p| p.into_inner()).run_batch(peer, &trace.ops[range]);
                    if done_tx.send(()).is_err() {
                        break;
                    }
                }
            });
            *worker = Some(tx);
        }
        peer.bind_thread(0);
        for (thread, range) in batches {
            match &workers[thread] {
                Some(tx) if tx.send(range.clone()).is_ok() && done_rx.recv().is_ok() => {}
                // Thread 0, or a worker that is gone: run here.
                _ => lock().run_batch(peer, &trace.ops[range]),
            }
        }
        // Dropping the senders ends the workers.
        workers.clear();
    });
    let mut state = state.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    for Block(ptr, len) in state.slots.iter_mut().filter_map(Option::take) {
        // SAFETY: every block still in the table is live and freed once.
        unsafe { peer.free(ptr, len) };
    }
    peer.settle();
    state.result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{Pow2Model, SystemPeer};
    use crate::trace::parse;

    const TRACE: &[u8] = b"a 1 100\na 2 300\nr 1 1000\nf 2\na 3 50\nt 1\nf 1\nt 0\nf 3\na 4 5000\n";

    #[test]
    fn replay_accounts_peak_live_bytes() {
        let trace = parse(TRACE).unwrap();
        let result = replay(&SystemPeer, &trace);
        assert_eq!(result.ops, 8);
        // Peaks: 100+300=400, then 1000+300=1300, then 1000+50=1050, then 5000.
        assert_eq!(result.peak_live_requested_bytes, 5000);
        assert_eq!(result.failed_allocs, 0);
    }

    #[test]
    fn failed_allocations_are_counted_and_their_ids_skipped() {
        let trace = parse(b"a 1 100\na 2 5000000\nr 2 10\nf 2\nf 1\n").unwrap();
        let result = replay(&Pow2Model::new(None), &trace);
        assert_eq!(result.failed_allocs, 1);
        assert_eq!(result.peak_live_requested_bytes, 100);
        assert!(result.peak_footprint_bytes > 0);
        assert_eq!(result.footprint_source, "own");
    }
}
