//! TCP echo server on io_uring: multishot accept, one multishot recv per
//! connection with buffers from the provided-buffer ring, one `send` at a
//! time per connection.
//!
//! # Per connection
//!
//! - `recv_armed`: the multishot recv has not posted its final CQE.
//! - `send_in_flight`: a `send` of `pending[0][sent_bytes..]` is in the
//!   kernel. One at a time keeps the byte order of the stream.
//! - `closing`: end of stream, an error, or stop. The connection is freed
//!   once `!recv_armed && !send_in_flight`; before that its socket is shut
//!   down so an armed recv ends.
//!
//! # Backpressure and exhaustion
//!
//! Received buffers wait in `pending` until sent. If the peer does not read,
//! they pile up until the pool is exhausted; then refills fail, the ring runs
//! dry, receives end with `ENOBUFS` and are parked in `parked` until a
//! refill succeeds. The connection is backpressured, not dropped, and the
//! process does not abort.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, types};
use socket2::Socket;

use super::{index_of, tag, tag_of, user_data, BufRing, Completion, Ring};
use crate::hook;
use crate::{socket, BufSource, Counters, Direction, EchoConfig, Flow, Protocol, RxBuf};

/// Buffer group id of the server's ring.
const BGID: u16 = 0;

#[derive(Debug)]
struct Conn<B> {
    socket: Socket,
    local: SocketAddr,
    peer: SocketAddr,
    pending: VecDeque<B>,
    sent_bytes: usize,
    recv_armed: bool,
    send_in_flight: bool,
    closing: bool,
}

/// A listening io_uring TCP echo server; [`TcpEcho::run`] serves until
/// stopped.
struct Driver<S: BufSource> {
    // Field order matters on an unclean drop: the ring closes first.
    ring: Ring,
    buf_ring: BufRing<S>,
    conns: Vec<Option<Conn<S::Buf>>>,
    free_slots: Vec<usize>,
    /// Connections whose recv ended with ENOBUFS, waiting for buffers.
    parked: Vec<usize>,
    accept_armed: bool,
    stopping: bool,
    listener: Socket,
    local: SocketAddr,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local", &self.local)
            .field("ring_available", &self.buf_ring.available())
            .field("connections", &(self.conns.len() - self.free_slots.len()))
            .finish_non_exhaustive()
    }
}

/// A listening io_uring TCP echo server; [`TcpEcho::run`] serves until stopped.
#[derive(Debug)]
pub struct TcpEcho<S: BufSource> {
    listener: Socket,
    local: SocketAddr,
    source: S,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> TcpEcho<S> {
    /// Listens on `addr`. [`TcpEcho::run`] then registers a ring of
    /// `config.ring_entries` buffers of `config.rx_buf_bytes` from `source`.
    pub fn bind(addr: SocketAddr, source: S, config: EchoConfig) -> io::Result<Self> {
        let listener = socket::tcp_listen(addr)?;
        let local = socket::local_addr(&listener)?;
        Ok(TcpEcho { listener, local, source, config, counters: Arc::default() })
    }

    /// The listening address.
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
    fn new(server: TcpEcho<S>) -> io::Result<Self> {
        let TcpEcho { listener, local, source, config, counters } = server;
        let ring = Ring::new(512)?;
        let buf_ring = BufRing::register(&ring.submitter(), BGID, config.ring_entries, source, config.rx_buf_bytes)?;
        Ok(Driver {
            ring,
            buf_ring,
            conns: Vec::new(),
            free_slots: Vec::new(),
            parked: Vec::new(),
            accept_armed: false,
            stopping: false,
            listener,
            local,
            config,
            counters,
        })
    }

    /// Serves until `stop` is set, then cancels everything and waits for it.
    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        self.arm_accept()?;
        while !stop.load(Ordering::Relaxed) {
            self.ring.wait(self.config.poll_timeout_ms)?;
            self.handle_completions()?;
        }
        self.shutdown()
    }

    fn handle_completions(&mut self) -> io::Result<()> {
        self.ring.reap();
        while let Some(completion) = self.ring.pop() {
            let index = index_of(completion.user_data);
            match tag_of(completion.user_data) {
                tag::ACCEPT => self.on_accept(completion)?,
                tag::RECV => self.on_recv(index, completion)?,
                tag::SEND => self.on_sent(index, completion.result)?,
                _ => {}
            }
        }
        if self.buf_ring.refill() > 0 {
            // The source is exhausted: the ring stays short until buffers return.
            Counters::add(&self.counters.alloc_failures, 1);
        }
        if !self.parked.is_empty() && self.buf_ring.available() > 0 {
            let parked = std::mem::take(&mut self.parked);
            for slot in parked {
                let rearm = self.conns[slot].as_ref().is_some_and(|conn| !conn.recv_armed && !conn.closing);
                if rearm {
                    Counters::add(&self.counters.rearmed, 1);
                    self.arm_recv(slot)?;
                }
            }
        }
        if !self.accept_armed && !self.stopping {
            Counters::add(&self.counters.rearmed, 1);
            self.arm_accept()?;
        }
        Ok(())
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(tag::ACCEPT, 0));
        // SAFETY: multishot accept points to no memory of ours.
        unsafe { self.ring.push(&entry) }?;
        self.accept_armed = true;
        Ok(())
    }

    fn on_accept(&mut self, completion: Completion) -> io::Result<()> {
        if !cqueue::more(completion.flags) {
            self.accept_armed = false;
        }
        if completion.result < 0 {
            return Ok(());
        }
        // SAFETY: a successful accept CQE carries a new descriptor that
        // nothing else owns.
        let socket = unsafe { Socket::from_raw_fd(completion.result) };
        if self.stopping {
            return Ok(());
        }
        let _ = socket.set_nodelay(true);
        let Ok(peer) = socket::peer_addr(&socket) else {
            return Ok(());
        };
        let local = socket::local_addr(&socket).unwrap_or(self.local);
        Counters::add(&self.counters.accepted, 1);
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(Conn {
            socket,
            local,
            peer,
            pending: VecDeque::new(),
            sent_bytes: 0,
            recv_armed: false,
            send_in_flight: false,
            closing: false,
        });
        if self.buf_ring.available() > 0 {
            self.arm_recv(slot)
        } else {
            self.parked.push(slot);
            Ok(())
        }
    }

    fn arm_recv(&mut self, slot: usize) -> io::Result<()> {
        let conn = self.conns[slot].as_mut().expect("arming a live connection");
        let entry = opcode::RecvMulti::new(types::Fd(conn.socket.as_raw_fd()), BGID)
            .build()
            .user_data(user_data(tag::RECV, slot));
        conn.recv_armed = true;
        // SAFETY: the buffers come from the registered ring, which outlives
        // every receive (shutdown waits for their final CQEs).
        unsafe { self.ring.push(&entry) }
    }

    fn on_recv(&mut self, slot: usize, completion: Completion) -> io::Result<()> {
        let more = cqueue::more(completion.flags);
        let buf = match (completion.result, cqueue::buffer_select(completion.flags)) {
            (len, Some(bid)) if len > 0 => Some(self.buf_ring.take(bid, len as usize)),
            _ => None,
        };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if !more {
            conn.recv_armed = false;
        }
        match (completion.result, buf) {
            (_, Some(mut buf)) => {
                buf.trim();
                Counters::add(&self.counters.rx_buffers, 1);
                Counters::add(&self.counters.rx_bytes, buf.len() as u64);
                let (local, peer) = (conn.local, conn.peer);
                hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Rx), &buf);
                if !conn.closing {
                    conn.pending.push_back(buf);
                }
                if !more && !conn.closing {
                    Counters::add(&self.counters.rearmed, 1);
                    self.arm_recv(slot)?;
                }
                self.start_send(slot)?;
            }
            (result, None) if result == -libc::ENOBUFS => {
                Counters::add(&self.counters.ring_empty, 1);
                if !conn.closing {
                    self.parked.push(slot);
                }
            }
            // End of stream (0), or an error: finish sending, then close.
            _ => conn.closing = true,
        }
        self.maybe_close(slot);
        Ok(())
    }

    fn start_send(&mut self, slot: usize) -> io::Result<()> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        if conn.send_in_flight {
            return Ok(());
        }
        let Some(front) = conn.pending.front() else {
            return Ok(());
        };
        let unsent = &front[conn.sent_bytes..];
        let len = u32::try_from(unsent.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(conn.socket.as_raw_fd()), unsent.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(tag::SEND, slot));
        conn.send_in_flight = true;
        // SAFETY: the buffer is `pending[0]`, whose memory does not move, and
        // which is only popped after this send's CQE.
        unsafe { self.ring.push(&entry) }
    }

    fn on_sent(&mut self, slot: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        conn.send_in_flight = false;
        if result <= 0 {
            conn.closing = true;
            conn.pending.clear();
        } else {
            conn.sent_bytes += result as usize;
            let front_len = conn.pending.front().map_or(0, |b| b.len());
            if conn.sent_bytes >= front_len {
                let sent = conn.pending.pop_front().expect("a send completed for a queued buffer");
                conn.sent_bytes = 0;
                Counters::add(&self.counters.tx_buffers, 1);
                Counters::add(&self.counters.tx_bytes, sent.len() as u64);
                let (local, peer) = (conn.local, conn.peer);
                hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Tx), &sent);
            }
            self.start_send(slot)?;
        }
        self.maybe_close(slot);
        Ok(())
    }

    /// Frees a closing connection once the kernel holds nothing of it;
    /// otherwise nudges its armed recv to finish.
    fn maybe_close(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if !conn.closing || conn.send_in_flight || (!conn.pending.is_empty() && !self.stopping) {
            return;
        }
        if conn.recv_armed {
            // Ends the multishot recv with a final CQE; we come back here.
            let _ = conn.socket.shutdown(Shutdown::Both);
            return;
        }
        self.conns[slot] = None;
        self.free_slots.push(slot);
        self.parked.retain(|&parked| parked != slot);
    }

    fn busy(&self) -> bool {
        self.accept_armed || self.conns.iter().flatten().any(|c| c.recv_armed || c.send_in_flight)
    }

    /// Cancels every operation and waits for all of them to complete.
    fn shutdown(mut self) -> io::Result<()> {
        self.stopping = true;
        self.ring.cancel_all()?;
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].as_mut() {
                conn.closing = true;
                let _ = conn.socket.shutdown(Shutdown::Both);
            }
        }
        let deadline = Instant::now() + super::SHUTDOWN_TIMEOUT;
        while self.busy() && Instant::now() < deadline {
            self.ring.wait(self.config.poll_timeout_ms)?;
            self.handle_completions()?;
            if self.accept_armed {
                self.ring.cancel_all()?;
            }
        }
        if self.busy() {
            // Still in the kernel's hands: leak rather than free under it.
            std::mem::forget(std::mem::take(&mut self.conns));
            return Err(io::Error::new(io::ErrorKind::TimedOut, "io_uring operations did not finish"));
        }
        self.conns.clear();
        self.buf_ring.unregister(&self.ring.submitter())
    }
}
