//! Settings shared by the echo servers of every backend.

use crate::socket::MAX_UDP_PAYLOAD_BYTES;
use crate::uring::FixedRegion;

/// How an echo server sizes its buffers and how often it checks for stop.
#[derive(Clone, Copy, Debug)]
pub struct EchoConfig {
    /// Capacity of each receive buffer before it is trimmed. For UDP it must
    /// hold the largest datagram (`MAX_UDP_PAYLOAD_BYTES`), or datagrams are
    /// truncated; for TCP it is the most one read returns.
    pub rx_buf_bytes: usize,
    /// io_uring only: entries of the provided-buffer ring (a power of two,
    /// at most 32768). Small values make the ring run dry under bursts, which
    /// is survivable, only slower.
    pub ring_entries: u16,
    /// How long one wait for events may block before the stop flag is read
    /// again.
    pub poll_timeout_ms: u32,
    /// io_uring UDP only: send echoes with `IORING_OP_SENDMSG_ZC` (the kernel
    /// sends from the buffer itself and posts a notification CQE when it no
    /// longer needs it; the buffer is held until then).
    pub zero_copy_send: bool,
    /// io_uring UDP only, with `zero_copy_send`: memory registered as fixed
    /// buffer 0; echoes of buffers inside it go out with `IORING_OP_SEND_ZC`
    /// from the registered pages (no per-send page pinning).
    pub fixed_region: Option<FixedRegion>,
}

impl Default for EchoConfig {
    fn default() -> EchoConfig {
        EchoConfig {
            rx_buf_bytes: MAX_UDP_PAYLOAD_BYTES,
            ring_entries: 256,
            poll_timeout_ms: 20,
            zero_copy_send: false,
            fixed_region: None,
        }
    }
}
