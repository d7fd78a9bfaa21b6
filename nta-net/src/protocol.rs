//! The protocol plug-in: what a driver calls with received bytes, and what
//! it gets back to send.
//!
//! # Split of work
//!
//! A *driver* (one per backend and transport: [`crate::epoll`],
//! [`crate::uring`], [`crate::async_io`]) owns the mechanics: accept, receive
//! into buffers from a [`crate::BufSource`], the send queue, backpressure,
//! timeouts, the published-buffer hook and close. A *protocol* owns the
//! meaning of the bytes. It is a small value the driver calls, like a tokio
//! codec plugged into a framed stream:
//!
//! - [`StreamProtocol`] for TCP: one value per driver (per worker thread),
//!   plus one `Conn` state per connection, which the driver keeps next to
//!   the socket. [`StreamProtocol::on_recv`] gets each received buffer by
//!   value, untrimmed (the protocol may trim and keep it, freeze it into a
//!   reply, or drop it) and appends what to send to the connection's
//!   [`TxQueue`].
//! - [`DatagramProtocol`] for UDP: one call per datagram, with replies.
//!
//! Echo ([`crate::Echo`]) is the smallest protocol; the HTTP server of the
//! examples is another.
//!
//! # Contract
//!
//! - Calls for one connection are never concurrent, and come in stream
//!   order.
//! - A protocol never blocks and never does I/O on the socket: it only
//!   queues `Bytes`. Whatever it queues is sent in order, without a copy
//!   (vectored sends straight from the buffers).
//! - A connection holds no receive buffer while idle: buffers are taken
//!   only when data is there, and the protocol decides what it keeps.
//! - Timeouts: [`StreamProtocol::deadline`] says until when a connection
//!   may stay as it is; the driver closes it after that (checked a few
//!   times per second) and counts it in `Counters::timed_out`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::{RxBuf, TxQueue};

/// What the driver does with a connection after a protocol call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on reading.
    Keep,
    /// Stop reading requests, send everything queued, then close gracefully
    /// (FIN, then discard what the peer still sends for a short linger, so
    /// that the peer reads the last response instead of a reset).
    CloseAfterFlush,
    /// Close now; whatever is queued is dropped.
    Close,
}

/// A TCP protocol. See the module notes.
pub trait StreamProtocol<B: RxBuf>: Send + 'static {
    /// Per-connection state.
    type Conn: Send + 'static;

    /// A connection from `peer` to `local` was accepted.
    fn open(&mut self, local: SocketAddr, peer: SocketAddr) -> Self::Conn;

    /// `data` (never empty) arrived on the connection. Queue replies on `tx`.
    ///
    /// `data` is the receive buffer as the kernel filled it: its capacity
    /// may exceed its length. A protocol that keeps it past the call (queues
    /// it, holds an incomplete message in it) calls [`RxBuf::trim`] first,
    /// so that what it keeps is exactly as large as its bytes; one that
    /// drops it saves the trim.
    fn on_recv(&mut self, conn: &mut Self::Conn, data: B, tx: &mut TxQueue) -> Verdict;

    /// Data is waiting but no receive buffer could be had (the pool is
    /// exhausted). The default closes the connection.
    fn on_no_buffer(&mut self, _conn: &mut Self::Conn, _tx: &mut TxQueue) -> Verdict {
        Verdict::Close
    }

    /// Until when the connection may stay in its present state (an
    /// incomplete request, an idle keep-alive). `None`: no limit.
    fn deadline(&self, _conn: &Self::Conn) -> Option<Instant> {
        None
    }

    /// The connection is gone (closed by either side, timed out, or the
    /// driver stopped).
    fn on_close(&mut self, _conn: Self::Conn) {}
}

/// A UDP protocol. See the module notes.
pub trait DatagramProtocol<B: RxBuf>: Send + 'static {
    /// `data` arrived from `peer`; push replies (datagrams) on `replies`.
    fn on_datagram(&mut self, data: B, peer: SocketAddr, replies: &mut Vec<(Bytes, SocketAddr)>);
}

/// The echo protocol: every byte goes back where it came from, in the very
/// buffer it arrived in (frozen into `Bytes`, no copy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl<B: RxBuf> StreamProtocol<B> for Echo {
    type Conn = ();

    fn open(&mut self, _local: SocketAddr, _peer: SocketAddr) {}

    #[inline]
    fn on_recv(&mut self, _conn: &mut (), mut data: B, tx: &mut TxQueue) -> Verdict {
        data.trim();
        tx.push(data.freeze());
        Verdict::Keep
    }
}

impl<B: RxBuf> DatagramProtocol<B> for Echo {
    #[inline]
    fn on_datagram(&mut self, data: B, peer: SocketAddr, replies: &mut Vec<(Bytes, SocketAddr)>) {
        replies.push((data.freeze(), peer));
    }
}
