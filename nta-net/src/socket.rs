//! Socket setup shared by the backends, on `socket2`: non-blocking sockets
//! bound to an address, with the options an echo or packet server wants
//! (address reuse, large socket buffers, no Nagle delay on TCP).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket buffer size asked for on UDP sockets, so bursts of datagrams wait
/// in the kernel instead of being dropped. The kernel caps it at
/// `net.core.rmem_max`/`wmem_max`; a smaller grant is fine.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Largest UDP payload over IPv4 (65535 - 8 - 20); a receive buffer of this
/// size never truncates a datagram.
pub const MAX_UDP_PAYLOAD_BYTES: usize = 65_507;

/// A non-blocking UDP socket bound to `addr` (port 0 picks a free one).
pub fn udp_bind(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: a smaller grant only means earlier drops under load.
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Connections the kernel queues for `accept` per listener.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener bound to `addr` (port 0 picks a free one).
pub fn tcp_listen(addr: SocketAddr) -> io::Result<Socket> {
    tcp_listen_with(addr, false)
}

/// A non-blocking TCP listener bound to `addr`; with `reuse_port`, several
/// listeners (one per worker thread) may bind the same address and the
/// kernel spreads connections over them (`SO_REUSEPORT`).
pub fn tcp_listen_with(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// True for the `accept` errors that say the process or the kernel is out
/// of a resource (file descriptors, memory). The pending connection stays
/// queued, so the listener stays readable: retrying at once would spin, so
/// the drivers pause accepting for `accept_backoff_ms` instead.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Options for an accepted TCP connection: non-blocking, no Nagle delay.
pub fn tcp_accepted(socket: &Socket) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)
}

/// The bound address of `socket` as a std `SocketAddr`.
pub fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket.local_addr()?.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}

/// The peer address of a connected `socket`.
pub fn peer_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket.peer_addr()?.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}
