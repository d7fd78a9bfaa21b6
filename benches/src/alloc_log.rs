//! Converts the logs of `tools/alloc_trace.c` (the LD_PRELOAD logger) into
//! the replay format of [`crate::trace`].
//!
//! Design notes:
//! - **Input.** One file per traced process: a 32-byte [`LogHeader`] (magic
//!   `NTATRACE`, version 1, record size 48, pid, parent pid, the parent's
//!   sequence number at fork) and then 48-byte [`LogRecord`]s, little-endian,
//!   in the order threads flushed their buffers.
//! - **Order.** Within a process, records are sorted by their sequence
//!   number, which the logger takes before the real call for `free` and
//!   `realloc` and after it for the allocating calls, so a block freed and
//!   handed out again is always seen freed first. Processes have separate
//!   heaps; they are interleaved by timestamp (made non-decreasing within
//!   each process) so that the trace's line order follows wall time.
//! - **Ids.** Every allocation gets a new id; a per-process map from address
//!   to live id turns frees and reallocs into `f id` / `r id size`.
//! - **Threads.** Each (pid, tid) becomes a trace thread in order of first
//!   appearance; past [`TRACE_THREADS`] they are folded (`index % 8`), which
//!   serialises them but keeps every ordering.
//! - **Whatever the log cannot explain is counted, never guessed:** a free
//!   of an address never seen allocated (allocated before the logger
//!   started, inherited across fork, or its record lost in a thread that was
//!   alive at exit) is dropped; an allocation returning an address still
//!   live in the map (a lost free) first frees the old id; a failed call
//!   changes nothing; a request above [`MAX_TRACE_SIZE_BYTES`] is skipped
//!   with its later free. Alignment is not part of the replay format;
//!   aligned requests are replayed as plain ones and counted.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::report::Json;
use crate::trace::{MAX_TRACE_SIZE_BYTES, TRACE_THREADS};

/// Bytes of a log header.
pub const HEADER_BYTES: usize = 32;
/// Bytes of a log record.
pub const RECORD_BYTES: usize = 48;
const MAGIC: &[u8; 8] = b"NTATRACE";

/// The operations the logger records (`op` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// `malloc(arg0)`.
    Malloc,
    /// `free(arg0)`.
    Free,
    /// `calloc(arg0, arg1)`.
    Calloc,
    /// `realloc(arg0, arg1)`.
    Realloc,
    /// `memalign` / `aligned_alloc(arg0, arg1)`.
    Memalign,
    /// `posix_memalign(_, arg0, arg1)`.
    PosixMemalign,
    /// `valloc` / `pvalloc(arg1)` (arg0: the page size).
    Valloc,
}

impl LogOp {
    fn from_code(code: u32) -> Option<LogOp> {
        Some(match code {
            1 => LogOp::Malloc,
            2 => LogOp::Free,
            3 => LogOp::Calloc,
            4 => LogOp::Realloc,
            5 => LogOp::Memalign,
            6 => LogOp::PosixMemalign,
            7 => LogOp::Valloc,
            _ => return None,
        })
    }
}

/// A log file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHeader {
    /// The traced process.
    pub pid: u32,
    /// Its parent, if it was forked while traced (else 0).
    pub parent_pid: u32,
    /// The parent's sequence number at the fork.
    pub fork_seq: u64,
}

/// One recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Process-wide call order.
    pub seq: u64,
    /// Monotonic clock, nanoseconds.
    pub time_ns: u64,
    /// First argument (see [`LogOp`]).
    pub arg0: u64,
    /// Second argument.
    pub arg1: u64,
    /// Returned address, 0 on failure (and for `free`).
    pub result: u64,
    /// Kernel thread id.
    pub tid: u32,
    /// What was called.
    pub op: LogOp,
}

/// One process's log.
#[derive(Clone, Debug)]
pub struct ProcessLog {
    /// Its header.
    pub header: LogHeader,
    /// Its records, in file order.
    pub records: Vec<LogRecord>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses one log file. A truncated last record (a process killed while
/// writing) is an error, as is an unknown operation code.
pub fn parse_log(bytes: &[u8]) -> Result<ProcessLog, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not an alloc_trace log (no NTATRACE header)".into());
    }
    let (version, record_bytes) = (u32_at(bytes, 8), u32_at(bytes, 12));
    if version != 1 || record_bytes as usize != RECORD_BYTES {
        return Err(format!("unsupported log version {version} with {record_bytes}-byte records"));
    }
    let header = LogHeader { pid: u32_at(bytes, 16), parent_pid: u32_at(bytes, 20), fork_seq: u64_at(bytes, 24) };
    let body = &bytes[HEADER_BYTES..];
    if body.len() % RECORD_BYTES != 0 {
        return Err(format!("{} trailing bytes: a record was cut short", body.len() % RECORD_BYTES));
    }
    let records = body
        .chunks_exact(RECORD_BYTES)
        .enumerate()
        .map(|(index, raw)| {
            let code = u32_at(raw, 44);
            let op = LogOp::from_code(code).ok_or_else(|| format!("record {index}: unknown operation {code}"))?;
            Ok(LogRecord {
                seq: u64_at(raw, 0),
                time_ns: u64_at(raw, 8),
                arg0: u64_at(raw, 16),
                arg1: u64_at(raw, 24),
                result: u64_at(raw, 32),
                tid: u32_at(raw, 40),
                op,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ProcessLog { header, records })
}

/// What a conversion did, and what it could not explain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Processes in the input.
    pub processes: u64,
    /// Distinct (pid, tid) pairs.
    pub threads: u64,
    /// Trace threads they were mapped to.
    pub trace_threads: u64,
    /// Records read.
    pub records: u64,
    /// `a` lines written.
    pub allocs: u64,
    /// `f` lines written.
    pub frees: u64,
    /// `r` lines written.
    pub resizes: u64,
    /// Aligned requests replayed as plain ones.
    pub aligned_requests: u64,
    /// Calls that failed in the traced program (nothing written).
    pub failed_in_program: u64,
    /// Frees (or reallocs) of an address never seen allocated.
    pub unknown_frees: u64,
    /// Allocations that returned an address still live in the map.
    pub reused_live_addresses: u64,
    /// Requests above the format's size limit (skipped with their frees).
    pub oversize_skipped: u64,
}

impl ConvertStats {
    /// The stats as one JSON object.
    pub fn to_json(&self) -> Json {
        Json::obj(vec![
            ("processes", Json::Int(self.processes)),
            ("threads", Json::Int(self.threads)),
            ("trace_threads", Json::Int(self.trace_threads)),
            ("records", Json::Int(self.records)),
            ("allocs", Json::Int(self.allocs)),
            ("frees", Json::Int(self.frees)),
            ("resizes", Json::Int(self.resizes)),
            ("aligned_requests", Json::Int(self.aligned_requests)),
            ("failed_in_program", Json::Int(self.failed_in_program)),
            ("unknown_frees", Json::Int(self.unknown_frees)),
            ("reused_live_addresses", Json::Int(self.reused_live_addresses)),
            ("oversize_skipped", Json::Int(self.oversize_skipped)),
        ])
    }
}

/// A live address: its trace id, or `None` when its allocation was skipped
/// as oversize (its free is dropped silently).
type Live = Option<u64>;

/// The conversion state.
struct Converter<W: Write> {
    out: W,
    stats: ConvertStats,
    next_id: u64,
    thread_of: HashMap<(u32, u32), usize>,
    current_thread: usize,
    live: HashMap<u32, HashMap<u64, Live>>,
}

impl<W: Write> Converter<W> {
    fn switch_to(&mut self, pid: u32, tid: u32) -> io::Result<()> {
        let count = self.thread_of.len();
        let thread = *self.thread_of.entry((pid, tid)).or_insert(count % TRACE_THREADS);
        if thread != self.current_thread {
            writeln!(self.out, "t {thread}")?;
            self.current_thread = thread;
        }
        Ok(())
    }

    /// Writes `a` for a block of `size` bytes at `address`.
    fn alloc(&mut self, pid: u32, address: u64, size: u64) -> io::Result<()> {
        self.drop_stale(pid, address)?;
        let live = if size > MAX_TRACE_SIZE_BYTES {
            self.stats.oversize_skipped += 1;
            None
        } else {
            let id = self.next_id;
            self.next_id += 1;
            writeln!(self.out, "a {id} {size}")?;
            self.stats.allocs += 1;
            Some(id)
        };
        self.live.entry(pid).or_default().insert(address, live);
        Ok(())
    }

    /// An address handed out while the map still holds it live: a free was
    /// lost, so the old block is freed first.
    fn drop_stale(&mut self, pid: u32, address: u64) -> io::Result<()> {
        if let Some(stale) = self.live.entry(pid).or_default().remove(&address) {
            self.stats.reused_live_addresses += 1;
            if let Some(id) = stale {
                writeln!(self.out, "f {id}")?;
                self.stats.frees += 1;
            }
        }
        Ok(())
    }

    fn free(&mut self, pid: u32, address: u64) -> io::Result<()> {
        match self.live.entry(pid).or_default().remove(&address) {
            Some(Some(id)) => {
                writeln!(self.out, "f {id}")?;
                self.stats.frees += 1;
            }
            Some(None) => {}
            None => self.stats.unknown_frees += 1,
        }
        Ok(())
    }

    fn realloc(&mut self, pid: u32, old: u64, size: u64, result: u64) -> io::Result<()> {
        if old == 0 {
            return if result == 0 { self.failed() } else { self.alloc(pid, result, size) };
        }
        if result == 0 {
            // glibc: realloc(p, 0) frees p and returns NULL; otherwise a
            // failure leaves p as it was.
            return if size == 0 { self.free(pid, old) } else { self.failed() };
        }
        let known = self.live.entry(pid).or_default().remove(&old);
        match known {
            Some(Some(id)) if size <= MAX_TRACE_SIZE_BYTES => {
                if result != old {
                    self.drop_stale(pid, result)?;
                }
                writeln!(self.out, "r {id} {size}")?;
                self.stats.resizes += 1;
                self.live.entry(pid).or_default().insert(result, Some(id));
                Ok(())
            }
            Some(Some(id)) => {
                // Grown past the format's limit: free it, skip the new block.
                writeln!(self.out, "f {id}")?;
                self.stats.frees += 1;
                self.alloc(pid, result, size)
            }
            Some(None) => self.alloc(pid, result, size),
            None => {
                self.stats.unknown_frees += 1;
                self.alloc(pid, result, size)
            }
        }
    }

    fn failed(&mut self) -> io::Result<()> {
        self.stats.failed_in_program += 1;
        Ok(())
    }

    fn apply(&mut self, pid: u32, record: &LogRecord) -> io::Result<()> {
        self.switch_to(pid, record.tid)?;
        let result = record.result;
        match record.op {
            LogOp::Free => self.free(pid, record.arg0),
            LogOp::Realloc => self.realloc(pid, record.arg0, record.arg1, result),
            _ if result == 0 => self.failed(),
            LogOp::Malloc => self.alloc(pid, result, record.arg0),
            LogOp::Calloc => match record.arg0.checked_mul(record.arg1) {
                Some(size) => self.alloc(pid, result, size),
                None => self.failed(),
            },
            LogOp::Memalign | LogOp::PosixMemalign | LogOp::Valloc => {
                self.stats.aligned_requests += 1;
                self.alloc(pid, result, record.arg1)
            }
        }
    }
}

/// Converts the logs of one recording (every process) into a trace, written
/// to `out`, and returns what it did.
pub fn convert<W: Write>(mut logs: Vec<ProcessLog>, out: W) -> io::Result<ConvertStats> {
    // Order within each process by sequence number, then interleave the
    // processes by (non-decreasing) timestamp.
    let mut order: Vec<(u64, usize, usize)> = Vec::new();
    for (process, log) in logs.iter_mut().enumerate() {
        log.records.sort_by_key(|record| record.seq);
        let mut clock = 0;
        for (index, record) in log.records.iter().enumerate() {
            clock = clock.max(record.time_ns);
            order.push((clock, process, index));
        }
    }
    order.sort_unstable();
    let mut converter = Converter {
        out,
        stats: ConvertStats { processes: logs.len() as u64, records: order.len() as u64, ..ConvertStats::default() },
        next_id: 1,
        thread_of: HashMap::new(),
        current_thread: 0,
        live: HashMap::new(),
    };
    writeln!(
        converter.out,
        "# allocation trace recorded by benches/tools/alloc_trace.c, converted by nta-bench convert"
    )?;
    for &(_, process, index) in &order {
        let pid = logs[process].header.pid;
        converter.apply(pid, &logs[process].records[index])?;
    }
    converter.stats.threads = converter.thread_of.len() as u64;
    converter.stats.trace_threads = converter.thread_of.len().min(TRACE_THREADS) as u64;
    let stats = converter.stats.clone();
    writeln!(converter.out, "# conversion: {}", stats.to_json())?;
    converter.out.flush()?;
    Ok(stats)
}

/// Reads every `*.ntatrace` file in `dir`, in name order.
pub fn read_dir(dir: &std::path::Path) -> Result<Vec<ProcessLog>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "ntatrace"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no .ntatrace files in {}", dir.display()));
    }
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            parse_log(&bytes).map_err(|error| format!("{}: {error}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse;

    fn record(seq: u64, tid: u32, op: LogOp, arg0: u64, arg1: u64, result: u64) -> LogRecord {
        LogRecord { seq, time_ns: seq * 10, arg0, arg1, result, tid, op }
    }

    fn log(pid: u32, records: Vec<LogRecord>) -> ProcessLog {
        ProcessLog { header: LogHeader { pid, parent_pid: 0, fork_seq: 0 }, records }
    }

    fn encode(log: &ProcessLog) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        for value in [1u32, RECORD_BYTES as u32, log.header.pid, log.header.parent_pid] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&log.header.fork_seq.to_le_bytes());
        for r in &log.records {
            for value in [r.seq, r.time_ns, r.arg0, r.arg1, r.result] {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            let code = match r.op {
                LogOp::Malloc => 1u32,
                LogOp::Free => 2,
                LogOp::Calloc => 3,
                LogOp::Realloc => 4,
                LogOp::Memalign => 5,
                LogOp::PosixMemalign => 6,
                LogOp::Valloc => 7,
            };
            bytes.extend_from_slice(&r.tid.to_le_bytes());
            bytes.extend_from_slice(&code.to_le_bytes());
        }
        bytes
    }

    fn text(logs: Vec<ProcessLog>) -> (String, ConvertStats) {
        let mut out = Vec::new();
        let stats = convert(logs, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), stats)
    }

    fn body(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn records_round_trip_through_the_file_format() {
        let original =
            log(42, vec![record(0, 7, LogOp::Calloc, 3, 5, 0x1000), record(1, 7, LogOp::Free, 0x1000, 0, 0)]);
        let parsed = parse_log(&encode(&original)).unwrap();
        assert_eq!(parsed.header, original.header);
        assert_eq!(parsed.records, original.records);
        let mut cut = encode(&original);
        cut.pop();
        assert!(parse_log(&cut).unwrap_err().contains("cut short"));
        assert!(parse_log(b"garbage").is_err());
    }

    #[test]
    fn calls_become_trace_lines_in_sequence_order() {
        // File order is flush order; sequence numbers put the free of 0x10
        // (thread 2) before its reuse by thread 1.
        let records = vec![
            record(0, 1, LogOp::Malloc, 100, 0, 0x10),
            record(3, 1, LogOp::Malloc, 64, 0, 0x10),
            record(4, 1, LogOp::Realloc, 0x10, 200, 0x30),
            record(5, 1, LogOp::PosixMemalign, 64, 500, 0x50),
            record(6, 1, LogOp::Realloc, 0x30, 0, 0),
            record(1, 2, LogOp::Free, 0x10, 0, 0),
            record(2, 2, LogOp::Malloc, 5, 0, 0),
        ];
        let (text, stats) = text(vec![log(9, records)]);
        assert_eq!(body(&text), ["a 1 100", "t 1", "f 1", "t 0", "a 2 64", "r 2 200", "a 3 500", "f 2"]);
        assert_eq!(stats.failed_in_program, 1);
        assert_eq!(stats.aligned_requests, 1);
        assert_eq!((stats.allocs, stats.frees, stats.resizes), (3, 2, 1));
        assert_eq!(stats.trace_threads, 2);
        parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn what_the_log_cannot_explain_is_counted_and_the_trace_stays_valid() {
        let records = vec![
            record(0, 1, LogOp::Free, 0xdead, 0, 0),                        // never allocated
            record(1, 1, LogOp::Malloc, 10, 0, 0x10),                       // id 1
            record(2, 1, LogOp::Malloc, 20, 0, 0x10),                       // free of 0x10 lost
            record(3, 1, LogOp::Malloc, MAX_TRACE_SIZE_BYTES + 1, 0, 0x99), // oversize
            record(4, 1, LogOp::Free, 0x99, 0, 0),
            record(5, 1, LogOp::Realloc, 0xbeef, 30, 0x40), // unknown old block
            record(6, 1, LogOp::Calloc, u64::MAX, 2, 0x70), // overflowing calloc
        ];
        let (text, stats) = text(vec![log(9, records)]);
        assert_eq!(body(&text), ["a 1 10", "f 1", "a 2 20", "a 3 30"]);
        assert_eq!(stats.unknown_frees, 2);
        assert_eq!(stats.reused_live_addresses, 1);
        assert_eq!(stats.oversize_skipped, 1);
        assert_eq!(stats.failed_in_program, 1);
        parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn processes_keep_separate_heaps_and_threads() {
        // The same address in two processes is two blocks.
        let first = log(1, vec![record(0, 1, LogOp::Malloc, 8, 0, 0x10), record(2, 1, LogOp::Free, 0x10, 0, 0)]);
        let second = log(2, vec![record(1, 5, LogOp::Malloc, 16, 0, 0x10), record(3, 5, LogOp::Free, 0x10, 0, 0)]);
        let (text, stats) = text(vec![first, second]);
        assert_eq!(body(&text), ["a 1 8", "t 1", "a 2 16", "t 0", "f 1", "t 1", "f 2"]);
        assert_eq!((stats.processes, stats.threads, stats.unknown_frees), (2, 2, 0));
        parse(text.as_bytes()).unwrap();
    }
}
