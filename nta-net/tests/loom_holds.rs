//! Loom model of a hold racing the free (`src/export/tracker.rs`, compiled
//! here as is, behind a loom mutex as the exporter keeps it behind its
//! lock).
//!
//! Threads:
//! - the application frees the chunk: the free hook asks the tracker, and
//!   if the free is not postponed, the chunk is freed at once;
//! - the reader's side retires the descriptor (its consumer index passed
//!   it, or its lease ran out): a free that became due is completed
//!   outside the lock, as the exporter does.
//!
//! Checked in every interleaving: the chunk is freed exactly once, never
//! while a held descriptor is outstanding, and the tracker ends empty.
//! What is not modelled: the ring and the hold region (their words are
//! validated, not trusted) and the pool's own free path.

#[allow(dead_code)]
#[path = "../src/export/tracker.rs"]
mod tracker;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use tracker::{Slot, Tracker};

const CHUNK: usize = 4096;

fn model(held: bool, two_descriptors: bool) {
    loom::model(move || {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let frees = Arc::new(AtomicUsize::new(0));
        let retired = Arc::new(AtomicBool::new(false));
        let slot = |index| Slot { reader: 0, ring: 0, index };
        let mut keys = Vec::new();
        {
            let mut t = tracker.lock().unwrap();
            keys.push(t.add(CHUNK, CHUNK + 100, held, slot(0)));
            if two_descriptors {
                keys.push(t.add(CHUNK, CHUNK + 100, held, slot(1)));
            }
        }
        let app = {
            let (tracker, frees, retired) = (tracker.clone(), frees.clone(), retired.clone());
            loom::thread::spawn(move || {
                let postponed = tracker.lock().unwrap().on_free(CHUNK, Some(1500), |_| {});
                if !postponed {
                    // Freed now: only allowed once no hold is outstanding.
                    assert!(!held || retired.load(SeqCst), "freed while held");
                    frees.fetch_add(1, SeqCst);
                }
            })
        };
        let reader = {
            let (tracker, frees, retired) = (tracker.clone(), frees.clone(), retired.clone());
            loom::thread::spawn(move || {
                let mut due = Vec::new();
                {
                    let mut t = tracker.lock().unwrap();
                    for k in keys {
                        t.retire(k, &mut due, |_| {});
                    }
                    retired.store(true, SeqCst);
                }
                for (chunk, len) in due {
                    assert_eq!((chunk, len), (CHUNK, Some(1500)));
                    frees.fetch_add(1, SeqCst);
                }
            })
        };
        app.join().unwrap();
        reader.join().unwrap();
        assert_eq!(frees.load(SeqCst), 1, "the chunk is freed exactly once");
        let t = tracker.lock().unwrap();
        assert_eq!(t.postponed(), 0);
        t.validate().unwrap();
    });
}

#[test]
fn a_held_descriptor_retired_while_its_chunk_is_freed() {
    model(true, false);
}

#[test]
fn two_held_descriptors_in_one_chunk() {
    model(true, true);
}

#[test]
fn a_snapshot_descriptor_never_postpones() {
    model(false, true);
}
