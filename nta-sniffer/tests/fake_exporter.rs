//! End to end against a fake exporter (tests/common): the real binary
//! attaches over a Unix socket, maps memfds, reads descriptors and writes
//! a pcap, which is then parsed with pcap-file and etherparse (and tshark,
//! when installed).

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use nta_net::export::proto::*;

const LIMIT: Duration = Duration::from_secs(30);

fn requests(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("GET /item/{i} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fake\r\n\r\n").into_bytes())
        .collect()
}

/// Serves `payloads` as rx descriptors on one connection each, after the
/// reader attached; returns the connection.
fn serve(server: &FakeServer, mode: u32, payloads: &[Vec<u8>]) -> Conn {
    let mut conn = server.accept();
    let attach = conn.read_attach();
    assert_eq!(attach.version, u32::from(VERSION));
    conn.hello(2, 64, mode, 2000);
    conn.add_segment(3, 7);
    let mut offset = 0usize;
    for (i, p) in payloads.iter().enumerate() {
        conn.write_bytes(3, offset, p);
        let mut d = tcp_descriptor(3, 7, offset as u32, p.len() as u32, false, 0, 40000 + i as u16);
        if mode == MODE_HOLD {
            d.flags |= FLAG_HELD;
        }
        conn.rings[i % 2].publish(d);
        // Odd offsets too: the reader sums each payload as it copies it
        // by aligned 8-byte words, from any start (read_pcap checks sums).
        offset += p.len().next_multiple_of(64) + 3;
    }
    conn
}

#[test]
fn capture_writes_every_request_to_a_pcap_that_reparses() {
    let dir = Scratch::new("capture");
    let server = FakeServer::bind(&dir.path("sock"));
    let pcap = dir.path("out.pcap");
    let reqs = requests(20);
    let child = spawn(&[
        "capture",
        "--socket",
        server.path.to_str().unwrap(),
        "--count",
        "20",
        "--write",
        pcap.to_str().unwrap(),
        "--duration",
        "20",
    ]);
    let _conn = serve(&server, MODE_SNAPSHOT, &reqs);
    let out = wait(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("count reached"), "{stderr}");
    let packets: Vec<_> = read_pcap(&pcap).into_iter().filter(|(_, _, p)| !p.is_empty()).collect();
    assert_eq!(packets.len(), 20, "{stderr}");
    for (sp, dp, payload) in &packets {
        let i = (sp - 40000) as usize;
        assert_eq!(*dp, 80);
        assert_eq!(payload, &reqs[i]);
    }
    tshark_lists_every_request(&pcap, 20);
}

fn tshark_lists_every_request(pcap: &std::path::Path, n: usize) {
    let Ok(out) = std::process::Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"])
        .output()
    else {
        println!("SKIPPED the tshark check: tshark is not installed (apt-get install -y tshark)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut uris: Vec<&str> = text.lines().collect();
    uris.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("/item/{i}")).collect();
    want.sort();
    assert_eq!(uris, want, "tshark -Y http.request");
    println!("tshark -Y http.request listed all {n} requests");
}

#[test]
fn hold_mode_advances_the_consumer_index_and_beats() {
    let dir = Scratch::new("hold");
    let server = FakeServer::bind(&dir.path("sock"));
    let reqs = requests(6);
    let child =
        spawn(&["capture", "--socket", server.path.to_str().unwrap(), "--count", "6", "--hold", "--duration", "20"]);
    let conn = serve(&server, MODE_HOLD, &reqs);
    let out = wait(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("hold mode"), "{stderr}");
    assert_eq!(conn.consumer(0), 3);
    assert_eq!(conn.consumer(1), 3);
    assert!(conn.heartbeat() >= 1);
}

#[test]
fn garbage_descriptors_are_counted_and_skipped() {
    let dir = Scratch::new("garbage");
    let server = FakeServer::bind(&dir.path("sock"));
    let pcap = dir.path("out.pcap");
    let child = spawn(&[
        "capture",
        "--socket",
        server.path.to_str().unwrap(),
        "--count",
        "1",
        "--write",
        pcap.to_str().unwrap(),
        "--duration",
        "20",
    ]);
    let mut conn = server.accept();
    conn.read_attach();
    conn.hello(1, 64, MODE_SNAPSHOT, 2000);
    conn.add_segment(3, 7);
    let good = b"GET / HTTP/1.1\r\n\r\n";
    conn.write_bytes(3, 0, good);
    let r = &mut conn.rings[0];
    r.publish(tcp_descriptor(3, 7, (SEGMENT_BYTES - 4) as u32, 64, false, 0, 1)); // outside
    r.publish(tcp_descriptor(3, 7, 0, u32::MAX, false, 0, 1)); // absurd length
    r.publish(tcp_descriptor(9, 7, 0, 10, false, 0, 1)); // unknown segment
    r.publish(tcp_descriptor(3, 8, 0, 10, false, 0, 1)); // generation
    let i = r.publish(tcp_descriptor(3, 7, 0, 10, false, 0, 1));
    r.invalidate(i); // freed before read
    let mut stale = tcp_descriptor(3, 7, 0, 10, false, 0, 1);
    stale.seq = 1234;
    let h = r.head;
    r.write_slot(h, &stale.encode());
    r.set_head(h + 1);
    r.publish(tcp_descriptor(3, 7, 0, good.len() as u32, false, 0, 5555));
    let out = wait(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stale 1, unknown segment 1, generation 1, absurd length 1, outside segment 1"),
        "{stderr}"
    );
    assert!(stderr.contains("torn 1"), "{stderr}");
    let packets: Vec<_> = read_pcap(&pcap).into_iter().filter(|(_, _, p)| !p.is_empty()).collect();
    assert_eq!(packets, vec![(5555, 80, good.to_vec())]);
}

#[test]
fn server_gone_leaves_a_valid_pcap_and_a_clear_message() {
    let dir = Scratch::new("gone");
    let server = FakeServer::bind(&dir.path("sock"));
    let pcap = dir.path("out.pcap");
    let reqs = requests(5);
    let child = spawn(&[
        "capture",
        "--socket",
        server.path.to_str().unwrap(),
        "--count",
        "100",
        "--write",
        pcap.to_str().unwrap(),
        "--duration",
        "20",
    ]);
    let conn = serve(&server, MODE_SNAPSHOT, &reqs);
    // Give the reader time to read, then vanish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.consumer(0) + conn.consumer(1) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(conn);
    let out = wait(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the server closed the export socket"), "{stderr}");
    let packets: Vec<_> = read_pcap(&pcap).into_iter().filter(|(_, _, p)| !p.is_empty()).collect();
    assert_eq!(packets.len(), 5);
}

#[test]
fn refusals_and_missing_sockets_exit_2_with_one_line() {
    let dir = Scratch::new("refuse");
    let missing = dir.path("nothing-here");
    let out = wait(spawn(&["capture", "--socket", missing.to_str().unwrap(), "--count", "1"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such socket") && stderr.lines().count() == 1, "{stderr}");

    for (code, word) in [(ERR_VERSION, "version mismatch"), (ERR_PERMISSION, "permission denied")] {
        let server = FakeServer::bind(&dir.path(&format!("sock{code}")));
        let child = spawn(&["capture", "--socket", server.path.to_str().unwrap(), "--count", "1"]);
        let conn = server.accept();
        conn.read_attach();
        conn.send_error(code, "refused by the fake");
        let out = wait(child, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(word) && stderr.lines().count() == 1, "{stderr}");
    }

    let bad = wait(spawn(&["capture", "--socket", "/nonexistent", "--filter", "port banana"]), LIMIT);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_read_only_segment_fd_cannot_be_made_writable() {
    let (file, mut map) = memfd("nta-seg-test", SEGMENT_BYTES);
    map[0] = 1;
    seal(&file);
    map[1] = 2; // the owner's existing mapping still writes
    let ro = read_only(&file);
    // The reader's own mapping path succeeds read-only...
    let region = nta_sniffer::maps::SharedRegion::map_read_only(ro.try_clone().unwrap(), SEGMENT_BYTES).unwrap();
    let mut two = [0u8; 2];
    assert!(region.copy_out(0, &mut two));
    assert_eq!(two, [1, 2]);
    // ...but a writable mapping of the fd fails,
    let ro_file = std::fs::File::from(ro);
    // SAFETY: expected to fail; if it did not, nothing is written through it.
    assert!(unsafe { memmap2::MmapMut::map_mut(&ro_file) }.is_err());
    // and so does one through a read-write re-open (the seal).
    let path = format!("/proc/self/fd/{}", ro_file.as_raw_fd());
    match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Err(_) => {}
        Ok(rw) => {
            // SAFETY: expected to fail.
            assert!(unsafe { memmap2::MmapMut::map_mut(&rw) }.is_err(), "sealed memfd mapped writable");
            use std::io::Write;
            assert!((&rw).write(b"x").is_err(), "sealed memfd written");
        }
    }
}

fn occupancy_file(records: &[(u32, u32, u32, Vec<u64>)]) -> Vec<u8> {
    let mut b = vec![0u8; OCC_HEADER];
    b[0..8].copy_from_slice(&OCC_MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&(records.len() as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(OCC_RECORD as u32).to_le_bytes());
    for (segment, owner, backing, free) in records {
        let mut r = vec![0u8; OCC_RECORD];
        r[0..4].copy_from_slice(&segment.to_le_bytes());
        r[4..8].copy_from_slice(&owner.to_le_bytes());
        r[8..12].copy_from_slice(&backing.to_le_bytes());
        for (i, w) in free.iter().enumerate() {
            r[16 + 8 * i..24 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&r);
    }
    b
}

#[test]
fn top_once_prints_the_shard_table_and_map_writes_a_png() {
    let dir = Scratch::new("top");
    let server = FakeServer::bind(&dir.path("sock"));
    // Shard 0: half free in one run; shard 1: everything free.
    let mut half = vec![0u64; OCC_GRANULES / 64];
    half[512..].iter_mut().for_each(|w| *w = u64::MAX);
    let occ = occupancy_file(&[(0, 0, 0, half), (1, 1, 1, vec![u64::MAX; OCC_GRANULES / 64])]);
    for command in ["top", "map"] {
        let png = dir.path("map.png");
        let mut args = vec![command, "--socket", server.path.to_str().unwrap()];
        if command == "top" {
            args.push("--once");
        } else {
            args.extend(["--out", png.to_str().unwrap()]);
        }
        let child = spawn(&args);
        let mut conn = server.accept();
        conn.read_attach();
        conn.hello(1, 64, MODE_SNAPSHOT, 2000);
        let (h, _) = conn.recv().expect("a StatsRequest");
        assert_eq!(h.kind, Kind::StatsRequest);
        conn.send_stats("pool_in_use_bytes 1048576\npool_held_bytes 0\nexport_readers 1\n", &occ);
        let out = wait(child, LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if command == "top" {
            assert!(stdout.contains("pool_in_use_bytes"), "{stdout}");
            assert!(stdout.contains("held bytes: 0   readers: 1"), "{stdout}");
            let shard0 = stdout.lines().find(|l| l.trim_start().starts_with("0 ")).unwrap();
            assert!(shard0.contains("1.0 MiB") && shard0.contains("0.0%"), "{shard0}");
        } else {
            assert!(stdout.contains("2 nodes, 25.0% of granules used"), "{stdout}");
            let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
            let reader = decoder.read_info().unwrap();
            assert_eq!(reader.info().width, 1024);
            assert!(reader.info().uncompressed_latin1_text.iter().any(|t| t.keyword == "Title"));
        }
        drop(conn);
    }
}

/// `top` without `--once` stays attached: it beats its heartbeat (the
/// server evicts a reader whose heartbeat stops for the lease, holding or
/// not) while it waits between refreshes.
#[test]
fn live_top_beats_its_heartbeat_between_refreshes() {
    let dir = Scratch::new("top-live");
    let server = FakeServer::bind(&dir.path("sock"));
    let occ = occupancy_file(&[(0, 0, 0, vec![u64::MAX; OCC_GRANULES / 64])]);
    let mut child = spawn(&["top", "--socket", server.path.to_str().unwrap()]);
    let mut conn = server.accept();
    conn.read_attach();
    // A 200 ms lease: top must beat at least every 50 ms.
    conn.hello(1, 64, MODE_SNAPSHOT, 200);
    let mut beats = Vec::new();
    for _ in 0..2 {
        let (h, _) = conn.recv().expect("a StatsRequest");
        assert_eq!(h.kind, Kind::StatsRequest);
        conn.send_stats("pool_in_use_bytes 0\npool_held_bytes 0\nexport_readers 1\n", &occ);
        // Between two refreshes (1 s apart) the heartbeat moves on every
        // lease-long window.
        for _ in 0..3 {
            let before = conn.heartbeat();
            std::thread::sleep(Duration::from_millis(250));
            beats.push((before, conn.heartbeat()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(beats.iter().all(|(a, b)| b > a), "heartbeat stood still for a lease: {beats:?}");
}

#[test]
fn ctrl_c_prints_the_summary_releases_holds_and_finishes_the_pcap() {
    let dir = Scratch::new("sigint");
    let server = FakeServer::bind(&dir.path("sock"));
    let pcap = dir.path("out.pcap");
    let reqs = requests(4);
    let child = spawn(&[
        "capture",
        "--socket",
        server.path.to_str().unwrap(),
        "--hold",
        "--write",
        pcap.to_str().unwrap(),
        "--duration",
        "20",
    ]);
    let conn = serve(&server, MODE_HOLD, &reqs);
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.consumer(0) + conn.consumer(1) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every descriptor was read; now interrupt.
    let beat = conn.heartbeat();
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = wait(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("capture ended: interrupted") && stderr.contains("packets 4"), "{stderr}");
    assert!(conn.heartbeat() >= beat);
    let (h, _) = conn.recv().expect("a Detach");
    assert_eq!(h.kind, Kind::Detach);
    assert_eq!(read_pcap(&pcap).into_iter().filter(|(_, _, p)| !p.is_empty()).count(), 4);
    // The rings were released up to their heads.
    assert_eq!((conn.consumer(0), conn.consumer(1)), (conn.rings[0].head, conn.rings[1].head));
}

#[test]
fn hexdump_prints_the_bytes_and_released_segments_are_not_read() {
    let dir = Scratch::new("hexdump");
    let server = FakeServer::bind(&dir.path("sock"));
    let child = spawn(&[
        "capture",
        "--socket",
        server.path.to_str().unwrap(),
        "--count",
        "3",
        "--hexdump",
        "--filter",
        "rx and port 80",
        "--duration",
        "20",
    ]);
    let mut conn = server.accept();
    conn.read_attach();
    conn.hello(1, 64, MODE_SNAPSHOT, 2000);
    conn.add_segment(3, 7);
    conn.write_bytes(3, 0, b"GET /first HTTP/1.1\r\n\r\n");
    conn.rings[0].publish(tcp_descriptor(3, 7, 0, 23, true, 0, 1)); // tx: filtered out
    conn.rings[0].publish(tcp_descriptor(3, 7, 0, 23, false, 0, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.consumer(0) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    conn.release(3);
    conn.add_segment(3, 8);
    conn.write_bytes(3, 0, b"GET /second HTTP/1.1\r\n\r\n");
    conn.rings[0].publish(tcp_descriptor(3, 8, 0, 24, false, 0, 2));
    while conn.consumer(0) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The reader has seen generation 8: one into generation 7 is refused.
    conn.rings[0].publish(tcp_descriptor(3, 7, 0, 23, false, 0, 1));
    conn.rings[0].publish(tcp_descriptor(3, 8, 0, 24, false, 0, 3));
    let out = wait(child, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("rx TCP 127.0.0.2:1 > 127.0.0.1:80 len 23"), "{stdout}");
    assert!(stdout.contains("GET /first HTTP/") && stdout.contains("GET /second HTT"), "{stdout}");
    assert!(!stdout.contains(" tx "), "{stdout}");
    assert!(stderr.contains("filtered out 1"), "{stderr}");
    assert!(stderr.contains("unknown segment 0, generation 1,"), "{stderr}");
}

/// `capture` asks for holds unless told `--snapshot` (a snapshot reader
/// loses most of a busy server's packets to reuse).
#[test]
fn capture_asks_for_holds_by_default() {
    for (flag, want) in [(None, MODE_HOLD), (Some("--hold"), MODE_HOLD), (Some("--snapshot"), MODE_SNAPSHOT)] {
        let dir = Scratch::new("mode");
        let server = FakeServer::bind(&dir.path("sock"));
        let mut args = vec!["capture", "--socket", server.path.to_str().unwrap(), "--count", "1", "--duration", "20"];
        args.extend(flag);
        let mut child = spawn(&args);
        let conn = server.accept();
        let attach = conn.read_attach();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(attach.mode, want, "{flag:?}");
    }
}
