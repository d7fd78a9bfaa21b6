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
//! - Protocols: [`StreamProtocol`] and [`DatagramProtocol`], the plug-in a
//!   driver calls with received buffers; [`TxQueue`], what a connection
//!   sends; [`Echo`], the smallest protocol.
//! - Drivers, one TCP and one UDP per backend, owning the mechanics
//!   (accept, receive into pool buffers, send queue, backpressure, timeouts,
//!   close): [`epoll`], [`uring`] (io_uring with a provided-buffer ring fed
//!   from the pool), [`async_io`] (tokio).
//! - Tools: [`Server`] (any driver with any protocol on its own thread),
//!   [`EchoServer`], [`loadgen`] (closed-loop UDP load for the
//!   packets-per-second table).
//!
//! The crate knows sockets and buffers, nothing of HTTP: protocols above the
//! transport plug in from outside (the examples' HTTP server is one). nta-core
//! knows nothing of sockets.
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
//! use nta_net::{Backend, DriverConfig, EchoServer, Transport};
//!
//! let pool = nta_core::Pool::builder().capacity(256 << 20).build().unwrap();
//! let addr = "127.0.0.1:7007".parse().unwrap();
//! let server = EchoServer::spawn(Backend::Uring, Transport::Udp, addr, pool, DriverConfig::default()).unwrap();
//! // ... serve ...
//! server.stop().unwrap();
//! ```

pub mod async_io;
mod counters;
mod datagram;
mod driver_config;
mod endpoint;
pub mod epoll;
mod error;
pub mod export;
mod flow;
pub mod hook;
pub mod loadgen;
mod packet_buf;
mod protocol;
mod rx_buf;
mod server;
pub mod socket;
mod stream_conn;
pub mod sys;
mod tx_queue;
pub mod uring;
mod vec_buf;

pub use counters::Counters;
pub use driver_config::DriverConfig;
pub use endpoint::Endpoint;
pub use error::{is_pool_exhausted, is_truncated, DatagramTruncated, PoolExhausted};
pub use flow::{Direction, Flow, Protocol};
pub use packet_buf::PacketBuf;
pub use protocol::{DatagramProtocol, Echo, StreamProtocol, Verdict};
pub use rx_buf::{BufSource, RxBuf};
pub use server::{Backend, EchoServer, Server, Transport};
pub use tx_queue::{TxQueue, MAX_IOVECS};
pub use vec_buf::{HeapSource, VecBuf};
