//! nta-httpd as a user runs it: the binary on an ephemeral 127.0.0.1 port,
//! once per backend, checked with a small HTTP client (status, headers,
//! body) for static files, echo, keep-alive, pipelining, every bad-input
//! case, a bounded concurrent load (64 connections x 200 requests), the pool
//! returning to its idle baseline, and a graceful SIGTERM.
//!
//! Every socket has a timeout and every loop a bound; each server is killed
//! if a test fails before it stopped it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nta-httpd process; killed on drop.
struct Httpd {
    child: Child,
    addr: SocketAddr,
    /// The rest of the banner; kept open so the server's stdout stays a
    /// live pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Httpd {
    fn start(args: &[&str]) -> Httpd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nta-httpd"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nta-httpd");
        let mut first_line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first_line).unwrap();
        let url = first_line
            .trim()
            .strip_prefix("nta-httpd: serving http://")
            .unwrap_or_else(|| panic!("unexpected banner {first_line:?}"));
        let addr = url.trim_end_matches('/').parse().unwrap();
        Httpd { child, addr, _stdout: stdout }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// One request on a new connection.
    fn get(&self, request: &str) -> Response {
        let mut stream = self.connect();
        stream.write_all(request.as_bytes()).unwrap();
        read_response(&mut stream, request.starts_with("HEAD"))
    }

    fn metric(&self, name: &str) -> u64 {
        let stats = self.get("GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(stats.status, 200);
        let text = String::from_utf8(stats.body).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in /stats"))
            .parse()
            .unwrap()
    }

    /// Waits (bounded) until `metric` reads `value`.
    fn wait_metric(&self, name: &str, value: u64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let now = self.metric(name);
            if now == value {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stays {now}, expected {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until `metric` reads more than `value`.
    fn wait_metric_above(&self, name: &str, value: u64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let now = self.metric(name);
            if now > value {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stays {now}, expected above {value}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "nta-httpd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (its body by `Content-Length`; none for HEAD).
fn read_response(stream: &mut impl Read, head_request: bool) -> Response {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert!(raw.len() < 16 << 10, "response head too long");
        let n = stream.read(&mut byte).expect("read a response head");
        assert_eq!(n, 1, "connection closed before a response head; got {:?}", String::from_utf8_lossy(&raw));
        raw.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    assert!(parsed.parse(&raw).unwrap().is_complete());
    let status = parsed.code.unwrap();
    let headers: Vec<(String, String)> =
        parsed.headers.iter().map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).unwrap())).collect();
    let mut response = Response { status, headers, body: Vec::new() };
    if status != 100 && !head_request {
        let len: usize = response.header("Content-Length").expect("Content-Length").parse().unwrap();
        response.body = vec![0; len];
        stream.read_exact(&mut response.body).expect("read a response body");
    }
    response
}

/// Whether the server closed the connection (EOF or reset) within the
/// stream's read timeout.
fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// A directory of files to serve.
fn site_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nta-httpd-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(dir.join("docs/a.txt"), "alpha\n").unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    let k1: Vec<u8> = (0..1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.join("1k"), k1).unwrap();
    dir
}

fn exercise(backend: &str) {
    let dir = site_dir(backend);
    let root = dir.to_str().unwrap();
    let server = Httpd::start(&[
        "--backend",
        backend,
        "--root",
        root,
        "--max-body",
        "100000",
        "--header-timeout-ms",
        "1000",
        "--pool-mib",
        "128",
    ]);

    // Static files, with the right headers.
    let index = server.get("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((index.status, &index.body[..]), (200, &b"<h1>home</h1>\n"[..]), "{backend}");
    assert_eq!(index.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(index.header("Date").is_some_and(|d| d.ends_with(" GMT")), "{backend}: Date");
    let text = server.get("GET /docs/a.txt?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((text.status, &text.body[..]), (200, &b"alpha\n"[..]));
    let big = server.get("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(big.body, std::fs::read(dir.join("big.bin")).unwrap(), "{backend}: big file");
    let head = server.get("HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((head.status, head.header("Content-Length")), (200, Some("200000")));
    assert_eq!(server.get("GET /missing HTTP/1.1\r\nHost: t\r\n\r\n").status, 404);
    assert_eq!(server.get("GET /1k HTTP/1.1\r\nHost: t\r\n\r\n").body.len(), 1024);
    // Every file is cached now: this is the idle baseline.
    let idle_in_use = server.metric("nta_pool_in_use_bytes");

    // Echo, with a body sent after `100 Continue`.
    let echo = server.get("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!((echo.status, &echo.body[..]), (200, &b"hello world"[..]), "{backend}");
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream, false).status, 100);
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    stream.write_all(&body).unwrap();
    let echoed = read_response(&mut stream, false);
    assert_eq!((echoed.status, echoed.body == body), (200, true), "{backend}: 50 kB echo");
    drop(stream);

    // Keep-alive: many requests on one connection; then Connection: close.
    let mut stream = server.connect();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/1k" } else { "/docs/a.txt" };
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
        let response = read_response(&mut stream, false);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("Connection"), None, "{backend}: HTTP/1.1 keeps alive by default");
    }
    stream.write_all(b"GET /1k HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let last = read_response(&mut stream, false);
    assert_eq!((last.status, last.header("Connection")), (200, Some("close")));
    assert!(closed(&mut stream), "{backend}: closed after Connection: close");
    let http10 = server.get("GET /1k HTTP/1.0\r\n\r\n");
    assert_eq!((http10.status, http10.header("Connection")), (200, Some("close")));

    // Pipelining: three requests in one write, answered in order.
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /docs/a.txt HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
              HEAD /1k HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut stream, false).body, b"alpha\n");
    assert_eq!(read_response(&mut stream, false).body, b"abc");
    assert_eq!(read_response(&mut stream, true).header("Content-Length"), Some("1024"));
    drop(stream);

    // Bad input: status, then close.
    let refusals: [(&[u8], u16); 7] = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ", 431),
    ];
    for (request, expected) in refusals {
        let mut stream = server.connect();
        stream.write_all(request).unwrap();
        if expected == 431 {
            let _ = stream.write_all(&vec![b'a'; 9000]);
        }
        let response = read_response(&mut stream, false);
        assert_eq!(response.status, expected, "{backend}: {:?}", String::from_utf8_lossy(request));
        assert_eq!(response.header("Connection"), Some("close"));
        assert!(closed(&mut stream), "{backend}: closed after {expected}");
    }
    let delete = server.get("DELETE /1k HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((delete.status, delete.header("Allow")), (405, Some("GET, HEAD")), "{backend}");

    // A slow client is closed when the header timeout (1 s here) expires.
    let mut slow = server.connect();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = Instant::now();
    assert!(closed(&mut slow), "{backend}: the slow client was not closed");
    assert!(started.elapsed() < Duration::from_secs(5), "{backend}: closed after {:?}", started.elapsed());

    // Bounded concurrent load: 64 connections x 200 requests, all checked.
    let expected_1k = std::fs::read(dir.join("1k")).unwrap();
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let mut stream = server.connect();
            let expected_1k = expected_1k.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    if (c + i) % 10 == 0 {
                        let body = format!("client {c} request {i}");
                        let request =
                            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        stream.write_all(request.as_bytes()).unwrap();
                        let response = read_response(&mut stream, false);
                        assert_eq!((response.status, response.body), (200, body.into_bytes()));
                    } else {
                        stream.write_all(b"GET /1k HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                        let response = read_response(&mut stream, false);
                        assert_eq!((response.status, &response.body), (200, &expected_1k));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a load client failed");
    }

    // Clients gone: the pool is back at its idle baseline.
    server.wait_metric("nta_http_connections_open", 1);
    server.wait_metric("nta_pool_in_use_bytes", idle_in_use);
    assert!(server.metric("nta_http_requests_total") >= 64 * 200);

    // SIGTERM while a response is in flight: it is finished, exit 0.
    let mut stream = server.connect();
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).unwrap();
    let status = server.terminate();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.ends_with(&std::fs::read(dir.join("big.bin")).unwrap()), "{backend}: in-flight response cut short");
    assert!(status.success(), "{backend}: exit status {status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn epoll_backend() {
    exercise("epoll");
}

#[test]
fn uring_backend() {
    exercise("uring");
}

#[test]
fn tokio_backend() {
    exercise("tokio");
}

/// The built-in site (no `--root`), the system allocator, two workers.
#[test]
fn builtin_site_with_the_system_allocator_on_two_workers() {
    let server = Httpd::start(&["--alloc", "system", "--threads", "2"]);
    let index = server.get("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(index.status, 200);
    assert!(String::from_utf8_lossy(&index.body).contains("/64k"));
    for (path, len) in [("/1k", 1024), ("/64k", 65536), ("/1m", 1 << 20)] {
        let response = server.get(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!((response.status, response.body.len()), (200, len), "{path}");
    }
    assert_eq!(server.metric("nta_pool_in_use_bytes"), 0, "no pool with --alloc system");
    // Each worker has its own listener; the kernel spreads connections.
    let clients: Vec<_> = (0..8).map(|_| server.get("GET /1k HTTP/1.1\r\nHost: t\r\n\r\n")).collect();
    assert!(clients.iter().all(|r| r.status == 200 && r.body.len() == 1024));
    assert!(server.terminate().success());
}

/// The pool runs out: requests get 503, the server stays up, and once the
/// clients leave the pool is back at its baseline and requests succeed.
#[test]
fn pool_exhaustion_is_a_503_not_a_crash() {
    let server = Httpd::start(&["--backend", "epoll", "--pool-mib", "8", "--max-body", "1000000"]);
    let idle_in_use = server.metric("nta_pool_in_use_bytes");
    let mut holders = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        // Each holds a pending 1 MB request: the server sizes its buffer
        // for the whole request.
        let mut stream = server.connect();
        stream.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n").unwrap();
        stream.write_all(&[b'x'; 1000]).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut first = [0u8; 1];
        match stream.read(&mut first) {
            Ok(1) => {
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                let text = String::from_utf8_lossy(&rest).to_string();
                assert!(first[0] == b'H' && text.starts_with("TTP/1.1 503"), "expected a 503, got {text:?}");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            _ => holders.push(stream),
        }
    }
    assert!(refused >= 1, "the pool never ran out ({} holders)", holders.len());
    assert!(!holders.is_empty());
    assert!(server.metric("nta_http_errors_total{kind=\"pool_exhausted\"}") >= 1);
    drop(holders);
    server.wait_metric("nta_pool_in_use_bytes", idle_in_use);
    let ok = server.get("GET /64k HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((ok.status, ok.body.len()), (200, 65536));
    assert!(server.terminate().success());
}

/// The server's shared (memfd) resident memory, from /proc.
fn rss_shmem_bytes(server: &Httpd) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssShmem in /proc/PID/status");
    kib << 10
}

/// Decay gives back the pages of a request buffer freed between two live
/// ones: the pool's segment stays mapped (it holds live chunks), but its
/// free pages leave the server's resident memory with no call from it,
/// although its export socket is bound (nobody attached: not sealed).
#[test]
fn decay_gives_back_a_freed_buffer_between_live_ones() {
    let server = Httpd::start(&["--backend", "epoll", "--hugepages", "off", "--decay-secs", "1"]);
    const BODY: usize = 400_000;
    let head = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
    let pending = |server: &Httpd| {
        // A request whose buffer the server sized for the whole body.
        let mut s = server.connect();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b'a'; 1000]).unwrap();
        s
    };
    let before_a = server.metric("nta_pool_in_use_bytes");
    let a = pending(&server);
    server.wait_metric_above("nta_pool_in_use_bytes", before_a + BODY as u64 / 2);
    let mut b = server.connect();
    b.write_all(head.as_bytes()).unwrap();
    b.write_all(&[b'b'; 1000]).unwrap();
    server.wait_metric_above("nta_pool_in_use_bytes", before_a + BODY as u64);
    let c = pending(&server);
    server.wait_metric_above("nta_pool_in_use_bytes", before_a + 3 * BODY as u64 / 2);
    // B's body arrives whole (every page of its buffer written) and is
    // echoed; then B leaves, and its buffer is free between A's and C's.
    b.write_all(&vec![b'b'; BODY - 1000]).unwrap();
    let echoed = read_response(&mut b, false);
    assert_eq!((echoed.status, echoed.body.len()), (200, BODY));
    drop(b);
    std::thread::sleep(Duration::from_millis(100));
    let resident = rss_shmem_bytes(&server);
    // Quiet for the decay time: no request, not even /stats.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = resident;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = rss_shmem_bytes(&server);
        if now + (BODY as u64) / 2 <= resident {
            break;
        }
    }
    assert!(
        now + (BODY as u64) / 2 <= resident,
        "resident shared memory {resident} -> {now}: the freed buffer's pages are still there"
    );
    assert!(server.metric("nta_pool_discarded_bytes") >= BODY as u64 / 2);
    assert_eq!(server.metric("nta_pool_segments{backing=\"small\"}"), server.metric("nta_pool_mapped_bytes") >> 21);
    drop((a, c));
    assert!(server.terminate().success());
}
