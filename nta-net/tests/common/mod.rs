//! Clients shared by the integration tests: bounded in time (socket timeouts
//! everywhere) and in request count, talking to 127.0.0.1 only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use rand::{Rng, SeedableRng};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest UDP payload over IPv4.
pub const MAX_UDP: usize = 65_507;

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Deterministic pseudo-random payload of `len` bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// `count` sizes in 1..=max, always including 1 and max.
pub fn sizes(seed: u64, count: usize, max: usize) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sizes: Vec<usize> = (0..count.saturating_sub(2)).map(|_| rng.gen_range(1..=max)).collect();
    sizes.push(1);
    sizes.push(max);
    sizes
}

/// Sends messages of `sizes` on one connection (from a writer thread) and
/// checks that exactly the same bytes come back.
pub fn tcp_echo_round_trip(server: SocketAddr, seed: u64, sizes: &[usize]) {
    let stream = TcpStream::connect_timeout(&server, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        expected.extend_from_slice(&payload(seed.wrapping_add(i as u64), len));
    }
    let mut writer = stream.try_clone().unwrap();
    let to_send = expected.clone();
    let sizes_owned = sizes.to_vec();
    let writer_thread = std::thread::spawn(move || {
        let mut offset = 0;
        for len in sizes_owned {
            writer.write_all(&to_send[offset..offset + len]).expect("write");
            offset += len;
        }
    });
    let mut echoed = vec![0u8; expected.len()];
    let mut reader = stream;
    reader.read_exact(&mut echoed).expect("read the echo");
    writer_thread.join().unwrap();
    assert!(echoed == expected, "TCP echo differs from what was sent");
    reader.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "server sent more than was echoed");
}

/// Sends one datagram per size and checks each echo (retrying a datagram
/// that loopback dropped, up to 3 times).
pub fn udp_echo_round_trip(server: SocketAddr, seed: u64, sizes: &[usize]) {
    let socket = UdpSocket::bind(localhost()).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.connect(server).unwrap();
    let mut echo = vec![0u8; 65_536];
    for (i, &len) in sizes.iter().enumerate() {
        let sent = payload(seed.wrapping_add(i as u64), len.min(MAX_UDP));
        let mut ok = false;
        for _attempt in 0..3 {
            socket.send(&sent).expect("send datagram");
            match socket.recv(&mut echo) {
                Ok(n) => {
                    assert_eq!(n, sent.len(), "echoed datagram has the wrong size");
                    assert!(echo[..n] == sent[..], "echoed datagram differs");
                    ok = true;
                    break;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert!(ok, "no echo for a datagram of {len} bytes after 3 tries");
    }
}

/// Runs `clients` TCP round trips at once.
pub fn tcp_concurrent(server: SocketAddr, clients: usize, sizes_per_client: usize, max: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let seed = 1000 + c as u64;
                tcp_echo_round_trip(server, seed, &sizes(seed, sizes_per_client, max));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client failed");
    }
}

/// Runs `clients` UDP round trips at once.
pub fn udp_concurrent(server: SocketAddr, clients: usize, sizes_per_client: usize, max: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let seed = 2000 + c as u64;
                udp_echo_round_trip(server, seed, &sizes(seed, sizes_per_client, max));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client failed");
    }
}
