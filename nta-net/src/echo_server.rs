//! Runs any backend's echo server on a thread of its own, behind one handle:
//! what the examples, the tests and the packets-per-second comparison use.
//!
//! The handle stops the server (sets its stop flag, which the server reads at
//! least every `poll_timeout_ms`) and joins the thread when it is dropped, so
//! a failing test cannot leave a server behind.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::{async_io, epoll, uring, BufSource, Counters, EchoConfig};

/// Which I/O backend a server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Non-blocking sockets and epoll.
    Epoll,
    /// io_uring with a provided-buffer ring and multishot operations.
    Uring,
    /// tokio, on a current-thread runtime.
    Tokio,
}

impl Backend {
    /// Every backend, in a fixed order.
    pub const ALL: [Backend; 3] = [Backend::Epoll, Backend::Uring, Backend::Tokio];

    /// The name `FromStr` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
            Backend::Tokio => "tokio",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (expected epoll, uring or tokio)"))
    }
}

/// Transport of an echo server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams are echoed to their sender.
    Udp,
    /// Streams are echoed back on their connection.
    Tcp,
}

/// A running echo server. Dropping it stops and joins it.
#[derive(Debug)]
pub struct EchoServer {
    local: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EchoServer {
    /// Binds a `transport` echo server on `backend` to `addr` (port 0 picks
    /// one), with buffers from `source`, and starts it on a new thread.
    pub fn spawn<S: BufSource>(
        backend: Backend,
        transport: Transport,
        addr: SocketAddr,
        source: S,
        config: EchoConfig,
    ) -> io::Result<EchoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        macro_rules! start {
            ($server:expr) => {{
                let server = $server;
                let (local, counters) = (server.local_addr(), server.counters());
                let flag = Arc::clone(&stop);
                let thread = std::thread::Builder::new()
                    .name(format!("echo-{}-{:?}", backend, transport))
                    .spawn(move || server.run(&flag))?;
                (local, counters, thread)
            }};
        }
        let (local, counters, thread) = match (backend, transport) {
            (Backend::Epoll, Transport::Udp) => start!(epoll::UdpEcho::bind(addr, source, config)?),
            (Backend::Epoll, Transport::Tcp) => start!(epoll::TcpEcho::bind(addr, source, config)?),
            (Backend::Uring, Transport::Udp) => start!(uring::UdpEcho::bind(addr, source, config)?),
            (Backend::Uring, Transport::Tcp) => start!(uring::TcpEcho::bind(addr, source, config)?),
            (Backend::Tokio, Transport::Udp) => {
                start!(async_io::UdpEcho::bind(addr, source, config)?)
            }
            (Backend::Tokio, Transport::Tcp) => {
                start!(async_io::TcpEcho::bind(addr, source, config)?)
            }
        };
        Ok(EchoServer { local, counters, stop, thread: Some(thread) })
    }

    /// The address clients talk to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The stop flag, for a signal handler or a deadline.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// True once the server thread has ended (stopped, or failed: an
    /// io_uring server sets its ring up on its own thread, so a setup error
    /// shows here and in [`EchoServer::stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Stops the server and returns how its thread ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    /// Waits until the server stops (someone set the stop flag).
    pub fn join(mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("echo server panicked"))),
            None => Ok(()),
        }
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("echo server panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
