//! `nta-bench`: runs the NTA benchmark suite or replays an allocation trace.
//! Argument parsing only; everything else is library code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nta_bench::peers::{parse_hugepages, with_peer, HugePages, NtaTuning, Peer, PeerConfig, PeerKind, PeerVisitor};
use nta_bench::replay::{replay, ReplayResult};
use nta_bench::suite::{run_all, worker, Isolation, SuiteOptions, WorkloadId};
use nta_bench::trace::{load, parse, Trace};
use nta_bench::workloads::{Scale, DEFAULT_SEED};
use nta_bench::{alloc_log, mem_stats, results, trace_table};

#[derive(Parser)]
#[command(name = "nta-bench", about = "NTA against glibc, mimalloc, jemalloc, a pow2 model and a mempool model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload (P1..P6) on every allocator and print one table per workload.
    All {
        /// Scaled-down run (about 3 minutes on 2 cores).
        #[arg(long)]
        quick: bool,
        /// Print JSON lines instead of markdown tables.
        #[arg(long)]
        json: bool,
        /// Seed of every workload.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Only these workloads (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum, ignore_case = true)]
        workloads: Option<Vec<WorkloadId>>,
        /// Only these allocators (comma-separated; keep nta for the ratios).
        #[arg(long, value_delimiter = ',', value_enum)]
        allocs: Option<Vec<PeerKind>>,
        /// Directory for the P3 fragmentation maps (PNG).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/out"))]
        map_dir: PathBuf,
        /// Run every (workload, allocator) pair in this process instead of a
        /// fresh child process each (footprints of the process-wide
        /// allocators then carry over from one run to the next).
        #[arg(long)]
        in_process: bool,
        /// Runs per (workload, allocator) of P1, P2, P4 and P6; each row shows
        /// the median run (P5 always runs at least 5 times, P3 once).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[command(flatten)]
        nta: NtaArgs,
    },
    /// Measure everything in RESULTS.md's allocator tables (every workload,
    /// then every recorded trace) and write the file (or print it).
    Results {
        /// Write RESULTS.md here (keeping what is below its kept-marker);
        /// print to stdout if absent.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Scaled-down workloads (for trying the command; RESULTS.md uses full).
        #[arg(long)]
        quick: bool,
        /// Runs per (workload, allocator) of P1, P2, P4 and P6 (P5: at least 5).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Replays per (trace, allocator): a replay takes 10-150 ms, so five
        /// cost little and steady the medians on a shared host.
        #[arg(long, default_value_t = 5)]
        trace_runs: usize,
        /// Directory of recorded traces (`*.trace.gz`).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/traces"))]
        traces: PathBuf,
        /// Directory for the P3 fragmentation maps (PNG).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/out"))]
        map_dir: PathBuf,
        #[command(flatten)]
        nta: NtaArgs,
    },
    /// Internal: run one workload on one allocator and print its result as JSON.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum, ignore_case = true)]
        workload: WorkloadId,
        #[arg(long, value_enum)]
        alloc: PeerKind,
        #[arg(long, value_enum)]
        scale: Scale,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        map_dir: Option<PathBuf>,
        /// P1 and P6 only: run NTA, glibc, jemalloc and mimalloc in this process,
        /// interleaved by blocks.
        #[arg(long)]
        interleave: bool,
        #[command(flatten)]
        nta: NtaArgs,
    },
    /// Convert the logs of benches/tools/alloc_trace.c (one directory, one
    /// file per process) into a trace; prints what it could not explain as
    /// JSON on stderr.
    Convert {
        /// Directory of `*.ntatrace` files (the logger's NTA_TRACE_DIR).
        dir: PathBuf,
        /// Output file (gzip-compressed if it ends in `.gz`); stdout if absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Replay an allocation trace and print one JSON line.
    Replay {
        /// The trace file, plain or gzip-compressed (`.gz`); see benches/README.md for the format.
        file: PathBuf,
        /// The allocator to replay on.
        #[arg(long, value_enum)]
        alloc: PeerKind,
        #[command(flatten)]
        nta: NtaArgs,
    },
}

/// Where `convert` writes.
fn convert_logs(dir: &Path, output: Option<&Path>) -> ExitCode {
    let logs = match alloc_log::read_dir(dir) {
        Ok(logs) => logs,
        Err(error) => {
            eprintln!("nta-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let written = match output {
        None => alloc_log::convert(logs, std::io::BufWriter::new(std::io::stdout().lock())),
        Some(path) => std::fs::File::create(path).and_then(|file| {
            let file = std::io::BufWriter::new(file);
            if path.extension().is_some_and(|ext| ext == "gz") {
                let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::best());
                let stats = alloc_log::convert(logs, &mut encoder)?;
                encoder.finish()?.into_inner().map_err(|error| error.into_error())?.sync_all()?;
                Ok(stats)
            } else {
                alloc_log::convert(logs, file)
            }
        }),
    };
    match written {
        Ok(stats) => {
            eprintln!("{}", stats.to_json());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nta-bench: cannot write the trace: {error}");
            ExitCode::from(2)
        }
    }
}

/// The hugepage footing, and NTA diagnostics.
#[derive(clap::Args)]
struct NtaArgs {
    /// Give every allocator its huge pages: NTA `HugePages::Try` (nta-core's
    /// default) and the kernel's THP mode for the others. Without it, all run
    /// on 4 KiB pages: NTA `HugePages::Off`, THP disabled for this process
    /// and its children (PR_SET_THP_DISABLE).
    #[arg(long)]
    hugepages: bool,
    /// Diagnostic: NTA's hugepage policy (off, try, require), overriding the footing.
    #[arg(long, value_parser = parse_hugepages)]
    nta_hugepages: Option<HugePages>,
    /// Diagnostic: NTA on private anonymous memory instead of memfd segments.
    #[arg(long)]
    nta_private: bool,
    /// Diagnostic: NTA keeps this many wholly free bytes mapped (default: nta-core's).
    #[arg(long)]
    nta_retain_bytes: Option<usize>,
    /// Diagnostic: NTA shard count (default: one per CPU; P3 always uses 1).
    #[arg(long)]
    nta_shards: Option<usize>,
    /// Diagnostic: NTA frees without the length (`Pool::free`), as C's `free` does.
    /// P1 then alternates sized and unsized frees by blocks in one run, and
    /// reports both.
    #[arg(long)]
    nta_unsized_frees: bool,
}

impl NtaArgs {
    /// Sets up this process's footing (see `hugepages`) and returns NTA's settings.
    fn footing(&self) -> NtaTuning {
        if !self.hugepages && !mem_stats::disable_thp() {
            eprintln!("nta-bench: cannot disable THP for this process; the other allocators may get huge pages");
        }
        let default = if self.hugepages { HugePages::Try } else { HugePages::Off };
        NtaTuning {
            hugepages: self.nta_hugepages.unwrap_or(default),
            exportable: self.nta_private.then_some(false),
            retain_bytes: self.nta_retain_bytes,
            shards: self.nta_shards,
            unsized_frees: self.nta_unsized_frees,
        }
    }
}

struct ReplayVisitor<'a>(&'a Trace);

impl PeerVisitor for ReplayVisitor<'_> {
    type Output = ReplayResult;
    fn visit<P: Peer>(self, peer: &P) -> ReplayResult {
        replay(peer, self.0)
    }
}

fn run_replay(file: &Path, alloc: PeerKind, tuning: NtaTuning) -> ExitCode {
    let bytes = match load(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("nta-bench: cannot read {}: {error}", file.display());
            return ExitCode::from(2);
        }
    };
    let trace = match parse(&bytes) {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("nta-bench: {}: {error}", file.display());
            return ExitCode::from(1);
        }
    };
    drop(bytes);
    let config = PeerConfig { nta_tuning: tuning, nta_shards: tuning.shards, capacity_bytes: None };
    match with_peer(alloc, config, ReplayVisitor(&trace)) {
        Ok(result) => {
            println!("{}", result.to_json(alloc.name()));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nta-bench: {error}");
            ExitCode::from(2)
        }
    }
}

/// `nta-bench results`.
fn run_results(
    write: Option<PathBuf>,
    scale: Scale,
    repeat: usize,
    trace_runs: usize,
    traces_dir: &Path,
    map_dir: PathBuf,
    nta_tuning: NtaTuning,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("nta-bench: cannot find this executable: {error}");
            return ExitCode::from(2);
        }
    };
    let traces = match trace_table::traces_in(traces_dir) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("nta-bench: cannot list {}: {error}", traces_dir.display());
            return ExitCode::from(2);
        }
    };
    let existing = match &write {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                eprintln!("nta-bench: cannot read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        },
        None => String::new(),
    };
    let command: Vec<String> = std::env::args().skip(1).collect();
    let options = results::ResultsOptions {
        suite: SuiteOptions {
            scale,
            seed: DEFAULT_SEED,
            peers: PeerKind::ALL.to_vec(),
            map_dir: Some(map_dir),
            progress: true,
            isolation: Isolation::ChildProcess(exe.clone()),
            nta_tuning,
            repeats: repeat.max(1),
            interleave: false,
        },
        exe,
        traces,
        trace_runs: trace_runs.max(1),
        command: format!("benches/run-results.sh (nta-bench {})", command.join(" ")),
    };
    let measured = results::measure(options);
    let text = results::render(&measured, &results::kept_part(&existing));
    match write {
        Some(path) => {
            if let Err(error) = std::fs::write(&path, text) {
                eprintln!("nta-bench: cannot write {}: {error}", path.display());
                return ExitCode::from(2);
            }
            eprintln!("[nta-bench] wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::All { quick, json, seed, workloads, allocs, map_dir, in_process, repeat, nta } => {
            let isolation = match std::env::current_exe() {
                Ok(exe) if !in_process => Isolation::ChildProcess(exe),
                _ => Isolation::InProcess,
            };
            let options = SuiteOptions {
                scale: if quick { Scale::Quick } else { Scale::Full },
                seed,
                peers: allocs.unwrap_or_else(|| PeerKind::ALL.to_vec()),
                map_dir: Some(map_dir),
                progress: true,
                isolation,
                nta_tuning: nta.footing(),
                repeats: repeat,
                interleave: false,
            };
            let workloads = workloads.unwrap_or_else(|| WorkloadId::RUN_ORDER.to_vec());
            for report in run_all(&workloads, &options) {
                if json {
                    for line in &report.json {
                        println!("{line}");
                    }
                } else {
                    println!("{}", report.table.to_markdown());
                }
            }
            ExitCode::SUCCESS
        }
        Command::Worker { workload, alloc, scale, seed, map_dir, interleave, nta } => {
            let options = SuiteOptions {
                scale,
                seed,
                peers: vec![alloc],
                map_dir,
                progress: false,
                isolation: Isolation::InProcess,
                nta_tuning: nta.footing(),
                repeats: 1,
                interleave,
            };
            println!("{}", worker(workload, alloc, &options));
            ExitCode::SUCCESS
        }
        Command::Replay { file, alloc, nta } => run_replay(&file, alloc, nta.footing()),
        Command::Convert { dir, output } => convert_logs(&dir, output.as_deref()),
        Command::Results { write, quick, repeat, trace_runs, traces, map_dir, nta } => {
            let scale = if quick { Scale::Quick } else { Scale::Full };
            run_results(write, scale, repeat, trace_runs, &traces, map_dir, nta.footing())
        }
    }
}
