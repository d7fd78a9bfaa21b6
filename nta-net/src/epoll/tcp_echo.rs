//! TCP echo server on epoll, level-triggered.
//!
//! # Per connection
//!
//! - Reading: each read goes into a fresh buffer of `rx_buf_bytes`, trimmed
//!   to what arrived, published, and queued for sending.
//! - Writing: the queue is flushed with vectored `sendmsg` calls (up to
//!   [`super::io::MAX_IOVECS`] buffers each). A buffer leaves the queue, and
//!   returns to its pool, once fully sent.
//! - Backpressure: while the queue is not empty the connection waits only
//!   for writability, so a slow reader stops us from reading (and the
//!   kernel's window stops its sender) instead of growing the queue.
//! - No buffer: when the pool is exhausted the connection is closed and
//!   counted in `closed_no_buffer`; the server itself goes on.
//!
//! Invariant: `interest == WRITABLE` iff `!pending.is_empty()`.
//!
//! Tokens: 0 is the listener, `slot + 1` a connection.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use socket2::Socket;

use super::io::{recv_into, send_vectored, MAX_IOVECS};
use super::poller::{Poller, Ready, HANGUP, READABLE, WRITABLE};
use crate::hook;
use crate::{socket, BufSource, Counters, Direction, EchoConfig, Flow, Protocol, RxBuf};

/// Reads per connection per readiness event, for fairness.
const READS_PER_WAKEUP: usize = 8;

const LISTENER_TOKEN: u64 = 0;

#[derive(Debug)]
struct Conn<B> {
    socket: Socket,
    local: SocketAddr,
    peer: SocketAddr,
    /// Received buffers not yet fully echoed, oldest first.
    pending: VecDeque<B>,
    /// Bytes of `pending[0]` already sent.
    sent_bytes: usize,
}

/// What to do with a connection after handling an event.
enum Next {
    Keep,
    Close,
}

/// A listening TCP echo server; [`TcpEcho::run`] serves until told to stop.
#[derive(Debug)]
pub struct TcpEcho<S: BufSource> {
    listener: Socket,
    local: SocketAddr,
    source: S,
    config: EchoConfig,
    counters: Arc<Counters>,
    conns: Vec<Option<Conn<S::Buf>>>,
    free_slots: Vec<usize>,
    /// An allocated, empty buffer that found no data last time.
    spare: Option<S::Buf>,
}

impl<S: BufSource> TcpEcho<S> {
    /// Listens on `addr` (port 0 picks one) with buffers from `source`.
    pub fn bind(addr: SocketAddr, source: S, config: EchoConfig) -> io::Result<Self> {
        let listener = socket::tcp_listen(addr)?;
        let local = socket::local_addr(&listener)?;
        Ok(TcpEcho {
            listener,
            local,
            source,
            config,
            counters: Arc::default(),
            conns: Vec::new(),
            free_slots: Vec::new(),
            spare: None,
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters, readable while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves until `stop` is set (checked every `poll_timeout_ms`).
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut poller = Poller::new(256)?;
        poller.add(self.listener.as_raw_fd(), READABLE, LISTENER_TOKEN)?;
        let mut ready = Vec::with_capacity(256);
        let timeout_ms = self.config.poll_timeout_ms as i32;
        while !stop.load(Ordering::Relaxed) {
            ready.clear();
            poller.wait(timeout_ms, |r| ready.push(r))?;
            for &Ready { token, events } in &ready {
                if token == LISTENER_TOKEN {
                    self.accept_all(&poller);
                } else {
                    self.on_conn_event(&poller, (token - 1) as usize, events);
                }
            }
        }
        Ok(())
    }

    fn accept_all(&mut self, poller: &Poller) {
        loop {
            let (socket, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                // EAGAIN: all accepted. EMFILE and friends: retry on the next
                // wakeup rather than spin.
                Err(_) => return,
            };
            let (Ok(()), Ok(peer)) = (socket::tcp_accepted(&socket), socket::peer_addr(&socket)) else {
                continue;
            };
            let local = socket::local_addr(&socket).unwrap_or(self.local);
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if poller.add(socket.as_raw_fd(), READABLE, slot as u64 + 1).is_err() {
                self.free_slots.push(slot);
                continue;
            }
            Counters::add(&self.counters.accepted, 1);
            self.conns[slot] = Some(Conn { socket, local, peer, pending: VecDeque::new(), sent_bytes: 0 });
        }
    }

    fn on_conn_event(&mut self, poller: &Poller, slot: usize, events: u32) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let was_writing = !conn.pending.is_empty();
        let mut next = Next::Keep;
        if was_writing && events & (WRITABLE | HANGUP) != 0 {
            next = self.flush(&mut conn);
        }
        if matches!(next, Next::Keep) && conn.pending.is_empty() && events & (READABLE | HANGUP) != 0 {
            next = self.read(&mut conn);
        }
        if let Next::Keep = next {
            let writing = !conn.pending.is_empty();
            if writing != was_writing {
                let interest = if writing { WRITABLE } else { READABLE };
                if poller.modify(conn.socket.as_raw_fd(), interest, slot as u64 + 1).is_err() {
                    next = Next::Close;
                }
            }
        }
        match next {
            Next::Keep => self.conns[slot] = Some(conn),
            Next::Close => {
                let _ = poller.delete(conn.socket.as_raw_fd());
                self.free_slots.push(slot);
            }
        }
    }

    /// Reads and echoes until the socket is drained, the queue backs up, or
    /// `READS_PER_WAKEUP` reads were done.
    fn read(&mut self, conn: &mut Conn<S::Buf>) -> Next {
        for _ in 0..READS_PER_WAKEUP {
            let mut buf = match self.spare.take() {
                Some(buf) => buf,
                None => match self.source.try_alloc(self.config.rx_buf_bytes) {
                    Ok(buf) => buf,
                    Err(_) => return self.no_buffer(),
                },
            };
            match recv_into(&conn.socket, &mut buf) {
                Ok(0) => {
                    self.spare = Some(buf);
                    return Next::Close;
                }
                Ok(n) => {
                    buf.trim();
                    Counters::add(&self.counters.rx_buffers, 1);
                    Counters::add(&self.counters.rx_bytes, n as u64);
                    let (local, peer) = (conn.local, conn.peer);
                    hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Rx), &buf);
                    conn.pending.push_back(buf);
                    if let Next::Close = self.flush(conn) {
                        return Next::Close;
                    }
                    if !conn.pending.is_empty() {
                        return Next::Keep;
                    }
                }
                Err(e) => {
                    self.spare = Some(buf);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Next::Keep,
                        io::ErrorKind::Interrupted => {}
                        _ => return Next::Close,
                    }
                }
            }
        }
        Next::Keep
    }

    /// Sends queued buffers until the queue is empty or the socket is full.
    fn flush(&self, conn: &mut Conn<S::Buf>) -> Next {
        while !conn.pending.is_empty() {
            let (front, _) = conn.pending.as_slices();
            let batch = &front[..front.len().min(MAX_IOVECS)];
            match send_vectored(&conn.socket, batch, conn.sent_bytes) {
                Ok(n) => self.consume_sent(conn, n),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Next::Keep,
                    io::ErrorKind::Interrupted => {}
                    _ => return Next::Close,
                },
            }
        }
        Next::Keep
    }

    /// Drops the buffers that `sent` bytes completed, and publishes them.
    fn consume_sent(&self, conn: &mut Conn<S::Buf>, sent: usize) {
        let mut sent_total = conn.sent_bytes + sent;
        while let Some(front) = conn.pending.front() {
            if sent_total < front.len() {
                break;
            }
            sent_total -= front.len();
            Counters::add(&self.counters.tx_buffers, 1);
            Counters::add(&self.counters.tx_bytes, front.len() as u64);
            let (local, peer) = (conn.local, conn.peer);
            hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Tx), front);
            conn.pending.pop_front();
        }
        conn.sent_bytes = sent_total;
    }

    /// Cold: the pool is exhausted; this connection is closed so the others
    /// keep their buffers.
    #[cold]
    #[inline(never)]
    fn no_buffer(&self) -> Next {
        Counters::add(&self.counters.alloc_failures, 1);
        Counters::add(&self.counters.closed_no_buffer, 1);
        Next::Close
    }
}
