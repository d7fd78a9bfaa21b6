//! Every backend's echo servers with heap buffers (the baseline source), so
//! backend bugs show apart from pool bugs.

mod common;

use common::*;
use nta_net::{Backend, DriverConfig, EchoServer, HeapSource, Transport};

#[test]
fn tcp_echo_random_sizes_every_backend() {
    for backend in Backend::ALL {
        let server =
            EchoServer::spawn(backend, Transport::Tcp, localhost(), HeapSource, DriverConfig::default()).unwrap();
        tcp_echo_round_trip(server.local_addr(), 7, &sizes(7, 40, 64 << 10));
        tcp_concurrent(server.local_addr(), 16, 8, 16 << 10);
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

#[test]
fn udp_echo_random_sizes_every_backend() {
    for backend in Backend::ALL {
        let server =
            EchoServer::spawn(backend, Transport::Udp, localhost(), HeapSource, DriverConfig::default()).unwrap();
        udp_echo_round_trip(server.local_addr(), 9, &sizes(9, 40, 64 << 10));
        udp_concurrent(server.local_addr(), 8, 20, 8 << 10);
        server.stop().unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}
