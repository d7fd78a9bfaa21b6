//! Runs the workloads on every peer and turns the results into reports.
//!
//! Every workload runs on each selected peer in turn, NTA first, in one
//! process. Each report is one markdown table with the absolute figures and
//! the NTA/peer ratio, plus footers that check the goals, and one
//! JSON line per peer (and per cell, phase or sample where there are several).
//! Each report also carries its goals ([`crate::goals`]), with verdicts
//! computed from the figures.
//!
//! Footing: every allocator runs on 4 KiB pages unless `--hugepages` says
//! otherwise (NTA with `HugePages::Off`, the others with THP disabled for
//! the process, see [`crate::mem_stats`]); every table states the footing
//! and the hugetlb pages reserved.
//!
//! Repeats: a timed workload can run several times per peer (each in its own
//! child process); the report shows the run with the median headline figure
//! and lists every run's figure in a note. P5 always runs [`P5_RUNS`] times
//! (its goal is on the median of 5).
//!
//! Isolation: glibc, mimalloc and jemalloc are process-wide, their own
//! footprint figures are deltas, and what one run leaves cached in them
//! would blur the next run's footprint. So `nta-bench all` runs each
//! (workload, peer) pair in a fresh child process (`nta-bench worker ...`),
//! which prints its result as one JSON line; a crash in a peer then shows
//! as "did not run" in its row instead of ending the suite. Tests run in
//! process ([`Isolation::InProcess`]). In process, `all` runs P2 first so
//! that the footprint test sees the allocators fresh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::goals::{leanest, Goal};
use crate::mem_stats;
use crate::peers::{hugepages_name, with_peer, HugePages, NtaTuning, Peer, PeerConfig, PeerKind, PeerVisitor};
use crate::report::{fmt_mib, fmt_num, fmt_percent, fmt_ratio, ratio, Json, Table};
use crate::workloads::churn::{self, ChurnParams, ChurnResult};
use crate::workloads::cross_thread::{self, CrossThreadParams, CrossThreadResult};
use crate::workloads::fill::{self, FillParams, FillResult};
use crate::workloads::footprint::{self, FootprintParams, FootprintResult};
use crate::workloads::free_order::{self, FreeOrder, FreeOrderCell, FreeOrderParams, OBJECT_SIZES};
use crate::workloads::interleave::Interleaved;
use crate::workloads::packet_mix::{self, PacketMixParams, PacketMixResult};
use crate::workloads::Scale;

/// One of the six workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum WorkloadId {
    /// Packet mix.
    P1,
    /// Footprint.
    P2,
    /// Fill test.
    P3,
    /// Free-order table.
    P4,
    /// Cross-thread.
    P5,
    /// Churn.
    P6,
}

impl WorkloadId {
    /// All workloads in the order `all` runs them (P2 first, see module docs).
    pub const RUN_ORDER: [WorkloadId; 6] =
        [WorkloadId::P2, WorkloadId::P1, WorkloadId::P3, WorkloadId::P4, WorkloadId::P5, WorkloadId::P6];

    /// "P1" .. "P6".
    pub fn name(self) -> &'static str {
        match self {
            WorkloadId::P1 => "P1",
            WorkloadId::P2 => "P2",
            WorkloadId::P3 => "P3",
            WorkloadId::P4 => "P4",
            WorkloadId::P5 => "P5",
            WorkloadId::P6 => "P6",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Size of every workload.
    pub scale: Scale,
    /// Seed of every workload.
    pub seed: u64,
    /// Peers to run, in order (NTA should be among them for the ratios).
    pub peers: Vec<PeerKind>,
    /// Where P3 writes its PNG maps (`None`: no maps).
    pub map_dir: Option<PathBuf>,
    /// Whether to print one progress line per peer run on stderr.
    pub progress: bool,
    /// Where each (workload, peer) pair runs.
    pub isolation: Isolation,
    /// NTA settings away from the defaults (diagnostics; reports say so).
    pub nta_tuning: NtaTuning,
    /// Runs per (workload, peer) of the timed workloads; the median is shown.
    pub repeats: usize,
    /// P1 and P6 run NTA, glibc, jemalloc and mimalloc in one process,
    /// interleaved by blocks (`workloads::interleave`); their reports set it
    /// for their extra run.
    pub interleave: bool,
}

/// Runs of P5 per peer (its goal is on the median of 5).
pub const P5_RUNS: usize = 5;

impl SuiteOptions {
    /// Runs per peer of workload `id`: 1 for P3 (deterministic), at least
    /// [`P5_RUNS`] for P5 (except at tiny scale), else `repeats`.
    pub fn runs_of(&self, id: WorkloadId) -> usize {
        match id {
            WorkloadId::P3 => 1,
            WorkloadId::P5 if self.scale != Scale::Tiny => self.repeats.max(P5_RUNS),
            _ => self.repeats.max(1),
        }
    }
}

/// Where each (workload, peer) pair runs.
#[derive(Clone, Debug)]
pub enum Isolation {
    /// In this process.
    InProcess,
    /// In a child process: this executable, run as `worker` (see the module docs).
    ChildProcess(PathBuf),
}

/// One workload's report.
#[derive(Clone, Debug)]
pub struct WorkloadReport {
    /// Which workload.
    pub id: WorkloadId,
    /// The markdown table.
    pub table: Table,
    /// The JSON lines.
    pub json: Vec<Json>,
    /// The goals checked by this workload.
    pub goals: Vec<Goal>,
}

impl WorkloadReport {
    fn new(id: WorkloadId, mut table: Table, json: Vec<Json>, goals: Vec<Goal>) -> Self {
        table.footer.extend(goals.iter().map(Goal::footer));
        Self { id, table, json, goals }
    }
}

/// Each peer's outcome for a workload: its result, or why it did not run.
type PeerOutcomes<R> = Vec<(PeerKind, Result<R, String>)>;

/// How workload `id` builds peer `kind`: P3 caps every peer (NTA with one
/// shard); the others use the peers' defaults.
pub fn peer_config(id: WorkloadId, options: &SuiteOptions) -> PeerConfig {
    let nta_tuning = options.nta_tuning;
    match id {
        WorkloadId::P3 => {
            PeerConfig { capacity_bytes: Some(fill_params(options).capacity_bytes), nta_shards: Some(1), nta_tuning }
        }
        _ => PeerConfig { nta_tuning, nta_shards: nta_tuning.shards, capacity_bytes: None },
    }
}

/// Runs `visitor` for workload `id` on `kind` in a child process and parses
/// its JSON line.
fn run_child<T: DeserializeOwned>(
    exe: &Path,
    id: WorkloadId,
    kind: PeerKind,
    options: &SuiteOptions,
) -> Result<T, String> {
    let scale = match options.scale {
        Scale::Full => "full",
        Scale::Quick => "quick",
        Scale::Tiny => "tiny",
    };
    let mut command = Command::new(exe);
    command.args(["worker", "--workload", id.name(), "--alloc", kind.name(), "--scale", scale]);
    command.args(["--seed", &options.seed.to_string()]);
    if let Some(dir) = &options.map_dir {
        command.arg("--map-dir").arg(dir);
    }
    command.args(options.nta_tuning.args());
    if options.interleave && matches!(id, WorkloadId::P1 | WorkloadId::P6) {
        command.arg("--interleave");
    }
    if mem_stats::thp_disabled() != Some(true) {
        command.arg("--hugepages");
    }
    let output = command.output().map_err(|error| format!("cannot start worker: {error}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(format!("worker failed ({}): {last}", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let outcome: Result<T, String> =
        serde_json::from_str(line).map_err(|error| format!("unreadable worker output ({error}): {line}"))?;
    outcome
}

/// Runs workload `id` on every peer, [`SuiteOptions::runs_of`] times each,
/// and keeps for each peer the run whose `metric` is the median (the lower
/// middle one for an even count). A peer with any failed run reports that
/// failure. Also returns a note listing every run's figure when there were
/// several.
fn run_on_peers<V>(
    options: &SuiteOptions,
    id: WorkloadId,
    visitor: V,
    metric_name: &str,
    metric: impl Fn(&V::Output) -> f64,
) -> (PeerOutcomes<V::Output>, Option<String>)
where
    V: PeerVisitor + Clone,
    V::Output: DeserializeOwned,
{
    let jobs: Vec<Job<'_>> = options.peers.iter().map(|&kind| (kind.name().to_string(), kind, options)).collect();
    let (outcomes, note) = run_rounds(options.runs_of(id), id, |_| visitor.clone(), metric_name, metric, &jobs);
    (outcomes.into_iter().map(|(_, kind, outcome)| (kind, outcome)).collect(), note)
}

/// One column of [`run_rounds`]: its label, the peer, and the options it
/// runs with (an NTA variant has its own `nta_tuning`).
type Job<'a> = (String, PeerKind, &'a SuiteOptions);

/// Each job's label, peer and median outcome.
type LabelledOutcomes<R> = Vec<(String, PeerKind, Result<R, String>)>;

/// [`run_on_peers`] over any jobs, `runs` rounds: labelled outcomes.
/// `visitor` makes a job's visitor from its options (for a run in this
/// process; a child makes its own from the same options).
fn run_rounds<V>(
    runs: usize,
    id: WorkloadId,
    visitor: impl Fn(&SuiteOptions) -> V,
    metric_name: &str,
    metric: impl Fn(&V::Output) -> f64,
    jobs: &[Job<'_>],
) -> (LabelledOutcomes<V::Output>, Option<String>)
where
    V: PeerVisitor + Clone,
    V::Output: DeserializeOwned,
{
    let mut spreads = Vec::new();
    // Rounds outermost (every allocator once per round, in turn), so that
    // a machine whose speed drifts over minutes (a shared host) slows
    // every allocator alike rather than whichever ran during the slow spell.
    let mut per_job: Vec<(Vec<V::Output>, Option<String>)> = jobs.iter().map(|_| (Vec::new(), None)).collect();
    for _ in 0..runs {
        for ((label, kind, options), (results, failure)) in jobs.iter().zip(per_job.iter_mut()) {
            if failure.is_some() {
                continue;
            }
            let kind = *kind;
            let start = Instant::now();
            let outcome = match &options.isolation {
                Isolation::InProcess => {
                    with_peer(kind, peer_config(id, options), visitor(options)).map_err(|error| error.to_string())
                }
                Isolation::ChildProcess(exe) => run_child(exe, id, kind, options),
            };
            if options.progress {
                eprintln!("[nta-bench] {} {:<8} {:>7.2} s", id.name(), label, start.elapsed().as_secs_f64());
            }
            match outcome {
                Ok(result) => results.push(result),
                Err(error) => *failure = Some(error),
            }
        }
    }
    let outcomes = jobs
        .iter()
        .zip(per_job)
        .map(|((label, kind, _), (mut results, failure))| {
            if let Some(error) = failure {
                return (label.clone(), *kind, Err(error));
            }
            results.sort_by(|a, b| metric(a).total_cmp(&metric(b)));
            if runs > 1 {
                let figures: Vec<String> = results.iter().map(|r| fmt_figure(metric(r))).collect();
                spreads.push(format!("{label} {}", figures.join(" / ")));
            }
            let median = results.swap_remove((results.len() - 1) / 2);
            (label.clone(), *kind, Ok(median))
        })
        .collect();
    let note = (runs > 1).then(|| {
        format!(
            "Each row is the median of {runs} runs (own child process each, the allocators in turn within each round) by {metric_name}; all runs, sorted: {}.",
            spreads.join("; ")
        )
    });
    (outcomes, note)
}

macro_rules! visitor {
    ($name:ident, $params:ty, $output:ty, $run:path) => {
        #[derive(Clone)]
        struct $name<'a>(&'a $params);

        impl PeerVisitor for $name<'_> {
            type Output = $output;
            fn visit<P: Peer>(self, peer: &P) -> $output {
                $run(peer, self.0)
            }
        }
    };
}

/// P1's visitor owns its parameters: each job makes its own from its
/// options (the interleaved run's differ).
#[derive(Clone)]
struct PacketMixVisitor(PacketMixParams);

impl PeerVisitor for PacketMixVisitor {
    type Output = PacketMixResult;
    fn visit<P: Peer>(self, peer: &P) -> PacketMixResult {
        packet_mix::run(peer, &self.0)
    }
}

visitor!(FootprintVisitor, FootprintParams, FootprintResult, footprint::run);

/// A map PNG written by P3.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapFile {
    /// `first failure` or `final state`.
    pub stage: String,
    /// Where it was written, or why it was not.
    pub path: Result<String, String>,
    /// Pages in the map.
    pub pages: usize,
    /// Granules used.
    pub used_granules: usize,
    /// Granules free.
    pub free_granules: usize,
}

/// P3's outcome: the fill result and the maps it wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FillOutcome {
    /// The fill result (maps not included).
    pub result: FillResult,
    /// The PNG maps written.
    pub maps: Vec<MapFile>,
}

#[derive(Clone)]
struct FillVisitor<'a>(&'a FillParams, Option<&'a Path>);

impl PeerVisitor for FillVisitor<'_> {
    type Output = FillOutcome;
    fn visit<P: Peer>(self, peer: &P) -> FillOutcome {
        let result = fill::run(peer, self.0);
        let mut maps = Vec::new();
        if let Some(dir) = self.1 {
            for (stage, map) in [("first failure", &result.first_map), ("final state", &result.final_map)] {
                let Some(map) = map else { continue };
                let file_stage = if stage == "first failure" { "first" } else { "final" };
                let path = dir.join(format!("p3-fill-{}-{file_stage}.png", peer.name()));
                let written = std::fs::create_dir_all(dir).and_then(|()| map.write_png(&path));
                maps.push(MapFile {
                    stage: stage.to_string(),
                    path: written.map(|()| path.display().to_string()).map_err(|error| error.to_string()),
                    pages: map.pages(),
                    used_granules: map.used_granules(),
                    free_granules: map.free_granules(),
                });
            }
        }
        FillOutcome { result, maps }
    }
}
visitor!(FreeOrderVisitor, FreeOrderParams, Vec<FreeOrderCell>, free_order::run);
visitor!(CrossThreadVisitor, CrossThreadParams, CrossThreadResult, cross_thread::run);
/// P6's visitor owns its parameters, as P1's does.
#[derive(Clone)]
struct ChurnVisitor(ChurnParams);

impl PeerVisitor for ChurnVisitor {
    type Output = ChurnResult;
    fn visit<P: Peer>(self, peer: &P) -> ChurnResult {
        churn::run(peer, &self.0)
    }
}

/// The NTA figure of a workload, for the ratio column.
fn nta_value<R>(outcomes: &PeerOutcomes<R>, metric: impl Fn(&R) -> Option<f64>) -> Option<f64> {
    outcomes
        .iter()
        .find(|(kind, _)| *kind == PeerKind::Nta)
        .and_then(|(_, outcome)| outcome.as_ref().ok())
        .and_then(metric)
}

/// The figure of `kind`, for the goal footers.
fn peer_value<R>(outcomes: &PeerOutcomes<R>, kind: PeerKind, metric: impl Fn(&R) -> Option<f64>) -> Option<f64> {
    outcomes.iter().find(|(k, _)| *k == kind).and_then(|(_, outcome)| outcome.as_ref().ok()).and_then(metric)
}

/// A figure with about four significant digits ("21.41", "6.57 M").
fn fmt_figure(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.2} M", value / 1e6),
        v if v >= 1e3 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// The general-purpose peers the goals compare NTA with.
const GOAL_PEERS: [PeerKind; 3] = [PeerKind::System, PeerKind::Mimalloc, PeerKind::Jemalloc];

fn error_row(kind: PeerKind, error: &str, columns: usize) -> Vec<String> {
    let mut row = vec![kind.name().to_string(), format!("did not run: {error}")];
    row.resize(columns, String::new());
    row
}

fn error_json(id: WorkloadId, kind: PeerKind, error: &str) -> Json {
    Json::obj(vec![("workload", Json::str(id.name())), ("alloc", Json::str(kind.name())), ("error", Json::str(error))])
}

/// The hugepage footing of this process, in words: NTA's policy, whether
/// the other allocators get transparent huge pages, and the hugetlb pages
/// reserved.
pub fn footing_note(tuning: &NtaTuning) -> String {
    let nta = match tuning.hugepages {
        HugePages::Off => "NTA hugepages **off** (`HugePages::Off`: 4 KiB pages)".to_string(),
        other => format!("NTA hugepages **{}** (2 MiB hugetlb or THP pages where it can)", hugepages_name(other)),
    };
    let unknown = || "unknown".to_string();
    let peers = match mem_stats::thp_disabled() {
        Some(true) => "THP **disabled** for the benchmark processes (`PR_SET_THP_DISABLE`): glibc, mimalloc, \
                       jemalloc and the models on 4 KiB pages"
            .to_string(),
        _ => format!(
            "THP left to the kernel for glibc, mimalloc, jemalloc and the models (`{}` for anonymous memory)",
            mem_stats::thp_mode().unwrap_or_else(unknown)
        ),
    };
    format!(
        "Footing: {nta}; {peers}; hugetlb pages reserved on the machine: {}.",
        mem_stats::reserved_hugepages().map_or_else(unknown, |pages| pages.to_string())
    )
}

fn scale_note(options: &SuiteOptions) -> String {
    let scale = match options.scale {
        Scale::Full => "Scale: full.".to_string(),
        Scale::Quick => "Scale: **--quick** (operation counts scaled down, see each title).".to_string(),
        Scale::Tiny => "Scale: tiny (test configuration; figures are meaningless).".to_string(),
    };
    let footing = footing_note(&options.nta_tuning);
    match diagnostics_note(&options.nta_tuning) {
        Some(diagnostics) => format!("{scale} {footing} {diagnostics}"),
        None => format!("{scale} {footing}"),
    }
}

/// What the diagnostic settings changed in NTA, if any (`None` at nta-core's
/// defaults).
pub fn diagnostics_note(tuning: &NtaTuning) -> Option<String> {
    tuning.has_diagnostics().then(|| {
        format!(
            "NTA **not at its defaults**: exportable {}, retain_bytes {}, shards {}, frees {}.",
            tuning.exportable.map_or("default".to_string(), |e| e.to_string()),
            tuning.retain_bytes.map_or("default".to_string(), |r| r.to_string()),
            tuning.shards.map_or("default".to_string(), |s| s.to_string()),
            if tuning.unsized_frees { "unsized (`Pool::free`)" } else { "sized" }
        )
    })
}

fn packet_mix_params(options: &SuiteOptions) -> PacketMixParams {
    PacketMixParams { seed: options.seed, interleave: options.interleave, ..PacketMixParams::at(options.scale) }
}

fn footprint_params(options: &SuiteOptions) -> FootprintParams {
    FootprintParams { seed: options.seed, ..FootprintParams::at(options.scale) }
}

fn fill_params(options: &SuiteOptions) -> FillParams {
    FillParams { seed: options.seed, ..FillParams::at(options.scale) }
}

fn cross_thread_params(options: &SuiteOptions) -> CrossThreadParams {
    CrossThreadParams { seed: options.seed, ..CrossThreadParams::at(options.scale) }
}

fn churn_params(options: &SuiteOptions) -> ChurnParams {
    ChurnParams { seed: options.seed, interleave: options.interleave, ..ChurnParams::at(options.scale) }
}

/// The body of `nta-bench worker`: runs workload `id` on `kind` in this
/// process and returns the outcome as one JSON line (an `Err` outcome when
/// the peer cannot be built).
pub fn worker(id: WorkloadId, kind: PeerKind, options: &SuiteOptions) -> String {
    fn one<V: PeerVisitor>(kind: PeerKind, config: PeerConfig, visitor: V) -> String
    where
        V::Output: Serialize,
    {
        let outcome: Result<V::Output, String> = with_peer(kind, config, visitor).map_err(|error| error.to_string());
        serde_json::to_string(&outcome).unwrap_or_else(|error| format!("{{\"Err\":\"cannot encode: {error}\"}}"))
    }
    let config = peer_config(id, options);
    match id {
        WorkloadId::P1 => one(kind, config, PacketMixVisitor(packet_mix_params(options))),
        WorkloadId::P2 => one(kind, config, FootprintVisitor(&footprint_params(options))),
        WorkloadId::P3 => one(kind, config, FillVisitor(&fill_params(options), options.map_dir.as_deref())),
        WorkloadId::P4 => one(kind, config, FreeOrderVisitor(&FreeOrderParams::at(options.scale))),
        WorkloadId::P5 => one(kind, config, CrossThreadVisitor(&cross_thread_params(options))),
        WorkloadId::P6 => one(kind, config, ChurnVisitor(churn_params(options))),
    }
}

/// The label of P1's NTA run with unsized frees.
const UNSIZED_LABEL: &str = "nta-unsized";
/// The label of the run of NTA, glibc, jemalloc and mimalloc in one
/// process, interleaved (P1 and P6).
const INTERLEAVED_LABEL: &str = "interleaved";

/// An interleaved run's NTA/peer time ratio for `peer`.
fn interleaved_ratio(lanes: &Interleaved, peer: PeerKind) -> Option<f64> {
    lanes.time_ratio(PeerKind::Nta.name(), peer.name())
}

/// An interleaved P1 run's NTA over the faster of mimalloc and jemalloc,
/// and that peer's name.
fn interleaved_goal_ratio(lanes: &Interleaved) -> (Option<f64>, Option<&'static str>) {
    let faster = leanest(
        [PeerKind::Mimalloc, PeerKind::Jemalloc].map(|k| (k.name(), lanes.lane(k.name()).map(|l| l.ns_per_step()))),
    );
    (ratio(lanes.lane(PeerKind::Nta.name()).map(|l| l.ns_per_step()), faster.map(|(_, ns)| ns)), faster.map(|(n, _)| n))
}

/// Takes the outcome of the job labelled `label` out of `all`.
fn take_labelled<R>(all: &mut LabelledOutcomes<R>, label: &str) -> Option<Result<R, String>> {
    let i = all.iter().position(|(l, _, _)| l == label)?;
    Some(all.remove(i).2)
}

/// The table note on an interleaved run (`workload_state`: what each lane
/// has of its own; `steps`: what a block counts).
fn interleaved_note<R>(
    outcome: &Option<Result<R, String>>,
    lanes: impl Fn(&R) -> Option<&Interleaved>,
    workload_state: &str,
    steps: &str,
) -> Option<String> {
    match outcome {
        Some(Ok(r)) => lanes(r).map(|l| {
            format!(
                "The interleaved column is one more run per round (`{INTERLEAVED_LABEL}` among the runs; its median by \
                 NTA against the peers): NTA, glibc, jemalloc and mimalloc in one process, each with {workload_state} \
                 of its own (the same seed), their timed {steps} in blocks of {} taken in turn ({} blocks each, the \
                 order rotated every round). The last column and the goal use it where it has the peer: on this \
                 shared host, separate processes of one allocator differ by up to 1.9x from run to run, and blocks \
                 taken in turn see the same host.",
                l.block, l.rounds
            )
        }),
        Some(Err(error)) => Some(format!("The interleaved run failed: {error}.")),
        None => None,
    }
}

/// P1 report.
pub fn packet_mix_report(options: &SuiteOptions) -> WorkloadReport {
    let params = packet_mix_params(options);
    // Issue 10: an unsized free (`Pool::free`) costs at most 1.1x a sized
    // one. NTA runs once more in every round with its frees unsized, which
    // makes `packet_mix` alternate sized and unsized frees by blocks in
    // that run (two separate runs differ by more on a shared host than the
    // two ways of freeing do).
    let mut unsized_options = options.clone();
    unsized_options.nta_tuning.unsized_frees = true;
    let mut jobs: Vec<Job<'_>> = options.peers.iter().map(|&kind| (kind.name().to_string(), kind, options)).collect();
    let with_unsized = options.peers.contains(&PeerKind::Nta) && !options.nta_tuning.unsized_frees;
    if with_unsized {
        jobs.push((UNSIZED_LABEL.to_string(), PeerKind::Nta, &unsized_options));
    }
    // One more run per round: NTA and the three general-purpose allocators
    // in one process, interleaved by blocks (separate processes on a shared
    // host differ from run to run by more than the allocators differ).
    let mut interleaved_options = options.clone();
    interleaved_options.interleave = true;
    let with_interleaved = options.peers.contains(&PeerKind::Nta);
    if with_interleaved {
        jobs.push((INTERLEAVED_LABEL.to_string(), PeerKind::Nta, &interleaved_options));
    }
    // The paired run's figure is its unsized/sized ratio; the interleaved
    // run's, NTA over the faster of jemalloc and mimalloc.
    let (mut all, runs_note) = run_rounds(
        options.runs_of(WorkloadId::P1),
        WorkloadId::P1,
        |o: &SuiteOptions| PacketMixVisitor(packet_mix_params(o)),
        &format!(
            "ns per pair ({UNSIZED_LABEL}: unsized/sized time in its paired blocks; {INTERLEAVED_LABEL}: NTA over the \
             faster of jemalloc and mimalloc)"
        ),
        |r: &PacketMixResult| match (&r.paired, &r.interleaved) {
            (Some(p), _) => p.unsized_over_sized(),
            (None, Some(lanes)) => interleaved_goal_ratio(lanes).0.unwrap_or(f64::MAX),
            (None, None) => r.ns_per_pair(),
        },
        &jobs,
    );
    let unsized_outcome = take_labelled(&mut all, UNSIZED_LABEL);
    let interleaved_outcome = take_labelled(&mut all, INTERLEAVED_LABEL);
    let outcomes: PeerOutcomes<PacketMixResult> = all.into_iter().map(|(_, kind, outcome)| (kind, outcome)).collect();
    let interleaved = match &interleaved_outcome {
        Some(Ok(r)) => r.interleaved.as_ref(),
        _ => None,
    };
    let metric = |r: &PacketMixResult| Some(r.ns_per_pair());
    let nta = nta_value(&outcomes, metric);
    let mut table = Table::new(
        format!(
            "P1 packet mix: IMIX 64/594/1518 B at 7:4:1, window {} live, {} timed pairs",
            params.window, params.pairs
        ),
        &[
            "allocator",
            "ns per alloc+free pair (own process)",
            "NTA/peer, own processes",
            "ns per pair (one process, interleaved)",
            "failed allocs",
            "NTA/peer (lower: NTA faster)",
        ],
    );
    table.notes.push(scale_note(options));
    table.notes.extend(runs_note);
    table.notes.extend(interleaved_note(&interleaved_outcome, |r| r.interleaved.as_ref(), "a window", "pairs"));
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        match outcome {
            Ok(result) => {
                let own = ratio(nta, metric(result));
                let lane = interleaved.and_then(|lanes| lanes.lane(kind.name()));
                let together = interleaved.and_then(|lanes| interleaved_ratio(lanes, *kind));
                let r = if lane.is_some() { together } else { own };
                table.row(vec![
                    kind.name().into(),
                    format!("{:.1}", result.ns_per_pair()),
                    fmt_ratio(own),
                    lane.map_or(String::new(), |l| format!("{:.1}", l.ns_per_step())),
                    result.failed_allocs.to_string(),
                    fmt_ratio(r),
                ]);
                json.push(Json::obj(vec![
                    ("workload", Json::str("P1")),
                    ("alloc", Json::str(kind.name())),
                    ("pairs", Json::Int(result.pairs)),
                    ("elapsed_ns", Json::Int(result.elapsed_ns)),
                    ("ns_per_pair", Json::Num(result.ns_per_pair())),
                    ("failed_allocs", Json::Int(result.failed_allocs)),
                    ("interleaved_ns_per_pair", Json::opt_num(lane.map(|l| l.ns_per_step()))),
                    ("nta_over_peer_own_process", Json::opt_num(own)),
                    ("nta_over_peer", Json::opt_num(r)),
                ]));
            }
            Err(error) => {
                table.row(error_row(*kind, error, 6));
                json.push(error_json(WorkloadId::P1, *kind, error));
            }
        }
    }
    let goal = match interleaved {
        Some(lanes) => {
            let (r, faster) = interleaved_goal_ratio(lanes);
            Goal::at_most(
                "P1",
                "NTA ≤ 1.0× the faster of mimalloc and jemalloc (ns per pair, in one process, interleaved)",
                &format!("NTA/{}", faster.unwrap_or("faster peer")),
                r,
                1.0,
            )
        }
        None => {
            let faster =
                leanest([PeerKind::Mimalloc, PeerKind::Jemalloc].map(|k| (k.name(), peer_value(&outcomes, k, metric))));
            Goal::at_most(
                "P1",
                "NTA ≤ 1.0× the faster of mimalloc and jemalloc (ns per pair)",
                &format!("NTA/{}", faster.map_or("faster peer", |(name, _)| name)),
                ratio(nta, faster.map(|(_, ns)| ns)),
                1.0,
            )
        }
    };
    let mut goals = vec![goal];
    if let Some(outcome) = unsized_outcome {
        let paired = outcome.as_ref().ok().and_then(|r| r.paired);
        let unsized_nta = paired.map(|p| p.ns_per_pair(true));
        let r = paired.map(|p| p.unsized_over_sized());
        let (ns, failed) = match (&outcome, paired) {
            (Ok(result), Some(p)) => (format!("{:.1}", p.ns_per_pair(true)), result.failed_allocs.to_string()),
            (Ok(_), None) => ("no paired blocks".into(), String::new()),
            (Err(error), _) => (format!("failed: {error}"), String::new()),
        };
        table.row(vec![
            "nta, unsized frees (`Pool::free`)".into(),
            ns,
            String::new(),
            String::new(),
            failed,
            String::new(),
        ]);
        table.notes.push(format!(
            "The last row is NTA in runs of its own (`{UNSIZED_LABEL}` among the runs, in the same rounds as the \
             others) whose timed pairs alternate, by blocks of up to {} pairs in the order sized, unsized, unsized, \
             sized, frees with the length (`Pool::free_sized`) and without it (`Pool::free`, the length read from \
             the bitmaps): its ns per pair is that of the unsized blocks, and the goal below compares the two kinds \
             of blocks of the same run{}.",
            crate::workloads::packet_mix::PAIRED_BLOCK,
            paired.map_or(String::new(), |p| format!(
                " (in the median run: {:.1} ns per pair sized, {:.1} unsized)",
                p.ns_per_pair(false),
                p.ns_per_pair(true)
            ))
        ));
        json.push(Json::obj(vec![
            ("workload", Json::str("P1")),
            ("alloc", Json::str(UNSIZED_LABEL)),
            ("ns_per_pair", Json::opt_num(unsized_nta)),
            ("unsized_over_sized", Json::opt_num(r)),
        ]));
        goals.push(Goal::at_most(
            "P1",
            "NTA with unsized frees ≤ 1.1× NTA with sized frees (ns per pair, issue 10)",
            "unsized/sized",
            r,
            1.1,
        ));
    }
    WorkloadReport::new(WorkloadId::P1, table, json, goals)
}

/// P2 report.
pub fn footprint_report(options: &SuiteOptions) -> WorkloadReport {
    let params = footprint_params(options);
    let (outcomes, runs_note) =
        run_on_peers(options, WorkloadId::P2, FootprintVisitor(&params), "held/live", |r: &FootprintResult| {
            r.held_ratio().or(r.resident_ratio()).unwrap_or(f64::MAX)
        });
    let metric = |r: &FootprintResult| r.held_ratio().or(r.resident_ratio());
    let resident_metric = |r: &FootprintResult| r.resident_ratio();
    let nta = nta_value(&outcomes, metric);
    let nta_resident = nta_value(&outcomes, resident_metric);
    let mut table = Table::new(
        format!(
            "P2 footprint: IMIX with {} live buffers, {} pairs after the window fills",
            params.window, params.pairs
        ),
        &[
            "allocator",
            "peak live requested MiB",
            "peak held MiB (own stats)",
            "held/live",
            "peak resident Δ MiB (RSS + hugetlb)",
            "resident/live",
            "NTA/peer held/live (lower: NTA leaner)",
            "NTA/peer resident/live",
        ],
    );
    table.notes.push(scale_note(options));
    table.notes.extend(runs_note);
    table.notes.push(
        "Own stats, metadata included: NTA mapped_bytes + metadata_bytes, mimalloc committed, jemalloc \
         stats.resident, glibc mallinfo2 arena+mmap (marked * : process-wide, includes the harness), models: \
         chunks held. Resident: the process's RSS plus hugetlb pages (which RSS leaves out), the harness's own \
         memory written before the baseline. All are deltas from the start of the run, sampled every 4096 pairs."
            .to_string(),
    );
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        match outcome {
            Ok(result) => {
                let r = ratio(nta, metric(result));
                let r_resident = ratio(nta_resident, resident_metric(result));
                let star = if result.held_is_exact { "" } else { "*" };
                table.row(vec![
                    kind.name().into(),
                    fmt_mib(Some(result.peak_live_requested_bytes)),
                    format!("{}{star}", fmt_mib(result.peak_held_bytes)),
                    fmt_num(result.held_ratio(), 3),
                    fmt_mib(result.peak_resident_bytes),
                    fmt_num(result.resident_ratio(), 3),
                    fmt_ratio(r),
                    fmt_ratio(r_resident),
                ]);
                json.push(Json::obj(vec![
                    ("workload", Json::str("P2")),
                    ("alloc", Json::str(kind.name())),
                    ("peak_live_requested_bytes", Json::Int(result.peak_live_requested_bytes)),
                    ("peak_held_bytes", Json::opt_int(result.peak_held_bytes)),
                    ("held_is_exact", Json::Bool(result.held_is_exact)),
                    ("held_over_live", Json::opt_num(result.held_ratio())),
                    ("peak_resident_bytes", Json::opt_int(result.peak_resident_bytes)),
                    ("peak_hugetlb_bytes", Json::opt_int(result.peak_hugetlb_bytes)),
                    ("resident_over_live", Json::opt_num(result.resident_ratio())),
                    ("failed_allocs", Json::Int(result.failed_allocs)),
                    ("nta_over_peer", Json::opt_num(r)),
                    ("nta_over_peer_resident", Json::opt_num(r_resident)),
                ]));
            }
            Err(error) => {
                table.row(error_row(*kind, error, 8));
                json.push(error_json(WorkloadId::P2, *kind, error));
            }
        }
    }
    let goals = vec![
        Goal::at_most("P2", "NTA held/live ≤ 1.05, metadata counted", "NTA held/live", nta, 1.05),
        Goal::at_most("P2", "NTA resident/live ≤ 1.05 (same bound, by RSS)", "NTA resident/live", nta_resident, 1.05),
    ];
    WorkloadReport::new(WorkloadId::P2, table, json, goals)
}

/// P3 report (and its PNG maps).
pub fn fill_report(options: &SuiteOptions) -> WorkloadReport {
    let params = fill_params(options);
    let capacity = params.capacity_bytes;
    let metric = |outcome: &FillOutcome| {
        let r = &outcome.result;
        (!r.phases.is_empty() && !r.cap_violated).then(|| r.min_utilization())
    };
    let (outcomes, _) = run_on_peers(
        options,
        WorkloadId::P3,
        FillVisitor(&params, options.map_dir.as_deref()),
        "lowest utilization",
        |o: &FillOutcome| metric(o).unwrap_or(0.0),
    );
    let nta = nta_value(&outcomes, metric);
    let mut maxima = Vec::new();
    let mut max_bytes = params.start_max_bytes;
    while max_bytes >= params.last_max_bytes.max(1) {
        maxima.push(max_bytes);
        max_bytes /= 2;
    }
    let mut headers = vec!["allocator".to_string(), "cap".to_string()];
    headers.extend(maxima.iter().map(|m| format!("util. at failure, max {m} B")));
    headers.push("lowest".into());
    headers.push("NTA/peer (lowest; higher: NTA fuller)".into());
    let mut table = Table {
        title: format!(
            "P3 fill test (seed 002): random sizes 1..=max in {} MiB until a failure, then max/2",
            capacity >> 20
        ),
        headers,
        ..Table::default()
    };
    table.notes.push(scale_note(options));
    table.notes.push(
        "Utilization = live requested bytes / capacity at each failure. NTA: Pool capacity, 1 shard. \
         pow2 and mempool: models capped at the capacity. system, mimalloc, jemalloc: cap *emulated* by summing \
         usable sizes (sees size-class rounding only, never fragmentation or metadata)."
            .to_string(),
    );
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        match outcome {
            Ok(outcome) => {
                let result = &outcome.result;
                let cap = if kind.enforces_capacity() { "own" } else { "emulated" };
                let mut row = vec![kind.name().to_string(), cap.to_string()];
                for &max in &maxima {
                    let phase = result.phases.iter().find(|phase| phase.max_request_bytes == max);
                    row.push(phase.map_or_else(|| "—".to_string(), |phase| fmt_percent(phase.utilization)));
                }
                let lowest = metric(outcome);
                row.push(lowest.map_or_else(|| "n/a".to_string(), fmt_percent));
                row.push(fmt_ratio(ratio(nta, lowest)));
                table.row(row);
                if result.cap_violated {
                    table
                        .footer
                        .push(format!("{}: live bytes exceeded the capacity: the cap is not enforced", kind.name()));
                }
                let mut map_paths = Vec::new();
                for map in &outcome.maps {
                    match &map.path {
                        Ok(path) => {
                            table.footer.push(format!(
                                "{} map ({}): {path} ({} pages; {} granules used, {} free)",
                                kind.name(),
                                map.stage,
                                map.pages,
                                map.used_granules,
                                map.free_granules
                            ));
                            map_paths.push(Json::str(path.clone()));
                        }
                        Err(error) => {
                            table.footer.push(format!("{} {} map not written: {error}", kind.name(), map.stage))
                        }
                    }
                }
                let phases = result
                    .phases
                    .iter()
                    .map(|phase| {
                        Json::obj(vec![
                            ("max_request_bytes", Json::Int(phase.max_request_bytes as u64)),
                            ("failed_request_bytes", Json::Int(phase.failed_request_bytes as u64)),
                            ("allocations", Json::Int(phase.allocations)),
                            ("live_requested_bytes", Json::Int(phase.live_requested_bytes)),
                            ("utilization", Json::Num(phase.utilization)),
                        ])
                    })
                    .collect();
                json.push(Json::obj(vec![
                    ("workload", Json::str("P3")),
                    ("alloc", Json::str(kind.name())),
                    ("capacity_bytes", Json::Int(capacity as u64)),
                    ("cap", Json::str(cap)),
                    ("phases", Json::Arr(phases)),
                    ("min_utilization", Json::opt_num(lowest)),
                    ("cap_violated", Json::Bool(result.cap_violated)),
                    ("map_png", Json::Arr(map_paths)),
                    ("nta_over_peer", Json::opt_num(ratio(nta, lowest))),
                ]));
            }
            Err(error) => {
                table.row(error_row(*kind, error, maxima.len() + 4));
                json.push(error_json(WorkloadId::P3, *kind, error));
            }
        }
    }
    table.footer.push(
        "mempool: a request above its 2048 B data room fails at once, so its first failure is the first such request."
            .to_string(),
    );
    let goal = Goal::at_least("P3", "NTA ≥ 97% of the capacity at every failure (issue 2)", "NTA lowest", nta, 0.97);
    WorkloadReport::new(WorkloadId::P3, table, json, vec![goal])
}

/// P4 report, in the seed-001 column format.
pub fn free_order_report(options: &SuiteOptions) -> WorkloadReport {
    let params = FreeOrderParams::at(options.scale);
    let (outcomes, runs_note) = run_on_peers(
        options,
        WorkloadId::P4,
        FreeOrderVisitor(&params),
        "total alloc+free ns over all cells",
        |cells: &Vec<FreeOrderCell>| cells.iter().map(|c| (c.alloc_ns + c.free_ns) as f64).sum(),
    );
    let ms = |ns: u64| ns as f64 / 1e6;
    let find = |cells: &[FreeOrderCell], size: usize, order: FreeOrder| {
        cells.iter().find(|cell| cell.object_bytes == size && cell.order == order).cloned()
    };
    let nta_cells: Option<Vec<FreeOrderCell>> = outcomes
        .iter()
        .find(|(kind, _)| *kind == PeerKind::Nta)
        .and_then(|(_, outcome)| outcome.as_ref().ok().cloned());
    let mut table = Table::new(
        format!("P4 seed-001 table: {} objects per cell, freed in order / alternately / reversed", params.objects),
        &[
            "Allocator",
            "Free order",
            "Object Size",
            "Alloc Time (ms)",
            "Free Time (ms)",
            "NTA/peer alloc",
            "NTA/peer free",
        ],
    );
    table.notes.push(scale_note(options));
    table.notes.extend(runs_note);
    if params.objects != 1 << 20 {
        table.notes.push(format!("Not the seed's 1M ({} objects per cell).", params.objects));
    }
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        let cells = match outcome {
            Ok(cells) => cells,
            Err(error) => {
                table.row(error_row(*kind, error, 7));
                json.push(error_json(WorkloadId::P4, *kind, error));
                continue;
            }
        };
        for order in FreeOrder::ALL {
            for size in OBJECT_SIZES {
                let Some(cell) = find(cells, size, order) else {
                    continue;
                };
                let nta_cell = nta_cells.as_deref().and_then(|nta| find(nta, size, order));
                let alloc_ratio = ratio(nta_cell.as_ref().map(|c| ms(c.alloc_ns)), Some(ms(cell.alloc_ns)));
                let free_ratio = ratio(nta_cell.as_ref().map(|c| ms(c.free_ns)), Some(ms(cell.free_ns)));
                let failed =
                    if cell.failed_allocs > 0 { format!(" ({} failed)", cell.failed_allocs) } else { String::new() };
                table.row(vec![
                    kind.name().into(),
                    order.name().into(),
                    format!("{size}B"),
                    format!("{:.1}{failed}", ms(cell.alloc_ns)),
                    format!("{:.1}", ms(cell.free_ns)),
                    fmt_ratio(alloc_ratio),
                    fmt_ratio(free_ratio),
                ]);
                json.push(Json::obj(vec![
                    ("workload", Json::str("P4")),
                    ("alloc", Json::str(kind.name())),
                    ("order", Json::str(order.name())),
                    ("object_bytes", Json::Int(size as u64)),
                    ("objects", Json::Int(cell.objects as u64)),
                    ("alloc_ms", Json::Num(ms(cell.alloc_ns))),
                    ("free_ms", Json::Num(ms(cell.free_ns))),
                    ("failed_allocs", Json::Int(cell.failed_allocs)),
                    ("nta_over_peer_alloc", Json::opt_num(alloc_ratio)),
                    ("nta_over_peer_free", Json::opt_num(free_ratio)),
                ]));
            }
        }
    }
    // Goal: every NTA cell ≤ glibc and ≤ 1.2 × mimalloc, alloc and free alike.
    let mut goals = Vec::new();
    for (peer, bound, text) in [(PeerKind::System, 1.0, "≤ glibc"), (PeerKind::Mimalloc, 1.2, "≤ 1.2× mimalloc")] {
        let peer_cells = outcomes.iter().find(|(k, _)| *k == peer).and_then(|(_, o)| o.as_ref().ok());
        let mut misses = Vec::new();
        let mut total = 0;
        if let (Some(nta), Some(other)) = (&nta_cells, peer_cells) {
            for cell in nta {
                let Some(other) = find(other, cell.object_bytes, cell.order) else {
                    continue;
                };
                for (what, mine, theirs) in
                    [("alloc", cell.alloc_ns, other.alloc_ns), ("free", cell.free_ns, other.free_ns)]
                {
                    total += 1;
                    if mine as f64 > bound * theirs as f64 {
                        misses.push(format!(
                            "{}B {} {what} {:.2}×",
                            cell.object_bytes,
                            cell.order.name(),
                            mine as f64 / theirs.max(1) as f64
                        ));
                    }
                }
            }
        }
        goals.push(Goal::every("P4", &format!("every NTA cell (alloc and free) {text}"), total, &misses));
    }
    WorkloadReport::new(WorkloadId::P4, table, json, goals)
}

/// P5 report.
pub fn cross_thread_report(options: &SuiteOptions) -> WorkloadReport {
    let params = cross_thread_params(options);
    let (outcomes, runs_note) =
        run_on_peers(options, WorkloadId::P5, CrossThreadVisitor(&params), "pairs/s", CrossThreadResult::pairs_per_sec);
    let metric = |r: &CrossThreadResult| Some(r.pairs_per_sec());
    let nta = nta_value(&outcomes, metric);
    let mut table = Table::new(
        format!(
            "P5 cross-thread: A allocates IMIX buffers, B frees them, SPSC ring of {}, {} pairs",
            params.queue_capacity, params.pairs
        ),
        &["allocator", "pairs/s", "ns per pair", "failed allocs", "NTA/peer (throughput; higher: NTA faster)"],
    );
    table.notes.push(scale_note(options));
    table.notes.extend(runs_note);
    table.notes.push("NTA: default shards; A binds shard 0 and B shard 1, so every free is remote.".to_string());
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        match outcome {
            Ok(result) => {
                let r = ratio(nta, metric(result));
                let ns = 1e9 / result.pairs_per_sec();
                table.row(vec![
                    kind.name().into(),
                    format!("{:.0}", result.pairs_per_sec()),
                    format!("{ns:.1}"),
                    result.failed_allocs.to_string(),
                    fmt_ratio(r),
                ]);
                json.push(Json::obj(vec![
                    ("workload", Json::str("P5")),
                    ("alloc", Json::str(kind.name())),
                    ("pairs", Json::Int(result.pairs_completed)),
                    ("elapsed_ns", Json::Int(result.elapsed_ns)),
                    ("pairs_per_sec", Json::Num(result.pairs_per_sec())),
                    ("failed_allocs", Json::Int(result.failed_allocs)),
                    ("nta_over_peer", Json::opt_num(r)),
                ]));
            }
            Err(error) => {
                table.row(error_row(*kind, error, 5));
                json.push(error_json(WorkloadId::P5, *kind, error));
            }
        }
    }
    let vs = ratio(nta, peer_value(&outcomes, PeerKind::Mimalloc, metric));
    let runs = options.runs_of(WorkloadId::P5);
    let goal = Goal::at_least(
        "P5",
        &format!("NTA ≥ 1.0× mimalloc (pairs/s, median of {runs} run{})", if runs == 1 { "" } else { "s" }),
        "NTA/mimalloc",
        vs,
        1.0,
    );
    WorkloadReport::new(WorkloadId::P5, table, json, vec![goal])
}

/// P6 report.
pub fn churn_report(options: &SuiteOptions) -> WorkloadReport {
    let params = churn_params(options);
    let mut jobs: Vec<Job<'_>> = options.peers.iter().map(|&kind| (kind.name().to_string(), kind, options)).collect();
    // One more run per round: NTA, glibc, jemalloc and mimalloc in one
    // process, interleaved by blocks (throughput only), as in P1.
    let mut interleaved_options = options.clone();
    interleaved_options.interleave = true;
    if options.peers.contains(&PeerKind::Nta) {
        jobs.push((INTERLEAVED_LABEL.to_string(), PeerKind::Nta, &interleaved_options));
    }
    // The interleaved run's figure is NTA's throughput over mimalloc's.
    let nta_over_mimalloc = |lanes: &Interleaved| lanes.time_ratio(PeerKind::Mimalloc.name(), PeerKind::Nta.name());
    let (mut all, runs_note) = run_rounds(
        options.runs_of(WorkloadId::P6),
        WorkloadId::P6,
        |o: &SuiteOptions| ChurnVisitor(churn_params(o)),
        &format!("ops/s ({INTERLEAVED_LABEL}: NTA's over mimalloc's)"),
        |r: &ChurnResult| match &r.interleaved {
            Some(lanes) => nta_over_mimalloc(lanes).unwrap_or(0.0),
            None => r.ops_per_sec(),
        },
        &jobs,
    );
    let interleaved_outcome = take_labelled(&mut all, INTERLEAVED_LABEL);
    let outcomes: PeerOutcomes<ChurnResult> = all.into_iter().map(|(_, kind, outcome)| (kind, outcome)).collect();
    let interleaved = match &interleaved_outcome {
        Some(Ok(r)) => r.interleaved.as_ref(),
        _ => None,
    };
    let metric = |r: &ChurnResult| Some(r.ops_per_sec());
    let nta = nta_value(&outcomes, metric);
    let mut table = Table::new(
        format!(
            "P6 churn: {} random alloc/free/shrink ops, IMIX + long tail, ~{} live",
            params.ops, params.target_live
        ),
        &[
            "allocator",
            "ops/s (own process)",
            "failed",
            "ops/s (one process, interleaved)",
            "own footprint MiB at 25% / end / max",
            "resident Δ MiB at 25% / end / max",
            "drift (own, end / 25%)",
            "max own / max live",
            "max resident / max live",
            "NTA/peer (ops/s; higher: NTA faster)",
        ],
    );
    table.notes.push(scale_note(options));
    table.notes.extend(runs_note);
    if options.scale != Scale::Full {
        table.notes.push(format!("**Scaled down**: {} operations instead of 100M.", params.ops));
    }
    table.notes.push(format!(
        "Footprint sampled {} times: own stats, metadata included (NTA mapped + metadata; glibc's are \
         process-wide), and resident memory (RSS + hugetlb), both deltas from the start.",
        params.samples
    ));
    table.notes.extend(interleaved_note(&interleaved_outcome, |r| r.interleaved.as_ref(), "a live set", "operations"));
    let mut json = Vec::new();
    for (kind, outcome) in &outcomes {
        match outcome {
            Ok(result) => {
                let own = ratio(nta, metric(result));
                let lane = interleaved.and_then(|lanes| lanes.lane(kind.name()));
                // Throughput: the peer's time over NTA's.
                let together = interleaved.and_then(|lanes| lanes.time_ratio(kind.name(), PeerKind::Nta.name()));
                let r = if lane.is_some() { together } else { own };
                let triple = |pick: &dyn Fn(&churn::ChurnSample) -> Option<u64>| {
                    let quarter = result.samples.get(result.samples.len() / 4).and_then(pick);
                    let last = result.samples.last().and_then(pick);
                    let max = result.samples.iter().filter_map(pick).max();
                    format!("{} / {} / {}", fmt_mib(quarter), fmt_mib(last), fmt_mib(max))
                };
                table.row(vec![
                    kind.name().into(),
                    format!("{:.0}", result.ops_per_sec()),
                    result.failed_allocs.to_string(),
                    lane.map_or(String::new(), |l| format!("{:.0}", l.steps_per_sec())),
                    triple(&|s| s.held_bytes),
                    triple(&|s| s.resident_bytes),
                    fmt_num(result.drift_by(|s| s.held_bytes), 3),
                    fmt_num(result.held_peak_ratio(), 2),
                    fmt_num(result.resident_peak_ratio(), 2),
                    fmt_ratio(r),
                ]);
                let samples = result
                    .samples
                    .iter()
                    .map(|s| {
                        Json::obj(vec![
                            ("ops_done", Json::Int(s.ops_done)),
                            ("live_requested_bytes", Json::Int(s.live_requested_bytes)),
                            ("held_bytes", Json::opt_int(s.held_bytes)),
                            ("resident_bytes", Json::opt_int(s.resident_bytes)),
                        ])
                    })
                    .collect();
                json.push(Json::obj(vec![
                    ("workload", Json::str("P6")),
                    ("alloc", Json::str(kind.name())),
                    ("ops", Json::Int(result.ops)),
                    ("allocs", Json::Int(result.allocs)),
                    ("frees", Json::Int(result.frees)),
                    ("shrinks", Json::Int(result.shrinks)),
                    ("failed_allocs", Json::Int(result.failed_allocs)),
                    ("elapsed_ns", Json::Int(result.elapsed_ns)),
                    ("ops_per_sec", Json::Num(result.ops_per_sec())),
                    ("drift", Json::opt_num(result.drift())),
                    ("held_over_live", Json::opt_num(result.held_peak_ratio())),
                    ("resident_over_live", Json::opt_num(result.resident_peak_ratio())),
                    ("samples", Json::Arr(samples)),
                    ("interleaved_ops_per_sec", Json::opt_num(lane.map(|l| l.steps_per_sec()))),
                    ("nta_over_peer_own_process", Json::opt_num(own)),
                    ("nta_over_peer", Json::opt_num(r)),
                ]));
            }
            Err(error) => {
                table.row(error_row(*kind, error, 10));
                json.push(error_json(WorkloadId::P6, *kind, error));
            }
        }
    }
    let mut goals = Vec::new();
    for (what, pick) in [
        ("own", ChurnResult::held_peak_ratio as fn(&ChurnResult) -> Option<f64>),
        ("resident", ChurnResult::resident_peak_ratio),
    ] {
        let lean = leanest(GOAL_PEERS.map(|k| (k.name(), peer_value(&outcomes, k, pick))));
        goals.push(Goal::at_most(
            "P6",
            &format!("NTA footprint/live ≤ the leanest peer's ({what} footprint)"),
            &format!(
                "NTA {:.2} vs {}; NTA/{}",
                nta_value(&outcomes, pick).unwrap_or(f64::NAN),
                lean.map_or("n/a".into(), |(name, v)| format!("{name} {v:.2}")),
                lean.map_or("peer", |(name, _)| name)
            ),
            ratio(nta_value(&outcomes, pick), lean.map(|(_, v)| v)),
            1.0,
        ));
    }
    goals.push(match interleaved {
        Some(lanes) => Goal::at_least(
            "P6",
            "NTA throughput ≥ mimalloc (in one process, interleaved)",
            "NTA/mimalloc ops/s",
            nta_over_mimalloc(lanes),
            1.0,
        ),
        None => Goal::at_least(
            "P6",
            "NTA throughput ≥ mimalloc",
            "NTA/mimalloc ops/s",
            ratio(nta, peer_value(&outcomes, PeerKind::Mimalloc, metric)),
            1.0,
        ),
    });
    let nta_drift = nta_value(&outcomes, |r: &ChurnResult| r.drift_by(|s| s.held_bytes));
    goals.push(Goal::at_most("P6", "NTA footprint flat (own drift ≤ 1.10, issue 2)", "NTA drift", nta_drift, 1.10));
    WorkloadReport::new(WorkloadId::P6, table, json, goals)
}

/// Runs one workload on every selected peer.
pub fn run_workload(id: WorkloadId, options: &SuiteOptions) -> WorkloadReport {
    match id {
        WorkloadId::P1 => packet_mix_report(options),
        WorkloadId::P2 => footprint_report(options),
        WorkloadId::P3 => fill_report(options),
        WorkloadId::P4 => free_order_report(options),
        WorkloadId::P5 => cross_thread_report(options),
        WorkloadId::P6 => churn_report(options),
    }
}

/// Runs `workloads` in [`WorkloadId::RUN_ORDER`] and returns their reports in
/// P1..P6 order.
pub fn run_all(workloads: &[WorkloadId], options: &SuiteOptions) -> Vec<WorkloadReport> {
    let mut reports: Vec<WorkloadReport> =
        WorkloadId::RUN_ORDER.iter().filter(|id| workloads.contains(id)).map(|&id| run_workload(id, options)).collect();
    reports.sort_by_key(|report| report.id);
    reports
}
