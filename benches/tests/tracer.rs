//! The LD_PRELOAD logger (tools/alloc_trace.c) end to end: build it with the
//! system C compiler, run a program with a known allocation pattern under
//! it, convert the logs, and replay the trace.
//!
//! Needs `cc` and `bash`, which CI has (the Rust toolchain links with `cc`).

use std::path::{Path, PathBuf};
use std::process::Command;

use nta_bench::alloc_log;
use nta_bench::peers::{NtaPeer, PeerConfig, SystemPeer};
use nta_bench::replay::replay;
use nta_bench::trace::parse;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nta-bench-tracer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build(out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-tracer.sh");
    let output = Command::new("bash").arg(script).arg(out).output().expect("bash runs");
    assert!(output.status.success(), "build-tracer.sh failed: {}", String::from_utf8_lossy(&output.stderr));
    out.join("libntatrace.so")
}

#[test]
fn the_logger_records_a_known_program_and_its_trace_replays() {
    let build_dir = temp_dir("build");
    let library = build(&build_dir);
    let logs = temp_dir("logs");
    let output = Command::new(build_dir.join("trace_selftest"))
        .env("LD_PRELOAD", &library)
        .env("NTA_TRACE_DIR", &logs)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "selftest done\n");

    let mut text = Vec::new();
    let stats = alloc_log::convert(alloc_log::read_dir(&logs).unwrap(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(stats.processes, 1, "{stats:?}");
    assert_eq!(stats.threads, 2, "{stats:?}");
    assert_eq!(stats.aligned_requests, 4, "posix_memalign, aligned_alloc, memalign, valloc: {stats:?}");
    assert_eq!(stats.unknown_frees, 0, "{stats:?}");
    assert_eq!(stats.reused_live_addresses, 0, "{stats:?}");
    assert!(stats.resizes >= 1, "realloc grow: {stats:?}");

    // The 1000 blocks of 24 + i bytes, the marker, and the remote frees.
    let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
    for size in [24, 500, 1023] {
        assert!(lines.iter().any(|line| line.starts_with("a ") && line.ends_with(&format!(" {size}"))), "{size}");
    }
    let marker = lines.iter().find(|line| line.ends_with(" 777777")).expect("marker allocation");
    let marker_id = marker.split_whitespace().nth(1).unwrap();
    assert!(lines.contains(&format!("f {marker_id}").as_str()), "marker freed");
    // The second thread frees the 500 even blocks while the main thread
    // frees the 500 odd ones (concurrently, so the lines interleave).
    let mut frees_by_thread = [0usize; 8];
    let mut thread = 0;
    for line in &lines {
        if let Some(next) = line.strip_prefix("t ") {
            thread = next.parse().unwrap();
        } else if line.starts_with("f ") {
            frees_by_thread[thread] += 1;
        }
    }
    assert!(frees_by_thread[0] >= 500 && frees_by_thread[1] >= 500, "{frees_by_thread:?}");

    let trace = parse(text.as_bytes()).unwrap();
    let on_system = replay(&SystemPeer, &trace);
    let on_nta = replay(&NtaPeer::new(PeerConfig::default()).unwrap(), &trace);
    for result in [&on_system, &on_nta] {
        assert_eq!(result.threads, 2);
        assert_eq!(result.failed_allocs, 0, "{result:?}");
        assert_eq!(result.ops, trace.memory_ops());
        assert!(result.peak_live_requested_bytes >= (24..1024u64).sum::<u64>(), "{result:?}");
    }
    let _ = std::fs::remove_dir_all(build_dir);
    let _ = std::fs::remove_dir_all(logs);
}

#[test]
fn without_a_trace_dir_nothing_is_recorded_and_the_program_runs() {
    let build_dir = temp_dir("quiet");
    let library = build(&build_dir);
    let output = Command::new(build_dir.join("trace_selftest"))
        .env("LD_PRELOAD", &library)
        .env_remove("NTA_TRACE_DIR")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "selftest done\n");
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(build_dir);
}
