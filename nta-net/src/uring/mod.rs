//! The io_uring backend (the `io-uring` crate).
//!
//! - [`buf_ring`]: a provided-buffer ring fed from a [`crate::BufSource`]
//!   (with the pool: NTA chunks). Receives pick their buffer from it, so no
//!   buffer is tied up in a socket that has nothing to say.
//! - [`UdpDriver`]: multishot `recvmsg` (the peer address arrives in the
//!   buffer's head), `sendmsg` of the protocol's replies.
//! - [`TcpDriver`]: multishot accept, multishot recv per connection,
//!   vectored `sendmsg` of the connection's send queue.
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
//! # Memory the kernel may touch
//!
//! Ring buffers, receive headers, send headers, iovecs and the buffers they
//! point to belong to the kernel from the submission of an operation to its
//! final CQE. The drivers free none of it before then, on every path out:
//!
//! - stop: every operation is cancelled (`AsyncCancel2` with "any"), the
//!   driver waits (bounded) for each one's final CQE, and only then
//!   unregisters the buffer ring and frees buffers;
//! - an error, or a panic in a protocol: the same drain runs from the
//!   driver's `Drop` (it reaps completions without calling the protocol);
//! - whatever is still in flight when the drain's time is up (or when the
//!   ring itself failed) is leaked, counted in `Counters::leaked_on_exit`,
//!   rather than freed under the kernel; a buffer ring dropped while still
//!   registered leaks its buffers too.

pub mod buf_ring;
pub mod fixed_region;
mod tcp;
mod udp;

pub use buf_ring::BufRing;
pub use fixed_region::FixedRegion;
pub use tcp::TcpDriver;
pub use udp::UdpDriver;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

/// Whether this kernel has what the io_uring drivers use: rings,
/// provided-buffer rings (5.19) and zero-copy send (6.0, the same release as
/// multishot `recvmsg`).
pub fn is_supported() -> bool {
    let Ok(uring) = IoUring::new(8) else {
        return false;
    };
    let mut probe = io_uring::Probe::new();
    if uring.submitter().register_probe(&mut probe).is_err() {
        return false;
    }
    let Ok(entries) = crate::sys::AnonMap::new(4096) else {
        return false;
    };
    // SAFETY: `entries` is a zeroed page that outlives the registration,
    // which is undone right after.
    let registered = unsafe { uring.submitter().register_buf_ring_with_flags(entries.as_ptr() as u64, 1, 0, 0) };
    registered.is_ok()
        && uring.submitter().unregister_buf_ring(0).is_ok()
        && probe.is_supported(opcode::SendZc::CODE)
        && probe.is_supported(opcode::RecvMsg::CODE)
}

/// How long the drain waits for cancelled operations to complete.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A `msghdr` at a stable (boxed) address, for `sendmsg`/`recvmsg`.
struct MsgHdr(libc::msghdr);

// SAFETY: the raw pointers inside point to memory owned by the same boxed
// struct that holds the header (or are null); moving the owner between
// threads is sound.
unsafe impl Send for MsgHdr {}

impl MsgHdr {
    fn zeroed() -> MsgHdr {
        // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
        MsgHdr(unsafe { std::mem::zeroed() })
    }
}

impl std::fmt::Debug for MsgHdr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgHdr").field("namelen", &self.0.msg_namelen).field("iovlen", &self.0.msg_iovlen).finish()
    }
}

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
    ///
    /// The ring is driven by the one thread that creates it, so it is set up
    /// for that: `SINGLE_ISSUER`, and `DEFER_TASKRUN` (completion work runs
    /// when this thread waits for completions, not as interrupts of whatever
    /// it is doing; 6.1+). Kernels without those flags get a plain ring.
    fn new(sq_entries: u32) -> io::Result<Ring> {
        let tuned = IoUring::builder()
            .setup_cqsize(sq_entries * 8)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq_entries);
        let uring = match tuned {
            Ok(uring) => uring,
            Err(_) => IoUring::builder().setup_cqsize(sq_entries * 8).build(sq_entries)?,
        };
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

    /// Cancels the operation submitted with `target` as its user data.
    fn cancel(&mut self, target: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target).build().user_data(user_data(tag::CANCEL, 0));
        // SAFETY: a cancellation points to no memory of ours.
        unsafe { self.push(&entry) }
    }
}
