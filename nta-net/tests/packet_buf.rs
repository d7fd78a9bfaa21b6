//! `PacketBuf` against a real pool: `BufMut` users, trimming, headroom,
//! splitting, freezing, and frees from other threads, checked through the
//! pool's statistics.

use std::sync::mpsc;

use bytes::{BufMut, Bytes};
use nta_core::Pool;
use nta_net::{is_pool_exhausted, PacketBuf, PoolExhausted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pool() -> Pool {
    Pool::builder().capacity(64 << 20).checked(true).build().unwrap()
}

/// Bytes in use once remote frees are drained.
fn in_use(pool: &Pool) -> u64 {
    pool.collect();
    pool.stats().in_use_bytes
}

#[test]
fn chained_puts_fill_it() {
    let pool = pool();
    let mut buf = PacketBuf::with_capacity(&pool, 64);
    assert_eq!(buf.len(), 0);
    assert!(buf.capacity() >= 64);
    buf.put_u8(1);
    buf.put_u16(0x0203);
    buf.put_u32_le(0x0706_0504);
    buf.put_slice(b"hello");
    buf.put_bytes(b'z', 3);
    assert_eq!(&buf[..], b"\x01\x02\x03\x04\x05\x06\x07hellozzz");
    buf[0] = 9;
    assert_eq!(buf[0], 9);
    assert_eq!(buf.remaining_mut(), buf.capacity() - buf.len());
    pool.validate().unwrap();
}

#[test]
fn tokio_read_buf_fills_it() {
    let pool = pool();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut writer, mut reader) = tokio::io::duplex(1 << 16);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        writer.write_all(&data).await.unwrap();
        drop(writer);
        let mut buf = PacketBuf::with_capacity(&pool, 8192);
        while reader.read_buf(&mut buf).await.unwrap() != 0 {}
        assert_eq!(&buf[..], &data[..]);
        buf.trim();
        assert_eq!(buf.capacity(), buf.len());
    });
}

#[test]
fn trim_gives_memory_back() {
    let pool = pool();
    let base = in_use(&pool);
    let mut buf = PacketBuf::with_capacity(&pool, 64 << 10);
    assert!(in_use(&pool) - base >= 64 << 10);
    buf.put_slice(&[7u8; 100]);
    buf.trim();
    assert_eq!(buf.capacity(), 100);
    assert_eq!(&buf[..], &[7u8; 100][..]);
    let held = in_use(&pool) - base;
    assert!(held <= 128, "a trimmed 100-byte buffer still holds {held} bytes");
    drop(buf);
    assert_eq!(in_use(&pool), base);
    pool.validate().unwrap();
}

#[test]
fn headroom_takes_a_header_without_moving_data() {
    let pool = pool();
    let mut buf = PacketBuf::with_headroom(&pool, 16, 100);
    assert_eq!(buf.headroom(), 16);
    buf.put_slice(b"payload");
    let data_ptr = buf[..].as_ptr();
    buf.prepend(b"HDR:");
    assert_eq!(&buf[..], b"HDR:payload");
    // SAFETY: both pointers are inside the same chunk.
    assert_eq!(unsafe { data_ptr.offset_from(buf.as_ptr()) }, 4);
    assert_eq!(buf.headroom(), 12);
    assert!(!buf.try_prepend(&[0; 13]));
    buf.advance(4);
    assert_eq!(&buf[..], b"payload");
    assert_eq!(buf.headroom(), 16);
    buf.truncate(3);
    assert_eq!(&buf[..], b"pay");
}

#[test]
fn split_to_on_both_sides() {
    let pool = pool();
    let base = in_use(&pool);
    let data: Vec<u8> = (0..100u8).collect();
    for at in [0, 10, 50, 80, 100] {
        let mut buf = PacketBuf::try_copy_from_slice(&pool, &data).unwrap();
        let front = buf.split_to(at);
        assert_eq!(&front[..], &data[..at], "front at {at}");
        assert_eq!(&buf[..], &data[at..], "back at {at}");
    }
    assert_eq!(in_use(&pool), base);
    pool.validate().unwrap();
}

#[test]
fn freeze_clones_and_drops_across_threads_return_every_chunk() {
    let pool = pool();
    let base = in_use(&pool);
    let (to_a, from_main_a) = mpsc::channel::<Bytes>();
    let (to_b, from_main_b) = mpsc::channel::<Bytes>();
    let a = std::thread::spawn(move || from_main_a.iter().map(|b| b.len()).sum::<usize>());
    let b = std::thread::spawn(move || from_main_b.iter().map(|b| b.len()).sum::<usize>());
    let mut kept = Vec::new();
    let mut total = 0;
    for i in 0..500usize {
        let mut buf = PacketBuf::with_capacity(&pool, 2048);
        buf.put_bytes(i as u8, 1 + i % 1500);
        buf.trim();
        let frozen = buf.freeze();
        total += frozen.len();
        assert!(frozen.iter().all(|&x| x == i as u8));
        to_a.send(frozen.clone()).unwrap();
        to_b.send(frozen.slice(1..)).unwrap();
        if i % 3 == 0 {
            kept.push(frozen);
        }
    }
    drop((to_a, to_b));
    assert_eq!(a.join().unwrap(), total);
    assert_eq!(b.join().unwrap(), total - 500);
    assert!(in_use(&pool) > base, "kept clones still hold their chunks");
    drop(kept);
    assert_eq!(in_use(&pool), base);
    pool.validate().unwrap();
}

#[test]
fn drop_on_another_thread_returns_the_chunk() {
    let pool = pool();
    let base = in_use(&pool);
    let bufs: Vec<PacketBuf> = (0..100).map(|_| PacketBuf::with_capacity(&pool, 4096)).collect();
    std::thread::spawn(move || drop(bufs)).join().unwrap();
    assert_eq!(in_use(&pool), base);
}

#[test]
fn exhaustion_is_an_error_not_an_abort() {
    let pool = Pool::builder().capacity(2 << 20).shards(1).build().unwrap();
    let mut held = Vec::new();
    let err = loop {
        match PacketBuf::try_with_capacity(&pool, 64 << 10) {
            Ok(buf) => held.push(buf),
            Err(e) => break e,
        }
    };
    assert!(!held.is_empty());
    assert_eq!(err, PoolExhausted { requested_bytes: 64 << 10 });
    assert!(is_pool_exhausted(&std::io::Error::from(err)));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        PacketBuf::with_capacity(&pool, 64 << 10);
    }));
    assert!(panicked.is_err(), "the infallible constructor panics (it does not abort)");
    held.pop();
    assert!(PacketBuf::try_with_capacity(&pool, 64 << 10).is_ok(), "a freed chunk is reused");
}

#[test]
fn buffers_of_a_leaked_pool_work_the_same_and_return_every_chunk() {
    let pool: &'static Pool = pool().leak();
    let mut kept = Vec::new();
    for i in 0..1000usize {
        let mut buf = PacketBuf::with_capacity(pool, 64 + i);
        buf.put_slice(&vec![i as u8; 64 + i]);
        assert!(buf.pool().is_leaked());
        if i % 3 == 0 {
            kept.push(buf.freeze());
        } else if i % 3 == 1 {
            buf.trim();
        }
    }
    assert!(in_use(pool) > 0);
    // Dropped on another thread: remote frees through uncounted handles.
    std::thread::spawn(move || {
        assert!(kept.iter().enumerate().all(|(k, b)| b.iter().all(|&x| x == (3 * k) as u8)));
        drop(kept)
    })
    .join()
    .unwrap();
    assert_eq!(in_use(pool), 0);
    pool.validate().unwrap();
}
