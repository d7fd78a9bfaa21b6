//! UDP echo server on epoll: every datagram is received into a fresh buffer,
//! trimmed, published, and sent back to its sender.
//!
//! Backpressure: when no buffer can be had, the server stops reading for a
//! millisecond; datagrams wait in the kernel's socket buffer (or the kernel
//! drops them when it is full, as for any slow UDP reader).
//!
//! An empty buffer that found no datagram (`EAGAIN`) is kept for the next
//! readiness event instead of being freed and allocated again.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use super::io::{recv_from_into, send_to_vectored};
use super::poller::{Poller, HANGUP, READABLE};
use crate::hook;
use crate::{socket, BufSource, Counters, Direction, EchoConfig, Flow, Protocol, RxBuf};

/// Datagrams handled per readiness event before waiting again.
const DATAGRAMS_PER_WAKEUP: usize = 64;

/// A bound UDP echo server; [`UdpEcho::run`] serves until told to stop.
#[derive(Debug)]
pub struct UdpEcho<S: BufSource> {
    socket: Socket,
    local: SocketAddr,
    source: S,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> UdpEcho<S> {
    /// Binds to `addr` (port 0 picks one) with buffers from `source`.
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

    /// Serves until `stop` is set (checked every `poll_timeout_ms`).
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let mut poller = Poller::new(4)?;
        poller.add(self.socket.as_raw_fd(), READABLE, 0)?;
        let mut spare: Option<S::Buf> = None;
        let timeout_ms = self.config.poll_timeout_ms as i32;
        while !stop.load(Ordering::Relaxed) {
            let mut readable = false;
            poller.wait(timeout_ms, |ready| readable |= ready.events & (READABLE | HANGUP) != 0)?;
            if readable {
                self.drain(&mut spare);
            }
        }
        Ok(())
    }

    /// Echoes up to `DATAGRAMS_PER_WAKEUP` waiting datagrams.
    fn drain(&self, spare: &mut Option<S::Buf>) {
        for _ in 0..DATAGRAMS_PER_WAKEUP {
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => match self.source.try_alloc(self.config.rx_buf_bytes) {
                    Ok(buf) => buf,
                    Err(_) => return self.back_off(),
                },
            };
            match recv_from_into(&self.socket, &mut buf) {
                Ok(peer) => {
                    buf.trim();
                    self.echo(buf, peer);
                }
                Err(e) => {
                    *spare = Some(buf);
                    if e.kind() != io::ErrorKind::Interrupted {
                        // EAGAIN: drained. Anything else (an ICMP error
                        // queued on the socket) is per-datagram: next wakeup.
                        return;
                    }
                }
            }
        }
    }

    /// Publishes `buf` as received and sends it back to `peer`.
    fn echo(&self, buf: S::Buf, peer: SocketAddr) {
        Counters::add(&self.counters.rx_buffers, 1);
        Counters::add(&self.counters.rx_bytes, buf.len() as u64);
        let local = self.local;
        hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Rx), &buf);
        match send_to_vectored(&self.socket, &[&buf], peer) {
            Ok(_) => {
                Counters::add(&self.counters.tx_buffers, 1);
                Counters::add(&self.counters.tx_bytes, buf.len() as u64);
                hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Tx), &buf);
            }
            Err(_) => Counters::add(&self.counters.dropped, 1),
        }
    }

    /// Cold: the pool is exhausted. Leave datagrams in the socket buffer and
    /// give the application a moment to return buffers.
    #[cold]
    #[inline(never)]
    fn back_off(&self) {
        Counters::add(&self.counters.alloc_failures, 1);
        std::thread::sleep(Duration::from_millis(1));
    }
}
