//! The published-buffer hook: with a subscriber attached, every backend
//! hands it each rx and tx buffer with the right flow; without one, nothing
//! is built.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use nta_net::hook::{self, Subscriber};
use nta_net::{Backend, Direction, EchoConfig, EchoServer, Flow, HeapSource, Protocol, Transport};
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
            let server = EchoServer::spawn(backend, transport, localhost(), HeapSource, EchoConfig::default()).unwrap();
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
    drop(subscription);
    assert!(!hook::is_active());
    let mut built = false;
    hook::publish(
        || {
            built = true;
            Flow::new(localhost(), localhost(), Protocol::Udp, Direction::Rx)
        },
        b"x",
    );
    assert!(!built, "the flow was built with no subscriber");
}
