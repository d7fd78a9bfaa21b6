//! # nta-net: packet buffers from the NTA pool, and socket I/O on them
//!
//! The networking layer of NTA. Receive buffers come from an
//! [`nta_core::Pool`] as [`PacketBuf`]s that fit their packet exactly
//! (receive into a chunk of the largest packet size, then `trim()` the tail
//! back into the pool in place), travel as `bytes::Bytes` without a copy
//! (`freeze()`), and go back to the pool from whichever thread drops them.
//!
//! ## Layers
//!
//! - Buffers: [`PacketBuf`] (pool), [`VecBuf`] (heap baseline), and the
//!   traits the backends are written against, [`RxBuf`] and [`BufSource`].
//! - Plumbing: [`sys`] (every raw system call), [`socket`] (setup),
//!   [`hook`] (the published-buffer tap), [`Flow`], [`Counters`].
//! - Backends: [`epoll`], [`uring`] (io_uring with a provided-buffer ring fed
//!   from the pool), [`async_io`] (tokio helpers and servers).
//!
//! The crate knows sockets and buffers, nothing of HTTP or any protocol above
//! the transport. nta-core knows nothing of sockets.

pub mod async_io;
mod counters;
mod echo_config;
mod echo_server;
pub mod epoll;
mod error;
mod flow;
pub mod hook;
pub mod loadgen;
mod packet_buf;
mod rx_buf;
pub mod socket;
pub mod sys;
pub mod uring;
mod vec_buf;

pub use counters::Counters;
pub use echo_config::EchoConfig;
pub use echo_server::{Backend, EchoServer, Transport};
pub use error::{is_pool_exhausted, PoolExhausted};
pub use flow::{Direction, Flow, Protocol};
pub use packet_buf::PacketBuf;
pub use rx_buf::{BufSource, RxBuf};
pub use vec_buf::{HeapSource, VecBuf};
