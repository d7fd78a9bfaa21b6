//! The reader's end of the export socket: attach, then events.
//!
//! # Design notes
//!
//! The session follows proto.rs step by step: connect (`SOCK_SEQPACKET`),
//! send [`Attach`], receive [`Hello`] with `1 + rings` descriptors (the
//! hold region read-write, then one read-only ring per shard), then
//! [`Kind::Segment`] messages (one read-only descriptor each), and later
//! Segment / Released / Stats / Error messages as [`Event`]s.
//!
//! Everything received is checked before use: the header (magic, version,
//! kind, length), each payload's size, the number of descriptors that came
//! with it (extra ones are closed, missing ones are a protocol error), and
//! the Hello's figures (ring count within [`MAX_RINGS`], slot size
//! [`SLOT_BYTES`], hold region [`HOLD_BYTES`], a mode we asked for).
//! An `Error` message ends the session with [`Error::Refused`].

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use nta_net::export::proto::{
    self, Attach, ErrorMsg, Header, Hello, Kind, Released, SegmentMsg, HOLD_BYTES, MAX_MESSAGE, MAX_RINGS, MODE_HOLD,
    MODE_SNAPSHOT, SLOT_BYTES, VERSION,
};

use crate::error::{Error, Result};
use crate::hold::HoldRegion;
use crate::maps::SharedRegion;
use crate::ring::{Ring, MAX_SLOTS};
use crate::segments::MAX_SEGMENT_BYTES;
use crate::sys;

/// Something the server said after the Hello.
#[derive(Debug)]
pub enum Event {
    /// A segment to map.
    Segment(SegmentMsg, OwnedFd),
    /// A segment released.
    Released(Released),
    /// A statistics reply: `name value` lines and the occupancy file.
    Stats {
        /// The text, as sent (lossy UTF-8).
        text: String,
        /// The occupancy file (read-only).
        occupancy: OwnedFd,
    },
    /// The server closed the socket.
    Closed,
}

/// An attached session.
#[derive(Debug)]
pub struct Session {
    socket: OwnedFd,
    /// The server's Hello.
    pub hello: Hello,
}

/// What the Hello brought: the hold region and the rings, mapped and
/// checked.
#[derive(Debug)]
pub struct Attached {
    /// The session (socket and Hello).
    pub session: Session,
    /// The reader's hold region.
    pub hold: HoldRegion,
    /// One ring per shard.
    pub rings: Vec<Ring>,
}

fn protocol(what: impl Into<String>) -> Error {
    Error::Protocol(what.into())
}

/// Checks a Hello's figures against what this reader can use.
pub fn check_hello(hello: &Hello, asked_mode: u32) -> std::result::Result<(), String> {
    if hello.rings as usize > MAX_RINGS {
        return Err(format!("{} rings (at most {MAX_RINGS})", hello.rings));
    }
    if hello.slots == 0 || hello.slots > MAX_SLOTS {
        return Err(format!("{} slots per ring", hello.slots));
    }
    if hello.slot_bytes as usize != SLOT_BYTES {
        return Err(format!("slot size {} (expected {SLOT_BYTES})", hello.slot_bytes));
    }
    if hello.hold_bytes as usize != HOLD_BYTES {
        return Err(format!("hold region of {} bytes (expected {HOLD_BYTES})", hello.hold_bytes));
    }
    if hello.segment_bytes == 0 || hello.segment_bytes > MAX_SEGMENT_BYTES {
        return Err(format!("segments of {} bytes", hello.segment_bytes));
    }
    if hello.mode != MODE_SNAPSHOT && !(hello.mode == MODE_HOLD && asked_mode == MODE_HOLD) {
        return Err(format!("mode {} granted, mode {asked_mode} asked", hello.mode));
    }
    Ok(())
}

impl Session {
    /// Connects to `path`, attaches in `mode` and maps the hold region and
    /// rings the Hello brings.
    pub fn attach(path: &Path, mode: u32) -> Result<Attached> {
        let socket =
            sys::connect_seqpacket(path).map_err(|source| Error::Connect { path: path.to_path_buf(), source })?;
        let attach = Attach { version: u32::from(VERSION), mode };
        sys::send(&socket, &proto::message(Kind::Attach, &attach.encode()))
            .map_err(|e| Error::Io("sending Attach", e))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut fds = Vec::new();
        let Some(n) = sys::recv(&socket, &mut buf, &mut fds).map_err(|e| Error::Io("receiving Hello", e))? else {
            return Err(protocol("the server closed the socket before its Hello"));
        };
        let (header, payload) = parse(&buf[..n])?;
        if header.kind == Kind::Error {
            return Err(refusal(payload));
        }
        if header.version != VERSION {
            return Err(Error::Refused {
                code: proto::ERR_VERSION,
                text: format!("server speaks version {}, we speak {VERSION}", header.version),
            });
        }
        if header.kind != Kind::Hello {
            return Err(protocol(format!("expected Hello, got {:?}", header.kind)));
        }
        let hello = Hello::decode(payload).ok_or_else(|| protocol("short Hello"))?;
        check_hello(&hello, mode).map_err(|e| protocol(format!("unusable Hello: {e}")))?;
        if fds.len() != 1 + hello.rings as usize {
            return Err(protocol(format!("Hello came with {} descriptors, expected {}", fds.len(), 1 + hello.rings)));
        }
        let mut fds = fds.into_iter();
        let hold_fd = fds.next().ok_or_else(|| protocol("no hold region"))?;
        let hold_region = SharedRegion::map_read_write(hold_fd, HOLD_BYTES)
            .map_err(|e| protocol(format!("cannot map the hold region: {e}")))?;
        let hold = HoldRegion::new(hold_region).map_err(protocol)?;
        let ring_len = proto::ring_bytes(hello.slots as usize);
        let mut rings = Vec::with_capacity(hello.rings as usize);
        for (r, fd) in fds.enumerate() {
            let region =
                SharedRegion::map_read_only(fd, ring_len).map_err(|e| protocol(format!("cannot map ring {r}: {e}")))?;
            rings.push(Ring::new(region, hello.slots).map_err(|e| protocol(format!("ring {r}: {e}")))?);
        }
        Ok(Attached { session: Session { socket, hello }, hold, rings })
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` if none came.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        if !sys::wait_readable(&self.socket, timeout).map_err(|e| Error::Io("polling the socket", e))? {
            return Ok(None);
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut fds = Vec::new();
        let n = match sys::recv(&self.socket, &mut buf, &mut fds) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Some(Event::Closed)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(Some(Event::Closed)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::Io("receiving from the server", e)),
        };
        decode_event(&buf[..n], fds).map(Some)
    }

    /// Asks for a [`Event::Stats`].
    pub fn request_stats(&self) -> Result<()> {
        sys::send(&self.socket, &proto::message(Kind::StatsRequest, &[]))
            .map_err(|e| Error::Io("sending StatsRequest", e))
    }

    /// Ends the session (the server drops our holds); errors are ignored:
    /// the server may be gone already.
    pub fn detach(self) {
        let _ = sys::send(&self.socket, &proto::message(Kind::Detach, &[]));
    }
}

fn parse(msg: &[u8]) -> Result<(Header, &[u8])> {
    proto::parse(msg).ok_or_else(|| protocol("malformed message (magic, kind or length)"))
}

fn refusal(payload: &[u8]) -> Error {
    match ErrorMsg::decode(payload) {
        Some(e) => Error::Refused { code: e.code, text: e.text },
        None => protocol("short Error message"),
    }
}

/// Decodes a message received after the Hello, with its descriptors.
pub fn decode_event(msg: &[u8], fds: Vec<OwnedFd>) -> Result<Event> {
    let (header, payload) = parse(msg)?;
    if header.version != VERSION && header.kind != Kind::Error {
        return Err(protocol(format!("message of version {}", header.version)));
    }
    let one_fd = |fds: Vec<OwnedFd>| -> Result<OwnedFd> {
        let mut it = fds.into_iter();
        match (it.next(), it.next()) {
            (Some(fd), None) => Ok(fd),
            _ => Err(protocol(format!("{:?} message without exactly one descriptor", header.kind))),
        }
    };
    match header.kind {
        Kind::Segment => {
            let msg = SegmentMsg::decode(payload).ok_or_else(|| protocol("short Segment message"))?;
            Ok(Event::Segment(msg, one_fd(fds)?))
        }
        Kind::Released => {
            Ok(Event::Released(Released::decode(payload).ok_or_else(|| protocol("short Released message"))?))
        }
        Kind::Stats => {
            Ok(Event::Stats { text: String::from_utf8_lossy(payload).into_owned(), occupancy: one_fd(fds)? })
        }
        Kind::Error => Err(refusal(payload)),
        kind => Err(protocol(format!("unexpected {kind:?} message from the server"))),
    }
}
