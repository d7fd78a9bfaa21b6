//! Every backend's echo servers with NTA pool buffers: random sizes from
//! 1 B to 64 KiB with content checks, many concurrent connections, and
//! every chunk back in the pool once a server stopped.

mod common;

use common::*;
use nta_core::Pool;
use nta_net::{Backend, DriverConfig, EchoServer, Transport};

fn pool() -> Pool {
    Pool::builder().capacity(256 << 20).checked(true).build().unwrap()
}

fn assert_all_returned(pool: &Pool, backend: Backend) {
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0, "{backend}: buffers not returned to the pool");
    pool.validate().unwrap();
}

#[test]
fn tcp_echo_random_sizes_every_backend() {
    for backend in Backend::ALL {
        let pool = pool();
        let server =
            EchoServer::spawn(backend, Transport::Tcp, localhost(), pool.clone(), DriverConfig::default()).unwrap();
        tcp_echo_round_trip(server.local_addr(), 11, &sizes(11, 60, 64 << 10));
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_all_returned(&pool, backend);
    }
}

#[test]
fn tcp_echo_many_connections_every_backend() {
    for backend in Backend::ALL {
        let pool = pool();
        let server =
            EchoServer::spawn(backend, Transport::Tcp, localhost(), pool.clone(), DriverConfig::default()).unwrap();
        tcp_concurrent(server.local_addr(), 64, 6, 32 << 10);
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_all_returned(&pool, backend);
    }
}

#[test]
fn udp_echo_random_sizes_every_backend() {
    for backend in Backend::ALL {
        let pool = pool();
        let server =
            EchoServer::spawn(backend, Transport::Udp, localhost(), pool.clone(), DriverConfig::default()).unwrap();
        udp_echo_round_trip(server.local_addr(), 13, &sizes(13, 60, 64 << 10));
        udp_concurrent(server.local_addr(), 8, 20, 16 << 10);
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_all_returned(&pool, backend);
    }
}

#[test]
fn uring_udp_echo_with_zero_copy_sends() {
    let pool = pool();
    let config = DriverConfig { zero_copy_send: true, ..DriverConfig::default() };
    let server = EchoServer::spawn(Backend::Uring, Transport::Udp, localhost(), pool.clone(), config).unwrap();
    udp_echo_round_trip(server.local_addr(), 17, &sizes(17, 40, 64 << 10));
    udp_concurrent(server.local_addr(), 8, 20, 16 << 10);
    server.stop().unwrap();
    assert_all_returned(&pool, Backend::Uring);
}

#[test]
fn uring_udp_echo_with_zero_copy_sends_from_registered_pool_memory() {
    let pool = Pool::builder().capacity(32 << 20).premap(true).checked(true).build().unwrap();
    // SAFETY: the pool outlives the server.
    let region = unsafe { nta_net::uring::FixedRegion::of_premapped_pool(&pool) }.unwrap();
    let config = DriverConfig { zero_copy_send: true, fixed_region: Some(region), ..DriverConfig::default() };
    let server = EchoServer::spawn(Backend::Uring, Transport::Udp, localhost(), pool.clone(), config).unwrap();
    udp_echo_round_trip(server.local_addr(), 19, &sizes(19, 40, 64 << 10));
    let fixed_sends = nta_net::Counters::get(&server.counters().tx_fixed);
    server.stop().unwrap();
    assert!(fixed_sends >= 40, "every echo went out from the registered region ({fixed_sends})");
    assert_all_returned(&pool, Backend::Uring);
}

#[test]
fn a_pool_that_is_not_premapped_cannot_be_registered() {
    let pool = Pool::builder().capacity(8 << 20).build().unwrap();
    // SAFETY: the region is never registered; the call must fail.
    let err = unsafe { nta_net::uring::FixedRegion::of_premapped_pool(&pool) }.unwrap_err();
    assert!(err.to_string().contains("premap"), "{err}");
}

/// A client that sends a large message and at once shuts down its side: the
/// server finishes echoing (the sends complete after the end of stream) and
/// closes; it neither cuts the echo short nor trips over the connection it
/// has just freed.
#[test]
fn half_close_after_sending_gets_the_whole_echo_every_backend() {
    use std::io::{Read, Write};
    for backend in Backend::ALL {
        let pool = pool();
        let server =
            EchoServer::spawn(backend, Transport::Tcp, localhost(), pool.clone(), DriverConfig::default()).unwrap();
        for round in 0..20u64 {
            let data = payload(round, 256 << 10);
            let stream = std::net::TcpStream::connect_timeout(&server.local_addr(), IO_TIMEOUT).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let to_send = data.clone();
            let sender = std::thread::spawn(move || {
                writer.write_all(&to_send).unwrap();
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut echoed = Vec::new();
            (&stream).read_to_end(&mut echoed).unwrap_or_else(|e| panic!("{backend} round {round}: {e}"));
            sender.join().unwrap();
            assert!(echoed == data, "{backend} round {round}: {} of {} bytes echoed", echoed.len(), data.len());
        }
        assert!(!server.is_finished(), "{backend}: the server died");
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_all_returned(&pool, backend);
    }
}
