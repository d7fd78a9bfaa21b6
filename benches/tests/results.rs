//! `nta-bench results` at tiny scale: RESULTS.md's generated part has the
//! header, the goals with computed verdicts, the trace table and every
//! workload table, and what is below the kept-marker survives at the end.

use std::io::Write;
use std::path::PathBuf;

use nta_bench::peers::{NtaTuning, PeerKind};
use nta_bench::results::{kept_part, measure, render, ResultsOptions, KEPT_MARKER, WEB_SECTION};
use nta_bench::suite::{Isolation, SuiteOptions};
use nta_bench::workloads::Scale;

#[test]
fn results_regenerates_above_the_marker_and_keeps_the_rest() {
    let trace = std::env::temp_dir().join(format!("nta-bench-results-{}.trace", std::process::id()));
    std::fs::File::create(&trace).unwrap().write_all(b"a 1 100\na 2 3000000\nt 1\nf 1\nt 0\nf 2\n").unwrap();
    let options = ResultsOptions {
        suite: SuiteOptions {
            scale: Scale::Tiny,
            seed: 1,
            peers: vec![PeerKind::Nta, PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc],
            map_dir: None,
            progress: false,
            isolation: Isolation::InProcess,
            nta_tuning: NtaTuning::default(),
            repeats: 1,
            interleave: false,
        },
        exe: PathBuf::from(env!("CARGO_BIN_EXE_nta-bench")),
        traces: vec![trace.clone()],
        trace_runs: 2,
        command: "test".into(),
    };
    let results = measure(options);
    let old = format!("# stale\n| old | table |\n{KEPT_MARKER}\n## UDP echo\nkept text\n\n{WEB_SECTION}\nweb text\n");
    let text = render(&results, &kept_part(&old));
    for needle in [
        "- **Date**: ",
        "- **Machine**: `lscpu` model `",
        "- **Commit**: `",
        "- **Footing**: NTA hugepages **off**",
        "## Against the goals (issue 10)",
        "| P1 | NTA ≤ 1.0× the faster of mimalloc and jemalloc (ns per pair, in one process, interleaved) |",
        "## NTA ÷ peer on the headline figures",
        "## Real-program traces: replay time and resident memory, medians of 2",
        "### P6 churn",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let name = trace.file_stem().unwrap().to_string_lossy().into_owned();
    // NTA refuses the 3 MB request today; the table says so, and so does a goal.
    let nta_row =
        text.lines().find(|line| line.starts_with(&format!("| {name} |")) && line.contains("| nta |")).unwrap();
    assert!(nta_row.ends_with("| **1** (3000000) |") || nta_row.ends_with("| 0 |"), "{nta_row}");
    assert!(text.contains(&format!("{name}: NTA refuses no request")));
    assert!(!text.contains("| old | table |"), "the stale part is regenerated");
    let (_, kept) = text.split_once(KEPT_MARKER).unwrap();
    assert_eq!(kept, format!("\n\n## UDP echo\nkept text\n\n{WEB_SECTION}\nweb text\n"));
    std::fs::remove_file(trace).unwrap();
}
