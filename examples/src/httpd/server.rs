//! Starting and stopping the server: the pool, the content, one worker per
//! `--threads` (each a driver of nta-net running [`Http`] on its own
//! `SO_REUSEPORT` listener, bound to its own pool shard), the banner, and
//! SIGINT/SIGTERM.
//!
//! # Shutdown
//!
//! SIGINT or SIGTERM sets the shared stop flag. Each driver then closes its
//! listener, lets every connection finish sending what it has queued (for
//! at most the drivers' `shutdown_grace_ms`), closes them, and returns;
//! [`Httpd::wait`] joins the workers and the process exits 0. A second
//! SIGINT while stopping exits at once with status 130.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nta_core::Pool;
use nta_net::export::Exporter;
use nta_net::{socket, Backend, DriverConfig, HeapSource, Server};

use crate::httpd::config::{Alloc, HttpdArgs};
use crate::httpd::conn::{Http, Shared};
use crate::httpd::site::Site;
use crate::httpd::source::PayloadSource;
use crate::httpd::stats::HttpStats;

/// Receive buffer size: a whole request head of the default limit, and
/// enough to amortise the reads of a body.
const RX_BUF_BYTES: usize = 16 << 10;

/// A running server.
#[derive(Debug)]
pub struct Httpd {
    local: SocketAddr,
    backend: Backend,
    threads: usize,
    buffers: String,
    content: String,
    workers: Vec<Server>,
    stop: Arc<AtomicBool>,
    export: Option<Arc<Exporter>>,
}

impl Httpd {
    /// Starts the server `args` describe.
    pub fn start(args: &HttpdArgs) -> Result<Httpd, String> {
        Self::start_inner(args, false)
    }

    /// [`Httpd::start`] for a server that lives as long as its process (the
    /// `nta-httpd` binary): its pool is leaked (`Pool::leak`), so the payload
    /// and receive buffers hold uncounted pool handles (no atomic per buffer).
    pub fn start_for_process(args: &HttpdArgs) -> Result<Httpd, String> {
        Self::start_inner(args, true)
    }

    fn start_inner(args: &HttpdArgs, leak_pool: bool) -> Result<Httpd, String> {
        if args.threads == 0 {
            return Err("--threads must be at least 1".to_string());
        }
        let backend = args.backend.unwrap_or_else(Backend::preferred);
        match args.alloc {
            Alloc::Nta => {
                let mut builder =
                    Pool::builder().capacity(args.pool_mib << 20).shards(args.threads).hugepages(args.hugepages);
                if args.decay_secs > 0 {
                    builder = builder.decay(std::time::Duration::from_secs(args.decay_secs));
                }
                let mut pool = builder.build().map_err(|e| format!("pool: {e:?}"))?;
                if leak_pool {
                    pool = pool.leak().clone();
                }
                let export = match args.export_path() {
                    Some(path) => Some(Arc::new(
                        Exporter::bind(&path, &pool).map_err(|e| format!("--export {}: {e}", path.display()))?,
                    )),
                    None => None,
                };
                start_with(args, backend, pool, export)
            }
            Alloc::System => start_with(args, backend, HeapSource, None),
        }
    }

    /// The address it listens on (the real port when `--listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The flag that stops every worker (what the signal handlers set).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// What the server prints when it starts. The first line is always
    /// `nta-httpd: serving http://ADDR/`.
    pub fn banner(&self) -> String {
        let url = format!("http://{}/", self.local);
        let workers =
            if self.threads == 1 { "1 worker thread".to_string() } else { format!("{} worker threads", self.threads) };
        format!(
            "nta-httpd: serving {url}\n  \
             backend  {backend}, {workers}\n  \
             buffers  {buffers}\n  \
             content  {content}\n  \
             stats    {url}stats\n  \
             sniffer  {sniffer}\n  \
             stop     Ctrl-C or SIGTERM (in-flight responses finish, then exit 0)",
            backend = self.backend,
            buffers = self.buffers,
            content = self.content,
            sniffer = self.sniffer_attach_line(),
        )
    }

    /// Waits until the workers stopped (after the stop flag was set).
    pub fn wait(self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (index, worker) in self.workers.into_iter().enumerate() {
            if let Err(e) = worker.join() {
                failures.push(format!("worker {index}: {e}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Httpd {
    /// The command that attaches the sniffer to this server, or why there
    /// is none.
    fn sniffer_attach_line(&self) -> String {
        match &self.export {
            Some(e) => format!(
                "cargo run --release -p nta-sniffer -- capture --socket {} --count 20 --write nta.pcap\n           \
                 (also: top --socket PATH, map --socket PATH --out pool.png)",
                e.path().display()
            ),
            None => "not exported (--no-export or --alloc system)".to_string(),
        }
    }

    /// The export socket's path, when the pool is exported.
    pub fn export_path(&self) -> Option<&std::path::Path> {
        self.export.as_deref().map(Exporter::path)
    }

    /// The pool's exporter, when the pool is exported (readers attached,
    /// held bytes, counters).
    pub fn exporter(&self) -> Option<&Exporter> {
        self.export.as_deref()
    }
}

fn start_with<S: PayloadSource>(
    args: &HttpdArgs,
    backend: Backend,
    source: S,
    export: Option<Arc<Exporter>>,
) -> Result<Httpd, String> {
    let site = match &args.root {
        Some(root) => Site::files(root, source.clone(), args.max_file_bytes)?,
        None => Site::demo(&source)?,
    };
    let content = site.describe();
    let shared = Arc::new(Shared { limits: args.limits(), site, stats: HttpStats::default() });
    if let Some(e) = &export {
        let _ = shared.stats.export.set(Arc::clone(e));
    }
    let config = DriverConfig { rx_buf_bytes: RX_BUF_BYTES.max(args.max_header_bytes), ..DriverConfig::default() };
    let stop = Arc::new(AtomicBool::new(false));
    let first = socket::tcp_listen_with(args.listen, true).map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let local = socket::local_addr(&first).map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..args.threads {
        listeners.push(socket::tcp_listen_with(local, true).map_err(|e| format!("listen {local}: {e}"))?);
    }
    let mut workers = Vec::with_capacity(args.threads);
    for (index, listener) in listeners.into_iter().enumerate() {
        let protocol = Http::new(Arc::clone(&shared), source.clone());
        let worker_source = source.clone();
        let worker =
            Server::spawn_tcp(backend, listener, source.clone(), protocol, config, Arc::clone(&stop), move || {
                worker_source.bind_worker(index)
            })
            .map_err(|e| format!("{backend} worker {index}: {e}"))?;
        shared.stats.workers.write().push(worker.counters_handle());
        workers.push(worker);
    }
    Ok(Httpd { local, backend, threads: args.threads, buffers: source.describe(), content, workers, stop, export })
}

/// `nta-httpd`'s main: start, print the banner, serve until SIGINT or
/// SIGTERM, stop gracefully.
pub fn httpd_main(args: HttpdArgs) -> Result<(), String> {
    let httpd = Httpd::start_for_process(&args)?;
    let stop = httpd.stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once (status 130).
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    // A server does not die because its stdout went away: write errors
    // are ignored.
    let _ = writeln!(std::io::stdout().lock(), "{}", httpd.banner());
    httpd.wait()?;
    let _ = writeln!(std::io::stderr().lock(), "nta-httpd: stopped");
    Ok(())
}
