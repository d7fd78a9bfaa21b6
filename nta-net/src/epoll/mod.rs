//! The epoll backend: non-blocking sockets (options through `socket2`), a
//! level-triggered epoll instance, receives into fresh buffers, and vectored
//! sends.
//!
//! - [`poller`]: the epoll instance.
//! - [`io`]: reads into buffers from a [`crate::BufSource`], vectored writes.
//! - [`TcpDriver`] and [`UdpDriver`]: the drivers, written once for any
//!   buffer source and any [`crate::StreamProtocol`] /
//!   [`crate::DatagramProtocol`].
//!
//! Every rx and tx buffer is offered to the [published-buffer
//! hook](crate::hook).

pub mod io;
pub mod poller;
mod tcp;
mod udp;

pub use poller::Poller;
pub use tcp::TcpDriver;
pub(crate) use tcp::SWEEP_INTERVAL;
pub use udp::UdpDriver;
