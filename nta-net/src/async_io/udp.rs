//! The tokio UDP driver: a current-thread runtime of its own; each datagram
//! is received (the buffer taken only once the socket is readable) into a
//! trimmed buffer, handed to the [`DatagramProtocol`], and its replies are
//! sent at once (`try_send_to`; a reply that would block is dropped and
//! counted in `Counters::dropped`).
//!
//! No buffer: the driver waits a millisecond (datagrams wait in the socket).
//! A datagram longer than `rx_buf_bytes` is dropped and counted in
//! `Counters::truncated`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::io::recv_from;
use crate::{
    datagram, is_pool_exhausted, is_truncated, socket, BufSource, Counters, DatagramProtocol, DriverConfig, Endpoint,
};

/// A bound tokio UDP driver; [`UdpDriver::run`] serves until stopped.
#[derive(Debug)]
pub struct UdpDriver<S: BufSource, P: DatagramProtocol<S::Buf>> {
    socket: std::net::UdpSocket,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
}

impl<S: BufSource, P: DatagramProtocol<S::Buf>> UdpDriver<S, P> {
    /// Binds to `addr` (port 0 picks one).
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        let socket = socket::udp_bind(addr)?;
        Ok(UdpDriver { endpoint: Endpoint::of(&socket)?, socket: socket.into(), source, protocol, config })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves on a current-thread runtime until `stop` is set.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let UdpDriver { socket, endpoint: Endpoint { local, counters }, source, mut protocol, config } = self;
        let poll = Duration::from_millis(u64::from(config.poll_timeout_ms));
        runtime.block_on(async move {
            let socket = UdpSocket::from_std(socket)?;
            let mut replies: Vec<(Bytes, SocketAddr)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let received = tokio::time::timeout(poll, recv_from(&socket, &source, config.rx_buf_bytes)).await;
                let (buf, peer) = match received {
                    Err(_elapsed) => continue,
                    Ok(Ok(received)) => received,
                    Ok(Err(e)) if is_pool_exhausted(&e) => {
                        Counters::add(&counters.alloc_failures, 1);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    Ok(Err(e)) if is_truncated(&e) => {
                        Counters::add(&counters.truncated, 1);
                        continue;
                    }
                    // Per-datagram errors (a queued ICMP error): go on.
                    Ok(Err(_)) => continue,
                };
                datagram::deliver(&mut protocol, buf, local, peer, &counters, &mut replies);
                for (reply, to) in replies.drain(..) {
                    match socket.try_send_to(&reply, to) {
                        Ok(_) => datagram::sent(&reply, local, to, &counters),
                        Err(_) => Counters::add(&counters.dropped, 1),
                    }
                }
            }
            Ok(())
        })
    }
}
