//! The replay table: recorded real-program traces on NTA, glibc, jemalloc
//! and mimalloc, in time and in resident memory.
//!
//! Design notes:
//! - Every replay runs in a fresh child process (`nta-bench replay FILE
//!   --alloc X`), so that no allocator inherits another's heap or the
//!   previous run's cached memory, and a crash shows as "did not run".
//! - Runs are interleaved (run 1 of every allocator, then run 2, ...), so
//!   that a burst of load from other processes on this shared machine spreads
//!   over all allocators instead of landing on one.
//! - Each figure is the median of the runs, time and resident memory each on
//!   its own.
//! - Resident memory is compared as resident ÷ peak live bytes: an allocator
//!   that refuses requests (NTA above its largest size today) holds less
//!   live memory than the others, and its absolute figure would flatter it.
//!   Refused requests are counted in their own column and in a goal.
//! - A trace is a program's `malloc` log, so the NTA that the goals use is
//!   NTA as a program's allocator: configured as `NtaGlobal` configures it,
//!   on private anonymous memory like the peers (`--nta-private`). NTA's
//!   default `Pool` maps every segment from a memfd so that it can be
//!   exported, and a first touch of a shmem page costs the kernel more than
//!   one of an anonymous page (page cache, accounting): in the tshark trace,
//!   a quarter to a third of NTA's replay time on memfd. That configuration
//!   has a row of its own (`nta-memfd`), so what exportability costs stays
//!   visible.
//! - Within a round the allocators take turns in an order rotated every
//!   round, so that none is always first (or last) after the others.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::goals::{leanest, Goal};
use crate::peers::{NtaTuning, PeerKind};
use crate::report::{fmt_mib, fmt_ratio, ratio, Json, Table};
use crate::suite::{diagnostics_note, footing_note};

/// The allocators in the replay table, NTA first.
pub const TRACE_PEERS: [PeerKind; 4] = [PeerKind::Nta, PeerKind::System, PeerKind::Jemalloc, PeerKind::Mimalloc];

/// The name of the extra row: NTA's default, exportable `Pool` on memfd
/// segments (see the module notes).
pub const NTA_MEMFD: &str = "nta-memfd";

/// One replay's figures, as `nta-bench replay` prints them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ReplayLine {
    /// Trace threads.
    pub threads: u64,
    /// Operations that called the allocator.
    pub ops: u64,
    /// Wall time in ns.
    pub elapsed_ns: u64,
    /// Peak live requested bytes.
    pub peak_live_requested_bytes: u64,
    /// Peak resident delta (RSS + hugetlb), if readable.
    pub peak_resident_bytes: Option<u64>,
    /// Requests refused.
    pub failed_allocs: u64,
    /// The largest refused request.
    pub largest_failed_request_bytes: u64,
}

impl ReplayLine {
    /// Resident over peak live bytes.
    pub fn resident_ratio(&self) -> Option<f64> {
        self.peak_resident_bytes.map(|bytes| bytes as f64 / self.peak_live_requested_bytes.max(1) as f64)
    }
}

/// The median of `values` (the lower middle one for an even count).
fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<T> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// One allocator's replays of one trace, summarised.
#[derive(Clone, Debug)]
pub struct TraceRow {
    /// The allocator.
    pub kind: PeerKind,
    /// NTA on memfd segments (the extra row), not on private memory.
    pub memfd: bool,
    /// Every run (or why it failed).
    pub runs: Vec<Result<ReplayLine, String>>,
}

impl TraceRow {
    /// A row with no runs yet.
    pub fn new(kind: PeerKind, memfd: bool) -> TraceRow {
        TraceRow { kind, memfd, runs: Vec::new() }
    }

    /// The row's name in the table.
    pub fn name(&self) -> &'static str {
        if self.memfd {
            NTA_MEMFD
        } else {
            self.kind.name()
        }
    }

    /// Whether this is the NTA the goals use.
    fn is_goal_nta(&self) -> bool {
        self.kind == PeerKind::Nta && !self.memfd
    }

    fn ok(&self) -> Vec<&ReplayLine> {
        self.runs.iter().filter_map(|run| run.as_ref().ok()).collect()
    }

    /// The first failure, if any run failed.
    pub fn error(&self) -> Option<&str> {
        self.runs.iter().find_map(|run| run.as_ref().err().map(String::as_str))
    }

    /// Median wall time in ms.
    pub fn time_ms(&self) -> Option<f64> {
        median(self.ok().iter().map(|r| r.elapsed_ns as f64 / 1e6).collect())
    }

    /// Median peak resident bytes.
    pub fn resident_bytes(&self) -> Option<u64> {
        median(self.ok().iter().filter_map(|r| r.peak_resident_bytes).collect())
    }

    /// Median resident ÷ live.
    pub fn resident_ratio(&self) -> Option<f64> {
        median(self.ok().iter().filter_map(|r| r.resident_ratio()).collect())
    }

    /// Any successful run (they agree on everything but time and memory).
    pub fn first(&self) -> Option<&ReplayLine> {
        self.ok().into_iter().next()
    }
}

/// Runs `exe replay` once for `row`'s allocator.
fn replay_once(exe: &Path, trace: &Path, row: &TraceRow, tuning: &NtaTuning) -> Result<ReplayLine, String> {
    let mut command = Command::new(exe);
    command.arg("replay").arg(trace).args(["--alloc", row.kind.name()]);
    // The same NTA settings as the workload tables (diagnostics included),
    // on private memory unless this is the memfd row (module notes).
    command.args(tuning.args());
    if row.is_goal_nta() && tuning.exportable.is_none() {
        command.arg("--nta-private");
    }
    if crate::mem_stats::thp_disabled() != Some(true) {
        command.arg("--hugepages");
    }
    let output = command.output().map_err(|error| format!("cannot start replay: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("replay failed ({}): {}", output.status, stderr.lines().last().unwrap_or("").trim()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).map_err(|error| format!("unreadable replay output ({error}): {stdout}"))
}

/// The rows of the table: [`TRACE_PEERS`], then NTA on memfd segments
/// unless `tuning` already chose NTA's memory.
pub fn rows_for(tuning: &NtaTuning) -> Vec<TraceRow> {
    let mut rows: Vec<TraceRow> = TRACE_PEERS.iter().map(|&kind| TraceRow::new(kind, false)).collect();
    if tuning.exportable.is_none() {
        rows.push(TraceRow::new(PeerKind::Nta, true));
    }
    rows
}

/// Replays `trace` `runs` times on every row of [`rows_for`], the rows
/// taking turns in an order rotated every round.
pub fn measure(exe: &Path, trace: &Path, runs: usize, tuning: &NtaTuning, progress: bool) -> Vec<TraceRow> {
    let mut rows = rows_for(tuning);
    let n = rows.len();
    for run in 0..runs.max(1) {
        for turn in 0..n {
            let row = &mut rows[(run + turn) % n];
            let start = std::time::Instant::now();
            let line = replay_once(exe, trace, row, tuning);
            row.runs.push(line);
            if progress {
                eprintln!(
                    "[nta-bench] replay {} {:<9} run {} {:>6.2} s",
                    trace_name(trace),
                    row.name(),
                    run + 1,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
    rows
}

/// A trace's name: its file name without `.trace` / `.gz`.
pub fn trace_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    name.trim_end_matches(".gz").trim_end_matches(".trace").to_string()
}

/// The recorded traces in `dir` (`*.trace` and `*.trace.gz`), by name.
pub fn traces_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.to_string_lossy();
            name.ends_with(".trace") || name.ends_with(".trace.gz")
        })
        .collect();
    traces.sort();
    Ok(traces)
}

/// The measured traces as one table, its goals, and JSON lines.
pub fn report(traces: &[(PathBuf, Vec<TraceRow>)], runs: usize, tuning: &NtaTuning) -> (Table, Vec<Goal>, Vec<Json>) {
    let mut table = Table::new(
        format!("Real-program traces: replay time and resident memory, medians of {runs}"),
        &[
            "trace",
            "ops",
            "threads",
            "allocator",
            "time ms",
            "NTA/peer time (lower: NTA faster)",
            "peak live MiB",
            "peak resident Δ MiB",
            "resident/live",
            "NTA/peer resident/live (lower: NTA leaner)",
            "refused requests (largest B)",
        ],
    );
    table.notes.push(footing_note(tuning));
    table.notes.extend(diagnostics_note(tuning));
    table.notes.push(
        "Each replay runs in a fresh process (`nta-bench replay FILE --alloc X`), the runs of the allocators \
         interleaved (they take turns, in an order rotated every round). `nta` is NTA as a program's allocator \
         (`NtaGlobal`'s configuration: private anonymous memory, as the peers have; `--nta-private`), the one the \
         goals use; `nta-memfd` is NTA's default `Pool`, every segment a memfd so that it can be exported (a first \
         touch of a shmem page costs the kernel more than one of an anonymous page). Time: wall time of the replay, its trace threads running concurrently (a block freed on \
         another thread than its allocation waits for it). Every allocated byte is written once. Resident: peak RSS \
         above the baseline, exact (the kernel's high-water mark is reset at the start), plus hugetlb pages. Peers \
         are called directly, not through LD_PRELOAD. Traces: `benches/traces/` (how each was recorded: its `.txt`)."
            .to_string(),
    );
    let mut goals = Vec::new();
    let mut json = Vec::new();
    for (path, rows) in traces {
        let name = trace_name(path);
        let nta = rows.iter().find(|row| row.is_goal_nta());
        let nta_time = nta.and_then(TraceRow::time_ms);
        let nta_resident = nta.and_then(TraceRow::resident_ratio);
        for row in rows {
            let cells = match (row.error(), row.first()) {
                (None, Some(first)) => vec![
                    first.ops.to_string(),
                    first.threads.to_string(),
                    row.name().to_string(),
                    match row.time_ms() {
                        Some(ms) if first.failed_allocs > 0 => format!("{ms:.1} (did less work)"),
                        Some(ms) => format!("{ms:.1}"),
                        None => "n/a".into(),
                    },
                    fmt_ratio(ratio(nta_time, row.time_ms())),
                    fmt_mib(Some(first.peak_live_requested_bytes)),
                    fmt_mib(row.resident_bytes()),
                    row.resident_ratio().map_or("n/a".into(), |r| format!("{r:.3}")),
                    fmt_ratio(ratio(nta_resident, row.resident_ratio())),
                    if first.failed_allocs == 0 {
                        "0".to_string()
                    } else {
                        format!("**{}** ({})", first.failed_allocs, first.largest_failed_request_bytes)
                    },
                ],
                (error, _) => {
                    let mut cells = vec![String::new(), String::new(), row.name().to_string()];
                    cells.push(format!("did not run: {}", error.unwrap_or("no run")));
                    cells.resize(10, String::new());
                    cells
                }
            };
            let mut line = vec![name.clone()];
            line.extend(cells);
            table.row(line);
            json.push(Json::obj(vec![
                ("trace", Json::str(name.clone())),
                ("alloc", Json::str(row.name())),
                ("runs", Json::Int(row.runs.len() as u64)),
                ("time_ms", Json::opt_num(row.time_ms())),
                ("peak_resident_bytes", Json::opt_int(row.resident_bytes())),
                ("resident_over_live", Json::opt_num(row.resident_ratio())),
                ("failed_allocs", Json::opt_int(row.first().map(|r| r.failed_allocs))),
                ("nta_over_peer_time", Json::opt_num(ratio(nta_time, row.time_ms()))),
                ("nta_over_peer_resident", Json::opt_num(ratio(nta_resident, row.resident_ratio()))),
            ]));
        }
        let peer = |kind: PeerKind| rows.iter().find(|row| row.kind == kind && !row.memfd);
        let workload = format!("trace {name}");
        let refused = nta.and_then(TraceRow::first).map_or(0, |r| r.failed_allocs);
        for kind in [PeerKind::System, PeerKind::Mimalloc] {
            let mut goal = Goal::at_most(
                &workload,
                &format!("{name}: NTA time ≤ {}", kind.name()),
                &format!("NTA/{}", kind.name()),
                ratio(nta_time, peer(kind).and_then(TraceRow::time_ms)),
                1.0,
            );
            if refused > 0 {
                // NTA skipped the refused requests (and never wrote their
                // bytes): it did less work, so its time proves nothing.
                goal.measured = format!(
                    "{}, but NTA refused {refused} request{} and skipped their work: not comparable",
                    goal.measured,
                    if refused == 1 { "" } else { "s" }
                );
                goal.verdict = crate::goals::Verdict::NotMeasured;
            }
            goals.push(goal);
        }
        let lean = leanest(
            [PeerKind::System, PeerKind::Jemalloc, PeerKind::Mimalloc]
                .map(|kind| (kind.name(), peer(kind).and_then(TraceRow::resident_ratio))),
        );
        goals.push(Goal::at_most(
            &workload,
            &format!("{name}: NTA resident/live ≤ the leanest peer's"),
            &format!("NTA/{}", lean.map_or("leanest peer", |(name, _)| name)),
            ratio(nta_resident, lean.map(|(_, v)| v)),
            1.0,
        ));
        goals.push(Goal::none(
            &workload,
            &format!("{name}: NTA refuses no request"),
            "requests NTA refused",
            nta.and_then(TraceRow::first).map(|r| r.failed_allocs),
        ));
    }
    table.footer.extend(goals.iter().map(Goal::footer));
    (table, goals, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_lower_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2));
        assert_eq!(median(Vec::<u64>::new()), None);
    }

    #[test]
    fn trace_names_drop_the_extensions() {
        assert_eq!(trace_name(Path::new("/x/nginx-wrk.trace.gz")), "nginx-wrk");
        assert_eq!(trace_name(Path::new("t.trace")), "t");
    }

    #[test]
    fn the_goals_use_nta_on_private_memory_and_the_memfd_row_is_shown_beside_it() {
        assert_eq!(
            rows_for(&NtaTuning::default()).iter().map(TraceRow::name).collect::<Vec<_>>(),
            ["nta", "system", "jemalloc", "mimalloc", NTA_MEMFD]
        );
        let private = NtaTuning { exportable: Some(false), ..NtaTuning::default() };
        assert_eq!(rows_for(&private).len(), 4, "NTA's memory chosen already: no extra row");
        let line = |ms: u64| ReplayLine {
            threads: 1,
            ops: 10,
            elapsed_ns: ms * 1_000_000,
            peak_live_requested_bytes: 1000,
            peak_resident_bytes: Some(2000),
            failed_allocs: 0,
            largest_failed_request_bytes: 0,
        };
        let mut rows = rows_for(&NtaTuning::default());
        for row in &mut rows {
            // NTA 80 ms on private memory, 120 on memfd; every peer 100.
            let ms = match (row.kind, row.memfd) {
                (PeerKind::Nta, false) => 80,
                (PeerKind::Nta, true) => 120,
                _ => 100,
            };
            row.runs.push(Ok(line(ms)));
        }
        let (table, goals, json) = report(&[(PathBuf::from("t.trace.gz"), rows)], 1, &NtaTuning::default());
        let system = goals.iter().find(|g| g.text == "t: NTA time ≤ system").unwrap();
        assert_eq!(system.verdict, crate::goals::Verdict::Met, "{system:?}");
        assert!(system.measured.contains("0.800"), "{}", system.measured);
        let markdown = table.to_markdown();
        assert!(markdown.contains("| t | 10 | 1 | nta-memfd | 120.0 | 0.67 |"), "{markdown}");
        let memfd = json.iter().find(|j| j.get("alloc").and_then(Json::as_str) == Some(NTA_MEMFD)).unwrap();
        assert_eq!(memfd.get("time_ms").and_then(Json::as_f64), Some(120.0));
    }

    #[test]
    fn a_refusing_nta_misses_the_no_refusal_goal() {
        let line = |elapsed_ns, failed_allocs| ReplayLine {
            threads: 1,
            ops: 10,
            elapsed_ns,
            peak_live_requested_bytes: 1000,
            peak_resident_bytes: Some(2000),
            failed_allocs,
            largest_failed_request_bytes: if failed_allocs > 0 { 4 << 20 } else { 0 },
        };
        let rows = TRACE_PEERS
            .iter()
            .map(|&kind| TraceRow {
                kind,
                memfd: false,
                runs: vec![Ok(line(1_000_000, u64::from(kind == PeerKind::Nta)))],
            })
            .collect();
        let (table, goals, _) = report(&[(PathBuf::from("x.trace.gz"), rows)], 1, &NtaTuning::default());
        let markdown = table.to_markdown();
        assert!(markdown.contains("**1** (4194304)"), "{markdown}");
        let refused = goals.iter().find(|goal| goal.text.contains("refuses")).unwrap();
        assert_eq!(refused.verdict, crate::goals::Verdict::Missed);
        // Equal times, but NTA skipped a request: the time goals are not comparable.
        let times: Vec<_> = goals.iter().filter(|goal| goal.text.contains("time")).collect();
        assert_eq!(times.len(), 2);
        assert!(times.iter().all(|g| g.verdict == crate::goals::Verdict::NotMeasured), "{times:?}");
        assert!(markdown.contains("(did less work)"), "{markdown}");
    }
}
