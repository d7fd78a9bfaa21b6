//! A UDP load generator for loopback measurements: keeps a window of
//! datagrams in flight against an echo server and counts echoes per second.
//!
//! Closed loop: each echo received lets one more datagram go, so the server,
//! not the client's send rate, sets the pace. Datagrams lost on loopback
//! (socket buffer overflow) are replaced after a short receive timeout, so a
//! loss costs time, not the run. Bounded by `duration`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Result of one load run.
#[derive(Clone, Copy, Debug)]
pub struct UdpLoad {
    /// Echoes received.
    pub echoes: u64,
    /// Times the window was refilled after a receive timeout.
    pub stalls: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl UdpLoad {
    /// Echoed datagrams per second.
    pub fn packets_per_second(&self) -> f64 {
        self.echoes as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs a closed loop of `window` datagrams of `payload_bytes` against the
/// echo server at `server` for `duration`, from 127.0.0.1.
pub fn udp_echo_load(
    server: SocketAddr,
    payload_bytes: usize,
    window: usize,
    duration: Duration,
) -> io::Result<UdpLoad> {
    let socket = UdpSocket::bind(SocketAddr::new(server.ip(), 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    let payload = vec![0x5a_u8; payload_bytes];
    let mut echo = vec![0u8; payload_bytes.max(1) + 1];
    let window = window.max(1);
    let start = Instant::now();
    let deadline = start + duration;
    let mut load = UdpLoad { echoes: 0, stalls: 0, elapsed: Duration::ZERO };
    for _ in 0..window {
        socket.send(&payload)?;
    }
    while Instant::now() < deadline {
        match socket.recv(&mut echo) {
            Ok(_) => {
                load.echoes += 1;
                socket.send(&payload)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                // Everything in flight was lost: refill the window.
                load.stalls += 1;
                for _ in 0..window {
                    socket.send(&payload)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    load.elapsed = start.elapsed();
    Ok(load)
}
