//! The sniffer's errors, and the exit code each one means.
//!
//! Exit code 2 means the reader could not attach at all (no such socket,
//! permission denied, a refusal from the server such as a version
//! mismatch) or was started wrongly; 1 is any other failure. Every error
//! prints as one line.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nta_net::export::proto::{ERR_BUSY, ERR_MALFORMED, ERR_PERMISSION, ERR_VERSION};

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be reached.
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What `connect` said.
        source: io::Error,
    },
    /// The server refused the session (an `ERR_` code and its text).
    Refused {
        /// One of the `ERR_` codes.
        code: u32,
        /// The server's text, control characters removed.
        text: String,
    },
    /// The server broke the protocol.
    Protocol(String),
    /// Bad arguments (for example a filter that does not parse).
    Usage(String),
    /// An I/O failure, with what was being done.
    Io(&'static str, io::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Connect { .. } | Error::Refused { .. } | Error::Usage(_) => 2,
            Error::Protocol(_) | Error::Io(..) => 1,
        }
    }
}

/// Keeps text from the other side printable on one line.
pub(crate) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(512).collect()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { path, source } => {
                let what = match source.kind() {
                    io::ErrorKind::NotFound => "no such socket".to_string(),
                    io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    io::ErrorKind::ConnectionRefused => "connection refused (no server is listening)".to_string(),
                    _ => source.to_string(),
                };
                write!(f, "cannot connect to {}: {what}", path.display())
            }
            Error::Refused { code, text } => {
                let what = match *code {
                    ERR_VERSION => "version mismatch",
                    ERR_PERMISSION => "permission denied",
                    ERR_BUSY => "too many readers",
                    ERR_MALFORMED => "malformed request",
                    _ => "refused",
                };
                write!(f, "the server refused the session: {what} (code {code}): {}", printable(text))
            }
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
            Error::Usage(what) => write!(f, "{what}"),
            Error::Io(doing, e) => write!(f, "{doing}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
