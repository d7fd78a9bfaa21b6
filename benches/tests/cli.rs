//! The `nta-bench` binary: replay output and error reporting.

use std::io::Write;
use std::process::Command;

fn trace_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("nta-bench-{}-{name}.trace", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

fn replay(path: &std::path::Path, alloc: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nta-bench"))
        .args(["replay", path.to_str().unwrap(), "--alloc", alloc])
        .output()
        .unwrap()
}

#[test]
fn replay_prints_one_json_line_with_the_fields() {
    let path = trace_file("ok", "# two threads\na 1 100\na 2 200\nt 1\nf 1\nr 2 50\nt 0\nf 2\n");
    for alloc in ["nta", "system", "mimalloc", "jemalloc", "pow2", "mempool"] {
        let output = replay(&path, alloc);
        assert!(output.status.success(), "{alloc}: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1);
        for field in [
            "\"threads\":2",
            "\"ops\":5",
            "\"skipped_ops\":0",
            "\"elapsed_ns\":",
            "\"peak_live_requested_bytes\":300",
            "\"peak_resident_bytes\":",
            "\"peak_hugetlb_bytes\":0",
            "\"failed_allocs\":0",
        ] {
            assert!(stdout.contains(field), "{alloc}: {field} missing in {stdout}");
        }
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn replay_rejects_bad_lines_with_their_number_and_exits_non_zero() {
    for (name, text, needle) in [
        ("malformed", "a 1 10\nq 3\n", "line 2: malformed"),
        ("unknown", "a 1 10\n\nf 9\n", "line 3: unknown id 9"),
        ("freed", "a 1 10\nf 1\nf 1\n", "line 3: id 1 is already freed"),
        ("plus", "a 1 10\nf +1\n", "line 2: malformed: id `+1`"),
    ] {
        let path = trace_file(name, text);
        let output = replay(&path, "system");
        assert!(!output.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn replay_of_a_missing_file_fails_cleanly() {
    let output = replay(std::path::Path::new("/nonexistent/nta-bench.trace"), "pow2");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn worker_prints_one_json_outcome() {
    let output = Command::new(env!("CARGO_BIN_EXE_nta-bench"))
        .args(["worker", "--workload", "P1", "--alloc", "pow2", "--scale", "tiny", "--seed", "1"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("{\"Ok\":{\"pairs\":5000,"), "{stdout}");
}

#[test]
fn all_runs_selected_workloads_in_child_processes() {
    let dir = std::env::temp_dir().join(format!("nta-bench-maps-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_nta-bench"))
        .args(["all", "--quick", "--workloads", "p3", "--allocs", "nta,pow2", "--map-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("### P3 fill test"), "{stdout}");
    assert!(stdout.contains("| nta | own |") && stdout.contains("| pow2 | own |"), "{stdout}");
    assert!(dir.join("p3-fill-pow2-final.png").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn replay_reads_gzip_traces() {
    use flate2::write::GzEncoder;
    let path = std::env::temp_dir().join(format!("nta-bench-{}-gz.trace.gz", std::process::id()));
    let mut encoder = GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    encoder.write_all(b"a 1 100\na 2 5000000\nf 1\nf 2\n").unwrap();
    encoder.finish().unwrap();
    let output = replay(&path, "mempool");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    // The mempool refuses 5 MB: one failure, its free skipped.
    for field in ["\"ops\":3", "\"skipped_ops\":1", "\"failed_allocs\":1", "\"largest_failed_request_bytes\":5000000"] {
        assert!(stdout.contains(field), "{field} missing in {stdout}");
    }
    std::fs::remove_file(path).unwrap();
}
