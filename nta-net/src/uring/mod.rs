//! The io_uring backend (the `io-uring` crate).
//!
//! - [`buf_ring`]: a provided-buffer ring fed from a [`crate::BufSource`]
//!   (with the pool: NTA chunks). Receives pick their buffer from it, so no
//!   buffer is tied up in a socket that has nothing to say.
//! - [`udp_echo`]: multishot `recvmsg` (the peer address arrives in the
//!   buffer's head, which becomes headroom), `sendmsg` back.
//! - [`tcp_echo`]: multishot accept, multishot recv per connection, `send`.
//! - [`fixed_region`]: the pool registered as a fixed buffer, for
//!   `SEND_ZC` without per-send page pinning (optional, measured by
//!   `udp-pps`).
//!
//! # Multishot life cycle
//!
//! A multishot operation posts CQEs with `IORING_CQE_F_MORE` while it stays
//! armed. A CQE without it is the last one: the operation must be submitted
//! again (re-armed). `-ENOBUFS` means the buffer ring ran dry: it is expected
//! under bursts or pool exhaustion, counted in `Counters::ring_empty`, and
//! the receive is re-armed once a refill put buffers back.
//!
//! # Shutdown
//!
//! On stop, every operation is cancelled (`AsyncCancel2` with "any"), the
//! servers wait (bounded) for each one's final CQE, and only then unregister
//! the ring and free buffers. If an operation does not finish in time, its
//! buffers are leaked rather than freed under the kernel.

pub mod buf_ring;
pub mod fixed_region;
pub mod tcp_echo;
pub mod udp_echo;

pub use buf_ring::BufRing;
pub use fixed_region::FixedRegion;
pub use tcp_echo::TcpEcho;
pub use udp_echo::UdpEcho;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

/// How long shutdown waits for cancelled operations to complete.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// One completion, copied out of the CQ so the ring can be borrowed again.
#[derive(Clone, Copy, Debug)]
struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// Operation kinds, in the top byte of `user_data`.
mod tag {
    pub const ACCEPT: u8 = 1;
    pub const RECV: u8 = 2;
    pub const SEND: u8 = 3;
    pub const CANCEL: u8 = 4;
}

#[inline]
fn user_data(tag: u8, index: usize) -> u64 {
    (u64::from(tag) << 56) | index as u64
}

#[inline]
fn tag_of(user_data: u64) -> u8 {
    (user_data >> 56) as u8
}

#[inline]
fn index_of(user_data: u64) -> usize {
    (user_data & ((1 << 56) - 1)) as usize
}

/// An `IoUring` plus a backlog of completions taken out of the CQ early.
///
/// When the SQ is full, `push` submits; if the kernel then has no room to
/// post completions (`EBUSY`), the CQ is drained into the backlog so the
/// submit can make progress. Handlers read completions only through
/// [`Ring::pop`], which serves the backlog in order.
struct Ring {
    uring: IoUring,
    backlog: VecDeque<Completion>,
}

impl Ring {
    /// A ring of `sq_entries` submissions and eight times as many
    /// completions (multishot operations post many CQEs per SQE).
    fn new(sq_entries: u32) -> io::Result<Ring> {
        let uring = IoUring::builder().setup_cqsize(sq_entries * 8).build(sq_entries)?;
        Ok(Ring { uring, backlog: VecDeque::new() })
    }

    fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// Queues `entry`, submitting (and draining the CQ into the backlog) when
    /// the SQ is full.
    ///
    /// # Safety
    ///
    /// Every buffer and structure `entry` points to must stay valid until its
    /// final CQE is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
            self.reap();
        }
    }

    /// Submits queued entries without waiting. `EINTR` (pending task work or
    /// a signal) is retried; `EBUSY` (no room for completions) is left to the
    /// caller's next reap.
    fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.uring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits queued entries and waits up to `timeout_ms` for a completion.
    fn wait(&mut self, timeout_ms: u32) -> io::Result<()> {
        let timespec = types::Timespec::new().nsec(timeout_ms.min(999) * 1_000_000);
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every CQE into the backlog.
    fn reap(&mut self) {
        self.backlog.extend(self.uring.completion().map(|cqe| Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
            flags: cqe.flags(),
        }));
    }

    /// The oldest completion not handled yet.
    fn pop(&mut self) -> Option<Completion> {
        self.backlog.pop_front()
    }

    /// Cancels every operation in flight.
    fn cancel_all(&mut self) -> io::Result<()> {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(user_data(tag::CANCEL, 0));
        // SAFETY: a cancellation points to no memory of ours.
        unsafe { self.push(&entry) }?;
        self.submit()
    }
}
