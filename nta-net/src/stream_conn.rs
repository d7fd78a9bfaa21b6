//! `StreamConn`: what every TCP driver keeps per connection, and the steps
//! every driver takes the same way (hand a buffer to the protocol, account
//! for what was sent, decide when to close). The drivers add only their
//! mechanics: the socket, and what is in flight in the kernel.
//!
//! # Phases
//!
//! ```text
//!   Open --CloseAfterFlush / end of stream--> Flushing --queue empty--> Lingering --EOF / linger over--> closed
//!     \                                          \--queue empty and the peer already closed--------------> closed
//!      \--Close / error / deadline passed----------------------------------------------------------------> closed
//! ```
//!
//! - `Open`: received buffers go to the protocol.
//! - `Flushing`: the protocol is done; what is queued is sent, what arrives
//!   is discarded.
//! - `Lingering`: our side is shut down for writing (FIN sent); what the
//!   peer still sends is discarded until its FIN or `linger_ms`, so that it
//!   reads our last response instead of a reset.
//!
//! # Invariants
//!
//! - The driver reads iff [`StreamConn::wants_read`]: open and the send
//!   queue within `max_queued_bytes`, or lingering. Memory a connection
//!   holds is therefore bounded by `max_queued_bytes` plus one receive
//!   buffer plus what its protocol keeps.
//! - `rx_stream_bytes` and `tx_stream_bytes` are the stream offsets of the
//!   next byte received and sent (TCP sequence numbers less the initial
//!   ones): what a sniffer descriptor needs to place a buffer in its stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{hook, Counters, Direction, Flow, Protocol, RxBuf, StreamProtocol, TxQueue, Verdict};

/// Where a connection is in its life. See the module notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    Flushing,
    Lingering { until: Instant },
}

/// What a driver must do once a send completed or a phase changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing special.
    Continue,
    /// Shut the socket down for writing (the linger starts).
    ShutdownWrite,
    /// Close the connection.
    Close,
}

/// Per-connection state shared by every TCP driver. See the module notes.
#[derive(Debug)]
pub(crate) struct StreamConn<C> {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The protocol's state; `None` only after [`StreamConn::close`].
    state: Option<C>,
    pub tx: TxQueue,
    pub phase: Phase,
    /// The peer sent its FIN.
    peer_closed: bool,
    pub rx_stream_bytes: u64,
    pub tx_stream_bytes: u64,
    /// Stream offset of the next tx buffer to go out whole (and be
    /// published): `tx_stream_bytes` less what of the front buffer went.
    tx_published_bytes: u64,
}

impl<C> StreamConn<C> {
    /// A connection just accepted; the protocol opens its state.
    pub fn accept<B: RxBuf, P: StreamProtocol<B, Conn = C>>(
        protocol: &mut P,
        local: SocketAddr,
        peer: SocketAddr,
        counters: &Counters,
    ) -> StreamConn<C> {
        Counters::add(&counters.accepted, 1);
        StreamConn {
            local,
            peer,
            state: Some(protocol.open(local, peer)),
            tx: TxQueue::default(),
            phase: Phase::Open,
            peer_closed: false,
            rx_stream_bytes: 0,
            tx_stream_bytes: 0,
            tx_published_bytes: 0,
        }
    }

    /// Whether the driver should read from the socket now.
    #[inline]
    pub fn wants_read(&self, max_queued_bytes: usize) -> bool {
        match self.phase {
            Phase::Open => self.tx.queued_bytes() <= max_queued_bytes,
            Phase::Flushing => false,
            Phase::Lingering { .. } => true,
        }
    }

    /// Hands `buf` (not empty) to the protocol: counts it, publishes it to
    /// the hook with its flow, advances the rx stream offset. Outside the
    /// open phase the bytes are discarded.
    #[inline]
    pub fn deliver<B: RxBuf, P: StreamProtocol<B, Conn = C>>(
        &mut self,
        protocol: &mut P,
        buf: B,
        counters: &Counters,
    ) -> Verdict {
        Counters::add(&counters.rx_buffers, 1);
        Counters::add(&counters.rx_bytes, buf.len() as u64);
        let (local, peer) = (self.local, self.peer);
        hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Rx), &buf, Some(self.rx_stream_bytes));
        self.rx_stream_bytes += buf.len() as u64;
        if self.phase != Phase::Open {
            return Verdict::Keep;
        }
        let Some(state) = self.state.as_mut() else {
            return Verdict::Close;
        };
        let verdict = protocol.on_recv(state, buf, &mut self.tx);
        self.apply(verdict)
    }

    /// No receive buffer could be had for waiting data: the protocol says
    /// what to do (by default, close).
    #[cold]
    #[inline(never)]
    pub fn no_buffer<B: RxBuf, P: StreamProtocol<B, Conn = C>>(
        &mut self,
        protocol: &mut P,
        counters: &Counters,
    ) -> Verdict {
        Counters::add(&counters.alloc_failures, 1);
        let verdict = match (self.phase, self.state.as_mut()) {
            (Phase::Open, Some(state)) => protocol.on_no_buffer(state, &mut self.tx),
            _ => Verdict::Close,
        };
        if verdict == Verdict::Close {
            Counters::add(&counters.closed_no_buffer, 1);
        }
        self.apply(verdict)
    }

    fn apply(&mut self, verdict: Verdict) -> Verdict {
        if verdict == Verdict::CloseAfterFlush && self.phase == Phase::Open {
            self.phase = Phase::Flushing;
        }
        verdict
    }

    /// The peer sent its FIN (a 0-byte read).
    pub fn end_of_stream(&mut self) -> Step {
        self.peer_closed = true;
        match self.phase {
            Phase::Lingering { .. } => Step::Close,
            Phase::Open | Phase::Flushing => {
                self.phase = Phase::Flushing;
                self.after_send()
            }
        }
    }

    /// Stop: an open connection finishes what it has queued, then closes.
    pub fn stop(&mut self) -> Step {
        if self.phase == Phase::Open {
            self.phase = Phase::Flushing;
        }
        self.after_send()
    }

    /// The kernel took `sent` bytes: drops what went out whole (counted and
    /// published), advances the tx stream offset.
    #[inline]
    pub fn sent(&mut self, sent: usize, counters: &Counters) {
        let (local, peer) = (self.local, self.peer);
        let published = &mut self.tx_published_bytes;
        self.tx.consume(sent, |buf| {
            Counters::add(&counters.tx_buffers, 1);
            Counters::add(&counters.tx_bytes, buf.len() as u64);
            // A buffer is published once it went out whole, in order, so its
            // stream offset is the sum of the lengths published before it.
            hook::publish(|| Flow::new(local, peer, Protocol::Tcp, Direction::Tx), buf, Some(*published));
            *published += buf.len() as u64;
        });
        self.tx_stream_bytes += sent as u64;
    }

    /// What follows once sends made progress (or the phase changed): a
    /// flushing connection whose queue is empty closes, or shuts down for
    /// writing and lingers.
    pub fn after_send(&mut self) -> Step {
        if self.phase != Phase::Flushing || !self.tx.is_empty() {
            return Step::Continue;
        }
        if self.peer_closed {
            return Step::Close;
        }
        Step::ShutdownWrite
    }

    /// Call after shutting down for writing.
    pub fn start_linger(&mut self, linger_ms: u32, now: Instant) {
        self.phase = Phase::Lingering { until: now + Duration::from_millis(u64::from(linger_ms)) };
    }

    /// The protocol's deadline (open, flushing) or the end of the linger
    /// (lingering).
    pub fn deadline<B: RxBuf, P: StreamProtocol<B, Conn = C>>(&self, protocol: &P) -> Option<Instant> {
        match (self.phase, self.state.as_ref()) {
            (Phase::Lingering { until }, _) => Some(until),
            (_, Some(state)) => protocol.deadline(state),
            (_, None) => None,
        }
    }

    /// True once [`StreamConn::deadline`] has passed.
    pub fn expired<B: RxBuf, P: StreamProtocol<B, Conn = C>>(&self, protocol: &P, now: Instant) -> bool {
        self.deadline(protocol).is_some_and(|deadline| now >= deadline)
    }

    /// True while lingering (reads are discarded).
    #[inline]
    pub fn lingering(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. })
    }

    /// The connection is gone: the protocol drops its state, the close is
    /// counted. Idempotent.
    pub fn close<B: RxBuf, P: StreamProtocol<B, Conn = C>>(&mut self, protocol: &mut P, counters: &Counters) {
        if let Some(state) = self.state.take() {
            Counters::add(&counters.closed, 1);
            protocol.on_close(state);
        }
    }
}
