//! The allocation-trace format and its parser.
//!
//! A trace is text, one operation a line:
//!
//! | line | meaning |
//! |---|---|
//! | `a <id> <size>` | allocate `size` bytes and call the block `id` |
//! | `f <id>` | free block `id` |
//! | `r <id> <new_size>` | shrink or grow block `id` to `new_size` bytes |
//! | `t <thread>` | run the following lines on thread `thread` (0 to 7) |
//!
//! `#` starts a comment that runs to the end of the line; blank lines are
//! ignored; fields are separated by any whitespace. Numbers are plain
//! decimal digits (no sign, no `0x`, no `_`). `id` is any `u64`; an id may
//! be allocated again once it has been freed. `size` is at most
//! [`MAX_TRACE_SIZE_BYTES`].
//!
//! The parser checks the whole trace before anything runs, so a replay never
//! stops halfway: a malformed line, an `f`/`r` of an id never allocated, of
//! an id already freed, or an `a` of an id still live is an error naming its
//! line (1-based).
//!
//! Each `a` gets its own slot number, so the replay indexes a vector instead
//! of hashing ids.

use std::collections::HashMap;
use std::fmt;

/// Largest size a trace may request (1 GiB).
pub const MAX_TRACE_SIZE_BYTES: u64 = 1 << 30;
/// Number of trace threads (`t 0` .. `t 7`).
pub const TRACE_THREADS: usize = 8;

/// One parsed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceOp {
    /// Allocate `len` bytes into `slot`.
    Alloc {
        /// Slot of the new block.
        slot: usize,
        /// Requested bytes.
        len: usize,
    },
    /// Free the block in `slot`.
    Free {
        /// Slot of the block.
        slot: usize,
    },
    /// Resize the block in `slot` to `new_len` bytes.
    Resize {
        /// Slot of the block.
        slot: usize,
        /// New length in bytes.
        new_len: usize,
    },
    /// Switch to thread `0..TRACE_THREADS`.
    Thread(usize),
}

/// A parsed trace.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// The operations in order.
    pub ops: Vec<TraceOp>,
    /// Number of slots (one per `a` line).
    pub slots: usize,
}

impl Trace {
    /// Number of `a`, `f` and `r` operations (thread switches not counted).
    pub fn memory_ops(&self) -> u64 {
        self.ops.iter().filter(|op| !matches!(op, TraceOp::Thread(_))).count() as u64
    }
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceErrorKind {
    /// The line does not follow the grammar; the text says how.
    Malformed(String),
    /// `f` or `r` of an id that was never allocated.
    UnknownId(u64),
    /// `f` or `r` of an id that was freed and not allocated again.
    AlreadyFreed(u64),
    /// `a` of an id that is still live.
    AlreadyLive(u64),
}

/// A parse error and the 1-based line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: TraceErrorKind,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            TraceErrorKind::Malformed(why) => write!(f, "malformed: {why}"),
            TraceErrorKind::UnknownId(id) => write!(f, "unknown id {id}"),
            TraceErrorKind::AlreadyFreed(id) => write!(f, "id {id} is already freed"),
            TraceErrorKind::AlreadyLive(id) => {
                write!(f, "id {id} is already allocated and not freed")
            }
        }
    }
}

impl std::error::Error for TraceError {}

#[derive(Clone, Copy)]
enum IdState {
    Live(usize),
    Freed,
}

fn malformed(line: usize, why: impl Into<String>) -> TraceError {
    TraceError { line, kind: TraceErrorKind::Malformed(why.into()) }
}

/// A field of ASCII decimal digits only: `u64::from_str` alone would also
/// take a leading `+`, which the format does not allow.
fn number(line: usize, field: Option<&str>, what: &str) -> Result<u64, TraceError> {
    let field = field.ok_or_else(|| malformed(line, format!("missing {what}")))?;
    let not_a_number = || malformed(line, format!("{what} `{field}` is not a non-negative decimal integer"));
    if !field.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(not_a_number());
    }
    field.parse::<u64>().map_err(|_| not_a_number())
}

fn size(line: usize, field: Option<&str>) -> Result<usize, TraceError> {
    let bytes = number(line, field, "size")?;
    if bytes > MAX_TRACE_SIZE_BYTES {
        return Err(malformed(line, format!("size {bytes} is above the {MAX_TRACE_SIZE_BYTES}-byte limit")));
    }
    usize::try_from(bytes).map_err(|_| malformed(line, "size does not fit this machine"))
}

/// Reads a trace file: plain text, or gzip-compressed when its name ends in
/// `.gz` (the recorded traces in `benches/traces/` are stored that way).
pub fn load(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let raw = std::fs::read(path)?;
    if path.extension().is_some_and(|ext| ext == "gz") {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(raw.as_slice()), &mut text)?;
        return Ok(text);
    }
    Ok(raw)
}

/// Parses a whole trace (see the module docs), given as bytes so that a line
/// that is not UTF-8 is reported like any other bad line.
pub fn parse(bytes: &[u8]) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let mut ids: HashMap<u64, IdState> = HashMap::new();
    for (index, raw) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw).map_err(|_| malformed(line, "not UTF-8"))?;
        let text = text.split('#').next().unwrap_or("");
        let mut fields = text.split_whitespace();
        let Some(op) = fields.next() else { continue };
        let parsed = match op {
            "a" => {
                let id = number(line, fields.next(), "id")?;
                let len = size(line, fields.next())?;
                if let Some(IdState::Live(_)) = ids.get(&id) {
                    return Err(TraceError { line, kind: TraceErrorKind::AlreadyLive(id) });
                }
                let slot = trace.slots;
                trace.slots += 1;
                ids.insert(id, IdState::Live(slot));
                TraceOp::Alloc { slot, len }
            }
            "f" | "r" => {
                let id = number(line, fields.next(), "id")?;
                let new_len = if op == "r" { Some(size(line, fields.next())?) } else { None };
                let slot = match ids.get(&id) {
                    None => return Err(TraceError { line, kind: TraceErrorKind::UnknownId(id) }),
                    Some(IdState::Freed) => return Err(TraceError { line, kind: TraceErrorKind::AlreadyFreed(id) }),
                    Some(&IdState::Live(slot)) => slot,
                };
                match new_len {
                    Some(new_len) => TraceOp::Resize { slot, new_len },
                    None => {
                        ids.insert(id, IdState::Freed);
                        TraceOp::Free { slot }
                    }
                }
            }
            "t" => {
                let thread = number(line, fields.next(), "thread")?;
                if thread >= TRACE_THREADS as u64 {
                    return Err(malformed(line, format!("thread {thread} is not in 0..={}", TRACE_THREADS - 1)));
                }
                TraceOp::Thread(thread as usize)
            }
            other => return Err(malformed(line, format!("unknown operation `{other}` (expected a, f, r or t)"))),
        };
        if let Some(extra) = fields.next() {
            return Err(malformed(line, format!("unexpected field `{extra}`")));
        }
        trace.ops.push(parsed);
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> TraceError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_every_operation_and_skips_comments() {
        let trace = parse(b"# header\na 1 100\n\nt 3  # switch\nr 1 50\nf 1\na 1 7\n").unwrap();
        assert_eq!(
            trace.ops,
            vec![
                TraceOp::Alloc { slot: 0, len: 100 },
                TraceOp::Thread(3),
                TraceOp::Resize { slot: 0, new_len: 50 },
                TraceOp::Free { slot: 0 },
                TraceOp::Alloc { slot: 1, len: 7 },
            ]
        );
        assert_eq!(trace.slots, 2);
        assert_eq!(trace.memory_ops(), 4);
    }

    #[test]
    fn each_bad_line_is_reported_with_its_number() {
        let cases: &[(&str, usize)] = &[
            ("a 1 10\nx 1\n", 2),
            ("a 1\n", 1),
            ("a 1 ten\n", 1),
            ("a -1 10\n", 1),
            ("a +1 10\n", 1),
            ("a 1 +10\n", 1),
            ("a 1 1_0\n", 1),
            ("a 1 0x10\n", 1),
            ("a 1 99999999999999999999\n", 1),
            ("t +1\n", 1),
            ("a 1 10 extra\n", 1),
            ("a 1 2000000000\n", 1),
            ("\n\nt 8\n", 3),
            ("t\n", 1),
            ("a 1 10\nf\n", 2),
            ("a 1 10\nr 1\n", 2),
        ];
        for &(text, line) in cases {
            let error = error_of(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(matches!(error.kind, TraceErrorKind::Malformed(_)), "{text:?}: {error}");
        }
    }

    #[test]
    fn id_errors_are_reported_with_their_line() {
        assert_eq!(error_of("a 1 10\nf 2\n"), TraceError { line: 2, kind: TraceErrorKind::UnknownId(2) });
        assert_eq!(error_of("a 1 10\nr 2 5\n"), TraceError { line: 2, kind: TraceErrorKind::UnknownId(2) });
        assert_eq!(error_of("a 1 10\nf 1\nf 1\n"), TraceError { line: 3, kind: TraceErrorKind::AlreadyFreed(1) });
        assert_eq!(error_of("a 1 10\nf 1\nr 1 4\n"), TraceError { line: 3, kind: TraceErrorKind::AlreadyFreed(1) });
        assert_eq!(error_of("a 1 10\n#\na 1 10\n"), TraceError { line: 3, kind: TraceErrorKind::AlreadyLive(1) });
    }

    #[test]
    fn non_utf8_line_is_malformed() {
        let error = parse(b"a 1 10\n\xff\xfe\n").unwrap_err();
        assert_eq!(error.line, 2);
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        assert_eq!(parse(b"a 1 10\r\nf 1\r\n").unwrap().ops.len(), 2);
    }
}
