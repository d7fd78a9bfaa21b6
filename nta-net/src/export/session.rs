//! One attached reader: its socket, its hold region and its rings, and
//! the server's view of what it has outstanding.
//!
//! # Invariants
//!
//! - For every ring: `consumed <= head`, `head - consumed <= slots`, and
//!   `pending` lists, in index order, the tracker keys and lengths of the
//!   descriptors `consumed..head` (some may already be invalidated in the
//!   tracker).
//! - `held_bytes` is the sum of the lengths of this reader's held
//!   outstanding descriptors, and never exceeds `quota` by more than zero.
//! - Everything read from the hold region is validated before use: a
//!   consumer index outside `consumed..=head` dooms the session.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Instant;

use super::proto::{self, Descriptor};
use super::region::Region;
use super::tracker::{Key, Slot, Tracker};

/// One descriptor ring (see `proto`).
#[derive(Debug)]
pub(crate) struct Ring {
    pub region: Region,
    pub slots: u64,
    /// Next index to publish.
    pub head: u64,
    /// The reader's consumer index as last validated.
    pub consumed: u64,
    /// (key, len) of `consumed..head`.
    pub pending: VecDeque<(Key, u32)>,
    /// `head` when the exporter thread last looked (see `Session::advance`).
    pub head_seen: u64,
}

impl Ring {
    fn new(name: &str, slots: usize) -> io::Result<Ring> {
        let region = Region::new(name, proto::ring_bytes(slots))?;
        region.word(0).store(proto::RING_MAGIC, Relaxed);
        region.word(proto::RING_SLOTS).store(slots as u64 | ((proto::SLOT_BYTES as u64) << 32), Relaxed);
        region.seal(true)?;
        Ok(Ring { region, slots: slots as u64, head: 0, consumed: 0, pending: VecDeque::new(), head_seen: 0 })
    }

    fn bump(&self, offset: usize) {
        self.region.word(offset).fetch_add(1, Relaxed);
    }

    /// Zeroes the `seq` of descriptor `index` if its slot still holds it.
    pub fn invalidate(&self, index: u64) {
        if index < self.head && self.head - index <= self.slots {
            let at = proto::RING_HEADER + (index % self.slots) as usize * proto::SLOT_BYTES + proto::SLOT_SEQ;
            self.region.word(at).store(0, Release);
        }
    }
}

/// Why a session ends.
pub(crate) type Doom = &'static str;

/// The reader sent Detach.
pub(crate) const DETACHED: Doom = "it detached";
/// The reader closed its socket.
pub(crate) const CLOSED: Doom = "it closed its socket";
/// The exporter is shutting down.
pub(crate) const STOPPING: Doom = "the exporter stops";

/// Whether a session ended in order (not an eviction to count and log).
pub(crate) fn is_orderly(why: Doom) -> bool {
    why == DETACHED || why == CLOSED || why == STOPPING
}

/// See the module notes.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: u32,
    pub sock: OwnedFd,
    pub mode: u32,
    pub hold: Region,
    pub rings: Vec<Ring>,
    pub held_bytes: u64,
    pub quota: u64,
    beat: u64,
    beat_at: Instant,
    pub doomed: Option<Doom>,
}

/// What publishing to one reader did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Held until consumed.
    Held,
    /// A snapshot (no hold: snapshot mode, or past the quota).
    Snapshot,
    /// The ring was full.
    Dropped,
    /// The session is doomed; nothing was written.
    Skipped,
}

impl Session {
    pub(crate) fn new(
        id: u32,
        sock: OwnedFd,
        mode: u32,
        rings: usize,
        slots: usize,
        quota: u64,
    ) -> io::Result<Session> {
        let hold = Region::new(&format!("nta-hold-{id}"), proto::HOLD_BYTES)?;
        hold.word(0).store(proto::HOLD_MAGIC, Relaxed);
        hold.seal(false)?;
        let rings = (0..rings).map(|r| Ring::new(&format!("nta-ring-{id}-{r}"), slots)).collect::<io::Result<_>>()?;
        Ok(Session {
            id,
            sock,
            mode,
            hold,
            rings,
            held_bytes: 0,
            quota,
            beat: 0,
            beat_at: Instant::now(),
            doomed: None,
        })
    }

    /// The descriptors to send with Hello: hold region, then read-only rings.
    pub(crate) fn hello_fds(&self) -> io::Result<Vec<OwnedFd>> {
        let mut fds = vec![self.hold.fd().try_clone_to_owned()?];
        for ring in &self.rings {
            fds.push(ring.region.read_only_fd()?);
        }
        Ok(fds)
    }

    /// Reads and validates ring `r`'s consumer index; retires what it
    /// passed. A garbage index dooms the session.
    ///
    /// Publishing advances its ring first, on the publishing thread, so
    /// that frees that become due complete there (a local free, not a
    /// remote one); the exporter thread's tick advances only rings that
    /// nobody published to since its last tick ([`Session::advance_idle`]).
    pub(crate) fn advance(
        &mut self,
        r: usize,
        tracker: &mut Tracker,
        due: &mut Vec<(usize, Option<usize>)>,
        invalid: &mut Vec<Slot>,
    ) {
        if self.doomed.is_some() {
            return;
        }
        let c = self.hold.word(proto::HOLD_CONSUMER + 8 * r).load(Acquire);
        let ring = &mut self.rings[r];
        if c < ring.consumed || c > ring.head {
            self.doomed = Some("its consumer index went backwards or past the head");
            return;
        }
        while ring.consumed < c {
            let Some((key, len)) = ring.pending.pop_front() else { break };
            debug_assert_eq!(key.slot.index, ring.consumed);
            if tracker.retire(key, due, |s| invalid.push(s)) {
                self.held_bytes -= u64::from(len);
            }
            ring.consumed += 1;
        }
    }

    /// [`Session::advance`] for ring `r` if nothing was published on it
    /// since the last call.
    pub(crate) fn advance_idle(
        &mut self,
        r: usize,
        tracker: &mut Tracker,
        due: &mut Vec<(usize, Option<usize>)>,
        invalid: &mut Vec<Slot>,
    ) {
        let head = self.rings[r].head;
        if std::mem::replace(&mut self.rings[r].head_seen, head) == head {
            self.advance(r, tracker, due, invalid);
        }
    }

    /// Retires everything outstanding (the session ends), zeroing the seq
    /// of every descriptor it retires.
    pub(crate) fn retire_all(
        &mut self,
        tracker: &mut Tracker,
        due: &mut Vec<(usize, Option<usize>)>,
        invalid: &mut Vec<Slot>,
    ) {
        for ring in &mut self.rings {
            while let Some((key, len)) = ring.pending.pop_front() {
                // Held or not, the descriptor no longer protects its bytes:
                // a reader still reading it (one too slow to beat) sees the
                // zeroed seq and counts a torn read.
                ring.invalidate(key.slot.index);
                if tracker.retire(key, due, |s| invalid.push(s)) {
                    self.held_bytes -= u64::from(len);
                }
            }
            ring.consumed = ring.head;
        }
    }

    /// Publishes `d` (its `seq` and hold flag are set here) on ring `r`;
    /// its bytes lie in the chunk that starts at `chunk` and end at `end`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn publish(
        &mut self,
        r: usize,
        mut d: Descriptor,
        chunk: usize,
        end: usize,
        tracker: &mut Tracker,
        due: &mut Vec<(usize, Option<usize>)>,
        invalid: &mut Vec<Slot>,
    ) -> Published {
        self.advance(r, tracker, due, invalid);
        if self.doomed.is_some() {
            return Published::Skipped;
        }
        let id = self.id;
        let want_hold = self.mode == proto::MODE_HOLD;
        let ring = &mut self.rings[r];
        if ring.head - ring.consumed >= ring.slots {
            ring.bump(proto::RING_DROPS);
            return Published::Dropped;
        }
        let held = want_hold && self.held_bytes + u64::from(d.len) <= self.quota;
        if want_hold && !held {
            ring.bump(proto::RING_UNHELD);
        }
        let index = ring.head;
        d.seq = index + 1;
        if held {
            d.flags |= proto::FLAG_HELD;
        }
        let at = proto::RING_HEADER + (index % ring.slots) as usize * proto::SLOT_BYTES;
        let bytes = d.encode();
        // The body first, then `seq` (release), then the head (release): a
        // reader that sees the head sees the slot.
        ring.region.write(at + 8, &bytes[8..]);
        ring.region.word(at + proto::SLOT_SEQ).store(d.seq, Release);
        let key = tracker.add(chunk, end, held, Slot { reader: id, ring: r as u32, index });
        ring.pending.push_back((key, d.len));
        ring.head = index + 1;
        ring.region.word(proto::RING_HEAD).store(ring.head, Release);
        if held {
            self.held_bytes += u64::from(d.len);
            Published::Held
        } else {
            Published::Snapshot
        }
    }

    /// Checks the heartbeat: dooms the session if it did not change for
    /// `lease`.
    pub(crate) fn check_lease(&mut self, now: Instant, lease: std::time::Duration) {
        let beat = self.hold.word(proto::HOLD_HEARTBEAT).load(Relaxed);
        if beat != self.beat {
            self.beat = beat;
            self.beat_at = now;
        } else if now.duration_since(self.beat_at) > lease && self.doomed.is_none() {
            self.doomed = Some("its heartbeat stopped for the lease");
        }
    }

    /// Sends one message with descriptors, without blocking; a failure
    /// dooms the session (a reader too slow to take announcements).
    pub(crate) fn send(&mut self, msg: &[u8], fds: &[&OwnedFd]) {
        if self.doomed.is_some() {
            return;
        }
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if crate::sys::send_with_fds(self.sock.as_fd(), msg, &fds).is_err() {
            self.doomed = Some("its socket does not take messages");
        }
    }

    /// Checks the invariants (module notes).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut held = 0;
        for (r, ring) in self.rings.iter().enumerate() {
            if ring.consumed > ring.head || ring.head - ring.consumed > ring.slots {
                return Err(format!("reader {} ring {r}: consumed {} head {}", self.id, ring.consumed, ring.head));
            }
            if ring.pending.len() as u64 != ring.head - ring.consumed {
                return Err(format!(
                    "reader {} ring {r}: {} pending for {}",
                    self.id,
                    ring.pending.len(),
                    ring.head - ring.consumed
                ));
            }
            held += ring.pending.iter().filter(|p| p.0.held).map(|p| u64::from(p.1)).sum::<u64>();
        }
        if held != self.held_bytes || held > self.quota {
            return Err(format!("reader {}: held {} counted {} quota {}", self.id, held, self.held_bytes, self.quota));
        }
        Ok(())
    }
}
