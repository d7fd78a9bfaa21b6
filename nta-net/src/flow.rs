//! A flow names the traffic a buffer belongs to: local and peer socket
//! address, transport protocol, and direction. It is what the
//! [published-buffer hook](crate::hook) hands to subscribers next to each
//! buffer, and it is all the sniffer needs to write a pcap record header.

use std::net::SocketAddr;

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: buffers are pieces of a byte stream, not packets.
    Tcp,
    /// UDP: one buffer is one datagram.
    Udp,
}

/// Which way a buffer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the peer.
    Rx,
    /// Sent to the peer.
    Tx,
}

/// Who talks to whom, and which way. See the module notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Our end of the socket.
    pub local: SocketAddr,
    /// The other end.
    pub peer: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Received or sent.
    pub direction: Direction,
}

impl Flow {
    /// A flow seen from `local`.
    #[inline]
    pub fn new(local: SocketAddr, peer: SocketAddr, protocol: Protocol, direction: Direction) -> Flow {
        Flow { local, peer, protocol, direction }
    }
}
