//! Shadow-model property test: random alloc / free / shrink / grow / realloc
//! sequences against a model of what must be live, as in rlsf's
//! `ShadowAllocator`.
//!
//! After every operation: the operated chunk and every other live chunk
//! still hold their fill pattern, the new chunk overlaps no live chunk, and
//! the pool's stats equal the model's sums. `validate()` runs after every
//! batch of 64 operations and at the end. Two tests of 256 cases x 2048
//! operations each cover over 1M operations per run.

use nta_core::{HugePages, Pool, GRANULE};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ptr::NonNull;

const OPS_PER_CASE: usize = 2048;
const BATCH: usize = 64;
/// At most this many live chunks: keeps the every-operation pattern check
/// of all live chunks affordable, and makes frees as common as allocations.
const MAX_LIVE: usize = 40;

#[derive(Clone, Debug)]
enum Op {
    Alloc { len: usize, align_shift: u8 },
    Free { pick: usize, sized: bool },
    Shrink { pick: usize, permille: u16 },
    Grow { pick: usize, extra: usize },
    Realloc { pick: usize, len: usize },
    SwitchShard,
}

/// Sizes up to 6 MiB: packet sizes, node-sized chunks and runs.
fn big_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => size(),
        2 => 70_000usize..=2usize << 20,
        1 => (2usize << 20) + 1..=6usize << 20,
    ]
}

fn big_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (big_size(), prop_oneof![6 => Just(0u8), 1 => 1u8..=7]).prop_map(|(len, a)| Op::Alloc { len, align_shift: a }),
        5 => (any::<usize>(), any::<bool>()).prop_map(|(pick, sized)| Op::Free { pick, sized }),
        2 => (any::<usize>(), 0u16..1000).prop_map(|(pick, permille)| Op::Shrink { pick, permille }),
        2 => (any::<usize>(), 1usize..3 << 20).prop_map(|(pick, extra)| Op::Grow { pick, extra }),
        1 => (any::<usize>(), big_size()).prop_map(|(pick, len)| Op::Realloc { pick, len }),
        1 => Just(Op::SwitchShard),
    ]
}

/// Sizes from 1 to 70000 with peaks at packet sizes.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![1usize, 40, 64, 66, 128, 576, 594, 1280, 1500, 1514, 1518, 4096, 9000, 65535]),
        3 => 1usize..=2048,
        2 => 2049usize..=16384,
        1 => 16385usize..=70000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (size(), prop_oneof![6 => Just(0u8), 1 => 1u8..=7]).prop_map(|(len, a)| Op::Alloc { len, align_shift: a }),
        7 => (any::<usize>(), any::<bool>()).prop_map(|(pick, sized)| Op::Free { pick, sized }),
        2 => (any::<usize>(), 0u16..1000).prop_map(|(pick, permille)| Op::Shrink { pick, permille }),
        2 => (any::<usize>(), 1usize..4000).prop_map(|(pick, extra)| Op::Grow { pick, extra }),
        1 => (any::<usize>(), size()).prop_map(|(pick, len)| Op::Realloc { pick, len }),
        1 => Just(Op::SwitchShard),
    ]
}

struct Live {
    ptr: NonNull<u8>,
    len: usize,
    fill: u8,
    /// Allocated above 2 MiB: a run of whole segments, whatever its length
    /// becomes.
    run: bool,
}

struct Model {
    pool: Pool,
    /// The pool's capacity.
    capacity: usize,
    /// Live chunks at most (then allocations turn into frees).
    max_live: usize,
    /// Allocations that returned `None`.
    failed: u64,
    /// The most `pending_bytes` a check saw.
    max_pending: u64,
    live: Vec<Live>,
    by_addr: BTreeMap<usize, usize>, // start -> end (granule-rounded)
    next_fill: u8,
    shard: usize,
}

/// What a chunk of `len` bytes takes: granules, or whole segments (at
/// least one) for a run.
fn rounded(len: usize, run: bool) -> usize {
    if run {
        len.div_ceil(nta_core::HUGE_NODE_BYTES).max(1) * nta_core::HUGE_NODE_BYTES
    } else {
        len.max(1).div_ceil(GRANULE) * GRANULE
    }
}

fn is_run(len: usize) -> bool {
    len > nta_core::MAX_ALLOC_BYTES
}

impl Model {
    fn fill(&mut self, ptr: NonNull<u8>, from: usize, to: usize, byte: u8) {
        // SAFETY: the model only writes inside live chunks it owns.
        unsafe { ptr.as_ptr().add(from).write_bytes(byte, to - from) };
    }

    fn check(&self, l: &Live) {
        // SAFETY: `l` is live and `len` bytes long.
        let bytes = unsafe { std::slice::from_raw_parts(l.ptr.as_ptr(), l.len) };
        if !bytes.iter().fold(true, |ok, &b| ok & (b == l.fill)) {
            let i = bytes.iter().position(|&b| b != l.fill).unwrap_or(0);
            panic!("chunk {:p} ({} B) corrupted at byte {i}", l.ptr, l.len);
        }
    }

    fn insert_range(&mut self, ptr: NonNull<u8>, len: usize, run: bool) {
        let start = ptr.as_ptr() as usize;
        let end = start + rounded(len, run);
        if let Some((&s, &e)) = self.by_addr.range(..end).next_back() {
            assert!(e <= start || s >= end, "new chunk {start:#x}..{end:#x} overlaps live {s:#x}..{e:#x}");
        }
        self.by_addr.insert(start, end);
    }

    fn apply(&mut self, op: &Op) {
        let op = match *op {
            Op::Alloc { len, .. } if self.live.len() >= self.max_live => Op::Free { pick: len, sized: len % 2 == 0 },
            ref other => other.clone(),
        };
        match op {
            Op::Alloc { len, align_shift } => {
                let align = 32usize << align_shift;
                let before = self.pool.stats().failed_allocs;
                match self.pool.alloc_aligned(len, align) {
                    Some(p) => {
                        assert_eq!(p.as_ptr() as usize % align, 0);
                        self.insert_range(p, len, is_run(len));
                        self.next_fill = self.next_fill.wrapping_add(1).max(1);
                        let fill = self.next_fill;
                        self.fill(p, 0, len, fill);
                        self.live.push(Live { ptr: p, len, fill, run: is_run(len) });
                    }
                    None => {
                        assert_eq!(self.pool.stats().failed_allocs, before + 1, "None must count a failure");
                        self.failed += 1;
                    }
                }
            }
            Op::Free { pick, sized } if !self.live.is_empty() => {
                let l = self.live.swap_remove(pick % self.live.len());
                self.check(&l);
                self.by_addr.remove(&(l.ptr.as_ptr() as usize));
                // SAFETY: live chunk, freed once.
                unsafe {
                    if sized {
                        self.pool.free_sized(l.ptr, l.len)
                    } else {
                        self.pool.free(l.ptr)
                    }
                }
            }
            Op::Shrink { pick, permille } if !self.live.is_empty() => {
                let i = pick % self.live.len();
                self.check(&self.live[i]);
                let new_len = self.live[i].len * permille as usize / 1000;
                // SAFETY: live chunk.
                unsafe { self.pool.shrink(self.live[i].ptr, new_len) };
                self.live[i].len = new_len;
                let start = self.live[i].ptr.as_ptr() as usize;
                self.by_addr.insert(start, start + rounded(new_len, self.live[i].run));
            }
            Op::Grow { pick, extra } if !self.live.is_empty() => {
                let i = pick % self.live.len();
                let (ptr, len, fill, run) = (self.live[i].ptr, self.live[i].len, self.live[i].fill, self.live[i].run);
                // Within a node stays within a node; a run may grow further.
                let cap = if run { self.capacity } else { nta_core::MAX_ALLOC_BYTES };
                let new_len = (len + extra).min(cap);
                // SAFETY: live chunk.
                if unsafe { self.pool.try_grow(ptr, new_len) } {
                    let start = ptr.as_ptr() as usize;
                    self.by_addr.remove(&start);
                    self.insert_range(ptr, new_len, run);
                    self.fill(ptr, len, new_len, fill);
                    self.live[i].len = new_len;
                }
            }
            Op::Realloc { pick, len } if !self.live.is_empty() => {
                let i = pick % self.live.len();
                let old = &self.live[i];
                let (ptr, old_len, fill, old_run) = (old.ptr, old.len, old.fill, old.run);
                self.by_addr.remove(&(ptr.as_ptr() as usize));
                // SAFETY: live chunk; on Some only the returned pointer is live.
                match unsafe { self.pool.realloc(ptr, len) } {
                    Some(q) => {
                        // Resized in place, it keeps its kind; moved, it
                        // takes the kind of its new length.
                        let run = if q == ptr { old_run } else { is_run(len) };
                        self.insert_range(q, len, run);
                        if len > old_len {
                            self.fill(q, old_len, len, fill);
                        }
                        self.live[i] = Live { ptr: q, len, fill, run };
                    }
                    None => {
                        self.insert_range(ptr, old_len, old_run);
                    }
                }
            }
            Op::SwitchShard => {
                self.shard ^= 1;
                self.pool.bind_current_thread(self.shard);
            }
            _ => {}
        }
    }

    /// `exact`: remote frees have been drained, so the stats must equal the
    /// model; otherwise chunks still queued for their owner count as in use.
    fn check_all(&mut self, exact: bool) {
        for l in &self.live {
            self.check(l);
        }
        let st = self.pool.stats();
        self.max_pending = self.max_pending.max(st.pending_bytes);
        let in_use: usize = self.live.iter().map(|l| rounded(l.len, l.run)).sum();
        if exact {
            assert_eq!(st.in_use_bytes, in_use as u64, "in-use bytes");
        } else {
            assert!(st.in_use_bytes >= in_use as u64, "in-use bytes below the model's");
        }
        assert_eq!(st.in_use_bytes + st.free_bytes, st.mapped_bytes);
        assert!(st.mapped_bytes <= self.capacity as u64);
    }
}

/// Runs `ops` on a fresh pool; returns the allocations that failed.
fn run_on(ops: &[Op], shards: usize, capacity: usize, max_live: usize) -> u64 {
    run_checking(ops, shards, capacity, max_live, 1).0
}

/// [`run_on`], checking every live chunk's pattern and the stats after
/// every `every`-th operation (and at each validation) rather than after
/// each one. Returns the allocations that failed and the most bytes seen
/// waiting on page nodes (`Stats::pending_bytes`) at a check.
fn run_checking(ops: &[Op], shards: usize, capacity: usize, max_live: usize, every: usize) -> (u64, u64) {
    let pool = Pool::builder()
        .capacity(capacity)
        .shards(shards)
        .hugepages(HugePages::Off)
        .retain_bytes(2 << 20)
        .build()
        .unwrap();
    pool.bind_current_thread(0);
    let mut m = Model {
        pool,
        capacity,
        max_live,
        failed: 0,
        max_pending: 0,
        live: Vec::new(),
        by_addr: BTreeMap::new(),
        next_fill: 0,
        shard: 0,
    };
    for (i, op) in ops.iter().enumerate() {
        m.apply(op);
        if i % every == every - 1 {
            m.check_all(shards == 1);
        }
        if i % BATCH == BATCH - 1 {
            m.pool.validate().unwrap_or_else(|e| panic!("after op {i} ({op:?}): {e}"));
            m.check_all(true); // validate() drained the remote queues
        }
    }
    m.pool.validate().unwrap();
    for l in std::mem::take(&mut m.live) {
        m.check(&l);
        // SAFETY: live, freed once.
        unsafe { m.pool.free(l.ptr) };
    }
    m.pool.validate().unwrap();
    let st = m.pool.stats();
    assert_eq!(st.in_use_bytes, 0);
    assert_eq!(st.free_bytes, st.mapped_bytes);
    m.pool.unbind_current_thread();
    (m.failed, m.max_pending)
}

fn run(ops: &[Op], shards: usize) {
    run_on(ops, shards, 12 << 20, MAX_LIVE);
}

/// The variant that reaches exhaustion: an 8 MiB pool, up to 200 live
/// chunks of up to 6 MiB (runs included). Across its cases, allocations
/// must fail (the pool runs full) and every failure must leave the pool
/// consistent.
#[test]
fn small_pool_exhaustion_and_runs() {
    use proptest::test_runner::{Config, TestRunner};
    let failed = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config { cases: cases(48), max_shrink_iters: 256, ..Config::default() });
    runner
        .run(&prop::collection::vec(big_op(), 1024), |ops| {
            failed.set(failed.get() + run_on(&ops, 2, 8 << 20, 200));
            Ok(())
        })
        .unwrap();
    assert!(failed.get() > 0, "the variant never exhausted its pool");
    println!("{} allocations failed at exhaustion", failed.get());
}

/// Bursts of frees past the thread cache and the quick cache, so that freed
/// chunks wait on their page nodes (nta-core's `pending`), page nodes come
/// back whole, and waiting chunks merge when the next allocations need room:
/// `n` chunks of a few small sizes, then three quarters of them freed in
/// random order (now and then from the other shard, through its remote
/// queue), twice over.
fn burst_ops() -> impl Strategy<Value = Vec<Op>> {
    (
        200usize..1200,
        prop::sample::select(vec![1usize, 32, 40, 64, 100, 200, 594]),
        prop::collection::vec(any::<usize>(), 900),
        any::<bool>(),
    )
        .prop_map(|(n, len, picks, sized)| {
            let mut ops = Vec::new();
            for round in 0..2 {
                for i in 0..n {
                    ops.push(Op::Alloc { len: len + 32 * (i % 3) * round, align_shift: 0 });
                }
                for &pick in &picks[..n * 3 / 4] {
                    if pick % 61 == 0 {
                        ops.push(Op::SwitchShard);
                    }
                    ops.push(Op::Free { pick, sized });
                }
            }
            ops
        })
}

#[test]
fn bursts_of_frees_past_the_caches() {
    use proptest::test_runner::{Config, TestRunner};
    let pending = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config { cases: cases(32), max_shrink_iters: 64, ..Config::default() });
    runner
        .run(&burst_ops(), |ops| {
            pending.set(pending.get().max(run_checking(&ops, 2, 32 << 20, 4096, BATCH).1));
            Ok(())
        })
        .unwrap();
    assert!(pending.get() > 0, "no freed chunk ever waited on its page node");
    println!("at most {} bytes waited on page nodes", pending.get());
}

/// Cases per property: 256, or `NTA_MODEL_CASES` (CI's sanitizer run
/// lowers it; a run under AddressSanitizer is about ten times slower).
fn cases(default: u32) -> u32 {
    std::env::var("NTA_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_shard_model(ops in prop::collection::vec(op(), OPS_PER_CASE)) {
        run(&ops, 1);
    }

    #[test]
    fn two_shards_with_remote_frees(ops in prop::collection::vec(op(), OPS_PER_CASE)) {
        run(&ops, 2);
    }
}

/// Debugging aid: replays ops from the file named by `NTA_MODEL_REPLAY`
/// (one op per line: `A len shift`, `F pick sized`, `S pick permille`,
/// `G pick extra`, `R pick len`, `W`) on the exhaustion variant's pool.
#[test]
fn replay_from_env() {
    let Ok(path) = std::env::var("NTA_MODEL_REPLAY") else { return };
    let text = std::fs::read_to_string(path).unwrap();
    let ops: Vec<Op> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<usize>().unwrap();
            match f[0] {
                "A" => Op::Alloc { len: n(1), align_shift: n(2) as u8 },
                "F" => Op::Free { pick: n(1), sized: n(2) == 1 },
                "S" => Op::Shrink { pick: n(1), permille: n(2) as u16 },
                "G" => Op::Grow { pick: n(1), extra: n(2) },
                "R" => Op::Realloc { pick: n(1), len: n(2) },
                _ => Op::SwitchShard,
            }
        })
        .collect();
    run_on(&ops, 2, 8 << 20, 200);
}
