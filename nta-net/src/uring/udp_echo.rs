//! UDP echo server on io_uring: one multishot `recvmsg` with buffers from a
//! provided-buffer ring, one `sendmsg` per echoed datagram.
//!
//! # Buffer layout of a multishot recvmsg
//!
//! The kernel writes `io_uring_recvmsg_out` (16 bytes), then the peer's
//! `sockaddr` in a field of `msg_namelen` bytes, then the payload. The
//! payload offset becomes headroom ([`RxBuf::advance`]) and the buffer is
//! trimmed to the payload, so the application gets an exactly sized buffer
//! without a copy. The ring's buffers are `rx_buf_bytes` plus that prefix.
//!
//! # Sends
//!
//! Each echo owns a boxed `TxMsg` (buffer, iovec, peer address, msghdr),
//! whose address is stable until the send's CQE; `tx[index]` holds it.
//! Datagrams received while the stop flag is set are dropped.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, types};
use socket2::Socket;

use super::{index_of, tag, tag_of, user_data, BufRing, Completion, FixedRegion, Ring};
use crate::hook;
use crate::sys::{socket_addr_from_raw, SOCKADDR_STORAGE_BYTES};
use crate::{socket, BufSource, Counters, Direction, EchoConfig, Flow, Protocol, RxBuf};

/// Buffer group id of the server's ring.
const BGID: u16 = 0;

/// Bytes of `io_uring_recvmsg_out` (four u32: namelen, controllen,
/// payloadlen, flags).
const RECVMSG_OUT_BYTES: usize = 16;

/// Bytes before the payload in a multishot recvmsg buffer.
const RECVMSG_PREFIX_BYTES: usize = RECVMSG_OUT_BYTES + SOCKADDR_STORAGE_BYTES;

/// A `msghdr` and what it points to, at a stable (boxed) address.
struct MsgHdr(libc::msghdr);

// SAFETY: the raw pointers inside point to memory owned by the same boxed
// struct (or are null); moving the owner between threads is sound.
unsafe impl Send for MsgHdr {}

impl std::fmt::Debug for MsgHdr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgHdr").field("namelen", &self.0.msg_namelen).finish()
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

/// One echo in flight: the kernel reads `hdr`, `iov`, `peer` and the buffer
/// until the send's CQE.
struct TxMsg<B> {
    buf: B,
    peer: [u8; SOCKADDR_STORAGE_BYTES],
    iov: libc::iovec,
    hdr: MsgHdr,
}

// SAFETY: as for `MsgHdr`: `iov` points into `buf`'s heap/pool memory and
// `hdr` into this struct, which is boxed and moves as a whole.
unsafe impl<B: Send> Send for TxMsg<B> {}

impl<B> std::fmt::Debug for TxMsg<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxMsg").field("len", &self.iov.iov_len).finish()
    }
}

/// The running server: the ring, its buffers, and what is in flight.
struct Driver<S: BufSource> {
    // Field order matters on an unclean drop: the ring closes before the
    // buffer ring's memory is (leaked or) freed.
    ring: Ring,
    buf_ring: BufRing<S>,
    tx: Vec<Option<Box<TxMsg<S::Buf>>>>,
    free_tx: Vec<usize>,
    /// The template the kernel reads `msg_namelen`/`msg_controllen` from.
    recv_hdr: Box<MsgHdr>,
    recv_armed: bool,
    stopping: bool,
    /// Registered as fixed buffer 0, when zero-copy sends use it.
    fixed_region: Option<FixedRegion>,
    socket: Socket,
    local: SocketAddr,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local", &self.local)
            .field("ring_available", &self.buf_ring.available())
            .field("recv_armed", &self.recv_armed)
            .finish_non_exhaustive()
    }
}

/// A bound io_uring UDP echo server; [`UdpEcho::run`] serves until stopped.
#[derive(Debug)]
pub struct UdpEcho<S: BufSource> {
    socket: Socket,
    local: SocketAddr,
    source: S,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> UdpEcho<S> {
    /// Binds to `addr`. [`UdpEcho::run`] then registers a ring of
    /// `config.ring_entries` buffers of `config.rx_buf_bytes` (plus the
    /// recvmsg prefix) from `source`.
    pub fn bind(addr: SocketAddr, source: S, config: EchoConfig) -> io::Result<Self> {
        let socket = socket::udp_bind(addr)?;
        let local = socket::local_addr(&socket)?;
        Ok(UdpEcho { socket, local, source, config, counters: Arc::default() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters, readable while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves until `stop` is set, then cancels everything and waits for it.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        // The ring is created on the thread that drives it: io_uring task
        // work then interrupts no other thread's system calls.
        Driver::new(self)?.run(stop)
    }
}

impl<S: BufSource> Driver<S> {
    fn new(server: UdpEcho<S>) -> io::Result<Self> {
        let UdpEcho { socket, local, source, config, counters } = server;
        let ring = Ring::new(256)?;
        let buf_ring = BufRing::register(
            &ring.submitter(),
            BGID,
            config.ring_entries,
            source,
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
        let mut recv_hdr = Box::new(MsgHdr(zeroed_msghdr()));
        recv_hdr.0.msg_namelen = SOCKADDR_STORAGE_BYTES as libc::socklen_t;
        Ok(Driver {
            fixed_region,
            ring,
            buf_ring,
            tx: Vec::new(),
            free_tx: Vec::new(),
            recv_hdr,
            recv_armed: false,
            stopping: false,
            socket,
            local,
            config,
            counters,
        })
    }

    /// Serves until `stop` is set, then cancels everything and waits for it.
    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        self.arm_recv()?;
        while !stop.load(Ordering::Relaxed) {
            self.ring.wait(self.config.poll_timeout_ms)?;
            self.handle_completions()?;
        }
        self.shutdown()
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
        // final CQE (shutdown waits for it); buffers come from the ring.
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
        let mut buf = self.buf_ring.take(bid, completion.result as usize);
        let mut peer = [0u8; SOCKADDR_STORAGE_BYTES];
        let peer_len;
        {
            let Ok(out) = types::RecvMsgOut::parse(&buf, &self.recv_hdr.0) else {
                return Ok(());
            };
            let name = out.name_data();
            peer[..name.len()].copy_from_slice(name);
            peer_len = name.len();
            let payload_offset = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
            let payload_len = out.payload_data().len();
            buf.advance(payload_offset);
            buf.truncate(payload_len);
        }
        buf.trim();
        if self.stopping {
            return Ok(());
        }
        Counters::add(&self.counters.rx_buffers, 1);
        Counters::add(&self.counters.rx_bytes, buf.len() as u64);
        let local = self.local;
        hook::publish(|| flow(local, &peer, Direction::Rx), &buf);
        self.send(buf, peer, peer_len)
    }

    fn send(&mut self, buf: S::Buf, peer: [u8; SOCKADDR_STORAGE_BYTES], peer_len: usize) -> io::Result<()> {
        let mut msg = Box::new(TxMsg {
            buf,
            peer,
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            hdr: MsgHdr(zeroed_msghdr()),
        });
        msg.iov.iov_base = msg.buf.as_ptr().cast_mut().cast();
        msg.iov.iov_len = msg.buf.len();
        msg.hdr.0.msg_name = msg.peer.as_mut_ptr().cast();
        msg.hdr.0.msg_namelen = peer_len as libc::socklen_t;
        msg.hdr.0.msg_iov = &mut msg.iov;
        msg.hdr.0.msg_iovlen = 1;
        let fd = types::Fd(self.socket.as_raw_fd());
        let in_fixed_region = self.fixed_region.is_some_and(|region| region.contains(msg.buf.as_ptr(), msg.buf.len()));
        let entry = if in_fixed_region {
            Counters::add(&self.counters.tx_fixed, 1);
            opcode::SendZc::new(fd, msg.buf.as_ptr(), msg.buf.len() as u32)
                .buf_index(Some(0))
                .dest_addr(msg.peer.as_ptr().cast())
                .dest_addr_len(peer_len as libc::socklen_t)
                .build()
        } else if self.config.zero_copy_send {
            opcode::SendMsgZc::new(fd, &msg.hdr.0).build()
        } else {
            opcode::SendMsg::new(fd, &msg.hdr.0).build()
        };
        let index = self.free_tx.pop().unwrap_or_else(|| {
            self.tx.push(None);
            self.tx.len() - 1
        });
        let entry = entry.user_data(user_data(tag::SEND, index));
        self.tx[index] = Some(msg);
        // SAFETY: the boxed TxMsg (header, iovec, address, buffer) stays in
        // `tx[index]` until the send's CQE (`on_sent`) or is leaked.
        unsafe { self.ring.push(&entry) }
    }

    /// A send's CQE. A zero-copy send posts two: the result (with
    /// `IORING_CQE_F_MORE` when a notification follows), then the
    /// notification (`IORING_CQE_F_NOTIF`) once the kernel let go of the
    /// buffer; the buffer is freed only then.
    fn on_sent(&mut self, index: usize, completion: Completion) {
        if cqueue::notif(completion.flags) {
            self.release_tx(index);
            return;
        }
        let Some(msg) = self.tx.get(index).and_then(Option::as_ref) else {
            return;
        };
        if completion.result < 0 {
            Counters::add(&self.counters.dropped, 1);
        } else {
            Counters::add(&self.counters.tx_buffers, 1);
            Counters::add(&self.counters.tx_bytes, msg.buf.len() as u64);
            let local = self.local;
            hook::publish(|| flow(local, &msg.peer, Direction::Tx), &msg.buf);
        }
        if !cqueue::more(completion.flags) {
            self.release_tx(index);
        }
    }

    fn release_tx(&mut self, index: usize) {
        if self.tx.get_mut(index).and_then(Option::take).is_some() {
            self.free_tx.push(index);
        }
    }

    /// Cancels the receive and waits for it and every send to complete.
    fn shutdown(mut self) -> io::Result<()> {
        self.stopping = true;
        self.ring.cancel_all()?;
        let deadline = Instant::now() + super::SHUTDOWN_TIMEOUT;
        while (self.recv_armed || self.tx.iter().any(Option::is_some)) && Instant::now() < deadline {
            self.ring.wait(self.config.poll_timeout_ms)?;
            self.handle_completions()?;
        }
        if self.recv_armed || self.tx.iter().any(Option::is_some) {
            // Still in the kernel's hands: leak rather than free under it.
            std::mem::forget(std::mem::take(&mut self.tx));
            return Err(io::Error::new(io::ErrorKind::TimedOut, "io_uring operations did not finish"));
        }
        self.buf_ring.unregister(&self.ring.submitter())
    }
}

fn flow(local: SocketAddr, peer: &[u8], direction: Direction) -> Flow {
    let peer = socket_addr_from_raw(peer).unwrap_or(local);
    Flow::new(local, peer, Protocol::Udp, direction)
}
