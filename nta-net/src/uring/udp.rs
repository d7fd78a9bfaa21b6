//! The io_uring UDP driver: one multishot `recvmsg` with buffers from a
//! provided-buffer ring, one `sendmsg` per reply of the protocol.
//!
//! # Buffer layout of a multishot recvmsg
//!
//! The kernel writes `io_uring_recvmsg_out` (16 bytes), then the peer's
//! `sockaddr` in a field of `msg_namelen` bytes, then the payload: a
//! 144-byte prefix. The ring's buffers are `rx_buf_bytes` plus that prefix.
//!
//! - A payload of at most [`COPY_MAX_BYTES`] is copied into an exactly
//!   sized buffer and the ring buffer is freed, so a 64-byte datagram holds
//!   64 bytes, not 224 (the copy costs about what the allocation does).
//! - A larger one keeps its buffer: the prefix becomes headroom
//!   ([`RxBuf::advance`]) and the tail is trimmed; the prefix is then under
//!   14% of what is kept.
//! - A datagram longer than `rx_buf_bytes` (`MSG_TRUNC` in the recvmsg
//!   header) is dropped and counted in `Counters::truncated`.
//!
//! # Sends
//!
//! Each reply owns a boxed `TxMsg` (the `Bytes`, iovec, peer address,
//! msghdr), whose address is stable until the send's CQE; `tx[key]` holds
//! it. Reply bytes in flight are bounded by `max_queued_bytes`; a reply
//! over the bound is dropped and counted in `Counters::dropped`.
//! Datagrams received while stopping are dropped.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use io_uring::{cqueue, opcode, types};
use slab::Slab;
use socket2::Socket;

use super::{index_of, tag, tag_of, user_data, BufRing, Completion, FixedRegion, MsgHdr, Ring, DRAIN_TIMEOUT};
use crate::sys::{socket_addr_from_raw, SOCKADDR_STORAGE_BYTES};
use crate::{datagram, socket, BufSource, Counters, DatagramProtocol, DriverConfig, Endpoint, RxBuf};

/// Buffer group id of the driver's ring.
const BGID: u16 = 0;

/// Bytes of `io_uring_recvmsg_out` (four u32: namelen, controllen,
/// payloadlen, flags).
const RECVMSG_OUT_BYTES: usize = 16;

/// Bytes before the payload in a multishot recvmsg buffer.
const RECVMSG_PREFIX_BYTES: usize = RECVMSG_OUT_BYTES + SOCKADDR_STORAGE_BYTES;

/// Payloads up to this size are copied into an exact buffer; see the module
/// notes.
pub const COPY_MAX_BYTES: usize = 1024;

/// One reply in flight: the kernel reads `hdr`, `iov`, `peer` and the bytes
/// until the send's CQE.
struct TxMsg {
    reply: Bytes,
    peer: [u8; SOCKADDR_STORAGE_BYTES],
    iov: libc::iovec,
    hdr: MsgHdr,
}

// SAFETY: `iov` points into `reply`'s memory and `hdr` into this struct,
// which is boxed and moves as a whole.
unsafe impl Send for TxMsg {}

impl std::fmt::Debug for TxMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxMsg").field("len", &self.iov.iov_len).finish()
    }
}

/// A bound io_uring UDP driver; [`UdpDriver::run`] serves until stopped.
#[derive(Debug)]
pub struct UdpDriver<S: BufSource, P: DatagramProtocol<S::Buf>> {
    socket: Socket,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
}

impl<S: BufSource, P: DatagramProtocol<S::Buf>> UdpDriver<S, P> {
    /// Binds to `addr`. [`UdpDriver::run`] then registers a ring of
    /// `config.ring_entries` buffers of `config.rx_buf_bytes` (plus the
    /// recvmsg prefix) from `source`.
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        let socket = socket::udp_bind(addr)?;
        Ok(UdpDriver { endpoint: Endpoint::of(&socket)?, socket, source, protocol, config })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves until `stop` is set, then cancels everything and waits for it.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        // The ring is created on the thread that drives it: io_uring task
        // work then interrupts no other thread's system calls.
        let mut running = Running::new(self)?;
        let served = running.serve(stop);
        running.drain_kernel();
        let drained = if running.drained {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "io_uring operations did not finish; their buffers were leaked",
            ))
        };
        served.and(drained)
    }
}

/// The driver while it runs: the ring, its buffers, what is in flight.
struct Running<S: BufSource, P: DatagramProtocol<S::Buf>> {
    // Field order matters on an unclean drop: the ring closes before the
    // buffer ring's memory is (leaked or) freed.
    ring: Ring,
    buf_ring: BufRing<S>,
    tx: Slab<Box<TxMsg>>,
    tx_in_flight_bytes: usize,
    replies: Vec<(Bytes, SocketAddr)>,
    /// The template the kernel reads `msg_namelen`/`msg_controllen` from.
    recv_hdr: Box<MsgHdr>,
    recv_armed: bool,
    stopping: bool,
    drain_done: bool,
    drained: bool,
    /// Registered as fixed buffer 0, when zero-copy sends use it.
    fixed_region: Option<FixedRegion>,
    socket: Socket,
    local: SocketAddr,
    source: S,
    protocol: P,
    config: DriverConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource, P: DatagramProtocol<S::Buf>> Running<S, P> {
    fn new(driver: UdpDriver<S, P>) -> io::Result<Self> {
        let UdpDriver { socket, endpoint: Endpoint { local, counters }, source, protocol, config } = driver;
        let ring = Ring::new(256)?;
        let buf_ring = BufRing::register(
            &ring.submitter(),
            BGID,
            config.ring_entries,
            source.clone(),
            config.rx_buf_bytes + RECVMSG_PREFIX_BYTES,
        )?;
        let fixed_region = match config.fixed_region {
            Some(region) if config.zero_copy_send => {
                // SAFETY: `FixedRegion`'s constructors make their callers
                // promise the range stays mapped while rings use it.
                unsafe { ring.submitter().register_buffers(&[region.iovec()]) }?;
                Some(region)
            }
            _ => None,
        };
        let mut recv_hdr = Box::new(MsgHdr::zeroed());
        recv_hdr.0.msg_namelen = SOCKADDR_STORAGE_BYTES as libc::socklen_t;
        Ok(Running {
            ring,
            buf_ring,
            tx: Slab::new(),
            tx_in_flight_bytes: 0,
            replies: Vec::new(),
            recv_hdr,
            recv_armed: false,
            stopping: false,
            drain_done: false,
            drained: false,
            fixed_region,
            socket,
            local,
            source,
            protocol,
            config,
            counters,
        })
    }

    fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.arm_recv()?;
        while !stop.load(Ordering::Relaxed) {
            self.ring.wait(self.config.poll_timeout_ms)?;
            crate::hook::begin_batch(Instant::now);
            self.handle_completions()?;
        }
        self.stopping = true;
        Ok(())
    }

    fn handle_completions(&mut self) -> io::Result<()> {
        self.ring.reap();
        while let Some(completion) = self.ring.pop() {
            match tag_of(completion.user_data) {
                tag::RECV => self.on_recv(completion)?,
                tag::SEND => self.on_sent(index_of(completion.user_data), completion),
                _ => {}
            }
        }
        if self.buf_ring.refill() > 0 {
            // The source is exhausted: the ring stays short until buffers return.
            Counters::add(&self.counters.alloc_failures, 1);
        }
        if !self.recv_armed && !self.stopping && self.buf_ring.available() > 0 {
            Counters::add(&self.counters.rearmed, 1);
            self.arm_recv()?;
        }
        Ok(())
    }

    fn arm_recv(&mut self) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(types::Fd(self.socket.as_raw_fd()), &self.recv_hdr.0, BGID)
            .build()
            .user_data(user_data(tag::RECV, 0));
        // SAFETY: `recv_hdr` is boxed and lives as long as `self`, past the
        // final CQE (the drain waits for it); buffers come from the ring.
        unsafe { self.ring.push(&entry) }?;
        self.recv_armed = true;
        Ok(())
    }

    fn on_recv(&mut self, completion: Completion) -> io::Result<()> {
        if !cqueue::more(completion.flags) {
            self.recv_armed = false;
        }
        if completion.result < 0 {
            if completion.result == -libc::ENOBUFS {
                Counters::add(&self.counters.ring_empty, 1);
            }
            return Ok(());
        }
        let Some(bid) = cqueue::buffer_select(completion.flags) else {
            return Ok(());
        };
        let ring_buf = self.buf_ring.take(bid, completion.result as usize);
        let Some((buf, peer)) = self.unwrap_datagram(ring_buf) else {
            return Ok(());
        };
        if self.stopping {
            return Ok(());
        }
        datagram::deliver(&mut self.protocol, buf, self.local, peer, &self.counters, &mut self.replies);
        let mut replies = std::mem::take(&mut self.replies);
        for (reply, to) in replies.drain(..) {
            self.send(reply, to)?;
        }
        self.replies = replies;
        Ok(())
    }

    /// Takes the payload out of a recvmsg buffer (see the module notes):
    /// `None` for a truncated or malformed one.
    fn unwrap_datagram(&self, mut buf: S::Buf) -> Option<(S::Buf, SocketAddr)> {
        let (payload_offset, payload_len, peer) = {
            let out = types::RecvMsgOut::parse(&buf, &self.recv_hdr.0).ok()?;
            if out.is_payload_truncated() {
                Counters::add(&self.counters.truncated, 1);
                return None;
            }
            let peer = socket_addr_from_raw(out.name_data())?;
            (out.payload_data().as_ptr() as usize - buf.as_ptr() as usize, out.payload_data().len(), peer)
        };
        if payload_len <= COPY_MAX_BYTES {
            if let Ok(mut exact) = self.source.try_alloc(payload_len) {
                let payload = &buf[payload_offset..payload_offset + payload_len];
                exact.spare_mut()[..payload_len].copy_from_slice(as_uninit(payload));
                // SAFETY: `payload_len` bytes of the spare room were just
                // written, and the buffer has room for them.
                unsafe { exact.set_len(payload_len) };
                return Some((exact, peer));
            }
        }
        buf.advance(payload_offset);
        buf.truncate(payload_len);
        buf.trim();
        Some((buf, peer))
    }

    fn send(&mut self, reply: Bytes, peer: SocketAddr) -> io::Result<()> {
        let over_bound = self.tx_in_flight_bytes + reply.len() > self.config.max_queued_bytes;
        if over_bound && !self.tx.is_empty() {
            Counters::add(&self.counters.dropped, 1);
            return Ok(());
        }
        let raw_peer = socket2::SockAddr::from(peer);
        let peer_len = raw_peer.len() as usize;
        let mut peer_bytes = [0u8; SOCKADDR_STORAGE_BYTES];
        // SAFETY: `as_ptr` points to `len()` initialised bytes of `raw_peer`,
        // at most a sockaddr_storage.
        peer_bytes[..peer_len]
            .copy_from_slice(unsafe { std::slice::from_raw_parts(raw_peer.as_ptr().cast::<u8>(), peer_len) });
        let mut msg = Box::new(TxMsg {
            reply,
            peer: peer_bytes,
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            hdr: MsgHdr::zeroed(),
        });
        msg.iov.iov_base = msg.reply.as_ptr().cast_mut().cast();
        msg.iov.iov_len = msg.reply.len();
        msg.hdr.0.msg_name = msg.peer.as_mut_ptr().cast();
        msg.hdr.0.msg_namelen = peer_len as libc::socklen_t;
        msg.hdr.0.msg_iov = &mut msg.iov;
        msg.hdr.0.msg_iovlen = 1;
        let fd = types::Fd(self.socket.as_raw_fd());
        let in_fixed_region =
            self.fixed_region.is_some_and(|region| region.contains(msg.reply.as_ptr(), msg.reply.len()));
        let entry = if in_fixed_region {
            Counters::add(&self.counters.tx_fixed, 1);
            opcode::SendZc::new(fd, msg.reply.as_ptr(), msg.reply.len() as u32)
                .buf_index(Some(0))
                .dest_addr(msg.peer.as_ptr().cast())
                .dest_addr_len(peer_len as libc::socklen_t)
                .build()
        } else if self.config.zero_copy_send {
            opcode::SendMsgZc::new(fd, &msg.hdr.0).build()
        } else {
            opcode::SendMsg::new(fd, &msg.hdr.0).build()
        };
        self.tx_in_flight_bytes += msg.reply.len();
        let key = self.tx.insert(msg);
        let entry = entry.user_data(user_data(tag::SEND, key));
        // SAFETY: the boxed TxMsg (header, iovec, address, bytes) stays in
        // `tx[key]` until the send's final CQE (`on_sent`) or is leaked.
        unsafe { self.ring.push(&entry) }
    }

    /// A send's CQE. A zero-copy send posts two: the result (with
    /// `IORING_CQE_F_MORE` when a notification follows), then the
    /// notification (`IORING_CQE_F_NOTIF`) once the kernel let go of the
    /// buffer; the buffer is freed only then.
    fn on_sent(&mut self, key: usize, completion: Completion) {
        if cqueue::notif(completion.flags) {
            self.release_tx(key);
            return;
        }
        let Some(msg) = self.tx.get(key) else {
            return;
        };
        if completion.result < 0 {
            Counters::add(&self.counters.dropped, 1);
        } else {
            let peer = socket_addr_from_raw(&msg.peer).unwrap_or(self.local);
            datagram::sent(&msg.reply, self.local, peer, &self.counters);
        }
        if !cqueue::more(completion.flags) {
            self.release_tx(key);
        }
    }

    fn release_tx(&mut self, key: usize) {
        if let Some(msg) = self.tx.try_remove(key) {
            self.tx_in_flight_bytes -= msg.reply.len();
        }
    }

    fn busy(&self) -> bool {
        self.recv_armed || !self.tx.is_empty()
    }

    /// Cancels the receive and reaps completions until nothing is in
    /// flight or the time is up; what is left then is leaked. Calls no
    /// protocol code.
    fn drain_kernel(&mut self) {
        if std::mem::replace(&mut self.drain_done, true) {
            return;
        }
        self.stopping = true;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.busy() && Instant::now() < deadline {
            if self.ring.cancel_all().is_err() || self.ring.wait(self.config.poll_timeout_ms).is_err() {
                break;
            }
            self.ring.reap();
            while let Some(completion) = self.ring.pop() {
                match tag_of(completion.user_data) {
                    tag::RECV => {
                        self.recv_armed &= cqueue::more(completion.flags);
                        if let (len, Some(bid)) = (completion.result, cqueue::buffer_select(completion.flags)) {
                            drop(self.buf_ring.take(bid, len.max(0) as usize));
                        }
                    }
                    tag::SEND => {
                        let key = index_of(completion.user_data);
                        if cqueue::notif(completion.flags) || !cqueue::more(completion.flags) {
                            self.release_tx(key);
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.busy() {
            // Still in the kernel's hands: leak rather than free under it.
            let tx = std::mem::take(&mut self.tx);
            Counters::add(&self.counters.leaked_on_exit, tx.len() as u64);
            std::mem::forget(tx);
            return;
        }
        self.drained = self.buf_ring.unregister(&self.ring.submitter()).is_ok();
    }
}

impl<S: BufSource, P: DatagramProtocol<S::Buf>> Drop for Running<S, P> {
    /// An error or a panic left `serve`: make sure nothing the kernel may
    /// still use is freed (see the parent module).
    fn drop(&mut self) {
        self.drain_kernel();
    }
}

/// `bytes` as possibly uninitialised bytes (always sound: initialised bytes
/// are valid `MaybeUninit`s).
fn as_uninit(bytes: &[u8]) -> &[std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the slice is only
    // read.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}
