//! The command line (clap derive) and the dispatch `main` calls.
//!
//! Exit codes: 0 done; 1 a failure during the run (including the server
//! going away before `--count` or `--duration` was reached: the pcap is
//! complete all the same); 2 could not attach or bad arguments (see
//! [`crate::error::Error::exit_code`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::capture::{self, CaptureOptions, EndReason};
use crate::error::{Error, Result};
use crate::filter::Filter;

/// Reads packets straight out of a live NTA server's pool.
#[derive(Debug, Parser)]
#[command(name = "nta-sniffer", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture packets from the server's descriptor rings.
    Capture {
        /// The server's export socket.
        #[arg(long)]
        socket: PathBuf,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Write the packets to this pcap file.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Print each packet as a hex dump on stdout.
        #[arg(long)]
        hexdump: bool,
        /// Keep only matching packets: port N, host ADDR, rx, tx, tcp, udp,
        /// combined with and, or, not and parentheses.
        #[arg(long)]
        filter: Option<String>,
        /// Hold chunks until they are read, within the server's quota
        /// (default).
        #[arg(long, conflicts_with = "snapshot")]
        hold: bool,
        /// Read without holds, checking each read against reuse: costs the
        /// server nothing, but a buffer freed and reused before it is read
        /// (most of a busy server's) is lost and counted as torn.
        #[arg(long)]
        snapshot: bool,
    },
    /// Show the server's statistics and per-shard occupancy.
    Top {
        /// The server's export socket.
        #[arg(long)]
        socket: PathBuf,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
    /// Draw the pool's granule occupancy as a PNG.
    Map {
        /// The server's export socket.
        #[arg(long)]
        socket: PathBuf,
        /// The PNG file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A failed registration only loses the clean Ctrl-C exit.
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    stop
}

fn run_command(command: Command) -> Result<i32> {
    match command {
        Command::Capture { socket, count, duration, write, hexdump, filter, hold: _, snapshot } => {
            let hold = !snapshot;
            let filter = Filter::parse(filter.as_deref().unwrap_or("")).map_err(Error::Usage)?;
            let duration = match duration {
                Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => return Err(Error::Usage(format!("--duration {s}: not a number of seconds"))),
                None => None,
            };
            let opts = CaptureOptions { socket, count, duration, write, hexdump, filter, hold };
            let summary = capture::run(&opts, &stop_flag())?;
            Ok(if summary.reason == EndReason::ServerGone { 1 } else { 0 })
        }
        Command::Top { socket, once } => crate::top::run(&socket, once, &stop_flag()).map(|()| 0),
        Command::Map { socket, out } => {
            let attached = crate::client::Session::attach(&socket, nta_net::export::proto::MODE_SNAPSHOT)?;
            let mut session = attached.session;
            let (_, occ) = crate::top::fetch(&mut session)?;
            session.detach();
            let file = std::fs::File::create(&out).map_err(|e| Error::Io("creating the PNG file", e))?;
            let (title, legend) =
                crate::map_png::render(&occ, std::io::BufWriter::new(file)).map_err(Error::Protocol)?;
            println!("{title}\n{legend}\nwritten to {}", out.display());
            Ok(0)
        }
    }
}

/// Runs the parsed command line; returns the process exit code. Errors
/// print as one line on stderr.
pub fn run(cli: Cli) -> i32 {
    match run_command(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nta-sniffer: {e}");
            e.exit_code()
        }
    }
}
