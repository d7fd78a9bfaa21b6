//! Drives one connection's HTTP protocol without a socket: the bytes a
//! client sent go in, cut into reads of a given size, and the bytes the
//! server would send come out. The unit tests and the fuzz target
//! (`examples/fuzz`) use it, and [`check_stream`] states what must hold for
//! any input:
//!
//! - the output is a sequence of complete HTTP/1.1 responses, each with a
//!   `Content-Length` that matches what follows it (the protocol never
//!   emits half a response, and never panics);
//! - the response to a given input does not depend on how it was cut into
//!   reads;
//! - once the connection is gone, every buffer it took is back in the pool
//!   (the pool is in checked mode, so a double or invalid free panics).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use nta_core::Pool;
use nta_net::{PacketBuf, StreamProtocol, TxQueue, Verdict};
use parking_lot::Mutex;

use crate::httpd::buf::append_bytes;
use crate::httpd::config::Limits;
use crate::httpd::conn::{Http, Shared};
use crate::httpd::site::Site;
use crate::httpd::stats::HttpStats;

/// Small limits, so that short inputs reach them.
pub const HARNESS_LIMITS: Limits = Limits {
    max_body_bytes: 4096,
    max_header_bytes: 1024,
    header_timeout: std::time::Duration::from_secs(10),
    keepalive_timeout: std::time::Duration::from_secs(10),
};

/// The pool and the content every run shares (made once per process), and
/// the lock that keeps runs one at a time, so that each can compare the
/// pool with its own baseline.
fn shared() -> &'static (Pool, Arc<Shared<Pool>>, Mutex<()>) {
    static SHARED: OnceLock<(Pool, Arc<Shared<Pool>>, Mutex<()>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let pool = Pool::builder().capacity(64 << 20).shards(1).checked(true).build().expect("a 64 MiB pool");
        let site = Site::demo(&pool).expect("the demo site fits");
        let shared = Arc::new(Shared { limits: HARNESS_LIMITS, site, stats: HttpStats::default() });
        (pool, shared, Mutex::new(()))
    })
}

/// What one connection produced.
#[derive(Debug)]
pub struct Run {
    /// Everything the server queued for sending, in order.
    pub output: Vec<u8>,
    /// The last verdict (`Keep` if the input ran out first).
    pub verdict: Verdict,
}

/// Feeds `input` to a fresh connection in reads of `read_bytes`, until the
/// input ends or the protocol closes the connection; then closes it and
/// checks that the pool holds what it held before.
pub fn drive(input: &[u8], read_bytes: usize) -> Run {
    let (pool, shared, lock) = shared();
    let _one_at_a_time = lock.lock();
    pool.collect();
    let baseline = pool.stats().in_use_bytes;
    let mut http = Http::new(Arc::clone(shared), pool.clone());
    let local = "127.0.0.1:80".parse().expect("an address");
    let mut conn = http.open(local, local);
    let mut tx = TxQueue::default();
    let mut output = Vec::new();
    let mut verdict = Verdict::Keep;
    for read in input.chunks(read_bytes.max(1)) {
        let Ok(mut buf) = PacketBuf::try_with_capacity(pool, read.len()) else {
            break;
        };
        append_bytes(&mut buf, read);
        verdict = http.on_recv(&mut conn, buf, &mut tx);
        output.extend(tx.drain().flat_map(|bytes: Bytes| bytes.to_vec()));
        if verdict != Verdict::Keep {
            break;
        }
    }
    http.on_close(conn);
    drop(tx);
    pool.collect();
    assert_eq!(pool.stats().in_use_bytes, baseline, "a connection left buffers behind");
    Run { output, verdict }
}

/// Checks that `output` is a sequence of complete responses. With
/// `head_requests`, a response may also stand without its body (the answer
/// to a HEAD request). Panics with the offending bytes otherwise.
pub fn check_stream(output: &[u8], head_requests: bool) {
    if let Err(e) = responses(output, head_requests) {
        panic!("{e}: {:?}", String::from_utf8_lossy(output));
    }
}

/// Whether `rest` splits into complete responses (see [`check_stream`]).
fn responses(rest: &[u8], head_requests: bool) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_bytes = match response.parse(rest) {
        Ok(httparse::Status::Complete(n)) => n,
        other => return Err(format!("not a complete response head ({other:?})")),
    };
    if response.version != Some(1) {
        return Err("not HTTP/1.1".to_string());
    }
    let code = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
    let body_bytes = match (code, length) {
        (100, _) => 0,
        (_, Some(length)) => length,
        (_, None) => return Err(format!("a {code} response without Content-Length")),
    };
    let with_body = match rest.get(head_bytes + body_bytes..) {
        Some(after) => responses(after, head_requests),
        None => Err(format!("a {code} response cut short")),
    };
    match with_body {
        Err(_) if head_requests && body_bytes > 0 => responses(&rest[head_bytes..], head_requests),
        result => result,
    }
}

/// `output` without its `Date` values (which change with the second), to
/// compare runs.
pub fn without_dates(output: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(output);
    text.lines().filter(|line| !line.starts_with("Date: ")).collect::<Vec<_>>().join("\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &[u8] = b"GET /1k HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        GET /nope HTTP/1.1\r\nHost: a\r\n\r\n\
        DELETE / HTTP/1.1\r\nHost: a\r\n\r\n\
        GET /stats HTTP/1.1\r\nHost: a\r\n\r\n\
        GET /4k HTTP/1.0\r\n\r\n\
        GET /never HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn the_response_does_not_depend_on_how_reads_cut_the_input() {
        let whole = drive(PIPELINE, PIPELINE.len());
        check_stream(&whole.output, false);
        assert_eq!(whole.verdict, Verdict::CloseAfterFlush, "HTTP/1.0 without keep-alive closes");
        let text = String::from_utf8_lossy(&whole.output);
        assert_eq!(text.matches("HTTP/1.1 ").count(), 6, "{text}");
        assert!(text.contains("\r\n\r\nhello"), "{text}");
        for read_bytes in [1, 2, 3, 7, 16, 100] {
            let run = drive(PIPELINE, read_bytes);
            check_stream(&run.output, false);
            // `/stats` counts requests, so its body differs between runs:
            // compare everything before it.
            let cut = |out: &[u8]| {
                let text = String::from_utf8_lossy(&without_dates(out)).to_string();
                text[..text.find("version=0.0.4").expect("a /stats response")].to_string()
            };
            assert_eq!(cut(&run.output), cut(&whole.output), "reads of {read_bytes} bytes");
        }
    }

    #[test]
    fn limits_and_garbage() {
        let big_head = [b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &[b'a'; 2000]].concat();
        for (input, status) in [
            (&b"\x00\x01\x02garbage\r\n\r\n"[..], "400"),
            (&big_head[..], "431"),
            (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", "413"),
        ] {
            for read_bytes in [1, 64, 4096] {
                let run = drive(input, read_bytes);
                check_stream(&run.output, false);
                assert!(run.output.starts_with(format!("HTTP/1.1 {status}").as_bytes()), "{status} by {read_bytes}");
                assert_eq!(run.verdict, Verdict::CloseAfterFlush);
            }
        }
        // An incomplete request produces nothing, and leaks nothing.
        let run = drive(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc", 5);
        assert!(run.output.is_empty());
    }
}
