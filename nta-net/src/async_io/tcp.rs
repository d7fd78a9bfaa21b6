//! The tokio TCP driver: a current-thread runtime of its own, one local task
//! per connection, the protocol shared by the tasks of the thread
//! (`Rc<RefCell<P>>`, borrowed only between awaits).
//!
//! # Per connection (one task)
//!
//! 1. Send everything queued (vectored writes, awaiting writability, until
//!    the connection's deadline). Reading waits meanwhile: a connection
//!    never reads while anything is queued, so its queue holds at most the
//!    replies to one read (tighter than `max_queued_bytes`).
//! 2. Await readability, the connection's deadline, or stop.
//! 3. Only then take a buffer from the source and read into it: an idle
//!    connection holds no buffer.
//!
//! # Accept
//!
//! EMFILE (and the other resource errors) pause accepting for
//! `accept_backoff_ms`: the listener stays readable, and retrying at once
//! would spin. Counted in `Counters::accept_backoffs`.
//!
//! # Stop
//!
//! The listener closes; each task finishes sending what it has queued and
//! closes, for at most `shutdown_grace_ms`; then the rest are aborted.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::epoll::io::recv_into;
use crate::stream_conn::{Step, StreamConn};
use crate::tx_queue::MAX_IOVECS;
use crate::{socket, BufSource, Counters, DriverConfig, Endpoint, StreamProtocol, Verdict};

/// A listening tokio TCP driver; [`TcpDriver::run`] serves until stopped.
#[derive(Debug)]
pub struct TcpDriver<S: BufSource, P: StreamProtocol<S::Buf>> {
    listener: std::net::TcpListener,
    endpoint: Endpoint,
    source: S,
    protocol: P,
    config: DriverConfig,
}

/// What a connection task shares with its siblings.
struct Shared<S, P> {
    source: S,
    protocol: RefCell<P>,
    config: DriverConfig,
    counters: Arc<Counters>,
}

impl<S: BufSource, P: StreamProtocol<S::Buf>> TcpDriver<S, P> {
    /// Listens on `addr` (port 0 picks one).
    pub fn bind(addr: SocketAddr, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Self::from_listener(socket::tcp_listen(addr)?, source, protocol, config)
    }

    /// Serves on `listener`, a non-blocking listening socket.
    pub fn from_listener(listener: socket2::Socket, source: S, protocol: P, config: DriverConfig) -> io::Result<Self> {
        Ok(TcpDriver { endpoint: Endpoint::of(&listener)?, listener: listener.into(), source, protocol, config })
    }

    /// The bound address and the counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves on a current-thread runtime until `stop` is set, then lets
    /// connections finish sending (for at most `shutdown_grace_ms`).
    pub fn run(self, stop: &AtomicBool) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let local_set = tokio::task::LocalSet::new();
        let TcpDriver { listener, endpoint: Endpoint { local, counters }, source, protocol, config } = self;
        local_set.block_on(&runtime, async move {
            let listener = TcpListener::from_std(listener)?;
            let shared = Rc::new(Shared { source, protocol: RefCell::new(protocol), config, counters });
            let (stop_tx, stop_rx) = watch::channel(false);
            let poll = Duration::from_millis(u64::from(config.poll_timeout_ms));
            let mut conns = JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                while conns.try_join_next().is_some() {}
                let Ok(accepted) = tokio::time::timeout(poll, listener.accept()).await else {
                    continue;
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) if socket::is_resource_exhaustion(&e) => {
                        Counters::add(&shared.counters.accept_backoffs, 1);
                        tokio::time::sleep(Duration::from_millis(u64::from(config.accept_backoff_ms))).await;
                        continue;
                    }
                    Err(_) => continue,
                };
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn_local = stream.local_addr().unwrap_or(local);
                let core = StreamConn::accept(&mut *shared.protocol.borrow_mut(), conn_local, peer, &shared.counters);
                conns.spawn_local(serve_conn(stream, core, Rc::clone(&shared), stop_rx.clone()));
            }
            drop(listener);
            let _ = stop_tx.send(true);
            let grace = Duration::from_millis(u64::from(config.shutdown_grace_ms));
            let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
            conns.shutdown().await;
            Ok(())
        })
    }
}

/// Serves one connection until it closes. See the module notes.
async fn serve_conn<S: BufSource, P: StreamProtocol<S::Buf>>(
    stream: TcpStream,
    mut core: StreamConn<P::Conn>,
    shared: Rc<Shared<S, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let counters = &shared.counters;
    let mut stopping = false;
    loop {
        if !core.tx.is_empty() && write_queue(&stream, &mut core, &shared).await.is_err() {
            break;
        }
        match core.after_send() {
            Step::Continue => {}
            Step::ShutdownWrite => {
                let _ = SockRef::from(&stream).shutdown(Shutdown::Write);
                core.start_linger(shared.config.linger_ms, Instant::now());
            }
            Step::Close => break,
        }
        let deadline = core.deadline(&*shared.protocol.borrow());
        tokio::select! {
            ready = stream.readable() => {
                if ready.is_err() {
                    break;
                }
            }
            () = sleep_until(deadline) => {
                Counters::add(&counters.timed_out, 1);
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if core.stop() == Step::Close {
                    break;
                }
                continue;
            }
        }
        if core.lingering() {
            let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
            match stream.try_io(Interest::READABLE, || SockRef::from(&stream).recv(&mut scratch)) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
        }
        // Readable: only now take a buffer.
        let mut buf = match shared.source.try_alloc(shared.config.rx_buf_bytes) {
            Ok(buf) => buf,
            Err(_) => match no_buffer(&mut core, &shared) {
                Verdict::Close => break,
                Verdict::Keep => {
                    // Give the pool a moment instead of spinning on a
                    // readable socket.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                Verdict::CloseAfterFlush => continue,
            },
        };
        match stream.try_io(Interest::READABLE, || recv_into(&SockRef::from(&stream), &mut buf)) {
            Ok(0) => {
                if core.end_of_stream() == Step::Close {
                    break;
                }
            }
            Ok(_) => {
                if core.deliver(&mut *shared.protocol.borrow_mut(), buf, counters) == Verdict::Close {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    core.close(&mut *shared.protocol.borrow_mut(), counters);
}

/// Sends the whole queue, awaiting writability, until the connection's
/// deadline.
async fn write_queue<S: BufSource, P: StreamProtocol<S::Buf>>(
    stream: &TcpStream,
    core: &mut StreamConn<P::Conn>,
    shared: &Shared<S, P>,
) -> io::Result<()> {
    let mut paused = false;
    while !core.tx.is_empty() {
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = core.tx.io_slices(&mut slices);
            stream.try_io(Interest::WRITABLE, || {
                SockRef::from(stream).send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL)
            })
        };
        match result {
            Ok(sent) => core.sent(sent, &shared.counters),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !paused {
                    // The peer is not reading; neither are we, meanwhile.
                    paused = true;
                    Counters::add(&shared.counters.rx_paused, 1);
                }
                let deadline = core.deadline(&*shared.protocol.borrow());
                tokio::select! {
                    ready = stream.writable() => ready?,
                    () = sleep_until(deadline) => {
                        Counters::add(&shared.counters.timed_out, 1);
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks the protocol what to do without a buffer; the borrow of the
/// protocol ends before the caller awaits anything.
fn no_buffer<S: BufSource, P: StreamProtocol<S::Buf>>(
    core: &mut StreamConn<P::Conn>,
    shared: &Shared<S, P>,
) -> Verdict {
    core.no_buffer(&mut *shared.protocol.borrow_mut(), &shared.counters)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
