//! `nta-bench results`: one command measures everything in RESULTS.md's
//! allocator tables and writes the file.
//!
//! Design notes:
//! - **What runs.** Every workload (P1..P6) on every peer, each pair in its
//!   own child process, the timed ones `--repeat` times (median shown; P5 at
//!   least 5 times), then every recorded trace in `benches/traces/` on NTA,
//!   glibc, jemalloc and mimalloc ([`crate::trace_table`]).
//! - **What it writes.** A header naming the date, the machine (`lscpu`
//!   model, CPUs, kernel, load average before and after), the commit (and
//!   whether the tree had uncommitted changes) and the footing; the goals of
//!   issue 10 with their verdicts; a table of NTA ÷ peer on each headline
//!   figure; the trace table; every workload table.
//! - **No hand-written verdicts.** Every sentence that judges a figure is
//!   built from the measured numbers ([`crate::goals`]); the only fixed
//!   prose is how to read the tables.
//! - **What it keeps.** Everything below [`KEPT_MARKER`] in the existing file
//!   (hand-measured sections such as the UDP echo table, history, and a web
//!   server section another command writes) is copied through unchanged. A
//!   file without the marker keeps its `## Web server: nta-httpd vs nginx`
//!   section, if any, at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::goals::{Goal, Verdict};
use crate::peers::PeerKind;
use crate::report::{fmt_ratio, Json, Table};
use crate::suite::{footing_note, run_all, SuiteOptions, WorkloadId, WorkloadReport, P5_RUNS};
use crate::trace_table::{self, TraceRow};
use crate::workloads::Scale;

/// The line after which RESULTS.md is kept as it is.
pub const KEPT_MARKER: &str =
    "<!-- nta-bench results: everything below this line is kept as it is; everything above is regenerated -->";

/// The heading of the section another helper's command maintains; it stays
/// at the end of the file.
pub const WEB_SECTION: &str = "## Web server: nta-httpd vs nginx";

/// What `results` runs.
#[derive(Clone, Debug)]
pub struct ResultsOptions {
    /// The workloads' options (isolation must be a child process).
    pub suite: SuiteOptions,
    /// This executable, for the trace replays.
    pub exe: PathBuf,
    /// The traces to replay.
    pub traces: Vec<PathBuf>,
    /// Replays per (trace, allocator).
    pub trace_runs: usize,
    /// The command as the header should show it.
    pub command: String,
}

/// Where and when the run happened.
#[derive(Clone, Debug, Default)]
pub struct RunContext {
    /// "YYYY-MM-DD HH:MM UTC" at the start.
    pub started_utc: String,
    /// `lscpu` model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `lscpu` hypervisor vendor, if any.
    pub hypervisor: Option<String>,
    /// Kernel release.
    pub kernel: String,
    /// Physical memory in GiB.
    pub memory_gib: Option<f64>,
    /// `/proc/loadavg` (first three fields) before and after.
    pub load_before: String,
    /// After the run.
    pub load_after: String,
    /// Commit hash (12 digits) and branch.
    pub commit: String,
    /// Whether tracked files other than RESULTS.md had uncommitted changes.
    pub dirty: bool,
    /// `rustc -V`.
    pub rustc: String,
    /// Minutes the run took.
    pub minutes: f64,
}

/// Everything measured.
#[derive(Debug)]
pub struct Results {
    /// Where and when.
    pub context: RunContext,
    /// The workload reports, P1..P6.
    pub reports: Vec<WorkloadReport>,
    /// The trace table.
    pub trace_table: Table,
    /// The trace goals.
    pub trace_goals: Vec<Goal>,
    /// The trace JSON lines.
    pub trace_json: Vec<Json>,
    /// Options used.
    pub options: ResultsOptions,
}

/// Output of a command, trimmed, if it ran and succeeded.
fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let output = Command::new(program).args(args).current_dir(dir).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn lscpu_field(lscpu: &str, key: &str) -> Option<String> {
    lscpu.lines().find_map(|line| line.strip_prefix(key).map(|rest| rest.trim().to_string()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// "YYYY-MM-DD HH:MM UTC" for `secs` after the Unix epoch (the civil-from-days
/// algorithm of H. Hinnant's date library).
pub fn utc_date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

impl RunContext {
    /// Reads the machine and the checkout (the workspace that holds `benches`).
    pub fn capture(benches_dir: &Path) -> RunContext {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let lscpu = command_output("lscpu", &[], benches_dir).unwrap_or_default();
        let cpu_model = lscpu_field(&lscpu, "Model name:")
            .or_else(|| {
                let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
                lscpu_field(&cpuinfo, "model name").map(|m| m.trim_start_matches(':').trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|meminfo| {
            let kb: f64 = lscpu_field(&meminfo, "MemTotal:")?.split_whitespace().next()?.parse().ok()?;
            Some(kb / (1024.0 * 1024.0))
        });
        let commit = command_output("git", &["rev-parse", "--short=12", "HEAD"], benches_dir)
            .unwrap_or_else(|| "unknown".into());
        let branch = command_output("git", &["rev-parse", "--abbrev-ref", "HEAD"], benches_dir).unwrap_or_default();
        let status = command_output(
            "git",
            &["status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benches/RESULTS.md"],
            benches_dir,
        );
        RunContext {
            started_utc: utc_date_time(now),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            hypervisor: lscpu_field(&lscpu, "Hypervisor vendor:"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or("unknown".into(), |k| k.trim().into()),
            memory_gib,
            load_before: load_average(),
            load_after: String::new(),
            commit: if branch.is_empty() { format!("`{commit}`") } else { format!("`{commit}` (branch `{branch}`)") },
            dirty: status.is_some_and(|text| !text.is_empty()),
            rustc: command_output("rustc", &["-V"], benches_dir).unwrap_or_else(|| "unknown".into()),
            minutes: 0.0,
        }
    }
}

/// Runs everything (see the module docs).
pub fn measure(options: ResultsOptions) -> Results {
    let benches_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut context = RunContext::capture(benches_dir);
    let start = Instant::now();
    let reports = run_all(&WorkloadId::RUN_ORDER, &options.suite);
    let measured: Vec<(PathBuf, Vec<TraceRow>)> = options
        .traces
        .iter()
        .map(|trace| {
            let rows = trace_table::measure(
                &options.exe,
                trace,
                options.trace_runs,
                &options.suite.nta_tuning,
                options.suite.progress,
            );
            (trace.clone(), rows)
        })
        .collect();
    let (trace_table, trace_goals, trace_json) =
        trace_table::report(&measured, options.trace_runs, &options.suite.nta_tuning);
    context.load_after = load_average();
    context.minutes = start.elapsed().as_secs_f64() / 60.0;
    Results { context, reports, trace_table, trace_goals, trace_json, options }
}

/// NTA ÷ peer of one JSON field, per peer, from a report's lines.
fn ratios_from(lines: &[Json], filter: impl Fn(&Json) -> bool, key: &str) -> Vec<Option<f64>> {
    [PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc]
        .iter()
        .map(|kind| {
            lines
                .iter()
                .filter(|line| filter(line))
                .find(|line| line.get("alloc").and_then(Json::as_str) == Some(kind.name()))
                .and_then(|line| line.get(key))
                .and_then(Json::as_f64)
        })
        .collect()
}

/// NTA's `key` over each peer's, from lines that carry the raw figure.
fn ratio_of_field(lines: &[Json], filter: impl Fn(&Json) -> bool, key: &str) -> Vec<Option<f64>> {
    let value = |name: &str| {
        lines
            .iter()
            .filter(|line| filter(line))
            .find(|line| line.get("alloc").and_then(Json::as_str) == Some(name))
            .and_then(|line| line.get(key))
            .and_then(Json::as_f64)
    };
    let nta = value("nta");
    [PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc]
        .iter()
        .map(|kind| crate::report::ratio(nta, value(kind.name())))
        .collect()
}

/// The table of NTA ÷ peer on each headline figure.
fn headline_table(results: &Results) -> Table {
    let mut table = Table::new(
        "NTA ÷ peer on the headline figures (from the tables below)",
        &["figure", "better for NTA when", "NTA/glibc", "NTA/mimalloc", "NTA/jemalloc"],
    );
    let report = |id: WorkloadId| results.reports.iter().find(|r| r.id == id).map(|r| r.json.as_slice()).unwrap_or(&[]);
    let every = |_: &Json| true;
    let mut rows: Vec<(String, &str, Vec<Option<f64>>)> = vec![
        (
            "P1 ns per alloc+free pair (in one process, interleaved)".into(),
            "< 1",
            ratios_from(report(WorkloadId::P1), every, "nta_over_peer"),
        ),
        (
            "P2 held/live (own stats, metadata counted)".into(),
            "< 1",
            ratios_from(report(WorkloadId::P2), every, "nta_over_peer"),
        ),
        ("P2 resident/live".into(), "< 1", ratios_from(report(WorkloadId::P2), every, "nta_over_peer_resident")),
        ("P4 total alloc+free time, all cells".into(), "< 1", p4_totals(report(WorkloadId::P4))),
        ("P5 pairs/s (median run)".into(), "> 1", ratios_from(report(WorkloadId::P5), every, "nta_over_peer")),
        (
            "P6 ops/s (in one process, interleaved)".into(),
            "> 1",
            ratios_from(report(WorkloadId::P6), every, "nta_over_peer"),
        ),
        (
            "P6 max own footprint / max live".into(),
            "< 1",
            ratio_of_field(report(WorkloadId::P6), every, "held_over_live"),
        ),
        (
            "P6 max resident / max live".into(),
            "< 1",
            ratio_of_field(report(WorkloadId::P6), every, "resident_over_live"),
        ),
    ];
    let mut traces: Vec<String> = results
        .trace_json
        .iter()
        .filter_map(|line| line.get("trace").and_then(Json::as_str).map(String::from))
        .collect();
    traces.dedup();
    for trace in traces {
        let this = |line: &Json| line.get("trace").and_then(Json::as_str) == Some(trace.as_str());
        rows.push((
            format!("trace {trace}: time"),
            "< 1",
            ratios_from(&results.trace_json, this, "nta_over_peer_time"),
        ));
        rows.push((
            format!("trace {trace}: resident/live"),
            "< 1",
            ratios_from(&results.trace_json, this, "nta_over_peer_resident"),
        ));
    }
    for (figure, better, ratios) in rows {
        let mut row = vec![figure, better.to_string()];
        row.extend(ratios.into_iter().map(fmt_ratio));
        table.row(row);
    }
    table
}

/// NTA's total P4 time (all cells, alloc + free) over each peer's.
fn p4_totals(lines: &[Json]) -> Vec<Option<f64>> {
    let total = |name: &str| {
        let cells: Vec<f64> = lines
            .iter()
            .filter(|line| line.get("alloc").and_then(Json::as_str) == Some(name))
            .filter_map(|line| Some(line.get("alloc_ms")?.as_f64()? + line.get("free_ms")?.as_f64()?))
            .collect();
        (!cells.is_empty()).then(|| cells.iter().sum::<f64>())
    };
    let nta = total("nta");
    [PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc]
        .iter()
        .map(|kind| crate::report::ratio(nta, total(kind.name())))
        .collect()
}

/// The summary sentence and table of every goal.
fn goals_section(goals: &[&Goal]) -> String {
    let count = |verdict| goals.iter().filter(|goal| goal.verdict == verdict).count();
    let mut out = format!(
        "{} of {} goals met, {} missed, {} not measured (each verdict is computed from the figures below).\n\n",
        count(Verdict::Met),
        goals.len(),
        count(Verdict::Missed),
        count(Verdict::NotMeasured)
    );
    let mut table = Table::new("Goals", &["workload", "goal", "measured", "verdict"]);
    for goal in goals {
        table.row(vec![goal.workload.clone(), goal.text.clone(), goal.measured.clone(), goal.verdict.text().into()]);
    }
    let markdown = table.to_markdown();
    // The section has its own heading; drop the table's.
    out.push_str(markdown.split_once('\n').map_or("", |(_, rest)| rest).trim_start());
    out
}

/// The part of an existing RESULTS.md that `results` keeps (module docs).
pub fn kept_part(existing: &str) -> String {
    if let Some(at) = existing.find(KEPT_MARKER) {
        let rest = &existing[at + KEPT_MARKER.len()..];
        return rest.strip_prefix('\n').unwrap_or(rest).to_string();
    }
    match existing.find(&format!("\n{WEB_SECTION}")) {
        Some(at) => existing[at + 1..].to_string(),
        None if existing.starts_with(WEB_SECTION) => existing.to_string(),
        None => String::new(),
    }
}

/// RESULTS.md: the generated part, the marker, then `kept`.
pub fn render(results: &Results, kept: &str) -> String {
    let context = &results.context;
    let suite = &results.options.suite;
    let mut out = String::new();
    out.push_str("# nta-bench results\n\n");
    out.push_str(&format!(
        "Everything above the marker near the end is written by `{}`; do not edit it by hand.\n\n",
        results.options.command
    ));
    out.push_str(&format!("- **Date**: {} (the run took {:.1} min).\n", context.started_utc, context.minutes));
    out.push_str(&format!(
        "- **Machine**: `lscpu` model `{}`, {} CPUs{}{}; Linux {}. Load average (1/5/15 min) {} before, {} after: \
         the machine is shared, so read ratios, not digits.\n",
        context.cpu_model,
        context.cpus,
        context.hypervisor.as_ref().map_or(String::new(), |h| format!(", {h} guest")),
        context.memory_gib.map_or(String::new(), |gib| format!(", {gib:.0} GiB")),
        context.kernel,
        context.load_before,
        context.load_after
    ));
    out.push_str(&format!(
        "- **Commit**: {}{}.\n",
        context.commit,
        if context.dirty { " **with uncommitted changes**" } else { "" }
    ));
    out.push_str(&format!("- **Toolchain**: {}, release profile.\n", context.rustc));
    let footing = footing_note(&suite.nta_tuning);
    out.push_str(&format!("- **Footing**: {}\n", footing.strip_prefix("Footing: ").unwrap_or(&footing)));
    let scale = match suite.scale {
        Scale::Full => "full sizes",
        Scale::Quick => "**--quick** sizes (scaled down; see each title)",
        Scale::Tiny => "tiny sizes (test configuration; figures are meaningless)",
    };
    out.push_str(&format!(
        "- **Runs**: {scale}; every (workload, allocator) pair in its own process; P1, P2, P4 and P6 {} time{} each \
         (median run shown), P5 {} times, P3 once; each trace {} time{} per allocator (medians).\n\n",
        suite.repeats,
        if suite.repeats == 1 { "" } else { "s" },
        suite.repeats.max(P5_RUNS),
        results.options.trace_runs,
        if results.options.trace_runs == 1 { "" } else { "s" },
    ));
    out.push_str("## Against the goals (issue 10)\n\n");
    let goals: Vec<&Goal> =
        results.reports.iter().flat_map(|report| report.goals.iter()).chain(results.trace_goals.iter()).collect();
    out.push_str(&goals_section(&goals));
    out.push('\n');
    out.push_str(&headline_table(results).to_markdown().replacen("### ", "## ", 1));
    out.push('\n');
    out.push_str(&results.trace_table.to_markdown().replacen("### ", "## ", 1));
    out.push_str("\n## Workloads P1-P6\n\n");
    out.push_str(
        "How to read them: ratios are NTA ÷ peer within one run. P1 ns per pair include the workload's own \
         bookkeeping (RNG, ring slot, two byte writes), the same for every peer. P3's glibc, mimalloc and jemalloc \
         rows are *emulated* caps (usable sizes summed: size-class rounding only). The benches/README.md describes \
         every workload.\n\n",
    );
    for report in &results.reports {
        out.push_str(&report.table.to_markdown());
        out.push('\n');
    }
    out.push_str(KEPT_MARKER);
    out.push('\n');
    if !kept.is_empty() {
        out.push('\n');
        out.push_str(kept.trim_start_matches('\n'));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date_time(951_782_400 + 3600 + 60), "2000-02-29 01:01 UTC");
        assert_eq!(utc_date_time(1_798_675_200), "2026-12-31 00:00 UTC");
    }

    #[test]
    fn the_kept_part_is_below_the_marker_or_the_web_section() {
        let with_marker = format!("generated\n{KEPT_MARKER}\n## UDP\nkept\n{WEB_SECTION}\nweb\n");
        assert_eq!(kept_part(&with_marker), format!("## UDP\nkept\n{WEB_SECTION}\nweb\n"));
        let without = format!("# old\nstale tables\n{WEB_SECTION}\nweb\n");
        assert_eq!(kept_part(&without), format!("{WEB_SECTION}\nweb\n"));
        assert_eq!(kept_part("# old\nstale\n"), "");
    }
}
