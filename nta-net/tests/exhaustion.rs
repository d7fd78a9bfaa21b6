//! Pool exhaustion on the receive path: the receive fails with an error the
//! caller can tell apart (`is_pool_exhausted`), the data stays in the socket,
//! connections are closed (epoll, tokio) or backpressured (io_uring), and the
//! process goes on. Once buffers return, traffic flows again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nta_core::Pool;
use nta_net::{is_pool_exhausted, Backend, Counters, DriverConfig, EchoServer, PacketBuf, Transport};

fn tiny_pool() -> Pool {
    Pool::builder().capacity(2 << 20).shards(1).build().unwrap()
}

/// Takes every byte of `pool`.
fn exhaust(pool: &Pool) -> Vec<PacketBuf> {
    let mut held = Vec::new();
    for size in [4096, 32] {
        while let Ok(buf) = PacketBuf::try_with_capacity(pool, size) {
            held.push(buf);
        }
    }
    assert!(PacketBuf::try_with_capacity(pool, 1).is_err());
    held
}

fn small_bufs() -> DriverConfig {
    DriverConfig { rx_buf_bytes: 16 << 10, ring_entries: 8, ..DriverConfig::default() }
}

#[test]
fn udp_recv_without_a_buffer_fails_and_keeps_the_datagram() {
    let pool = tiny_pool();
    let socket = nta_net::socket::udp_bind(localhost()).unwrap();
    let addr = nta_net::socket::local_addr(&socket).unwrap();
    let client = UdpSocket::bind(localhost()).unwrap();
    client.send_to(b"hello", addr).unwrap();
    let held = exhaust(&pool);
    let err = nta_net::epoll::io::recv_from(&socket, &pool, 65_507).unwrap_err();
    assert!(is_pool_exhausted(&err), "{err}");
    drop(held);
    let (buf, peer) = nta_net::epoll::io::recv_from(&socket, &pool, 65_507).unwrap();
    assert_eq!(&buf[..], b"hello");
    assert_eq!(peer, client.local_addr().unwrap());
}

#[test]
fn tokio_read_without_a_buffer_fails() {
    let pool = tiny_pool();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut writer, mut reader) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"data").await.unwrap();
        let held = exhaust(&pool);
        let err = nta_net::async_io::read_packet(&mut reader, &pool, 1024).await.unwrap_err();
        assert!(is_pool_exhausted(&err), "{err}");
        drop(held);
        let buf = nta_net::async_io::read_packet(&mut reader, &pool, 1024).await.unwrap();
        assert_eq!(&buf[..], b"data");
    });
}

/// epoll and tokio close a connection that cannot get a receive buffer.
#[test]
fn tcp_connection_without_a_buffer_is_closed_and_the_server_goes_on() {
    for backend in [Backend::Epoll, Backend::Tokio] {
        let pool = tiny_pool();
        let server = EchoServer::spawn(backend, Transport::Tcp, localhost(), pool.clone(), small_bufs()).unwrap();
        let held = exhaust(&pool);
        let mut stream = TcpStream::connect_timeout(&server.local_addr(), IO_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(b"no buffer for this").unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("{backend}: expected the connection closed, got {other:?}"),
        }
        assert!(Counters::get(&server.counters().closed_no_buffer) >= 1, "{backend}");
        drop(held);
        tcp_echo_round_trip(server.local_addr(), 3, &[1, 1000, 16 << 10]);
        server.stop().unwrap();
    }
}

/// io_uring backpressures instead: the ring is empty, the receive waits
/// parked, and the echo arrives once buffers return.
#[test]
fn uring_backpressures_until_buffers_return() {
    let pool = tiny_pool();
    let held = exhaust(&pool);
    let stop = Arc::new(AtomicBool::new(false));

    let tcp = nta_net::uring::TcpDriver::bind(localhost(), pool.clone(), nta_net::Echo, small_bufs()).unwrap();
    let udp = nta_net::uring::UdpDriver::bind(localhost(), pool.clone(), nta_net::Echo, small_bufs()).unwrap();
    let (tcp_addr, udp_addr) = (tcp.endpoint().local_addr(), udp.endpoint().local_addr());
    let (tcp_counters, udp_counters) = (tcp.endpoint().counters_handle(), udp.endpoint().counters_handle());
    let threads = [
        std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || tcp.run(&stop)
        }),
        std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || udp.run(&stop)
        }),
    ];

    let mut stream = TcpStream::connect_timeout(&tcp_addr, IO_TIMEOUT).unwrap();
    stream.write_all(b"waiting for a buffer").unwrap();
    let client = UdpSocket::bind(localhost()).unwrap();
    client.send_to(b"ping", udp_addr).unwrap();

    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut echo = [0u8; 64];
    let err = stream.read(&mut echo).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
    assert!(client.recv(&mut echo).is_err(), "no buffer, no echo");

    drop(held);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tcp_echo = [0u8; 20];
    stream.read_exact(&mut tcp_echo).unwrap();
    assert_eq!(&tcp_echo, b"waiting for a buffer");
    let n = client.recv(&mut echo).unwrap();
    assert_eq!(&echo[..n], b"ping");
    assert!(Counters::get(&udp_counters.ring_empty) >= 1);
    assert!(Counters::get(&udp_counters.alloc_failures) >= 1, "refills failed while the pool was exhausted");
    assert!(Counters::get(&tcp_counters.alloc_failures) >= 1, "refills failed while the pool was exhausted");
    assert!(Counters::get(&tcp_counters.rx_buffers) >= 1);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0);
}
