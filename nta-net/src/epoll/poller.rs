//! A minimal level-triggered epoll instance: register a file descriptor with
//! a `u64` token, wait for ready tokens. All calls go through [`crate::sys`].

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use crate::sys;

/// Readable interest.
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable interest.
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Hang-up or error, always reported. (No `EPOLLRDHUP`: a peer's FIN shows
/// as readable with a 0-byte read, and a level-triggered RDHUP would wake a
/// connection that only waits to write, over and over.)
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// An epoll instance plus its event array.
#[derive(Debug)]
pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

/// One ready event: the token given at registration and the ready bits.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The registration token.
    pub token: u64,
    /// `READABLE`, `WRITABLE`, `HANGUP` bits.
    pub events: u32,
}

impl Poller {
    /// A new instance reporting up to `max_events` per wait.
    pub fn new(max_events: usize) -> io::Result<Poller> {
        Ok(Poller {
            epoll: sys::epoll_create()?,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    /// Starts watching `fd` for `interest`.
    pub fn add(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, interest | HANGUP, token)
    }

    /// Changes the interest of `fd`.
    pub fn modify(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, interest | HANGUP, token)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` and calls `on_ready` for each ready fd.
    pub fn wait(&mut self, timeout_ms: i32, mut on_ready: impl FnMut(Ready)) -> io::Result<usize> {
        let n = sys::epoll_wait(self.epoll.as_fd(), &mut self.events, timeout_ms)?;
        for event in &self.events[..n] {
            on_ready(Ready { token: event.u64, events: event.events });
        }
        Ok(n)
    }
}
