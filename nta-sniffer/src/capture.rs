//! `capture`: the loop that reads packets and writes them out.
//!
//! # Design notes
//!
//! One thread does everything, in this order, each turn:
//!
//! 1. Stop if asked (Ctrl-C/SIGTERM flag, `--count`, `--duration`).
//! 2. Socket events: a Segment is mapped at once (descriptors in it may
//!    follow); before a Released segment is unmapped the rings are drained,
//!    so descriptors published before the release are still read while it
//!    is mapped. EOF or an Error ends the capture after one last drain: our
//!    mappings keep the memory alive, and the checks still apply.
//! 3. Drain the rings into the [`Output`] (filter, pcap, hexdump).
//! 4. Timers: the heartbeat every lease/4, the pcap flush and the live line
//!    once a second.
//! 5. Wait on the socket for as long as [`crate::pace`] says (1-10 ms,
//!    paced to the rate), or not at all while a ring is filling up.
//!
//! At the end the holds are released (consumer indexes moved to each
//! ring's head), the session is detached, the pcap is flushed and a
//! summary is printed.
//!
//! Default mode: hold. The reader asks for holds; the server bounds them
//! by the quota and the lease, and past the quota the reader falls back to
//! snapshot reads of unheld descriptors. `--snapshot` asks for none: it
//! costs the server nothing (no postponed frees) but loses what is reused
//! before it is read, which is counted as torn. Against nta-httpd, which
//! frees a request's buffer as soon as it is parsed, that is most packets
//! (30 of 50 in a hand test), hence the default.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nta_net::export::proto::{Descriptor, FLAG_HELD, FLAG_TCP, FLAG_TX, MODE_HOLD, MODE_SNAPSHOT};

use crate::client::{Event, Session};
use crate::error::{Error, Result};
use crate::filter::{addresses, Filter};
use crate::pace::Pacer;
use crate::pcap::PcapOut;
use crate::reader::{Reader, Sink, Totals};
use crate::validate::Faults;

/// What `capture` was asked to do.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// The export socket.
    pub socket: PathBuf,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write a pcap file here.
    pub write: Option<PathBuf>,
    /// Print each packet as a hex dump on stdout.
    pub hexdump: bool,
    /// Which descriptors to keep.
    pub filter: Filter,
    /// Ask for holds.
    pub hold: bool,
}

/// Why a capture ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// `--count` reached.
    Count,
    /// `--duration` passed.
    Duration,
    /// Interrupted (Ctrl-C or SIGTERM).
    Interrupted,
    /// The server closed the socket.
    ServerGone,
}

/// What a capture did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Why it ended.
    pub reason: EndReason,
    /// Reader totals.
    pub totals: Totals,
    /// Faults counted.
    pub faults: Faults,
    /// Descriptors the server dropped (rings full).
    pub server_drops: u64,
    /// Descriptors published without a hold (quota reached).
    pub server_unheld: u64,
    /// Packets in the pcap (handshakes and pieces included).
    pub pcap_packets: u64,
    /// The mode granted.
    pub hold: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = match self.reason {
            EndReason::Count => "count reached",
            EndReason::Duration => "duration reached",
            EndReason::Interrupted => "interrupted",
            EndReason::ServerGone => "the server closed the export socket",
        };
        let t = &self.totals;
        let x = &self.faults;
        writeln!(
            f,
            "capture ended: {reason} after {:.1} s ({} mode)",
            self.elapsed.as_secs_f64(),
            if self.hold { "hold" } else { "snapshot" }
        )?;
        writeln!(
            f,
            "  packets {} ({} bytes, {} bytes read under holds), filtered out {}, descriptors {}",
            t.packets, t.bytes, t.held_bytes_read, t.filtered, t.descriptors
        )?;
        writeln!(
            f,
            "  drops: ring full {} (server), torn {}, unheld (quota) {}",
            self.server_drops, x.torn, self.server_unheld
        )?;
        write!(
            f,
            "  invalid: stale {}, unknown segment {}, generation {}, absurd length {}, outside segment {}, index jumps {}",
            x.stale, x.unknown_segment, x.generation, x.absurd_length, x.outside_segment, x.index_jumps
        )?;
        if self.pcap_packets > 0 {
            write!(f, "\n  pcap packets written {}", self.pcap_packets)?;
        }
        Ok(())
    }
}

/// The sink of a capture: filter, then pcap and/or hexdump.
struct Output {
    filter: Filter,
    pcap: Option<PcapOut<File>>,
    hexdump: Option<BufWriter<io::Stdout>>,
    scratch: Vec<u8>,
    error: Option<io::Error>,
}

impl Sink for Output {
    fn wants(&mut self, d: &Descriptor) -> bool {
        self.error.is_none() && self.filter.matches(d)
    }

    fn payload(&mut self, len: usize) -> &mut [u8] {
        match &mut self.pcap {
            Some(p) => p.payload_buf(len),
            None => {
                self.scratch.resize(len, 0);
                &mut self.scratch
            }
        }
    }

    fn in_place(&mut self, d: &Descriptor) -> bool {
        // A pcap alone takes held payloads where they lie (one writev for
        // many packets); a hexdump needs the bytes here.
        self.pcap.is_some() && self.hexdump.is_none() && (d.len as usize) <= crate::packet::MAX_PIECE
    }

    fn emit_in_place(&mut self, d: &Descriptor, ptr: *const u8, len: usize, payload_sum: u64) {
        if let Some(p) = &mut self.pcap {
            // SAFETY: the reader keeps the bytes mapped and held until our
            // `settle` returns, which flushes the pcap queue; `len` is at
            // most MAX_PIECE (`in_place`).
            if let Err(e) = unsafe { p.write_in_place(d, ptr, len, payload_sum) } {
                self.error.get_or_insert(e);
            }
        }
    }

    fn settle(&mut self) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.flush() {
                self.error.get_or_insert(e);
            }
        }
    }

    fn emit(&mut self, d: &Descriptor, payload_sum: u64) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.write(d, Some(payload_sum)) {
                self.error.get_or_insert(e);
            }
        }
        if let Some(out) = &mut self.hexdump {
            let payload = self.pcap.as_ref().map_or(&self.scratch[..], |p| p.payload());
            if let Err(e) = hexdump(out, d, payload) {
                self.error.get_or_insert(e);
            }
        }
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Writes one packet as a header line and a hex dump (16 bytes a line).
pub fn hexdump(out: &mut impl Write, d: &Descriptor, payload: &[u8]) -> io::Result<()> {
    let (local, peer) = addresses(d);
    let tx = d.flags & FLAG_TX != 0;
    let (src, dst) = if tx {
        (endpoint(local, d.local_port), endpoint(peer, d.peer_port))
    } else {
        (endpoint(peer, d.peer_port), endpoint(local, d.local_port))
    };
    writeln!(
        out,
        "{}.{:09} {} {} {src} > {dst} len {} stream_offset {}{}",
        d.timestamp_ns / 1_000_000_000,
        d.timestamp_ns % 1_000_000_000,
        if tx { "tx" } else { "rx" },
        if d.flags & FLAG_TCP != 0 { "TCP" } else { "UDP" },
        payload.len(),
        d.stream_offset,
        if d.flags & FLAG_HELD != 0 { " held" } else { "" },
    )?;
    for (i, line) in payload.chunks(16).enumerate() {
        write!(out, "  {:08x} ", i * 16)?;
        for b in line {
            write!(out, " {b:02x}")?;
        }
        let ascii: String =
            line.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        writeln!(out, "{:width$}  {ascii}", "", width = 3 * (16 - line.len()))?;
    }
    Ok(())
}

fn rate_line(last: &Totals, now: &Totals, reader: &Reader, secs: f64) -> String {
    format!(
        "\r{:.0} pkts/s  {:.0} B/s  drops {}  torn {}  invalid {}  held {} B\x1b[K",
        (now.packets - last.packets) as f64 / secs,
        (now.bytes - last.bytes) as f64 / secs,
        reader.server_drops(),
        reader.faults.torn,
        reader.faults.invalid(),
        reader.outstanding_held_bytes(),
    )
}

/// Past this fraction of a ring in backlog, drain again at once: twice
/// what the pacer aims a drain to find ([`crate::pace::TARGET_FILL`]).
const BUSY_BACKLOG: f64 = 0.5;

/// Runs a capture until a stop condition, the server going away, or
/// `stop` being set. The pcap is complete whenever this returns.
pub fn run(opts: &CaptureOptions, stop: &AtomicBool) -> Result<Summary> {
    let mode = if opts.hold { MODE_HOLD } else { MODE_SNAPSHOT };
    let attached = Session::attach(&opts.socket, mode)?;
    let mut session = attached.session;
    let hello = session.hello;
    let mut reader = Reader::new(attached.hold, attached.rings, Default::default(), hello.segment_bytes);
    let pcap = match &opts.write {
        Some(path) => {
            let file = File::create(path).map_err(|e| Error::Io("creating the pcap file", e))?;
            Some(PcapOut::new(file).map_err(|e| Error::Io("writing the pcap header", e))?)
        }
        None => None,
    };
    let mut out = Output {
        filter: opts.filter.clone(),
        pcap,
        hexdump: opts.hexdump.then(|| BufWriter::new(io::stdout())),
        scratch: Vec::new(),
        error: None,
    };
    let live = crate::sys::stderr_is_terminal();
    let started = Instant::now();
    let beat_every = Duration::from_millis((hello.lease_ms / 4).max(1));
    let mut last_beat = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_totals = reader.totals;
    let mut pacer = Pacer::new(Instant::now(), reader.totals.descriptors);
    let mut failure = None;
    reader.heartbeat();
    let beater = reader.heartbeat_thread(beat_every).map_err(|e| Error::Io("starting the heartbeat thread", e))?;
    let budget = |reader: &Reader| opts.count.map_or(u64::MAX, |c| c.saturating_sub(reader.totals.packets));
    let reason = 'capture: loop {
        let remaining = budget(&reader);
        if remaining == 0 {
            break EndReason::Count;
        }
        if stop.load(Ordering::Relaxed) {
            break EndReason::Interrupted;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break EndReason::Duration;
        }
        reader.drain(&mut out, remaining, true);
        // Socket events; after a deferred drain, read what is queued and
        // drain again without deferring. Otherwise wait as long as the
        // pacer says (a socket message ends the wait) so that descriptors
        // are taken in batches, unless a ring is already filling up.
        let paced = pacer.next_wait(reader.totals.descriptors, Instant::now(), u64::from(hello.slots));
        let busy = reader.deferred() || reader.backlog() > BUSY_BACKLOG;
        let mut wait = if busy { Duration::ZERO } else { paced };
        loop {
            match session.next_event(wait) {
                Ok(None) => break,
                Ok(Some(Event::Segment(msg, fd))) => {
                    reader.segments.announce(&msg, fd);
                }
                Ok(Some(Event::Released(msg))) => {
                    // Deferring: a descriptor of a segment announced after
                    // this release must wait for its Segment message.
                    reader.drain(&mut out, budget(&reader), true);
                    reader.segments.release(&msg);
                }
                Ok(Some(Event::Stats { .. })) => {}
                Ok(Some(Event::Closed)) => {
                    reader.drain(&mut out, budget(&reader), false);
                    break 'capture EndReason::ServerGone;
                }
                Err(e) => {
                    reader.drain(&mut out, budget(&reader), false);
                    failure = Some(e);
                    break 'capture EndReason::ServerGone;
                }
            }
            wait = Duration::ZERO;
        }
        if reader.deferred() {
            reader.drain(&mut out, budget(&reader), false);
        }
        if let Some(e) = out.error.take() {
            failure = Some(Error::Io("writing the capture", e));
            break EndReason::Interrupted;
        }
        if last_beat.elapsed() >= beat_every {
            reader.heartbeat();
            last_beat = Instant::now();
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            if let Some(p) = &mut out.pcap {
                if let Err(e) = p.flush_if_due() {
                    failure = Some(Error::Io("writing the pcap file", e));
                    break EndReason::Interrupted;
                }
            }
            if live {
                let secs = last_tick.elapsed().as_secs_f64();
                eprint!("{}", rate_line(&last_totals, &reader.totals, &reader, secs));
                last_totals = reader.totals;
            }
            last_tick = Instant::now();
        }
    };
    if live {
        eprintln!();
    }
    drop(beater);
    reader.release_all();
    session.detach();
    let mut pcap_packets = 0;
    if let Some(p) = out.pcap.take() {
        pcap_packets = p.packets;
        if let Err(e) = p.finish() {
            failure.get_or_insert(Error::Io("finishing the pcap file", e));
        }
    }
    if let Some(h) = &mut out.hexdump {
        let _ = h.flush();
    }
    let summary = Summary {
        reason,
        totals: reader.totals,
        faults: reader.faults,
        server_drops: reader.server_drops(),
        server_unheld: reader.server_unheld(),
        pcap_packets,
        hold: hello.mode == MODE_HOLD,
        elapsed: started.elapsed(),
    };
    eprintln!("{summary}");
    match failure {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}
