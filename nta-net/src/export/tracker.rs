//! Which published buffers are outstanding, and which chunk frees are
//! postponed because a reader holds them: NTA's postponed free.
//!
//! # Model
//!
//! Every descriptor between a reader's consumer index and its ring's head
//! is *outstanding*: the tracker keeps its byte range, keyed by address. A
//! free of a chunk (`[chunk, chunk + usable)`) then looks at the
//! outstanding ranges inside it:
//! - any *held* one postpones the free: the chunk stays allocated and is
//!   recorded as postponed;
//! - *snapshot* ones are invalidated (their ring slot's `seq` is zeroed
//!   before the memory can be reused) and forgotten.
//!
//! Retiring a descriptor (its reader consumed it, or the reader is gone)
//! forgets its range; if it lay in a postponed chunk that no held range
//! is left in, the chunk's free is due: the remaining snapshot ranges in it
//! are invalidated and the chunk is handed back to be freed.
//!
//! # Invariants
//!
//! - A postponed chunk contains at least one held outstanding range; a
//!   chunk whose last held range retires leaves `postponed` in that step.
//! - Every outstanding range lies inside one live chunk (the buffer was
//!   borrowed when it was published, and its chunk's free either postponed
//!   or removed it).
//!
//! The tracker is a plain data structure; the exporter runs it under its
//! lock and completes due frees after dropping the lock.

use std::collections::BTreeMap;

/// Who published an outstanding range: reader, ring, ring index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub reader: u32,
    pub ring: u32,
    pub index: u64,
}

#[derive(Clone, Copy, Debug)]
struct Out {
    end: usize,
    held: bool,
    slot: Slot,
}

/// A tracker key: address, then a unique id.
pub(crate) type Key = (usize, u64);

/// See the module notes.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next_id: u64,
    outstanding: BTreeMap<Key, Out>,
    /// chunk address -> (usable bytes, the free's length).
    postponed: BTreeMap<usize, (usize, Option<usize>)>,
}

impl Tracker {
    /// Records an outstanding range `[addr, addr + len)`.
    pub(crate) fn add(&mut self, addr: usize, len: usize, held: bool, slot: Slot) -> Key {
        self.next_id += 1;
        let key = (addr, self.next_id);
        self.outstanding.insert(key, Out { end: addr + len, held, slot });
        key
    }

    /// A free of `[chunk, chunk + usable)`: true to postpone it.
    /// `invalidate` is called for every snapshot range in it.
    pub(crate) fn on_free(
        &mut self,
        chunk: usize,
        usable: usize,
        len: Option<usize>,
        mut invalidate: impl FnMut(Slot),
    ) -> bool {
        let end = chunk + usable;
        let mut held = false;
        let mut gone = Vec::new();
        for (&key, out) in self.outstanding.range((chunk, 0)..(end, 0)) {
            if out.held {
                held = true;
            } else {
                gone.push(key);
            }
        }
        if held {
            // The memory stays as it is: snapshots in it stay valid until
            // the postponed free completes (`retire`).
            self.postponed.insert(chunk, (usable, len));
            return true;
        }
        for key in gone {
            if let Some(out) = self.outstanding.remove(&key) {
                invalidate(out.slot);
            }
        }
        false
    }

    /// Forgets an outstanding range (no-op if a free already invalidated
    /// it). Returns whether it was held; a chunk whose free becomes due is
    /// pushed on `due` as (chunk, the free's length), after its remaining
    /// snapshot ranges were invalidated.
    pub(crate) fn retire(
        &mut self,
        key: Key,
        due: &mut Vec<(usize, Option<usize>)>,
        mut invalidate: impl FnMut(Slot),
    ) -> bool {
        let Some(out) = self.outstanding.remove(&key) else { return false };
        if !out.held {
            return false;
        }
        let addr = key.0;
        let Some((&chunk, &(usable, len))) = self.postponed.range(..=addr).next_back() else { return true };
        if addr >= chunk + usable {
            return true;
        }
        let range = (chunk, 0)..(chunk + usable, 0);
        if self.outstanding.range(range.clone()).any(|(_, o)| o.held) {
            return true;
        }
        let rest: Vec<Key> = self.outstanding.range(range).map(|(k, _)| *k).collect();
        for k in rest {
            if let Some(o) = self.outstanding.remove(&k) {
                invalidate(o.slot);
            }
        }
        self.postponed.remove(&chunk);
        due.push((chunk, len));
        true
    }

    /// Outstanding ranges (for tests).
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Chunks whose free is postponed.
    pub(crate) fn postponed(&self) -> usize {
        self.postponed.len()
    }

    /// Checks the invariants (module notes); the error names the first
    /// violation.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (&chunk, &(usable, _)) in &self.postponed {
            if !self.outstanding.range((chunk, 0)..(chunk + usable, 0)).any(|(_, o)| o.held) {
                return Err(format!("postponed chunk {chunk:#x} holds no held range"));
            }
        }
        for (&(addr, _), o) in &self.outstanding {
            if o.end < addr {
                return Err(format!("range at {addr:#x} ends before it starts"));
            }
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
    fn a_held_range_postpones_until_retired_and_snapshots_are_invalidated() {
        let mut t = Tracker::default();
        let a = t.add(1000, 100, true, slot(0));
        let b = t.add(1100, 50, false, slot(1));
        let c = t.add(5000, 10, false, slot(2));
        let mut inval = Vec::new();
        // The chunk [1000, 1200) is freed: held by `a`, so postponed; `b`
        // stays outstanding until the free completes.
        assert!(t.on_free(1000, 200, Some(150), |s| inval.push(s.index)));
        assert!(inval.is_empty());
        t.validate().unwrap();
        // A free of an unrelated chunk with only a snapshot range in it.
        assert!(!t.on_free(5000, 32, None, |s| inval.push(s.index)));
        assert_eq!(inval, [2]);
        let mut due = Vec::new();
        assert!(!t.retire(c, &mut due, |_| panic!("already invalidated")));
        assert!(t.retire(a, &mut due, |s| inval.push(s.index)));
        assert_eq!(due, [(1000, Some(150))]);
        assert_eq!(inval, [2, 1], "the snapshot in the freed chunk is invalidated when the free completes");
        assert!(!t.retire(b, &mut due, |_| {}));
        assert_eq!((t.outstanding(), t.postponed()), (0, 0));
        t.validate().unwrap();
    }

    #[test]
    fn two_holds_in_one_chunk_both_must_go() {
        let mut t = Tracker::default();
        let a = t.add(64, 10, true, slot(0));
        let b = t.add(64, 10, true, slot(1));
        assert!(t.on_free(64, 32, None, |_| {}));
        let mut due = Vec::new();
        t.retire(b, &mut due, |_| {});
        assert!(due.is_empty());
        t.validate().unwrap();
        t.retire(a, &mut due, |_| {});
        assert_eq!(due, [(64, None)]);
        // A held range that is retired before any free: nothing is due.
        let c = t.add(128, 8, true, slot(2));
        t.retire(c, &mut due, |_| {});
        assert_eq!(due.len(), 1);
        assert!(!t.on_free(128, 32, None, |_| {}));
    }
}
