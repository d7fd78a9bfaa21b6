//! `Endpoint`: what every driver knows of itself from the moment its socket
//! is bound: the address it is bound to, and the counters it keeps while it
//! runs. One type for every driver and for [`crate::Server`], so that the
//! address and counter plumbing is written once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Socket;

use crate::{socket, Counters};

/// A bound driver's address and counters.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub(crate) local: SocketAddr,
    pub(crate) counters: Arc<Counters>,
}

impl Endpoint {
    /// The endpoint of `socket`, a bound socket, with fresh counters.
    pub(crate) fn of(socket: &Socket) -> io::Result<Endpoint> {
        Ok(Endpoint { local: socket::local_addr(socket)?, counters: Arc::default() })
    }

    /// The address clients talk to.
    #[inline]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters, readable while the driver runs.
    #[inline]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A handle on the counters that outlives the driver.
    pub fn counters_handle(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}
