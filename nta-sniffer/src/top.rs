//! `top`: the server's statistics and per-shard figures from the
//! occupancy file, once or once a second.
//!
//! # Design notes
//!
//! Each refresh sends a StatsRequest and waits (at most [`REPLY_TIMEOUT`])
//! for the Stats reply, mapping or unmapping nothing: Segment and Released
//! messages that arrive meanwhile are dropped (top does not read packets).
//! The text is shown as a two-column table; the occupancy file gives the
//! per-shard table ([`crate::occupancy::ShardFigures`]). The session
//! beats its heartbeat from a thread of its own, as capture does: the
//! server evicts a reader whose heartbeat stops for the lease, holding or
//! not.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nta_net::export::proto::MODE_SNAPSHOT;

use crate::client::{Event, Session};
use crate::error::{Error, Result};
use crate::occupancy::{self, Occupancy};
use crate::stats::Stats;

/// How long to wait for a Stats reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks for statistics and waits for the reply.
pub fn fetch(session: &mut Session) -> Result<(Stats, Occupancy)> {
    session.request_stats()?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Protocol("no Stats reply within 5 s".into()));
        }
        match session.next_event(left)? {
            Some(Event::Stats { text, occupancy }) => {
                let occ = occupancy::read(occupancy).map_err(Error::Protocol)?;
                return Ok((Stats::parse(&text), occ));
            }
            Some(Event::Closed) => return Err(Error::Protocol("the server closed the socket".into())),
            Some(Event::Segment(..) | Event::Released(_)) | None => {}
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The table `top` prints.
pub fn render(stats: &Stats, occ: &Occupancy) -> String {
    let mut out = String::new();
    let width = stats.entries.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "{:<width$}  value", "stat");
    for (name, value) in &stats.entries {
        let _ = writeln!(out, "{name:<width$}  {value}");
    }
    let held = stats.entries.iter().find(|(n, _)| n.contains("held_bytes")).map_or("n/a", |(_, v)| v.as_str());
    let readers = stats.entries.iter().find(|(n, _)| n.contains("readers")).map_or("n/a", |(_, v)| v.as_str());
    let _ = writeln!(out, "\nheld bytes: {held}   readers: {readers}\n");
    let _ = writeln!(
        out,
        "{:>5} {:>8} {:>5} {:>5} {:>7} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "shard", "segments", "shmem", "huge", "private", "in use", "held", "free", "largest free", "frag"
    );
    for s in occ.shards() {
        let shard = s.shard.map_or("-".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{shard:>5} {:>8} {:>5} {:>5} {:>7} {:>12} {:>12} {:>12} {:>12} {:>5.1}%",
            s.segments,
            s.by_backing[0],
            s.by_backing[1],
            s.by_backing[2],
            mib(s.in_use_bytes),
            mib(s.held_bytes),
            mib(s.free_bytes),
            mib(s.largest_free_bytes),
            100.0 * s.fragmentation()
        );
    }
    out
}

/// Runs `top` until `stop` is set (or once).
pub fn run(socket: &Path, once: bool, stop: &AtomicBool) -> Result<()> {
    let attached = Session::attach(socket, MODE_SNAPSHOT)?;
    let mut session = attached.session;
    // top holds nothing, but the server still evicts a reader whose
    // heartbeat stops for the lease, so it beats like capture does.
    let beat_every = Duration::from_millis((session.hello.lease_ms / 4).max(1));
    let _beater =
        attached.hold.heartbeat_thread(beat_every).map_err(|e| Error::Io("starting the heartbeat thread", e))?;
    let clear = !once && crate::sys::stderr_is_terminal();
    loop {
        let (stats, occ) = fetch(&mut session)?;
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        print!("{}", render(&stats, &occ));
        if once {
            break;
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                session.detach();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    session.detach();
    Ok(())
}
