//! Errors of the networking layer.
//!
//! The only error of its own is [`PoolExhausted`]: a receive that could not
//! get a buffer. Everything else is an [`std::io::Error`] from the kernel.
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
