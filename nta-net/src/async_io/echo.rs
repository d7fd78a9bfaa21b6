//! UDP and TCP echo servers on tokio, for any [`BufSource`].
//!
//! Each runs on a current-thread runtime of its own ([`UdpEcho::run`]), so
//! it can be driven like the epoll and io_uring servers: a thread, a stop
//! flag. TCP connections are tasks in a `JoinSet`, aborted on stop.
//!
//! Exhaustion: a UDP receive that gets no buffer backs off for a millisecond
//! (datagrams wait in the socket); a TCP connection that gets no buffer is
//! closed and counted in `closed_no_buffer`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::io::{read_packet, recv_from};
use crate::hook;
use crate::{is_pool_exhausted, socket, BufSource, Counters, Direction, EchoConfig, Flow, Protocol};

/// A bound tokio UDP echo server.
#[derive(Debug)]
pub struct UdpEcho<S: BufSource> {
    socket: std::net::UdpSocket,
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
        Ok(UdpEcho { socket: socket.into(), local, source, config, counters: Arc::default() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters, readable while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves on a current-thread runtime until `stop` is set.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let poll = Duration::from_millis(u64::from(self.config.poll_timeout_ms));
        runtime.block_on(async {
            let socket = UdpSocket::from_std(self.socket)?;
            let local = self.local;
            while !stop.load(Ordering::Relaxed) {
                let received =
                    tokio::time::timeout(poll, recv_from(&socket, &self.source, self.config.rx_buf_bytes)).await;
                let (buf, peer) = match received {
                    Err(_elapsed) => continue,
                    Ok(Ok(received)) => received,
                    Ok(Err(e)) if is_pool_exhausted(&e) => {
                        Counters::add(&self.counters.alloc_failures, 1);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    // Per-datagram errors (a queued ICMP error): go on.
                    Ok(Err(_)) => continue,
                };
                Counters::add(&self.counters.rx_buffers, 1);
                Counters::add(&self.counters.rx_bytes, buf.len() as u64);
                hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Rx), &buf);
                match socket.try_send_to(&buf, peer) {
                    Ok(_) => {
                        Counters::add(&self.counters.tx_buffers, 1);
                        Counters::add(&self.counters.tx_bytes, buf.len() as u64);
                        hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Tx), &buf);
                    }
                    Err(_) => Counters::add(&self.counters.dropped, 1),
                }
            }
            Ok(())
        })
    }
}

/// A listening tokio TCP echo server.
#[derive(Debug)]
pub struct TcpEcho<S: BufSource> {
    listener: std::net::TcpListener,
    local: SocketAddr,
    source: S,
    config: EchoConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource> TcpEcho<S> {
    /// Listens on `addr` (port 0 picks one) with buffers from `source`.
    pub fn bind(addr: SocketAddr, source: S, config: EchoConfig) -> io::Result<Self> {
        let listener = socket::tcp_listen(addr)?;
        let local = socket::local_addr(&listener)?;
        Ok(TcpEcho { listener: listener.into(), local, source, config, counters: Arc::default() })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters, readable while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves on a current-thread runtime until `stop` is set; open
    /// connections are then dropped.
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let poll = Duration::from_millis(u64::from(self.config.poll_timeout_ms));
        runtime.block_on(async {
            let listener = TcpListener::from_std(self.listener)?;
            let mut conns = JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                while conns.try_join_next().is_some() {}
                let Ok(accepted) = tokio::time::timeout(poll, listener.accept()).await else {
                    continue;
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                Counters::add(&self.counters.accepted, 1);
                let local = stream.local_addr().unwrap_or(self.local);
                conns.spawn(serve_conn(
                    stream,
                    Flow::new(local, peer, Protocol::Tcp, Direction::Rx),
                    self.source.clone(),
                    self.config.rx_buf_bytes,
                    Arc::clone(&self.counters),
                ));
            }
            conns.shutdown().await;
            Ok(())
        })
    }
}

/// Echoes one connection until end of stream, an error, or no buffer.
async fn serve_conn<S: BufSource>(
    mut stream: TcpStream,
    rx_flow: Flow,
    source: S,
    rx_buf_bytes: usize,
    counters: Arc<Counters>,
) {
    let tx_flow = Flow { direction: Direction::Tx, ..rx_flow };
    loop {
        let buf = match read_packet(&mut stream, &source, rx_buf_bytes).await {
            Ok(buf) if buf.is_empty() => return,
            Ok(buf) => buf,
            Err(e) => {
                if is_pool_exhausted(&e) {
                    Counters::add(&counters.alloc_failures, 1);
                    Counters::add(&counters.closed_no_buffer, 1);
                }
                return;
            }
        };
        Counters::add(&counters.rx_buffers, 1);
        Counters::add(&counters.rx_bytes, buf.len() as u64);
        hook::publish(|| rx_flow, &buf);
        if stream.write_all(&buf).await.is_err() {
            return;
        }
        Counters::add(&counters.tx_buffers, 1);
        Counters::add(&counters.tx_bytes, buf.len() as u64);
        hook::publish(|| tx_flow, &buf);
    }
}
