//! Which published buffers are outstanding, and which chunk frees are
//! postponed because a reader holds them: NTA's postponed free.
//!
//! # Model
//!
//! Every descriptor between a reader's consumer index and its ring's head
//! is *outstanding*. The tracker counts them per *chunk*, keyed by the
//! chunk's start address (`Pool::chunk_start` of the published bytes, the
//! same address the pool's free hook is given), so that every operation is
//! one hash lookup:
//! - **publish** ([`Tracker::add`]) counts a held descriptor in its chunk's
//!   entry, or records a snapshot descriptor's ring slot there;
//! - **free** ([`Tracker::on_free`]) of a chunk with a held descriptor
//!   outstanding is *postponed*: the chunk stays allocated and its entry
//!   remembers the free. Without one, the entry's snapshot descriptors are
//!   invalidated (their ring slot's `seq` is zeroed before the memory can
//!   be reused) and the entry goes;
//! - **retire** ([`Tracker::retire`]: the reader consumed the descriptor,
//!   or the reader is gone) uncounts it; a postponed chunk whose last held
//!   descriptor retires has its remaining snapshots invalidated and its
//!   free handed back as due.
//!
//! Each entry carries an *epoch*, unique over the tracker's life, and each
//! descriptor's [`Key`] the epoch it was counted in: a snapshot descriptor
//! whose chunk was freed (entry gone) and reused (a new entry at the same
//! address) retires as a no-op instead of uncounting the new chunk's.
//!
//! # Invariants (checked by [`Tracker::validate`])
//!
//! - An entry has at least one held descriptor or one snapshot descriptor.
//! - A postponed entry has at least one held descriptor; `postponed`
//!   counts the postponed entries.
//! - Every entry's chunk is live (it was borrowed when published, and its
//!   free either was postponed or removed the entry).
//!
//! The tracker is a plain data structure; the exporter runs it under its
//! lock and completes due frees after dropping the lock.

use rustc_hash::FxHashMap;
use std::collections::hash_map;

/// Who published an outstanding descriptor: reader, ring, ring index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub reader: u32,
    pub ring: u32,
    pub index: u64,
}

/// One outstanding descriptor, as [`Tracker::add`] counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// The chunk's start address.
    pub chunk: usize,
    /// The entry's epoch when the descriptor was counted.
    epoch: u64,
    /// Whether it holds the chunk.
    pub held: bool,
    /// Its ring slot.
    pub slot: Slot,
}

#[derive(Debug)]
struct Entry {
    epoch: u64,
    /// One past the last byte any of its descriptors covered.
    end: usize,
    held: u32,
    snapshots: Vec<Slot>,
    /// The free's length, once the free is postponed.
    postponed: Option<Option<usize>>,
}

/// See the module notes.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next_epoch: u64,
    /// Keyed by chunk address: Fx hashing (one multiply) suits addresses.
    chunks: FxHashMap<usize, Entry>,
    postponed: usize,
}

impl Tracker {
    /// Counts a descriptor of bytes up to `end` in the chunk that starts
    /// at `chunk`.
    pub(crate) fn add(&mut self, chunk: usize, end: usize, held: bool, slot: Slot) -> Key {
        let next = &mut self.next_epoch;
        let e = self.chunks.entry(chunk).or_insert_with(|| {
            *next += 1;
            Entry { epoch: *next, end, held: 0, snapshots: Vec::new(), postponed: None }
        });
        e.end = e.end.max(end);
        if held {
            e.held += 1;
        } else {
            e.snapshots.push(slot);
        }
        Key { chunk, epoch: e.epoch, held, slot }
    }

    /// A free of the chunk at `chunk`: true to postpone it. `invalidate` is
    /// called for every snapshot descriptor in it when it is not.
    pub(crate) fn on_free(&mut self, chunk: usize, len: Option<usize>, mut invalidate: impl FnMut(Slot)) -> bool {
        let Some(e) = self.chunks.get_mut(&chunk) else { return false };
        if e.held > 0 {
            // The memory stays as it is: snapshots in it stay valid until
            // the postponed free completes (`retire`).
            if e.postponed.is_none() {
                self.postponed += 1;
            }
            e.postponed = Some(len);
            return true;
        }
        if let Some(e) = self.chunks.remove(&chunk) {
            e.snapshots.into_iter().for_each(&mut invalidate);
        }
        false
    }

    /// Uncounts a descriptor (a no-op if a free already invalidated it).
    /// Returns whether it held its chunk; a chunk whose free becomes due is
    /// pushed on `due` as (chunk, the free's length), after its remaining
    /// snapshot descriptors were invalidated.
    pub(crate) fn retire(
        &mut self,
        key: Key,
        due: &mut Vec<(usize, Option<usize>)>,
        mut invalidate: impl FnMut(Slot),
    ) -> bool {
        // One probe for the lookup and the removal (the common case when
        // a reader keeps up: its one descriptor of the chunk retires).
        let hash_map::Entry::Occupied(mut found) = self.chunks.entry(key.chunk) else { return false };
        let e = found.get_mut();
        if e.epoch != key.epoch {
            return false;
        }
        if key.held {
            e.held -= 1;
        } else if let Some(i) = e.snapshots.iter().position(|s| *s == key.slot) {
            e.snapshots.swap_remove(i);
        } else {
            return false;
        }
        if e.held == 0 && (e.postponed.is_some() || e.snapshots.is_empty()) {
            let e = found.remove();
            if let Some(len) = e.postponed {
                e.snapshots.into_iter().for_each(&mut invalidate);
                self.postponed -= 1;
                due.push((key.chunk, len));
            }
        }
        key.held
    }

    /// Chunks with outstanding descriptors (for tests).
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Chunks whose free is postponed.
    pub(crate) fn postponed(&self) -> usize {
        self.postponed
    }

    /// Calls `f(chunk, end)` for every chunk a reader holds now: its
    /// start, and one past the last byte its descriptors covered.
    pub(crate) fn for_each_held(&self, mut f: impl FnMut(usize, usize)) {
        for (&chunk, e) in &self.chunks {
            if e.held > 0 {
                f(chunk, e.end);
            }
        }
    }

    /// Checks the invariants (module notes); the error names the first
    /// violation.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut postponed = 0;
        for (&chunk, e) in &self.chunks {
            if e.held == 0 && e.snapshots.is_empty() {
                return Err(format!("chunk {chunk:#x} is tracked with no descriptor outstanding"));
            }
            if e.postponed.is_some() {
                if e.held == 0 {
                    return Err(format!("postponed chunk {chunk:#x} has no held descriptor"));
                }
                postponed += 1;
            }
        }
        if postponed != self.postponed {
            return Err(format!("{postponed} postponed chunks counted as {}", self.postponed));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u64) -> Slot {
        Slot { reader: 0, ring: 0, index }
    }

    #[test]
    fn a_held_descriptor_postpones_until_retired_and_snapshots_are_invalidated() {
        let mut t = Tracker::default();
        let a = t.add(1000, 1010, true, slot(0));
        let b = t.add(1000, 1010, false, slot(1));
        let c = t.add(5000, 5010, false, slot(2));
        let mut inval = Vec::new();
        // The chunk at 1000 is freed: held by `a`, so postponed; `b` stays
        // valid until the free completes.
        assert!(t.on_free(1000, Some(150), |s| inval.push(s.index)));
        assert!(inval.is_empty());
        t.validate().unwrap();
        // A free of an unrelated chunk with only a snapshot in it.
        assert!(!t.on_free(5000, None, |s| inval.push(s.index)));
        assert_eq!(inval, [2]);
        let mut due = Vec::new();
        assert!(!t.retire(c, &mut due, |_| panic!("already invalidated")));
        assert!(t.retire(a, &mut due, |s| inval.push(s.index)));
        assert_eq!(due, [(1000, Some(150))]);
        assert_eq!(inval, [2, 1], "the snapshot in the freed chunk is invalidated when the free completes");
        assert!(!t.retire(b, &mut due, |_| {}));
        assert_eq!((t.chunks(), t.postponed()), (0, 0));
        t.validate().unwrap();
    }

    #[test]
    fn two_holds_in_one_chunk_both_must_go() {
        let mut t = Tracker::default();
        let a = t.add(64, 74, true, slot(0));
        let b = t.add(64, 74, true, slot(1));
        assert!(t.on_free(64, None, |_| {}));
        let mut due = Vec::new();
        t.retire(b, &mut due, |_| {});
        assert!(due.is_empty());
        t.validate().unwrap();
        t.retire(a, &mut due, |_| {});
        assert_eq!(due, [(64, None)]);
        // A held descriptor retired before any free: nothing is due.
        let c = t.add(128, 138, true, slot(2));
        t.retire(c, &mut due, |_| {});
        assert_eq!(due.len(), 1);
        assert!(!t.on_free(128, None, |_| {}));
        t.validate().unwrap();
    }

    #[test]
    fn a_stale_snapshot_retires_as_a_no_op_after_its_chunk_is_reused() {
        let mut t = Tracker::default();
        let old = t.add(256, 266, false, slot(0));
        let mut inval = Vec::new();
        assert!(!t.on_free(256, None, |s| inval.push(s.index)));
        assert_eq!(inval, [0]);
        // The chunk is reused and published again, held this time.
        let new = t.add(256, 266, true, slot(1));
        let mut due = Vec::new();
        assert!(!t.retire(old, &mut due, |_| panic!("stale")));
        assert!(t.on_free(256, Some(8), |_| {}), "the new hold still postpones");
        t.retire(new, &mut due, |_| {});
        assert_eq!(due, [(256, Some(8))]);
        assert_eq!((t.chunks(), t.postponed()), (0, 0));
    }
}
