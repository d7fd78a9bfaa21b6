//! Event counters shared between a running backend and whoever watches it
//! (tests, the examples' final summary, the pps comparison).
//!
//! Counters are `Relaxed`: each is a monotone tally read for reporting, and
//! no other memory is published through them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Tallies of one server. All counts only grow.
#[derive(Debug, Default)]
pub struct Counters {
    /// Buffers received (datagrams, or stream reads).
    pub rx_buffers: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Buffers fully sent.
    pub tx_buffers: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
    /// Buffer allocations that failed because the pool was exhausted.
    pub alloc_failures: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed (for any reason). `accepted - closed` are open.
    pub closed: AtomicU64,
    /// Connections closed because their protocol deadline passed (an
    /// incomplete request, an idle keep-alive) or their linger ran out.
    pub timed_out: AtomicU64,
    /// Times accepting paused because the process was out of file
    /// descriptors (EMFILE, ENFILE) or kernel memory.
    pub accept_backoffs: AtomicU64,
    /// Times a connection stopped being read because its send queue was
    /// over `max_queued_bytes`.
    pub rx_paused: AtomicU64,
    /// Datagrams dropped because they were longer than the receive buffer
    /// (`MSG_TRUNC`).
    pub truncated: AtomicU64,
    /// Buffers deliberately leaked at exit because the kernel might still
    /// have used them (an io_uring operation that did not complete in time).
    pub leaked_on_exit: AtomicU64,
    /// Connections closed because no receive buffer could be had.
    pub closed_no_buffer: AtomicU64,
    /// Datagrams dropped (send would block, the reply bound was reached, or
    /// no buffer for the reply).
    pub dropped: AtomicU64,
    /// io_uring: multishot receives that ended with ENOBUFS (ring ran dry).
    pub ring_empty: AtomicU64,
    /// io_uring: multishot operations re-armed after they ended.
    pub rearmed: AtomicU64,
    /// io_uring: sends from the registered fixed region (`SEND_ZC` with a
    /// fixed buffer).
    pub tx_fixed: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    #[inline]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> u64 {
        Self::get(&self.accepted).saturating_sub(Self::get(&self.closed))
    }
}
