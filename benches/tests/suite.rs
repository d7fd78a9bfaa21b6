//! The suite in process, tiny scale: every workload yields a table with one
//! row per peer and JSON lines.

use nta_bench::peers::PeerKind;
use nta_bench::suite::{run_all, Isolation, SuiteOptions, WorkloadId};
use nta_bench::workloads::Scale;

#[test]
fn every_workload_reports_every_peer() {
    let options = SuiteOptions {
        scale: Scale::Tiny,
        seed: 7,
        peers: vec![PeerKind::Nta, PeerKind::System, PeerKind::Pow2],
        map_dir: None,
        progress: false,
        isolation: Isolation::InProcess,
        nta_tuning: Default::default(),
        repeats: 2,
        interleave: false,
    };
    let workloads = [WorkloadId::P1, WorkloadId::P2, WorkloadId::P3, WorkloadId::P4, WorkloadId::P5, WorkloadId::P6];
    let reports = run_all(&workloads, &options);
    assert_eq!(reports.iter().map(|r| r.id).collect::<Vec<_>>(), workloads);
    for report in &reports {
        let markdown = report.table.to_markdown();
        for peer in ["nta", "system", "pow2"] {
            assert!(markdown.contains(&format!("| {peer} |")), "{:?} lacks {peer}:\n{markdown}", report.id);
        }
        assert!(!markdown.contains("did not run"), "{markdown}");
        // Every line compares NTA with a peer, but P1's NTA run with
        // unsized frees, which compares it with NTA's sized run.
        let lines: Vec<String> = report.json.iter().map(|line| line.to_string()).collect();
        assert!(
            lines.iter().all(|line| line.contains("\"nta_over_peer") || line.contains("\"unsized_over_sized")),
            "{:?}",
            report.id
        );
        if report.id == WorkloadId::P1 {
            assert!(lines.iter().any(|line| line.contains("\"unsized_over_sized\":")), "P1 runs NTA unsized too");
            assert!(markdown.contains("| nta, unsized frees"), "{markdown}");
            // In process too, the unsized run times both kinds of blocks.
            assert!(!markdown.contains("no paired blocks"), "{markdown}");
            assert!(!lines.iter().any(|line| line.contains("\"unsized_over_sized\":null")), "{lines:?}");
            assert!(report.goals.iter().any(|g| g.text.contains("unsized frees")), "P1 judges the unsized goal");
            // NTA, glibc, jemalloc and mimalloc in one process too: the
            // column, and the goal judged on it.
            assert!(
                lines.iter().any(|line| line.contains("\"interleaved_ns_per_pair\":")
                    && line.contains("\"alloc\":\"system\"")
                    && !line.contains("\"interleaved_ns_per_pair\":null")),
                "{lines:?}"
            );
            assert!(markdown.contains("taken in turn"), "{markdown}");
            assert!(report.goals.iter().any(|g| g.text.contains("in one process, interleaved")), "{markdown}");
        }
        if report.id == WorkloadId::P6 {
            // Throughput in one process too, and the goal judged on it.
            assert!(markdown.contains("taken in turn"), "{markdown}");
            assert!(report.goals.iter().any(|g| g.text.contains("≥ mimalloc (in one process, interleaved)")));
            assert!(lines.iter().any(|line| line.contains("\"alloc\":\"system\"")
                && line.contains("\"interleaved_ops_per_sec\":")
                && !line.contains("\"interleaved_ops_per_sec\":null")));
        }
        assert!(markdown.contains("NTA hugepages **off**"), "{markdown}");
        assert!(!report.goals.is_empty(), "{:?} has goals", report.id);
        for goal in &report.goals {
            assert!(markdown.contains(&goal.footer()), "{:?}: goal not printed", report.id);
        }
        if report.id != WorkloadId::P3 {
            assert!(markdown.contains("median of 2 runs"), "{:?}:\n{markdown}", report.id);
        }
    }
}

/// In child processes (as `nta-bench results` runs them), P1 and P6 get their
/// interleaved run too: the child is told so on its command line.
#[test]
fn child_processes_run_the_interleaved_comparisons() {
    let options = SuiteOptions {
        scale: Scale::Tiny,
        seed: 7,
        peers: vec![PeerKind::Nta, PeerKind::Mimalloc],
        map_dir: None,
        progress: false,
        isolation: Isolation::ChildProcess(env!("CARGO_BIN_EXE_nta-bench").into()),
        nta_tuning: Default::default(),
        repeats: 1,
        interleave: false,
    };
    for report in run_all(&[WorkloadId::P1, WorkloadId::P6], &options) {
        let markdown = report.table.to_markdown();
        assert!(markdown.contains("taken in turn"), "{:?}:\n{markdown}", report.id);
        assert!(
            report.goals.iter().any(|g| g.text.contains("in one process, interleaved")),
            "{:?}: a goal on the interleaved run\n{markdown}",
            report.id
        );
    }
}
