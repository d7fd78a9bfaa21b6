//! Errors of the networking layer.
//!
//! Two errors of its own: [`PoolExhausted`], a receive that could not get a
//! buffer, and [`DatagramTruncated`], a datagram longer than its buffer.
//! Everything else is an [`std::io::Error`] from the kernel.
//! Receive paths that return `io::Result` wrap `PoolExhausted` into an
//! `io::Error` of kind [`std::io::ErrorKind::OutOfMemory`], so a caller can
//! tell "no buffer" (back off, or close the connection) from a socket error
//! with [`is_pool_exhausted`].

use std::fmt;
use std::io;

/// The pool (or the buffer source) had no chunk of the requested size.
///
/// This is never fatal: the chunk that was asked for was not taken, and
/// nothing else changed. The caller decides whether to back off, drop the
/// packet or close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolExhausted {
    /// How many bytes were asked for.
    pub requested_bytes: usize,
}

impl fmt::Display for PoolExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "packet buffer pool exhausted (asked for {} bytes)", self.requested_bytes)
    }
}

impl std::error::Error for PoolExhausted {}

impl From<PoolExhausted> for io::Error {
    fn from(e: PoolExhausted) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, e)
    }
}

/// A datagram was longer than the receive buffer (`MSG_TRUNC`): it was
/// consumed and is dropped, never handed on cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramTruncated {
    /// The datagram's real length.
    pub len_bytes: usize,
    /// Room the receive buffer had.
    pub capacity_bytes: usize,
}

impl fmt::Display for DatagramTruncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "datagram of {} bytes does not fit a {}-byte receive buffer", self.len_bytes, self.capacity_bytes)
    }
}

impl std::error::Error for DatagramTruncated {}

impl From<DatagramTruncated> for io::Error {
    fn from(e: DatagramTruncated) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// True when `err` says a datagram was dropped for being longer than the
/// receive buffer.
pub fn is_truncated(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidData && err.get_ref().is_some_and(|inner| inner.is::<DatagramTruncated>())
}

/// True when `err` came from a buffer allocation that failed, not from a
/// socket.
pub fn is_pool_exhausted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::OutOfMemory && err.get_ref().is_some_and(|inner| inner.is::<PoolExhausted>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_told_apart_from_socket_errors() {
        let err = io::Error::from(PoolExhausted { requested_bytes: 1500 });
        assert!(is_pool_exhausted(&err));
        assert!(err.to_string().contains("1500"));
        assert!(!is_pool_exhausted(&io::Error::from(io::ErrorKind::OutOfMemory)));
        assert!(!is_pool_exhausted(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
