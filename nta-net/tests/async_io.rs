//! The tokio helpers: reading into pool buffers from `AsyncRead` and from a
//! `UdpSocket`, and writing `Bytes` with vectored writes.

mod common;

use bytes::Bytes;
use common::*;
use nta_core::Pool;
use nta_net::async_io::{read_packet, recv_from, write_all_vectored};
use nta_net::PacketBuf;
use tokio::io::AsyncReadExt;

fn pool() -> Pool {
    Pool::builder().capacity(64 << 20).checked(true).build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn read_packet_from_a_tcp_stream_is_trimmed() {
    let pool = pool();
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let parts: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 100 + usize::from(i)])).collect();
            write_all_vectored(&mut stream, &parts).await.unwrap();
            parts.concat()
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let expected = client.await.unwrap();
        let mut received = Vec::new();
        loop {
            let buf = tokio::time::timeout(IO_TIMEOUT, read_packet(&mut stream, &pool, 1500)).await.unwrap().unwrap();
            if buf.is_empty() {
                break;
            }
            assert_eq!(buf.capacity(), buf.len(), "read_packet trims");
            received.extend_from_slice(&buf);
        }
        assert_eq!(received, expected);
    });
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn recv_from_a_udp_socket_into_a_pool_buffer() {
    let pool = pool();
    runtime().block_on(async {
        let server = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
        let client = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
        for len in [1, 1500, MAX_UDP] {
            let data = payload(len as u64, len);
            client.send_to(&data, server.local_addr().unwrap()).await.unwrap();
            let (buf, peer) =
                tokio::time::timeout(IO_TIMEOUT, recv_from(&server, &pool, MAX_UDP)).await.unwrap().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(&buf[..], &data[..]);
            assert_eq!(buf.capacity(), len);
            assert!(pool.contains(buf.as_ptr()));
        }
    });
}

#[test]
fn frozen_pool_buffers_are_written_vectored() {
    let pool = pool();
    runtime().block_on(async {
        let (mut writer, mut reader) = tokio::io::duplex(1 << 20);
        let frozen: Vec<Bytes> = (0..10u8)
            .map(|i| {
                let mut buf = PacketBuf::with_headroom(&pool, 8, 64);
                bytes::BufMut::put_bytes(&mut buf, i, 64);
                buf.freeze()
            })
            .collect();
        write_all_vectored(&mut writer, &frozen).await.unwrap();
        drop(writer);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, frozen.concat());
    });
}
