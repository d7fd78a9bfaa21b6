//! The packets-per-second comparison behind `udp-pps`: for each backend and
//! payload size, the same echo server runs with NTA buffers and with `Vec`
//! buffers, and a closed-loop client ([`nta_net::loadgen`]) counts echoes.
//! Runs alternate between the two servers, and each figure is the best of
//! `rounds` runs (the least disturbed one on a
//! shared 2-core machine). Bounded: runs x sizes x backends x 2 x seconds.

use std::net::SocketAddr;
use std::time::Duration;

use nta_net::loadgen::udp_echo_load;
use nta_net::{Backend, BufSource, DriverConfig, EchoServer, HeapSource, Server, Transport};

use crate::build_pool;

/// Flags of `udp-pps`.
#[derive(Clone, Debug)]
pub struct PpsArgs {
    /// Length of one measured run.
    pub run: Duration,
    /// Payload sizes to measure.
    pub sizes: Vec<usize>,
    /// Datagrams in flight.
    pub window: usize,
    /// Runs per figure; the best counts.
    pub rounds: usize,
    /// Also print the io_uring send-operation table (`--zc-table 0|1`).
    pub zero_copy_table: bool,
    /// Backends to measure; `true` sends with io_uring's `SENDMSG_ZC`.
    pub backends: Vec<(Backend, bool)>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<PpsArgs, String> {
    let mut parsed = PpsArgs {
        run: Duration::from_millis(1000),
        sizes: vec![64, 1400, 16384],
        window: 32,
        rounds: 3,
        zero_copy_table: true,
        backends: vec![
            (Backend::Epoll, false),
            (Backend::Uring, false),
            (Backend::Uring, true),
            (Backend::Tokio, false),
        ],
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--seconds-per-run" => parsed.run = Duration::from_secs_f64(value.parse().map_err(|e| bad(&e))?),
            "--sizes" => {
                parsed.sizes = value.split(',').map(|s| s.parse().map_err(|e| bad(&e))).collect::<Result<_, _>>()?
            }
            "--window" => parsed.window = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => parsed.rounds = value.parse().map_err(|e| bad(&e))?,
            "--zc-table" => parsed.zero_copy_table = value != "0",
            "--backends" => {
                parsed.backends = value
                    .split(',')
                    .map(|name| match name {
                        "uring-zc" => Ok((Backend::Uring, true)),
                        other => other.parse().map(|b| (b, false)),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(parsed)
}

/// Starts a UDP echo server on `backend` with buffers from `source`.
fn start<S: BufSource>((backend, zero_copy_send): (Backend, bool), source: S) -> Result<Server, String> {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let config = DriverConfig { zero_copy_send, ..DriverConfig::default() };
    EchoServer::spawn(backend, Transport::Udp, addr, source, config).map_err(|e| format!("{backend}: {e}"))
}

/// One run against `server`, in packets per second.
fn run_once(server: &Server, size: usize, window: usize, run: Duration) -> Result<f64, String> {
    let load = udp_echo_load(server.local_addr(), size, window, run).map_err(|e| format!("load: {e}"))?;
    Ok(load.packets_per_second())
}

/// Best packets-per-second of `rounds` runs on each of `servers`. The runs
/// alternate between the servers so that all see the same background load
/// on a shared machine.
fn measure_alternating(servers: &[Server], size: usize, args: &PpsArgs) -> Result<Vec<f64>, String> {
    // Warm up: first touches of the pool, the heap and the rings.
    for server in servers {
        run_once(server, size, args.window, Duration::from_millis(100))?;
    }
    let mut best = vec![0f64; servers.len()];
    for _ in 0..args.rounds.max(1) {
        for (server, best) in servers.iter().zip(&mut best) {
            *best = best.max(run_once(server, size, args.window, args.run)?);
        }
    }
    Ok(best)
}

/// NTA and `Vec` buffers on one backend.
fn measure_pair(
    backend: (Backend, bool),
    pool: &nta_core::Pool,
    size: usize,
    args: &PpsArgs,
) -> Result<(f64, f64), String> {
    let servers = [start(backend, pool.clone())?, start(backend, HeapSource)?];
    let best = measure_alternating(&servers, size, args)?;
    for server in servers {
        server.stop().map_err(|e| format!("{}: {e}", backend.0))?;
    }
    Ok((best[0], best[1]))
}

/// io_uring sends of NTA buffers: copying `sendmsg`, `sendmsg_zc`, and
/// `send_zc` from the pool registered as a fixed buffer.
fn zero_copy_table(args: &PpsArgs) -> Result<(), String> {
    const POOL_BYTES: usize = 128 << 20;
    let pool =
        nta_core::Pool::builder().capacity(POOL_BYTES).premap(true).build().map_err(|e| format!("pool: {e:?}"))?;
    // SAFETY: the pool outlives the servers (stopped below).
    let region = unsafe { nta_net::uring::FixedRegion::of_premapped_pool(&pool) }.map_err(|e| e.to_string())?;
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let configs = [
        DriverConfig::default(),
        DriverConfig { zero_copy_send: true, ..DriverConfig::default() },
        DriverConfig { zero_copy_send: true, fixed_region: Some(region), ..DriverConfig::default() },
    ];
    println!();
    println!("io_uring UDP echo with NTA buffers, by send operation (pps):");
    println!();
    println!("| payload B | sendmsg | sendmsg_zc | send_zc, registered pool | zc / copy | fixed zc / copy |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &size in &args.sizes {
        let servers = configs
            .iter()
            .map(|&config| EchoServer::spawn(Backend::Uring, Transport::Udp, addr, pool.clone(), config))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("uring: {e}"))?;
        let best = measure_alternating(&servers, size, args)?;
        for server in servers {
            server.stop().map_err(|e| format!("uring: {e}"))?;
        }
        println!(
            "| {size} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
            best[0],
            best[1],
            best[2],
            best[1] / best[0].max(1.0),
            best[2] / best[0].max(1.0)
        );
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the comparison and prints the table.
pub fn pps_main(args: impl IntoIterator<Item = String>) -> Result<(), String> {
    let args = parse(args)?;
    let pool = build_pool(256)?;
    println!(
        "UDP echo over loopback, closed loop of {} datagrams, best of {} x {:?} per figure (load average before: {})\n",
        args.window,
        args.rounds,
        args.run,
        load_average()
    );
    println!("| backend | payload B | NTA pps | Vec pps | NTA / Vec |");
    println!("|---|---:|---:|---:|---:|");
    for &(backend, zero_copy) in &args.backends {
        let name = if zero_copy { format!("{backend}-zc") } else { backend.to_string() };
        for &size in &args.sizes {
            let (nta, heap) = measure_pair((backend, zero_copy), &pool, size, &args)?;
            println!("| {name} | {size} | {nta:.0} | {heap:.0} | {:.3} |", nta / heap.max(1.0));
        }
    }
    if args.zero_copy_table {
        zero_copy_table(&args)?;
    }
    println!("\nload average after: {}", load_average());
    Ok(())
}
