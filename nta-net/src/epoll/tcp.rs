//! The epoll TCP driver: accept, read into buffers from a [`BufSource`],
//! hand them to a [`StreamProtocol`], send its queue with vectored
//! `sendmsg`, level-triggered.
//!
//! # Per connection
//!
//! - Interest: `READABLE` iff [`StreamConn::wants_read`] (open and the send
//!   queue within `max_queued_bytes`, or lingering), `WRITABLE` iff the
//!   send queue is not empty. A peer that does not read therefore stops
//!   being read from, and the kernel's window stops its sender.
//! - Reading: each read goes into a fresh buffer of `rx_buf_bytes`, handed
//!   to the protocol as filled (it trims what it keeps); an idle connection
//!   holds no buffer. A buffer that found no data (`EAGAIN`) is kept as the
//!   driver's one spare for the next read.
//! - No buffer (pool exhausted): the protocol decides (by default the
//!   connection is closed); the driver goes on.
//!
//! # Listener
//!
//! When `accept` fails for want of a resource (EMFILE: out of file
//! descriptors), the pending connection stays queued and the level-triggered
//! listener stays readable, so accepting again at once would spin. The
//! listener leaves the epoll set for `accept_backoff_ms` instead, counted in
//! `Counters::accept_backoffs`.
//!
//! # Stop
//!
//! The listener closes, every connection finishes sending what it has
//! queued (for at most `shutdown_grace_ms`), then closes.
//!
//! Tokens: `LISTENER` is the listener, a slab key is a connection.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::Socket;

use super::io::recv_into;
use super::poller::{Poller, Ready, HANGUP, READABLE, WRITABLE};
use crate::stream_conn::{Phase, Step, StreamConn};
use crate::tx_queue::MAX_IOVECS;
use crate::{socket, BufSource, Counters, DriverConfig, Endpoint, StreamProtocol, Verdict};

/// Reads per connection per readiness event, for fairness.
const READS_PER_WAKEUP: usize = 8;

/// How often deadlines are checked.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

const LISTENER: u64 = u64::MAX;

#[derive(Debug)]
struct Conn<C> {
    socket: Socket,
    core: StreamConn<C>,
    /// The interest registered with epoll.
    interest: u32,
}

/// What to do with a connection after handling an event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    Close,
}

/// A listening TCP driver; [`TcpDriver::run`] serves until told to stop.
#[derive(Debug)]
pub struct TcpDriver<S: BufSource, P: StreamProtocol<S::Buf>> {
    listener: Socket,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
    conns: Slab<Conn<P::Conn>>,
    /// An allocated, empty buffer that found no data last time.
    spare: Option<S::Buf>,
    /// Accepting is paused until then (see the module notes).
    accept_paused_until: Option<Instant>,
}

impl<S: BufSource, P: StreamProtocol<S::Buf>> TcpDriver<S, P> {
    /// Listens on `addr` (port 0 picks one).
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Self::from_listener(socket::tcp_listen(addr)?, source, protocol, config)
    }

    /// Serves on `listener`, a non-blocking listening socket (for example
    /// one of several `SO_REUSEPORT` listeners of a multi-threaded server).
    pub fn from_listener(listener: Socket, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Ok(TcpDriver {
            endpoint: Endpoint::of(&listener)?,
            listener,
            source,
            protocol,
            config,
            conns: Slab::new(),
            spare: None,
            accept_paused_until: None,
        })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves until `stop` is set (checked every `poll_timeout_ms`), then
    /// lets connections finish sending and closes them.
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut poller = Poller::new(256)?;
        poller.add(self.listener.as_raw_fd(), READABLE, LISTENER)?;
        let mut ready = Vec::with_capacity(256);
        let mut expired = Vec::new();
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut stop_deadline: Option<Instant> = None;
        let timeout_ms = self.config.poll_timeout_ms as i32;
        let result = loop {
            let now = Instant::now();
            if stop_deadline.is_none() && stop.load(Ordering::Relaxed) {
                stop_deadline = Some(now + Duration::from_millis(u64::from(self.config.shutdown_grace_ms)));
                if self.accept_paused_until.take().is_none() {
                    let _ = poller.delete(self.listener.as_raw_fd());
                }
                let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
                for key in keys {
                    let step = self.conns[key].core.stop();
                    self.after_step(&poller, key, step, now);
                }
            }
            if let Some(deadline) = stop_deadline {
                if self.conns.is_empty() || now >= deadline {
                    break Ok(());
                }
            }
            ready.clear();
            if let Err(e) = poller.wait(timeout_ms, |r| ready.push(r)) {
                break Err(e);
            }
            let now = Instant::now();
            crate::hook::begin_batch(|| now);
            for &Ready { token, events } in &ready {
                if token == LISTENER {
                    self.accept_all(&poller, now);
                } else {
                    self.on_conn_event(&poller, token as usize, events, now);
                }
            }
            if self.accept_paused_until.is_some_and(|until| now >= until) && stop_deadline.is_none() {
                self.accept_paused_until = None;
                poller.add(self.listener.as_raw_fd(), READABLE, LISTENER)?;
            }
            if now >= next_sweep {
                next_sweep = now + SWEEP_INTERVAL;
                expired.clear();
                expired
                    .extend(self.conns.iter().filter(|(_, c)| c.core.expired(&self.protocol, now)).map(|(key, _)| key));
                for &key in &expired {
                    Counters::add(&self.endpoint.counters.timed_out, 1);
                    self.close(&poller, key);
                }
            }
        };
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(&poller, key);
        }
        result
    }

    fn accept_all(&mut self, poller: &Poller, now: Instant) {
        loop {
            let socket = match self.listener.accept() {
                Ok((socket, _)) => socket,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ if socket::is_resource_exhaustion(&e) => return self.pause_accept(poller, now),
                    _ => return,
                },
            };
            let (Ok(()), Ok(peer)) = (socket::tcp_accepted(&socket), socket::peer_addr(&socket)) else {
                continue;
            };
            let local = socket::local_addr(&socket).unwrap_or(self.endpoint.local);
            let entry = self.conns.vacant_entry();
            if poller.add(socket.as_raw_fd(), READABLE, entry.key() as u64).is_err() {
                continue;
            }
            let core = StreamConn::accept(&mut self.protocol, local, peer, &self.endpoint.counters);
            entry.insert(Conn { socket, core, interest: READABLE });
        }
    }

    /// Cold: out of descriptors or memory; see the module notes.
    #[cold]
    #[inline(never)]
    fn pause_accept(&mut self, poller: &Poller, now: Instant) {
        Counters::add(&self.endpoint.counters.accept_backoffs, 1);
        let _ = poller.delete(self.listener.as_raw_fd());
        self.accept_paused_until = Some(now + Duration::from_millis(u64::from(self.config.accept_backoff_ms)));
    }

    fn on_conn_event(&mut self, poller: &Poller, key: usize, events: u32, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut outcome = Outcome::Keep;
        if events & (WRITABLE | HANGUP) != 0 && !conn.core.tx.is_empty() {
            outcome = flush(conn, &self.endpoint.counters, &self.config, now);
        }
        if outcome == Outcome::Keep && events & (READABLE | HANGUP) != 0 {
            outcome = read(
                conn,
                &mut self.protocol,
                &self.source,
                &mut self.spare,
                &self.endpoint.counters,
                &self.config,
                now,
            );
        }
        if outcome == Outcome::Keep
            && update_interest(poller, conn, key, self.config.max_queued_bytes, &self.endpoint.counters).is_err()
        {
            outcome = Outcome::Close;
        }
        if outcome == Outcome::Close {
            self.close(poller, key);
        }
    }

    /// Applies a phase step from outside an event (stop).
    fn after_step(&mut self, poller: &Poller, key: usize, step: Step, now: Instant) {
        let conn = &mut self.conns[key];
        let outcome = apply_step(conn, step, &self.config, now);
        if outcome == Outcome::Close
            || update_interest(poller, conn, key, self.config.max_queued_bytes, &self.endpoint.counters).is_err()
        {
            self.close(poller, key);
        }
    }

    fn close(&mut self, poller: &Poller, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = poller.delete(conn.socket.as_raw_fd());
            conn.core.close(&mut self.protocol, &self.endpoint.counters);
        }
    }
}

/// Registers the interest the connection's state asks for, if it changed.
fn update_interest<C>(
    poller: &Poller,
    conn: &mut Conn<C>,
    key: usize,
    max_queued_bytes: usize,
    counters: &Counters,
) -> io::Result<()> {
    let mut interest = 0;
    if conn.core.wants_read(max_queued_bytes) {
        interest |= READABLE;
    } else if conn.interest & READABLE != 0 && conn.core.phase == Phase::Open {
        Counters::add(&counters.rx_paused, 1);
    }
    if !conn.core.tx.is_empty() {
        interest |= WRITABLE;
    }
    if interest != conn.interest {
        poller.modify(conn.socket.as_raw_fd(), interest, key as u64)?;
        conn.interest = interest;
    }
    Ok(())
}

/// Reads until the socket is drained, the connection stops wanting to
/// read, or `READS_PER_WAKEUP` reads were done.
fn read<S: BufSource, P: StreamProtocol<S::Buf>>(
    conn: &mut Conn<P::Conn>,
    protocol: &mut P,
    source: &S,
    spare: &mut Option<S::Buf>,
    counters: &Counters,
    config: &DriverConfig,
    now: Instant,
) -> Outcome {
    for _ in 0..READS_PER_WAKEUP {
        if !conn.core.wants_read(config.max_queued_bytes) {
            return Outcome::Keep;
        }
        if conn.core.lingering() {
            match discard(&conn.socket) {
                Ok(0) => return Outcome::Close,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Outcome::Close,
            }
        }
        let mut buf = match spare.take() {
            Some(buf) => buf,
            None => match source.try_alloc(config.rx_buf_bytes) {
                Ok(buf) => buf,
                Err(_) => {
                    if conn.core.no_buffer(protocol, counters) == Verdict::Close {
                        return Outcome::Close;
                    }
                    return flush(conn, counters, config, now);
                }
            },
        };
        match recv_into(&conn.socket, &mut buf) {
            Ok(0) => {
                *spare = Some(buf);
                let step = conn.core.end_of_stream();
                return apply_step(conn, step, config, now);
            }
            Ok(_) => {
                if conn.core.deliver(protocol, buf, counters) == Verdict::Close {
                    return Outcome::Close;
                }
                if flush(conn, counters, config, now) == Outcome::Close {
                    return Outcome::Close;
                }
            }
            Err(e) => {
                *spare = Some(buf);
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Outcome::Keep,
                    io::ErrorKind::Interrupted => {}
                    _ => return Outcome::Close,
                }
            }
        }
    }
    Outcome::Keep
}

/// Reads and drops what a lingering peer still sends.
fn discard(socket: &Socket) -> io::Result<usize> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
    socket.recv(&mut scratch)
}

/// Sends queued buffers until the queue is empty or the socket is full.
fn flush<C>(conn: &mut Conn<C>, counters: &Counters, config: &DriverConfig, now: Instant) -> Outcome {
    while !conn.core.tx.is_empty() {
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = conn.core.tx.io_slices(&mut slices);
            conn.socket.send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL)
        };
        match result {
            Ok(sent) => conn.core.sent(sent, counters),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => {}
                _ => return Outcome::Close,
            },
        }
    }
    let step = conn.core.after_send();
    apply_step(conn, step, config, now)
}

fn apply_step<C>(conn: &mut Conn<C>, step: Step, config: &DriverConfig, now: Instant) -> Outcome {
    match step {
        Step::Continue => Outcome::Keep,
        Step::ShutdownWrite => {
            let _ = conn.socket.shutdown(Shutdown::Write);
            conn.core.start_linger(config.linger_ms, now);
            Outcome::Keep
        }
        Step::Close => Outcome::Close,
    }
}
