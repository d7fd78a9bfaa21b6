//! Runs any backend's driver, with any protocol, on a thread of its own,
//! behind one handle ([`Server`]): what the examples, the tests, the HTTP
//! server's workers and the packets-per-second comparison use.
//! [`EchoServer`] is the convenience for the [`Echo`] protocol.
//!
//! The handle stops the server (sets its stop flag, which the driver reads
//! at least every `poll_timeout_ms`) and joins the thread when it is
//! dropped, so a failing test cannot leave a server behind.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::{
    async_io, epoll, socket, uring, BufSource, Counters, DatagramProtocol, DriverConfig, Echo, Endpoint, StreamProtocol,
};

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

    /// The default: io_uring where the kernel has what the drivers use,
    /// epoll otherwise.
    pub fn preferred() -> Backend {
        if uring::is_supported() {
            Backend::Uring
        } else {
            Backend::Epoll
        }
    }

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

/// A driver running on a thread of its own. Dropping it stops and joins it.
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Starts `$driver` (an expression building a driver) on a new thread that
/// first runs `$init`, then serves until `$stop` is set.
macro_rules! start {
    ($name:expr, $stop:expr, $init:expr, $driver:expr) => {{
        let driver = $driver;
        let endpoint = driver.endpoint().clone();
        let flag = Arc::clone(&$stop);
        let init = $init;
        let thread = std::thread::Builder::new().name($name).spawn(move || {
            init();
            driver.run(&flag)
        })?;
        Server { endpoint, stop: $stop, thread: Some(thread) }
    }};
}

impl Server {
    /// Serves TCP on `listener` (non-blocking, listening; see
    /// [`crate::socket::tcp_listen_with`]) with `protocol`, on `backend`,
    /// with buffers from `source`, on a new thread that first calls
    /// `thread_init` (for example to bind the thread to a pool shard).
    /// The server stops when `stop` is set (or [`Server::stop`] is called).
    pub fn spawn_tcp<S: BufSource, P: StreamProtocol<S::Buf>>(
        backend: Backend,
        listener: socket2::Socket,
        source: S,
        protocol: P,
        config: DriverConfig,
        stop: Arc<AtomicBool>,
        thread_init: impl FnOnce() + Send + 'static,
    ) -> io::Result<Server> {
        let name = format!("tcp-{backend}");
        Ok(match backend {
            Backend::Epoll => {
                start!(name, stop, thread_init, epoll::TcpDriver::from_listener(listener, source, protocol, config)?)
            }
            Backend::Uring => {
                start!(name, stop, thread_init, uring::TcpDriver::from_listener(listener, source, protocol, config)?)
            }
            Backend::Tokio => {
                start!(name, stop, thread_init, async_io::TcpDriver::from_listener(listener, source, protocol, config)?)
            }
        })
    }

    /// Serves UDP on `addr` (port 0 picks one) with `protocol`, on
    /// `backend`, with buffers from `source`, on a new thread.
    pub fn spawn_udp<S: BufSource, P: DatagramProtocol<S::Buf>>(
        backend: Backend,
        addr: SocketAddr,
        source: S,
        protocol: P,
        config: DriverConfig,
    ) -> io::Result<Server> {
        let name = format!("udp-{backend}");
        let stop = Arc::new(AtomicBool::new(false));
        let init = || {};
        Ok(match backend {
            Backend::Epoll => start!(name, stop, init, epoll::UdpDriver::bind(addr, source, protocol, config)?),
            Backend::Uring => start!(name, stop, init, uring::UdpDriver::bind(addr, source, protocol, config)?),
            Backend::Tokio => start!(name, stop, init, async_io::UdpDriver::bind(addr, source, protocol, config)?),
        })
    }

    /// The address clients talk to.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        self.endpoint.counters()
    }

    /// A handle on the server's counters that outlives it.
    pub fn counters_handle(&self) -> Arc<Counters> {
        self.endpoint.counters_handle()
    }

    /// The stop flag, for a signal handler or a deadline.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// True once the server thread has ended (stopped, or failed: an
    /// io_uring server sets its ring up on its own thread, so a setup error
    /// shows here and in [`Server::stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Stops the server and returns how its thread ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.join_thread()
    }

    /// Waits until the server stops (someone set the stop flag).
    pub fn join(mut self) -> io::Result<()> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join_thread();
    }
}

/// Echo servers: a [`Server`] running the [`Echo`] protocol.
#[derive(Debug)]
pub enum EchoServer {}

impl EchoServer {
    /// Binds a `transport` echo server on `backend` to `addr` (port 0 picks
    /// one), with buffers from `source`, and starts it on a new thread.
    pub fn spawn<S: BufSource>(
        backend: Backend,
        transport: Transport,
        addr: SocketAddr,
        source: S,
        config: DriverConfig,
    ) -> io::Result<Server> {
        match transport {
            Transport::Udp => Server::spawn_udp(backend, addr, source, Echo, config),
            Transport::Tcp => Server::spawn_tcp(
                backend,
                socket::tcp_listen(addr)?,
                source,
                Echo,
                config,
                Arc::new(AtomicBool::new(false)),
                || {},
            ),
        }
    }
}
