//! The epoll backend's socket helpers: receives into trimmed pool buffers,
//! vectored sends of `PacketBuf`s and `Bytes`.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};

use bytes::Bytes;
use common::*;
use nta_core::Pool;
use nta_net::epoll::io::{recv, recv_from, send_to_vectored, send_vectored};
use nta_net::PacketBuf;
use socket2::Socket;

fn pool() -> Pool {
    Pool::builder().capacity(64 << 20).checked(true).build().unwrap()
}

#[test]
fn udp_receive_buffers_fit_exactly() {
    let pool = pool();
    let socket = nta_net::socket::udp_bind(localhost()).unwrap();
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let addr = nta_net::socket::local_addr(&socket).unwrap();
    let client = UdpSocket::bind(localhost()).unwrap();
    let base = {
        pool.collect();
        pool.stats().in_use_bytes
    };
    let mut kept = Vec::new();
    for len in [1, 33, 1472, 9000, MAX_UDP] {
        let data = payload(len as u64, len);
        client.send_to(&data, addr).unwrap();
        let (buf, peer) = recv_from(&socket, &pool, MAX_UDP).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(&buf[..], &data[..]);
        assert_eq!(buf.capacity(), len, "trimmed to the datagram");
        kept.push(buf);
    }
    pool.collect();
    let held = pool.stats().in_use_bytes - base;
    let exact: u64 = [1u64, 33, 1472, 9000, MAX_UDP as u64].iter().map(|l| l.div_ceil(32) * 32).sum();
    assert_eq!(held, exact, "the pool holds exactly the granule-rounded datagrams");
}

#[test]
fn vectored_sends_of_pool_buffers_and_bytes() {
    let pool = pool();
    // UDP: one datagram from three buffers.
    let socket = nta_net::socket::udp_bind(localhost()).unwrap();
    let receiver = UdpSocket::bind(localhost()).unwrap();
    receiver.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let parts: Vec<PacketBuf> =
        [&b"head"[..], b"-body-", b"tail"].iter().map(|p| PacketBuf::try_copy_from_slice(&pool, p).unwrap()).collect();
    send_to_vectored(&socket, &parts, receiver.local_addr().unwrap()).unwrap();
    let mut datagram = [0u8; 64];
    let n = receiver.recv(&mut datagram).unwrap();
    assert_eq!(&datagram[..n], b"head-body-tail");

    // TCP: frozen buffers, with an offset into the first.
    let listener = TcpListener::bind(localhost()).unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let stream = Socket::from(stream);
    let frozen: Vec<Bytes> = parts.into_iter().map(PacketBuf::freeze).collect();
    let sent = send_vectored(&stream, &frozen, 2).unwrap();
    assert_eq!(sent, 12);
    drop(stream);
    let mut all = Vec::new();
    peer.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"ad-body-tail");

    // A stream read is trimmed too; end of stream is an empty buffer.
    let listener = TcpListener::bind(localhost()).unwrap();
    let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (reader, _) = listener.accept().unwrap();
    reader.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut writer, b"stream bytes").unwrap();
    drop(writer);
    let reader = Socket::from(reader);
    let buf = recv(&reader, &pool, 4096).unwrap();
    assert_eq!(&buf[..], b"stream bytes");
    assert_eq!(buf.capacity(), 12);
    assert!(recv(&reader, &pool, 4096).unwrap().is_empty());
}
