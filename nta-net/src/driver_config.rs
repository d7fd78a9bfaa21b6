//! Settings shared by the drivers of every backend: buffer sizes, bounds,
//! and timeouts.

use crate::socket::MAX_UDP_PAYLOAD_BYTES;
use crate::uring::FixedRegion;

/// How a driver sizes its buffers, bounds its queues and times out.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// Capacity of each receive buffer before it is trimmed. For UDP it must
    /// hold the largest datagram (`MAX_UDP_PAYLOAD_BYTES`), or longer ones
    /// are dropped (and counted in `Counters::truncated`); for TCP it is the
    /// most one read returns.
    pub rx_buf_bytes: usize,
    /// io_uring only: entries of the provided-buffer ring (a power of two,
    /// at most 32768). Small values make the ring run dry under bursts, which
    /// is survivable, only slower.
    pub ring_entries: u16,
    /// How long one wait for events may block before the stop flag, the
    /// timers and the accept backoff are looked at again.
    pub poll_timeout_ms: u32,
    /// TCP: most bytes one connection may have queued for sending; above it
    /// the driver stops reading from that connection until the queue drains,
    /// so a peer that does not read cannot drain the pool. UDP: most reply
    /// bytes in flight on the socket; replies beyond it are dropped and
    /// counted in `Counters::dropped`.
    pub max_queued_bytes: usize,
    /// How long accepting pauses after the process ran out of file
    /// descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM).
    pub accept_backoff_ms: u32,
    /// After a graceful close (the protocol's `CloseAfterFlush`, or end of
    /// stream), how long what the peer still sends is read and discarded
    /// before the connection is closed anyway.
    pub linger_ms: u32,
    /// On stop: how long connections may take to send what they have
    /// queued before they are closed regardless.
    pub shutdown_grace_ms: u32,
    /// io_uring UDP only: send replies with `IORING_OP_SENDMSG_ZC` (the
    /// kernel sends from the buffer itself and posts a notification CQE when
    /// it no longer needs it; the buffer is held until then).
    pub zero_copy_send: bool,
    /// io_uring UDP only, with `zero_copy_send`: memory registered as fixed
    /// buffer 0; replies inside it go out with `IORING_OP_SEND_ZC` from the
    /// registered pages (no per-send page pinning).
    pub fixed_region: Option<FixedRegion>,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            rx_buf_bytes: MAX_UDP_PAYLOAD_BYTES,
            ring_entries: 256,
            poll_timeout_ms: 20,
            max_queued_bytes: 256 << 10,
            accept_backoff_ms: 50,
            linger_ms: 1000,
            shutdown_grace_ms: 5000,
            zero_copy_send: false,
            fixed_region: None,
        }
    }
}
