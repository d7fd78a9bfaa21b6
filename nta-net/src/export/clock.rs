//! Descriptor timestamps: wall-clock nanoseconds, one clock read per batch.
//!
//! A descriptor carries `CLOCK_REALTIME` in ns. Reading the clock for every
//! published buffer was a quarter of the exporter's cost per packet, so a
//! batching driver's buffers are stamped with the instant their batch began
//! (`hook::batch_time`, an `Instant` the driver read anyway), converted to
//! wall-clock time through an offset: wall = offset + (instant - origin).
//! The exporter's thread re-reads the wall clock every tick (5 ms), so a
//! step of the wall clock (settimeofday, an NTP step) shows in the stamps
//! within a tick. A thread without a batch (tokio's) reads the clock itself.
//!
//! The offset is one relaxed atomic: a stamp taken while it is refreshed
//! uses the old or the new one, which differ by the clocks' drift over a
//! tick (nanoseconds) unless the wall clock stepped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::{hook, sys};

/// Wall-clock time from monotonic instants (see the module notes).
#[derive(Debug)]
pub(crate) struct WallClock {
    origin: Instant,
    /// Wall-clock ns at `origin`, as of the last [`WallClock::resync`].
    offset_ns: AtomicU64,
}

impl WallClock {
    pub(crate) fn new() -> WallClock {
        let clock = WallClock { origin: Instant::now(), offset_ns: AtomicU64::new(0) };
        clock.resync();
        clock
    }

    /// Re-reads the wall clock.
    pub(crate) fn resync(&self) {
        let since_origin = self.origin.elapsed().as_nanos() as u64;
        self.offset_ns.store(sys::realtime_ns().wrapping_sub(since_origin), Relaxed);
    }

    /// Wall-clock ns at `at`.
    #[inline]
    pub(crate) fn wall_ns(&self, at: Instant) -> u64 {
        let since_origin = at.saturating_duration_since(self.origin).as_nanos() as u64;
        self.offset_ns.load(Relaxed).wrapping_add(since_origin)
    }

    /// The stamp of a buffer published now on the calling thread: its
    /// batch's start if its driver batches, else the wall clock.
    #[inline]
    pub(crate) fn stamp(&self) -> u64 {
        match hook::batch_time() {
            Some(at) => self.wall_ns(at),
            None => sys::realtime_ns(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_follow_the_wall_clock() {
        let clock = WallClock::new();
        let before = sys::realtime_ns();
        let at = Instant::now();
        let after = sys::realtime_ns();
        let stamp = clock.wall_ns(at);
        // Within the reads around it, give or take the resync's own skew.
        let slack = Duration::from_millis(1).as_nanos() as u64;
        assert!(stamp + slack >= before && stamp <= after + slack, "{before} <= {stamp} <= {after}");
        let later = clock.wall_ns(at + Duration::from_secs(3));
        assert_eq!(later - stamp, 3_000_000_000);
        clock.resync();
        assert!(clock.wall_ns(at).abs_diff(stamp) < slack);
    }

    #[test]
    fn a_thread_in_a_batch_gets_the_batch_start_and_others_read_the_clock() {
        let clock = WallClock::new();
        // Nobody listens: no batch, and the driver's clock is not read.
        hook::begin_batch(|| panic!("read the clock with nobody listening"));
        assert_eq!(hook::batch_time(), None);
        let before = sys::realtime_ns();
        assert!(clock.stamp() >= before, "without a batch, the clock itself");
        // Someone listens: the batch's start, for every buffer of the batch.
        let subscription = hook::subscribe(std::sync::Arc::new(|_: &crate::Flow, _: &[u8]| {}));
        let start = Instant::now() - Duration::from_millis(50);
        hook::begin_batch(|| start);
        assert_eq!(clock.stamp(), clock.wall_ns(start));
        assert_eq!(clock.stamp(), clock.wall_ns(start));
        // Another thread has no batch of its own.
        let other = std::thread::spawn(hook::batch_time).join().unwrap();
        assert_eq!(other, None);
        drop(subscription);
        // The next batch, with nobody listening, clears it.
        hook::begin_batch(Instant::now);
        assert_eq!(hook::batch_time(), None);
    }
}
