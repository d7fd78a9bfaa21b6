//! The io_uring TCP driver: multishot accept, one multishot recv per
//! connection with buffers from the provided-buffer ring, one vectored
//! `sendmsg` of the send queue at a time per connection.
//!
//! # Per connection
//!
//! - `recv_armed`: the multishot recv has not posted its final CQE. An idle
//!   connection holds no buffer: the kernel picks one from the ring only
//!   when data arrives.
//! - `send`: the header and iovecs of the `sendmsg` in flight (boxed, so
//!   their address is stable); it points into the front of the send queue,
//!   whose buffers stay queued until its CQE. One send at a time keeps the
//!   byte order of the stream.
//! - `parked`: the recv ended with `ENOBUFS` (the ring ran dry); it is
//!   re-armed once a refill put buffers back.
//! - `closing`: close was asked for. The connection is freed once nothing of
//!   it is in the kernel (`!recv_armed && send.is_none()`); its recv is
//!   cancelled meanwhile.
//!
//! # Backpressure: the per-connection bound
//!
//! All connections share one buffer ring and one pool, so one peer that
//! never reads must not drain them. When a connection's send queue grows
//! over `max_queued_bytes` ([`StreamConn::wants_read`] turns false), its
//! recv is cancelled (counted in `Counters::rx_paused`); it is re-armed
//! once sends brought the queue back under the bound. At most the CQEs
//! already posted arrive after the cancel, so a connection holds at most
//! the bound plus a few buffers.
//!
//! # Accept
//!
//! A multishot accept that fails for want of a resource (EMFILE) is not
//! re-armed at once (that would spin like a level-triggered poll); it waits
//! `accept_backoff_ms`, counted in `Counters::accept_backoffs`.
//!
//! # Stop, errors and panics
//!
//! See the parent module: in-flight memory is never freed before its final
//! CQE.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use slab::Slab;
use socket2::Socket;

use super::{index_of, tag, tag_of, user_data, BufRing, Completion, MsgHdr, Ring, DRAIN_TIMEOUT};
use crate::epoll::SWEEP_INTERVAL;
use crate::stream_conn::{Phase, Step, StreamConn};
use crate::tx_queue::MAX_IOVECS;
use crate::{socket, BufSource, Counters, DriverConfig, Endpoint, StreamProtocol, Verdict};

/// Buffer group id of the driver's ring.
const BGID: u16 = 0;

/// A `sendmsg` in flight: the kernel reads `hdr` and `iovecs` until its CQE.
struct SendOp {
    iovecs: [libc::iovec; MAX_IOVECS],
    hdr: MsgHdr,
}

// SAFETY: the iovecs point into buffers owned by the connection's send
// queue, which moves between threads with this value.
unsafe impl Send for SendOp {}

#[derive(Debug)]
struct Conn<C> {
    socket: Socket,
    core: StreamConn<C>,
    recv_armed: bool,
    /// A cancel of the armed recv was submitted.
    recv_cancelling: bool,
    parked: bool,
    send: Option<Box<SendOp>>,
    closing: bool,
}

impl std::fmt::Debug for SendOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOp").field("hdr", &self.hdr).finish()
    }
}

/// A listening io_uring TCP driver; [`TcpDriver::run`] serves until
/// stopped.
#[derive(Debug)]
pub struct TcpDriver<S: BufSource, P: StreamProtocol<S::Buf>> {
    listener: Socket,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
}

impl<S: BufSource, P: StreamProtocol<S::Buf>> TcpDriver<S, P> {
    /// Listens on `addr`. [`TcpDriver::run`] then registers a ring of
    /// `config.ring_entries` buffers of `config.rx_buf_bytes` from `source`.
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Self::from_listener(socket::tcp_listen(addr)?, source, protocol, config)
    }

    /// Serves on `listener`, a listening socket (for example one of several
    /// `SO_REUSEPORT` listeners of a multi-threaded server).
    pub fn from_listener(listener: Socket, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Ok(TcpDriver { endpoint: Endpoint::of(&listener)?, listener, source, protocol, config })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves until `stop` is set, lets connections finish sending (for at
    /// most `shutdown_grace_ms`), then cancels everything and waits for it.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        // The ring is created on the thread that drives it: io_uring task
        // work then interrupts no other thread's system calls.
        let mut running = Running::new(self)?;
        let served = running.serve(stop);
        let finished = running.finish();
        served.and(finished)
    }
}

/// The driver while it runs: the ring, its buffers, the connections.
struct Running<S: BufSource, P: StreamProtocol<S::Buf>> {
    // Field order matters on an unclean drop: the ring closes first.
    ring: Ring,
    buf_ring: BufRing<S>,
    conns: Slab<Conn<P::Conn>>,
    /// Connections whose recv ended with ENOBUFS, waiting for buffers.
    parked: Vec<usize>,
    accept_armed: bool,
    accept_paused_until: Option<Instant>,
    stop_deadline: Option<Instant>,
    /// The drain ran (it runs once).
    drain_done: bool,
    /// The kernel holds nothing of ours any more and the ring is
    /// unregistered (set by the drain).
    drained: bool,
    listener: Socket,
    local: SocketAddr,
    protocol: P,
    config: DriverConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource, P: StreamProtocol<S::Buf>> Running<S, P> {
    fn new(driver: TcpDriver<S, P>) -> io::Result<Self> {
        let TcpDriver { listener, endpoint: Endpoint { local, counters }, source, protocol, config } = driver;
        let ring = Ring::new(1024)?;
        let buf_ring = BufRing::register(&ring.submitter(), BGID, config.ring_entries, source, config.rx_buf_bytes)?;
        Ok(Running {
            ring,
            buf_ring,
            conns: Slab::new(),
            parked: Vec::new(),
            accept_armed: false,
            accept_paused_until: None,
            stop_deadline: None,
            drain_done: false,
            drained: false,
            listener,
            local,
            protocol,
            config,
            counters,
        })
    }

    fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.arm_accept()?;
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let now = Instant::now();
            if self.stop_deadline.is_none() && stop.load(Ordering::Relaxed) {
                self.begin_stop(now)?;
            }
            if let Some(deadline) = self.stop_deadline {
                if self.conns.is_empty() || now >= deadline {
                    return Ok(());
                }
            }
            self.ring.wait(self.config.poll_timeout_ms)?;
            let now = Instant::now();
            crate::hook::begin_batch(|| now);
            self.handle_completions(now)?;
            if now >= next_sweep {
                next_sweep = now + SWEEP_INTERVAL;
                self.sweep(now)?;
            }
        }
    }

    /// Stops accepting; open connections finish what they have queued.
    fn begin_stop(&mut self, now: Instant) -> io::Result<()> {
        self.stop_deadline = Some(now + Duration::from_millis(u64::from(self.config.shutdown_grace_ms)));
        if self.accept_armed {
            self.ring.cancel(user_data(tag::ACCEPT, 0))?;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let step = self.conns[key].core.stop();
            self.apply_step(key, step, now)?;
            self.after_change(key)?;
        }
        Ok(())
    }

    /// Closes the connections whose deadline passed.
    fn sweep(&mut self, now: Instant) -> io::Result<()> {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.closing && conn.core.expired(&self.protocol, now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            Counters::add(&self.counters.timed_out, 1);
            self.close(key)?;
        }
        Ok(())
    }

    fn handle_completions(&mut self, now: Instant) -> io::Result<()> {
        self.ring.reap();
        while let Some(completion) = self.ring.pop() {
            let key = index_of(completion.user_data);
            match tag_of(completion.user_data) {
                tag::ACCEPT => self.on_accept(completion, now)?,
                tag::RECV => self.on_recv(key, completion, now)?,
                tag::SEND => self.on_sent(key, completion.result, now)?,
                _ => {}
            }
        }
        if self.buf_ring.refill() > 0 {
            // The source is exhausted: the ring stays short until buffers return.
            Counters::add(&self.counters.alloc_failures, 1);
        }
        if !self.parked.is_empty() && self.buf_ring.available() > 0 {
            for key in std::mem::take(&mut self.parked) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.parked = false;
                    Counters::add(&self.counters.rearmed, 1);
                    self.after_change(key)?;
                }
            }
        }
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
        }
        if !self.accept_armed && self.accept_paused_until.is_none() && self.stop_deadline.is_none() {
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

    fn on_accept(&mut self, completion: Completion, now: Instant) -> io::Result<()> {
        let more = cqueue::more(completion.flags);
        if !more {
            self.accept_armed = false;
        }
        if completion.result < 0 {
            let err = io::Error::from_raw_os_error(-completion.result);
            if socket::is_resource_exhaustion(&err) {
                Counters::add(&self.counters.accept_backoffs, 1);
                self.accept_paused_until = Some(now + Duration::from_millis(u64::from(self.config.accept_backoff_ms)));
                if more {
                    self.ring.cancel(user_data(tag::ACCEPT, 0))?;
                }
            }
            return Ok(());
        }
        // SAFETY: a successful accept CQE carries a new descriptor that
        // nothing else owns.
        let socket = unsafe { Socket::from_raw_fd(completion.result) };
        if self.stop_deadline.is_some() {
            return Ok(());
        }
        let _ = socket.set_nodelay(true);
        let Ok(peer) = socket::peer_addr(&socket) else {
            return Ok(());
        };
        let local = socket::local_addr(&socket).unwrap_or(self.local);
        let core = StreamConn::accept(&mut self.protocol, local, peer, &self.counters);
        let key = self.conns.insert(Conn {
            socket,
            core,
            recv_armed: false,
            recv_cancelling: false,
            parked: false,
            send: None,
            closing: false,
        });
        self.after_change(key)
    }

    fn arm_recv(&mut self, key: usize) -> io::Result<()> {
        let conn = &mut self.conns[key];
        let entry = opcode::RecvMulti::new(types::Fd(conn.socket.as_raw_fd()), BGID)
            .build()
            .user_data(user_data(tag::RECV, key));
        conn.recv_armed = true;
        // SAFETY: the buffers come from the registered ring, which outlives
        // every receive (the drain waits for their final CQEs).
        unsafe { self.ring.push(&entry) }
    }

    fn on_recv(&mut self, key: usize, completion: Completion, now: Instant) -> io::Result<()> {
        let more = cqueue::more(completion.flags);
        let buf = match (completion.result, cqueue::buffer_select(completion.flags)) {
            (len, Some(bid)) if len > 0 => Some(self.buf_ring.take(bid, len as usize)),
            _ => None,
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if !more {
            conn.recv_armed = false;
            conn.recv_cancelling = false;
        }
        match (completion.result, buf) {
            (_, Some(buf)) => {
                if !conn.closing {
                    let verdict = conn.core.deliver(&mut self.protocol, buf, &self.counters);
                    if verdict == Verdict::Close {
                        return self.close(key);
                    }
                    self.start_send(key)?;
                }
            }
            (0, None) => {
                let step = conn.core.end_of_stream();
                self.apply_step(key, step, now)?;
            }
            (result, None) if result == -libc::ENOBUFS => {
                Counters::add(&self.counters.ring_empty, 1);
                if !more && !conn.parked {
                    conn.parked = true;
                    self.parked.push(key);
                }
            }
            (result, None) if result == -libc::ECANCELED => {}
            _ => return self.close(key),
        }
        self.after_change(key)
    }

    fn start_send(&mut self, key: usize) -> io::Result<()> {
        // The connection may have been closed and freed just before.
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.send.is_some() || conn.core.tx.is_empty() || conn.closing {
            return Ok(());
        }
        let mut op = Box::new(SendOp {
            iovecs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOVECS],
            hdr: MsgHdr::zeroed(),
        });
        let count = conn.core.tx.fill_iovecs(&mut op.iovecs);
        op.hdr.0.msg_iov = op.iovecs.as_mut_ptr();
        op.hdr.0.msg_iovlen = count;
        let entry = opcode::SendMsg::new(types::Fd(conn.socket.as_raw_fd()), &op.hdr.0)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(user_data(tag::SEND, key));
        conn.send = Some(op);
        // SAFETY: the header and iovecs are boxed in `conn.send` and the
        // buffers they point to stay in the send queue until this send's CQE
        // (`on_sent`), or are leaked.
        unsafe { self.ring.push(&entry) }
    }

    fn on_sent(&mut self, key: usize, result: i32, now: Instant) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.send = None;
        if result < 0 {
            return self.close(key);
        }
        conn.core.sent(result as usize, &self.counters);
        let step = conn.core.after_send();
        self.apply_step(key, step, now)?;
        self.start_send(key)?;
        self.after_change(key)
    }

    fn apply_step(&mut self, key: usize, step: Step, now: Instant) -> io::Result<()> {
        match step {
            Step::Continue => Ok(()),
            Step::ShutdownWrite => {
                if let Some(conn) = self.conns.get_mut(key) {
                    let _ = conn.socket.shutdown(Shutdown::Write);
                    conn.core.start_linger(self.config.linger_ms, now);
                }
                Ok(())
            }
            Step::Close => self.close(key),
        }
    }

    /// Brings the recv in line with what the connection wants (arm, or
    /// cancel over the bound), and frees a closing connection that the
    /// kernel no longer holds anything of.
    fn after_change(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.closing {
            if !conn.recv_armed && conn.send.is_none() {
                let mut conn = self.conns.remove(key);
                conn.core.close(&mut self.protocol, &self.counters);
            }
            return Ok(());
        }
        let wants_read = conn.core.wants_read(self.config.max_queued_bytes);
        if wants_read && !conn.recv_armed && !conn.parked {
            if self.buf_ring.available() > 0 {
                Counters::add(&self.counters.rearmed, 1);
                return self.arm_recv(key);
            }
            conn.parked = true;
            self.parked.push(key);
        } else if !wants_read && conn.recv_armed && !conn.recv_cancelling {
            if conn.core.phase == Phase::Open {
                Counters::add(&self.counters.rx_paused, 1);
            }
            conn.recv_cancelling = true;
            self.ring.cancel(user_data(tag::RECV, key))?;
        }
        Ok(())
    }

    /// Closes a connection: its recv is cancelled, and it is freed once the
    /// kernel gave everything back.
    fn close(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.closing = true;
        if conn.recv_armed && !conn.recv_cancelling {
            conn.recv_cancelling = true;
            self.ring.cancel(user_data(tag::RECV, key))?;
        }
        self.after_change(key)
    }

    /// Whether the kernel may still use memory of ours.
    fn busy(&self) -> bool {
        self.accept_armed || self.conns.iter().any(|(_, c)| c.recv_armed || c.send.is_some())
    }

    /// Cancels every operation and reaps completions until none is left in
    /// the kernel or the drain's time is up; calls no protocol code, so it
    /// is safe on any path out (errors, panics). What is still in flight
    /// then is leaked.
    fn drain_kernel(&mut self) {
        if std::mem::replace(&mut self.drain_done, true) {
            return;
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.busy() && Instant::now() < deadline {
            if self.ring.cancel_all().is_err() || self.ring.wait(self.config.poll_timeout_ms).is_err() {
                break;
            }
            self.ring.reap();
            while let Some(completion) = self.ring.pop() {
                let key = index_of(completion.user_data);
                let more = cqueue::more(completion.flags);
                match tag_of(completion.user_data) {
                    tag::ACCEPT => {
                        self.accept_armed &= more;
                        if completion.result >= 0 {
                            // SAFETY: a new descriptor nothing else owns.
                            drop(unsafe { Socket::from_raw_fd(completion.result) });
                        }
                    }
                    tag::RECV => {
                        if let (len, Some(bid)) = (completion.result, cqueue::buffer_select(completion.flags)) {
                            drop(self.buf_ring.take(bid, len.max(0) as usize));
                        }
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.recv_armed &= more;
                        }
                    }
                    tag::SEND => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.send = None;
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.busy() {
            // Still in the kernel's hands: leak rather than free under it.
            let conns = std::mem::take(&mut self.conns);
            let in_flight = conns.iter().filter(|(_, c)| c.recv_armed || c.send.is_some()).count();
            Counters::add(&self.counters.leaked_on_exit, in_flight as u64);
            std::mem::forget(conns);
            // The buffer ring stays registered, and so leaks its buffers.
            return;
        }
        self.drained = self.buf_ring.unregister(&self.ring.submitter()).is_ok();
    }

    /// After serving: drains the kernel, then closes every connection.
    fn finish(&mut self) -> io::Result<()> {
        self.drain_kernel();
        for (_, mut conn) in std::mem::take(&mut self.conns) {
            conn.core.close(&mut self.protocol, &self.counters);
        }
        if self.drained {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "io_uring operations did not finish; their buffers were leaked",
            ))
        }
    }
}

impl<S: BufSource, P: StreamProtocol<S::Buf>> Drop for Running<S, P> {
    /// An error or a panic left `serve`: make sure nothing the kernel may
    /// still use is freed (see the parent module).
    fn drop(&mut self) {
        self.drain_kernel();
    }
}
