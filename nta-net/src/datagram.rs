//! The steps every UDP driver takes the same way: hand a received datagram
//! to the [`DatagramProtocol`] (counted, published to the hook), and account
//! for a reply that went out. The drivers add only their mechanics.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::{hook, Counters, DatagramProtocol, Direction, Flow, Protocol, RxBuf};

/// Counts and publishes `buf`, a datagram from `peer`, and hands it to the
/// protocol, which pushes its replies on `replies`.
#[inline]
pub(crate) fn deliver<B: RxBuf, P: DatagramProtocol<B>>(
    protocol: &mut P,
    buf: B,
    local: SocketAddr,
    peer: SocketAddr,
    counters: &Counters,
    replies: &mut Vec<(Bytes, SocketAddr)>,
) {
    Counters::add(&counters.rx_buffers, 1);
    Counters::add(&counters.rx_bytes, buf.len() as u64);
    hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Rx), &buf, None);
    protocol.on_datagram(buf, peer, replies);
}

/// Counts and publishes a reply the kernel took.
#[inline]
pub(crate) fn sent(reply: &[u8], local: SocketAddr, peer: SocketAddr, counters: &Counters) {
    Counters::add(&counters.tx_buffers, 1);
    Counters::add(&counters.tx_bytes, reply.len() as u64);
    hook::publish(|| Flow::new(local, peer, Protocol::Udp, Direction::Tx), reply, None);
}
