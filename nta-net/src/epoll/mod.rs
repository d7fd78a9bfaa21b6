//! The epoll backend: non-blocking sockets (options through `socket2`), a
//! level-triggered epoll instance, receives into fresh buffers trimmed to
//! what arrived, and vectored sends.
//!
//! - [`poller`]: the epoll instance.
//! - [`io`]: reads into buffers from a [`crate::BufSource`], vectored writes.
//! - [`udp_echo`] and [`tcp_echo`]: the echo servers the examples and tests
//!   run, written once for any buffer source.
//!
//! Every rx and tx buffer is offered to the [published-buffer
//! hook](crate::hook).

pub mod io;
pub mod poller;
pub mod tcp_echo;
pub mod udp_echo;

pub use poller::Poller;
pub use tcp_echo::TcpEcho;
pub use udp_echo::UdpEcho;
