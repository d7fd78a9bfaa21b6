//! The io_uring backend survives its provided-buffer ring running dry:
//! multishot receives end with ENOBUFS, are counted, and re-armed after a
//! refill, and every byte still comes back.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nta_net::{uring, BufSource, Counters, DriverConfig, HeapSource};

fn tiny_ring() -> DriverConfig {
    DriverConfig { ring_entries: 2, ..DriverConfig::default() }
}

/// Datagrams queued before the server starts: the first multishot recvmsg
/// drains the 2-entry ring at once.
pub fn udp_survives_dry_ring<S: BufSource>(source: S) {
    let server = uring::UdpDriver::bind(localhost(), source, nta_net::Echo, tiny_ring()).unwrap();
    let addr = server.endpoint().local_addr();
    let counters = server.endpoint().counters_handle();
    let client = UdpSocket::bind(localhost()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = socket2::SockRef::from(&client).set_recv_buffer_size(4 << 20);
    const DATAGRAMS: usize = 200;
    for i in 0..DATAGRAMS {
        client.send_to(&payload(i as u64, 100 + i), addr).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || server.run(&flag));
    let mut seen = [false; DATAGRAMS];
    let mut buf = vec![0u8; 2048];
    for _ in 0..DATAGRAMS {
        let (n, _) = client.recv_from(&mut buf).expect("an echo for every datagram");
        let i = n - 100;
        assert!(buf[..n] == payload(i as u64, n)[..], "echo {i} differs");
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap().unwrap();
    assert!(Counters::get(&counters.ring_empty) > 0, "the ring never ran dry");
    assert!(Counters::get(&counters.rearmed) > 0, "the receive was never re-armed");
}

/// Connections that all have data waiting when the server starts: more
/// connections than ring buffers.
pub fn tcp_survives_dry_ring<S: BufSource>(source: S) {
    let server = uring::TcpDriver::bind(localhost(), source, nta_net::Echo, tiny_ring()).unwrap();
    let addr = server.endpoint().local_addr();
    let counters = server.endpoint().counters_handle();
    const CLIENTS: usize = 16;
    const BYTES: usize = 40_000;
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|c| {
            let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.write_all(&payload(c as u64, BYTES)).unwrap();
            stream
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || server.run(&flag));
    for (c, stream) in clients.iter_mut().enumerate() {
        let mut echoed = vec![0u8; BYTES];
        stream.read_exact(&mut echoed).unwrap();
        assert!(echoed == payload(c as u64, BYTES), "client {c}: echo differs");
    }
    drop(clients);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap().unwrap();
    assert!(Counters::get(&counters.ring_empty) > 0, "the ring never ran dry");
}

#[test]
fn udp_heap_survives_dry_ring() {
    udp_survives_dry_ring(HeapSource);
}

#[test]
fn tcp_heap_survives_dry_ring() {
    tcp_survives_dry_ring(HeapSource);
}

fn pool() -> nta_core::Pool {
    nta_core::Pool::builder().capacity(64 << 20).checked(true).build().unwrap()
}

#[test]
fn udp_pool_survives_dry_ring() {
    let pool = pool();
    udp_survives_dry_ring(pool.clone());
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn tcp_pool_survives_dry_ring() {
    let pool = pool();
    tcp_survives_dry_ring(pool.clone());
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

/// Many connections, a 4-entry ring and a small pool: receives keep running
/// dry and getting re-armed, and every byte still comes back.
#[test]
fn tcp_many_connections_tiny_ring_small_pool() {
    let pool = nta_core::Pool::builder().capacity(8 << 20).shards(1).checked(true).build().unwrap();
    let config = DriverConfig { ring_entries: 4, rx_buf_bytes: 16 << 10, ..DriverConfig::default() };
    let server =
        nta_net::EchoServer::spawn(nta_net::Backend::Uring, nta_net::Transport::Tcp, localhost(), pool.clone(), config)
            .unwrap();
    tcp_concurrent(server.local_addr(), 24, 12, 48 << 10);
    let ring_empty = Counters::get(&server.counters().ring_empty);
    server.stop().unwrap();
    assert!(ring_empty > 0, "the ring never ran dry");
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0);
    pool.validate().unwrap();
}
