//! The tokio backend: helpers that read into a fresh, trimmed buffer from any
//! `AsyncRead` or from a tokio `UdpSocket`, write `Bytes` (or any buffers)
//! with vectored writes, and the drivers built on tokio.
//!
//! `PacketBuf` also implements `bytes::BufMut`, so tokio's own
//! `AsyncReadExt::read_buf` and any codec can fill it directly; the helpers
//! here work for every [`crate::BufSource`], including the heap baseline.

mod io;
mod tcp;
mod udp;

pub use io::{read_into, read_packet, recv_from, write_all_vectored};
pub use tcp::TcpDriver;
pub use udp::UdpDriver;
