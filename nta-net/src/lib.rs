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
//! - Tools: [`EchoServer`] (any backend's echo server on its own thread),
//!   [`loadgen`] (closed-loop UDP load for the packets-per-second table).
//!
//! The crate knows sockets and buffers, nothing of HTTP or any protocol above
//! the transport. nta-core knows nothing of sockets.
//!
//! ## Example
//!
//! ```
//! use bytes::BufMut;
//! use nta_net::PacketBuf;
//!
//! let pool = nta_core::Pool::builder().capacity(8 << 20).build().unwrap();
//! // Room for a 1500-byte packet, 16 bytes of headroom for a header.
//! let mut buf = PacketBuf::with_headroom(&pool, 16, 1500);
//! buf.put_slice(b"payload");
//! buf.prepend(b"hdr:"); // into the headroom, no copy of the payload
//! buf.trim(); // the unused tail goes back to the pool, in place
//! assert_eq!(&buf[..], b"hdr:payload");
//! let shared = buf.freeze(); // bytes::Bytes, no copy
//! let clone = shared.clone();
//! std::thread::spawn(move || drop(clone)).join().unwrap(); // freed from any thread
//! ```
//!
//! ```no_run
//! use nta_net::{Backend, EchoConfig, EchoServer, Transport};
//!
//! let pool = nta_core::Pool::builder().capacity(256 << 20).build().unwrap();
//! let addr = "127.0.0.1:7007".parse().unwrap();
//! let server = EchoServer::spawn(Backend::Uring, Transport::Udp, addr, pool, EchoConfig::default()).unwrap();
//! // ... serve ...
//! server.stop().unwrap();
//! ```

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
