//! The published-buffer hook: with a subscriber attached, every backend
//! hands it each rx and tx buffer with the right flow; without one, nothing
//! is built.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use nta_net::hook::{self, Subscriber};
use nta_net::{Backend, Direction, DriverConfig, EchoServer, Flow, HeapSource, Protocol, Transport};
use parking_lot::Mutex;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Flow, Vec<u8>)>>,
}

impl Subscriber for Recorder {
    fn on_buffer(&self, flow: &Flow, data: &[u8]) {
        self.seen.lock().push((*flow, data.to_vec()));
    }
}

impl Recorder {
    fn for_server(&self, server: SocketAddr) -> Vec<(Flow, Vec<u8>)> {
        self.seen.lock().iter().filter(|(flow, _)| flow.local == server).cloned().collect()
    }
}

#[test]
fn hook_sees_rx_and_tx_of_every_backend() {
    let recorder = Arc::new(Recorder::default());
    let subscription = hook::subscribe(recorder.clone());
    assert!(hook::is_active());
    for backend in Backend::ALL {
        for transport in [Transport::Udp, Transport::Tcp] {
            let server =
                EchoServer::spawn(backend, transport, localhost(), HeapSource, DriverConfig::default()).unwrap();
            let addr = server.local_addr();
            let data = payload(5, 777);
            match transport {
                Transport::Udp => udp_echo_round_trip(addr, 5, &[777]),
                Transport::Tcp => tcp_echo_round_trip(addr, 5, &[777]),
            }
            server.stop().unwrap();
            let seen = recorder.for_server(addr);
            let protocol = match transport {
                Transport::Udp => Protocol::Udp,
                Transport::Tcp => Protocol::Tcp,
            };
            for direction in [Direction::Rx, Direction::Tx] {
                let bytes: Vec<u8> = seen
                    .iter()
                    .filter(|(flow, _)| flow.direction == direction)
                    .flat_map(|(flow, bytes)| {
                        assert_eq!(flow.protocol, protocol, "{backend}");
                        assert_eq!(flow.peer.ip(), addr.ip(), "{backend}");
                        assert_ne!(flow.peer.port(), addr.port(), "{backend}");
                        bytes.clone()
                    })
                    .collect();
                assert_eq!(bytes, data, "{backend} {transport:?} {direction:?}");
            }
        }
    }
    pool_buffers_are_published_in_place();
    drop(subscription);
    assert!(!hook::is_active());
    let mut built = false;
    hook::publish(
        || {
            built = true;
            Flow::new(localhost(), localhost(), Protocol::Udp, Direction::Rx)
        },
        b"x",
        None,
    );
    assert!(!built, "the flow was built with no subscriber");
}

/// Counts published buffers of one server whose bytes lie in the pool.
struct InPool {
    pool: nta_core::Pool,
    server: SocketAddr,
    in_pool: AtomicUsize,
    elsewhere: AtomicUsize,
}

impl Subscriber for InPool {
    fn on_buffer(&self, flow: &Flow, data: &[u8]) {
        if flow.local != self.server {
            return;
        }
        let counter = if self.pool.contains(data.as_ptr()) { &self.in_pool } else { &self.elsewhere };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// With pool buffers, what a subscriber sees is the pool chunk itself (so a
/// sniffer can export its offset), on every backend.
fn pool_buffers_are_published_in_place() {
    for backend in Backend::ALL {
        for transport in [Transport::Udp, Transport::Tcp] {
            let pool = nta_core::Pool::builder().capacity(64 << 20).build().unwrap();
            let server =
                EchoServer::spawn(backend, transport, localhost(), pool.clone(), DriverConfig::default()).unwrap();
            let checker = Arc::new(InPool {
                pool,
                server: server.local_addr(),
                in_pool: AtomicUsize::new(0),
                elsewhere: AtomicUsize::new(0),
            });
            let subscription = hook::subscribe(checker.clone());
            match transport {
                Transport::Udp => udp_echo_round_trip(server.local_addr(), 8, &[100, 2000]),
                Transport::Tcp => tcp_echo_round_trip(server.local_addr(), 8, &[100, 2000]),
            }
            server.stop().unwrap();
            drop(subscription);
            assert!(checker.in_pool.load(Ordering::Relaxed) >= 2, "{backend} {transport:?}");
            assert_eq!(checker.elsewhere.load(Ordering::Relaxed), 0, "{backend} {transport:?}");
        }
    }
}
