//! How long the capture loop waits between drains.
//!
//! # Design notes
//!
//! Every wait ends in a wake-up, and on a busy server a wake-up costs the
//! CPU the reader lands on more than the drain itself: a context switch
//! into the reader and one back out of it, and the caches of whatever it
//! preempted. A fixed 1 ms wait meant about 1000 wake-ups a second
//! whatever the rate. With about 270k descriptors a second, a profile of
//! the reader put 15% of its time in the scheduler's switch.
//!
//! So the wait is paced to the rate: long enough that a drain finds about
//! [`TARGET_FILL`] of a ring, where the ring is safe from overflowing even
//! if the rate jumps several-fold, between [`MIN_WAIT`] and [`MAX_WAIT`].
//! (A quarter of a ring against an eighth: about 15% less CPU per
//! descriptor over twelve paired rounds of P7's load; one of those runs
//! dropped 938 descriptors of 0.8 M, on a host at its noisiest.)
//! The rate estimate follows a rise at once and a fall slowly (a quarter
//! per drain), so a burst shortens the next wait rather than the one after
//! it. The capture loop still drains at once when a ring is past its busy
//! backlog, and a socket message ends any wait.

use std::time::{Duration, Instant};

/// The shortest wait between drains (the old fixed wait).
pub const MIN_WAIT: Duration = Duration::from_millis(1);
/// The longest wait between drains: how long a stop request or a
/// heartbeat can wait on an idle server.
pub const MAX_WAIT: Duration = Duration::from_millis(10);
/// The fraction of a ring a drain should find: a quarter, half of the
/// capture loop's busy backlog and 4x from a full ring.
pub const TARGET_FILL: f64 = 0.25;

/// Paces the drains of a capture (see the module notes).
#[derive(Debug)]
pub struct Pacer {
    /// Descriptors per second, as last estimated.
    rate: f64,
    /// When the previous drain was.
    last: Instant,
    /// The reader's descriptor count at the previous drain.
    seen: u64,
}

impl Pacer {
    /// A pacer whose first interval starts at `now`, when the reader had
    /// read `descriptors`.
    pub fn new(now: Instant, descriptors: u64) -> Pacer {
        Pacer { rate: 0.0, last: now, seen: descriptors }
    }

    /// A drain at `now` left the reader at `descriptors` read in all, from
    /// rings of `slots` slots: returns how long to wait before the next one.
    pub fn next_wait(&mut self, descriptors: u64, now: Instant, slots: u64) -> Duration {
        let found = descriptors.saturating_sub(self.seen);
        self.seen = descriptors;
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if secs > 0.0 {
            let seen = found as f64 / secs;
            self.rate = seen.max(self.rate * 0.75);
        }
        let target = slots as f64 * TARGET_FILL;
        if self.rate <= 0.0 {
            return MAX_WAIT;
        }
        Duration::from_secs_f64((target / self.rate).min(MAX_WAIT.as_secs_f64())).max(MIN_WAIT)
    }

    /// The current rate estimate, descriptors per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_lets_a_drain_find_a_quarter_of_a_ring() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 0);
        // 270k descriptors a second into rings of 4096: 1024 per drain is
        // about 3.8 ms.
        let w = p.next_wait(2700, t0 + Duration::from_millis(10), 4096);
        assert!((w.as_secs_f64() - 1024.0 / 270_000.0).abs() < 1e-4, "{w:?}");
        // Nothing published: the longest wait.
        let mut idle = Pacer::new(t0, 500);
        assert_eq!(idle.next_wait(500, t0 + Duration::from_millis(10), 4096), MAX_WAIT);
        // A flood: never below the shortest wait.
        assert_eq!(p.next_wait(1_002_700, t0 + Duration::from_millis(20), 4096), MIN_WAIT);
    }

    #[test]
    fn a_rise_counts_at_once_and_a_fall_slowly() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 0);
        p.next_wait(1000, t0 + Duration::from_millis(10), 4096);
        assert_eq!(p.rate(), 100_000.0);
        p.next_wait(5000, t0 + Duration::from_millis(20), 4096);
        assert_eq!(p.rate(), 400_000.0, "a rise is taken as seen");
        p.next_wait(5000, t0 + Duration::from_millis(30), 4096);
        assert_eq!(p.rate(), 300_000.0, "a fall loses a quarter per drain");
    }
}
