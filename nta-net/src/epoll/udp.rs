//! The epoll UDP driver: every datagram is received into a fresh buffer,
//! trimmed, handed to a [`DatagramProtocol`], and its replies are sent.
//!
//! - Backpressure: when no buffer can be had, the driver stops reading for
//!   a millisecond; datagrams wait in the kernel's socket buffer (or the
//!   kernel drops them when it is full, as for any slow UDP reader).
//! - A reply whose send would block is dropped and counted in
//!   `Counters::dropped`: nothing queues in user space.
//! - A datagram longer than `rx_buf_bytes` is dropped and counted in
//!   `Counters::truncated` (`MSG_TRUNC`), never handed on cut short.
//! - An empty buffer that found no datagram (`EAGAIN`) is kept for the next
//!   readiness event instead of being freed and allocated again.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::Socket;

use super::io::{recv_from_into, send_to_vectored};
use super::poller::{Poller, HANGUP, READABLE};
use crate::{datagram, is_truncated, socket, BufSource, Counters, DatagramProtocol, DriverConfig, Endpoint, RxBuf};

/// Datagrams handled per readiness event before waiting again.
const DATAGRAMS_PER_WAKEUP: usize = 64;

/// A bound UDP driver; [`UdpDriver::run`] serves until told to stop.
#[derive(Debug)]
pub struct UdpDriver<S: BufSource, P: DatagramProtocol<S::Buf>> {
    socket: Socket,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
    replies: Vec<(Bytes, SocketAddr)>,
    spare: Option<S::Buf>,
}

impl<S: BufSource, P: DatagramProtocol<S::Buf>> UdpDriver<S, P> {
    /// Binds to `addr` (port 0 picks one).
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        let socket = socket::udp_bind(addr)?;
        Ok(UdpDriver {
            endpoint: Endpoint::of(&socket)?,
            socket,
            source,
            protocol,
            config,
            replies: Vec::new(),
            spare: None,
        })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves until `stop` is set (checked every `poll_timeout_ms`).
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut poller = Poller::new(4)?;
        poller.add(self.socket.as_raw_fd(), READABLE, 0)?;
        let timeout_ms = self.config.poll_timeout_ms as i32;
        while !stop.load(Ordering::Relaxed) {
            let mut readable = false;
            poller.wait(timeout_ms, |ready| readable |= ready.events & (READABLE | HANGUP) != 0)?;
            if readable {
                crate::hook::begin_batch(Instant::now);
                self.drain();
            }
        }
        Ok(())
    }

    /// Handles up to `DATAGRAMS_PER_WAKEUP` waiting datagrams.
    fn drain(&mut self) {
        for _ in 0..DATAGRAMS_PER_WAKEUP {
            let mut buf = match self.spare.take() {
                Some(buf) => buf,
                None => match self.source.try_alloc(self.config.rx_buf_bytes) {
                    Ok(buf) => buf,
                    Err(_) => return self.back_off(),
                },
            };
            match recv_from_into(&self.socket, &mut buf) {
                Ok(peer) => {
                    buf.trim();
                    datagram::deliver(
                        &mut self.protocol,
                        buf,
                        self.endpoint.local,
                        peer,
                        &self.endpoint.counters,
                        &mut self.replies,
                    );
                    self.send_replies();
                }
                Err(e) => {
                    self.spare = Some(buf);
                    if is_truncated(&e) {
                        Counters::add(&self.endpoint.counters.truncated, 1);
                    } else if e.kind() != io::ErrorKind::Interrupted {
                        // EAGAIN: drained. Anything else (an ICMP error
                        // queued on the socket) is per-datagram: next wakeup.
                        return;
                    }
                }
            }
        }
    }

    fn send_replies(&mut self) {
        for (reply, peer) in self.replies.drain(..) {
            match send_to_vectored(&self.socket, &[&reply], peer) {
                Ok(_) => datagram::sent(&reply, self.endpoint.local, peer, &self.endpoint.counters),
                Err(_) => Counters::add(&self.endpoint.counters.dropped, 1),
            }
        }
    }

    /// Cold: the pool is exhausted. Leave datagrams in the socket buffer and
    /// give the application a moment to return buffers.
    #[cold]
    #[inline(never)]
    fn back_off(&self) {
        Counters::add(&self.endpoint.counters.alloc_failures, 1);
        std::thread::sleep(Duration::from_millis(1));
    }
}
