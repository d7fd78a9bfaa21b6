//! The flags of `nta-httpd` (clap), and the limits they set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use nta_net::Backend;

/// Where payload buffers (receive buffers, response headers, cached files)
/// come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    /// An NTA pool (`PacketBuf`): exact-size chunks in shareable memory.
    Nta,
    /// The global allocator (`Vec<u8>`): the baseline.
    System,
}

impl FromStr for Alloc {
    type Err = String;
    fn from_str(s: &str) -> Result<Alloc, String> {
        match s {
            "nta" => Ok(Alloc::Nta),
            "system" => Ok(Alloc::System),
            _ => Err(format!("unknown allocator {s:?} (expected nta or system)")),
        }
    }
}

fn parse_hugepages(s: &str) -> Result<nta_core::HugePages, String> {
    match s {
        "try" => Ok(nta_core::HugePages::Try),
        "off" => Ok(nta_core::HugePages::Off),
        "require" => Ok(nta_core::HugePages::Require),
        _ => Err(format!("unknown hugepage policy {s:?} (expected try, off or require)")),
    }
}

/// `nta-httpd`: a static-file and demo web server whose payload buffers come
/// from the NTA pool.
#[derive(Clone, Debug, Parser)]
#[command(name = "nta-httpd", version, about)]
pub struct HttpdArgs {
    /// Address to listen on; port 0 picks a free port (the banner shows it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// I/O backend: epoll, uring or tokio [default: uring where the kernel
    /// allows it, else epoll].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Worker threads, each with its own SO_REUSEPORT listener and pool
    /// shard.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Payload buffers: nta (the pool) or system (the global allocator).
    #[arg(long, default_value = "nta")]
    pub alloc: Alloc,
    /// Serve the files under this directory (GET, HEAD); without it, a demo
    /// page and generated payloads (/1k, /64k, ...).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Largest request body (POST /echo), in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Largest request head (request line and headers), in bytes; larger
    /// ones get 431.
    #[arg(long, default_value_t = 8 << 10)]
    pub max_header_bytes: usize,
    /// A request must arrive whole within this many milliseconds of its
    /// first byte, or the connection is closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this many milliseconds.
    #[arg(long, default_value_t = 75_000)]
    pub keepalive_timeout_ms: u64,
    /// Pool capacity in MiB (--alloc nta): the hard cap on payload memory.
    /// Beyond it requests get 503.
    #[arg(long, default_value_t = 1024)]
    pub pool_mib: usize,
    /// Seconds without any allocation or free after which the pool gives
    /// its free memory back to the OS (nta-core's decay thread); 0: never.
    #[arg(long, default_value_t = 10)]
    pub decay_secs: u64,
    /// Huge pages for the pool's segments: try (hugetlb pages where
    /// reserved, else THP or 4 KiB pages), off (4 KiB pages) or require.
    /// Segments on huge pages give memory back only whole; on 4 KiB pages,
    /// decay also gives back the free pages inside them.
    #[arg(long, default_value = "try", value_parser = parse_hugepages)]
    pub hugepages: nta_core::HugePages,
    /// Largest file kept in the cache, in bytes; a larger file gets 500.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_file_bytes: usize,
    /// Export the pool to sniffers on this Unix socket [default:
    /// nta-httpd-PID.sock in the temporary directory]. Costs one branch per
    /// buffer and per free while no sniffer is attached.
    #[arg(long, conflicts_with = "no_export")]
    pub export: Option<PathBuf>,
    /// Do not export the pool.
    #[arg(long)]
    pub no_export: bool,
}

impl HttpdArgs {
    /// Where the pool is exported (`None`: not exported, or `--alloc
    /// system`, which has no pool).
    pub fn export_path(&self) -> Option<PathBuf> {
        if self.no_export || self.alloc == Alloc::System {
            return None;
        }
        Some(
            self.export
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("nta-httpd-{}.sock", std::process::id()))),
        )
    }

    /// Parses `args` (without the program name).
    pub fn parse_from_args(args: impl IntoIterator<Item = String>) -> Result<HttpdArgs, clap::Error> {
        HttpdArgs::try_parse_from(std::iter::once("nta-httpd".to_string()).chain(args))
    }

    /// The limits the HTTP layer enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body,
            max_header_bytes: self.max_header_bytes,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
        }
    }
}

/// What one request and one connection may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time from a request's first byte to its last.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        HttpdArgs::parse_from_args(Vec::new()).expect("the defaults parse").limits()
    }
}
