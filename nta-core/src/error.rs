//! Errors of pool construction.

use std::fmt;

/// Why a pool could not be built.
#[derive(Debug)]
pub enum Error {
    /// A system call failed (reserving address space, creating a memfd).
    Io(std::io::Error),
    /// A builder setting is out of range; the text says which.
    InvalidConfig(&'static str),
    /// `HugePages::Require` was set, but no hugetlb page could be mapped.
    /// Reserve some with `sysctl vm.nr_hugepages=N`.
    HugePagesUnavailable,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "nta-core: system call failed: {e}"),
            Error::InvalidConfig(why) => write!(f, "nta-core: invalid pool configuration: {why}"),
            Error::HugePagesUnavailable => write!(
                f,
                "nta-core: hugepages required but none could be mapped (reserve some with `sysctl vm.nr_hugepages=N`)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
