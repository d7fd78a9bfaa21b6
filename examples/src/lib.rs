//! The NTA example binaries' logic, so tests cover it: the echo servers'
//! flags, the packets-per-second comparison, the drop-cost measurement, and
//! `nta-httpd` ([`httpd`]). The binaries stay thin: they parse flags here
//! and call this library.

pub mod drop_cost;
pub mod httpd;
pub mod pps;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use nta_core::Pool;
use nta_net::{Backend, DriverConfig, EchoServer, HeapSource, Server, Transport};

/// Where receive buffers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffers {
    /// `PacketBuf`s from an NTA pool.
    Nta,
    /// `Vec<u8>` from the global allocator (baseline).
    Heap,
}

impl FromStr for Buffers {
    type Err = String;
    fn from_str(s: &str) -> Result<Buffers, String> {
        match s {
            "nta" => Ok(Buffers::Nta),
            "heap" | "vec" => Ok(Buffers::Heap),
            _ => Err(format!("unknown buffers {s:?} (expected nta or heap)")),
        }
    }
}

/// Flags of the echo servers.
#[derive(Clone, Debug)]
pub struct EchoArgs {
    /// `--backend epoll|uring|tokio` (default epoll).
    pub backend: Backend,
    /// `--addr IP:PORT` (default 127.0.0.1:7007).
    pub addr: SocketAddr,
    /// `--buffers nta|heap` (default nta).
    pub buffers: Buffers,
    /// `--pool-mib N` (default 256).
    pub pool_mib: usize,
    /// `--seconds N`: stop after N seconds (default: run until killed).
    pub seconds: Option<u64>,
}

/// The usage line shared by the echo binaries.
pub const ECHO_USAGE: &str =
    "usage: [--backend epoll|uring|tokio] [--addr 127.0.0.1:7007] [--buffers nta|heap] [--pool-mib 256] [--seconds N]";

/// Parses the echo servers' flags.
pub fn parse_echo_args(args: impl IntoIterator<Item = String>) -> Result<EchoArgs, String> {
    let mut parsed = EchoArgs {
        backend: Backend::Epoll,
        addr: "127.0.0.1:7007".parse().expect("a valid default address"),
        buffers: Buffers::Nta,
        pool_mib: 256,
        seconds: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => parsed.backend = value()?.parse()?,
            "--addr" => parsed.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--buffers" => parsed.buffers = value()?.parse()?,
            "--pool-mib" => parsed.pool_mib = value()?.parse().map_err(|e| format!("--pool-mib: {e}"))?,
            "--seconds" => parsed.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?),
            "-h" | "--help" => return Err(ECHO_USAGE.to_string()),
            other => return Err(format!("unknown flag {other:?}\n{ECHO_USAGE}")),
        }
    }
    Ok(parsed)
}

/// Builds a pool of `mib` MiB.
pub fn build_pool(mib: usize) -> Result<Pool, String> {
    Pool::builder().capacity(mib << 20).build().map_err(|e| format!("pool: {e:?}"))
}

/// Starts an echo server as `args` say.
pub fn spawn_echo(transport: Transport, args: &EchoArgs, config: DriverConfig) -> Result<Server, String> {
    let spawned = match args.buffers {
        Buffers::Nta => EchoServer::spawn(args.backend, transport, args.addr, build_pool(args.pool_mib)?, config),
        Buffers::Heap => EchoServer::spawn(args.backend, transport, args.addr, HeapSource, config),
    };
    spawned.map_err(|e| format!("{} echo on {}: {e}", args.backend, args.addr))
}

/// Runs an echo server until killed or for `--seconds`, then prints its
/// counters.
pub fn echo_main(transport: Transport) -> Result<(), String> {
    let args = parse_echo_args(std::env::args().skip(1))?;
    let server = spawn_echo(transport, &args, DriverConfig::default())?;
    eprintln!("{transport:?} echo on {} ({} backend, {:?} buffers)", server.local_addr(), args.backend, args.buffers);
    let deadline = args.seconds.map(|seconds| std::time::Instant::now() + Duration::from_secs(seconds));
    while !server.is_finished() && deadline.map_or(true, |deadline| std::time::Instant::now() < deadline) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = server.counters();
    let get = nta_net::Counters::get;
    eprintln!(
        "rx {} buffers / {} bytes, tx {} buffers / {} bytes, accepted {}, no-buffer {}, ring-empty {}",
        get(&c.rx_buffers),
        get(&c.rx_bytes),
        get(&c.tx_buffers),
        get(&c.tx_bytes),
        get(&c.accepted),
        get(&c.alloc_failures),
        get(&c.ring_empty)
    );
    server.stop().map_err(|e| format!("server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn echo_flags_parse() {
        let parsed = parse_echo_args(args("--backend uring --addr 127.0.0.1:9 --buffers heap --seconds 3")).unwrap();
        assert_eq!(parsed.backend, Backend::Uring);
        assert_eq!(parsed.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(parsed.buffers, Buffers::Heap);
        assert_eq!(parsed.seconds, Some(3));
        assert!(parse_echo_args(args("--backend kqueue")).is_err());
        assert!(parse_echo_args(args("--addr")).is_err());
    }

    /// Every backend's echo server starts from the example's flags and
    /// echoes, with pool buffers.
    #[test]
    fn echo_servers_start_from_flags() {
        for backend in Backend::ALL {
            for transport in [Transport::Udp, Transport::Tcp] {
                let flags = format!("--backend {backend} --addr 127.0.0.1:0 --pool-mib 32");
                let parsed = parse_echo_args(args(&flags)).unwrap();
                let server = spawn_echo(transport, &parsed, DriverConfig::default()).unwrap();
                let addr = server.local_addr();
                match transport {
                    Transport::Udp => {
                        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        client.send_to(b"ping", addr).unwrap();
                        let mut buf = [0u8; 8];
                        let n = client.recv(&mut buf).unwrap();
                        assert_eq!(&buf[..n], b"ping", "{backend}");
                    }
                    Transport::Tcp => {
                        use std::io::{Read, Write};
                        let mut stream = std::net::TcpStream::connect(addr).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        stream.write_all(b"ping").unwrap();
                        let mut buf = [0u8; 4];
                        stream.read_exact(&mut buf).unwrap();
                        assert_eq!(&buf, b"ping", "{backend}");
                    }
                }
                server.stop().unwrap();
            }
        }
    }

    #[test]
    fn drop_cost_smoke() {
        drop_cost::drop_cost_main(args("--buffers 1000 --bytes 100")).unwrap();
    }

    /// A short run of the comparison produces figures on every backend.
    #[test]
    fn pps_smoke() {
        pps::pps_main(args("--seconds-per-run 0.05 --rounds 1 --sizes 64")).unwrap();
    }
}
