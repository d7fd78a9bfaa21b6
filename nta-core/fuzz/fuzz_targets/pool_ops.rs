//! Fuzz target: bytes decode into alloc, free (sized and unsized), shrink,
//! grow, realloc and cross-thread free operations on a small pool, checked
//! against a shadow model: chunks never overlap, every live chunk keeps its
//! fill pattern (written and checked at its first and last 64 bytes and
//! one byte per 4 KiB page, so that multi-MiB chunks stay cheap), `stats()`
//! agrees with the model when no free is in flight, and `validate()`
//! passes. The first byte picks checked mode (on
//! or off) and the shard count, so both modes are fuzzed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nta_core::{HugePages, Pool, GRANULE, HUGE_NODE_BYTES, MAX_ALLOC_BYTES};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::mpsc;

struct Live {
    ptr: NonNull<u8>,
    len: usize,
    fill: u8,
    run: bool,
}

fn taken(len: usize, run: bool) -> usize {
    if run {
        len.div_ceil(HUGE_NODE_BYTES).max(1) * HUGE_NODE_BYTES
    } else {
        len.max(1).div_ceil(GRANULE) * GRANULE
    }
}

struct Model {
    pool: Pool,
    live: Vec<Live>,
    ranges: BTreeMap<usize, usize>,
    next_fill: u8,
    remote: Option<mpsc::Sender<(usize, usize, u8)>>,
}

impl Model {
    fn check(&self, l: &Live) {
        for i in probes(0, l.len) {
            // SAFETY: `l` is a live chunk of `len` bytes owned by the model.
            let b = unsafe { l.ptr.as_ptr().add(i).read() };
            assert_eq!(b, l.fill, "chunk {:p} lost its contents at byte {i}", l.ptr);
        }
    }

    fn insert(&mut self, ptr: NonNull<u8>, len: usize, run: bool) {
        let (start, end) = (ptr.as_ptr() as usize, ptr.as_ptr() as usize + taken(len, run));
        if let Some((&s, &e)) = self.ranges.range(..end).next_back() {
            assert!(e <= start || s >= end, "{start:#x}..{end:#x} overlaps live {s:#x}..{e:#x}");
        }
        self.ranges.insert(start, end);
    }

    /// Fills the probed bytes of `from..to` (the whole chunk's probes are
    /// refreshed, so a grown chunk keeps a consistent pattern).
    fn fill(&mut self, ptr: NonNull<u8>, from: usize, to: usize, byte: u8) {
        let _ = from;
        for i in probes(0, to) {
            // SAFETY: inside a live chunk owned by the model.
            unsafe { ptr.as_ptr().add(i).write(byte) };
        }
    }

    fn take(&mut self, pick: u8) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        let l = self.live.swap_remove(pick as usize % self.live.len());
        self.check(&l);
        self.ranges.remove(&(l.ptr.as_ptr() as usize));
        Some(l)
    }
}

/// The byte offsets of `from..to` the model writes and checks.
fn probes(from: usize, to: usize) -> impl Iterator<Item = usize> {
    let head = from..to.min(from + 64);
    let tail = to.saturating_sub(64).max(from + 64).min(to)..to;
    let pages = (from + 64..to.saturating_sub(64)).step_by(4096);
    head.chain(pages).chain(tail)
}

fn length(a: u8, b: u8, c: u8) -> usize {
    let v = u16::from_le_bytes([a, b]) as usize;
    match c % 8 {
        0..=4 => v % 2048 + 1,             // packets
        5 | 6 => v * 8 % (MAX_ALLOC_BYTES + 1), // node chunks up to 2 MiB
        _ => MAX_ALLOC_BYTES + v * 64,     // runs, up to ~6 MiB
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, ops)) = data.split_first() else { return };
    let checked = config & 1 == 1;
    let shards = 1 + (config >> 1 & 1) as usize;
    let pool = Pool::builder()
        .capacity(8 << 20)
        .shards(shards)
        .hugepages(HugePages::Off)
        .checked(checked)
        .retain_bytes(2 << 20)
        .build()
        .unwrap();
    pool.bind_current_thread(0);
    // A second thread frees what it is sent (cross-thread frees).
    let (tx, rx) = mpsc::channel::<(usize, usize, u8)>();
    let worker = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.bind_current_thread(1);
            for (addr, len, fill) in rx {
                let p = NonNull::new(addr as *mut u8).unwrap();
                // SAFETY: a live chunk handed over by the model, freed once.
                unsafe {
                    for i in probes(0, len) {
                        assert_eq!(p.as_ptr().add(i).read(), fill, "chunk lost its contents before a remote free");
                    }
                    if len % 2 == 0 {
                        pool.free_sized(p, len)
                    } else {
                        pool.free(p)
                    }
                }
            }
        })
    };
    let mut m = Model { pool, live: Vec::new(), ranges: BTreeMap::new(), next_fill: 0, remote: Some(tx) };
    for op in ops.chunks_exact(4) {
        let (kind, a, b, c) = (op[0] % 9, op[1], op[2], op[3]);
        match kind {
            0 | 1 => {
                let len = length(a, b, c);
                let align = if c & 0x80 != 0 { 32usize << (a % 8) } else { 32 };
                if let Some(p) = m.pool.alloc_aligned(len, align) {
                    assert_eq!(p.as_ptr() as usize % align, 0);
                    let run = len > MAX_ALLOC_BYTES;
                    m.insert(p, len, run);
                    m.next_fill = m.next_fill.wrapping_add(1).max(1);
                    let fill = m.next_fill;
                    m.fill(p, 0, len, fill);
                    m.live.push(Live { ptr: p, len, fill, run });
                }
            }
            2 | 3 => {
                if let Some(l) = m.take(a) {
                    // SAFETY: a live chunk, freed once.
                    unsafe {
                        if b & 1 == 0 {
                            m.pool.free_sized(l.ptr, l.len)
                        } else {
                            m.pool.free(l.ptr)
                        }
                    }
                }
            }
            4 => {
                if let Some(mut l) = m.take(a) {
                    let new_len = l.len * (b as usize) / 255;
                    // SAFETY: a live chunk; the new length does not grow it.
                    unsafe { m.pool.shrink(l.ptr, new_len) };
                    l.len = new_len;
                    let (ptr, fill) = (l.ptr, l.fill);
                    m.fill(ptr, 0, new_len, fill);
                    m.insert(l.ptr, l.len, l.run);
                    m.live.push(l);
                }
            }
            5 => {
                if let Some(mut l) = m.take(a) {
                    let cap = if l.run { 8 << 20 } else { MAX_ALLOC_BYTES };
                    let new_len = (l.len + length(b, c, 0)).min(cap);
                    // SAFETY: a live chunk.
                    if unsafe { m.pool.try_grow(l.ptr, new_len) } {
                        let (ptr, old, fill) = (l.ptr, l.len, l.fill);
                        m.fill(ptr, old, new_len, fill);
                        l.len = new_len;
                    }
                    m.insert(l.ptr, l.len, l.run);
                    m.live.push(l);
                }
            }
            6 => {
                if let Some(l) = m.take(a) {
                    let len = length(b, c, a);
                    // SAFETY: a live chunk; on Some only the result is live.
                    match unsafe { m.pool.realloc(l.ptr, len) } {
                        Some(q) => {
                            for i in 0..len.min(l.len).min(64) {
                                // SAFETY: `q` is live and holds at least `len` bytes.
                                assert_eq!(unsafe { q.as_ptr().add(i).read() }, l.fill, "realloc lost byte {i}");
                            }
                            let run = if q == l.ptr { l.run } else { len > MAX_ALLOC_BYTES };
                            m.insert(q, len, run);
                            m.fill(q, 0, len, l.fill);
                            m.live.push(Live { ptr: q, len, fill: l.fill, run });
                        }
                        None => {
                            m.insert(l.ptr, l.len, l.run);
                            m.live.push(l);
                        }
                    }
                }
            }
            7 => {
                if let Some(l) = m.take(a) {
                    let tx = m.remote.as_ref().unwrap();
                    tx.send((l.ptr.as_ptr() as usize, l.len, l.fill)).unwrap();
                }
            }
            _ => {
                if a & 1 == 0 {
                    m.pool.validate().unwrap_or_else(|e| panic!("validate: {e}"));
                } else {
                    m.pool.collect();
                }
            }
        }
    }
    // Let the worker finish its frees, then everything must add up.
    drop(m.remote.take());
    worker.join().unwrap();
    m.pool.validate().unwrap_or_else(|e| panic!("validate: {e}"));
    let st = m.pool.stats();
    let in_use: usize = m.live.iter().map(|l| taken(l.len, l.run)).sum();
    assert_eq!(st.in_use_bytes, in_use as u64);
    for l in std::mem::take(&mut m.live) {
        m.check(&l);
        // SAFETY: live, freed once.
        unsafe { m.pool.free(l.ptr) };
    }
    m.pool.validate().unwrap_or_else(|e| panic!("validate: {e}"));
    assert_eq!(m.pool.stats().in_use_bytes, 0);
});
