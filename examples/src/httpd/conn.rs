//! The HTTP/1.1 protocol of a connection: a [`StreamProtocol`] that the
//! drivers of nta-net call with each received buffer.
//!
//! # One received buffer
//!
//! 1. If an incomplete request is pending, the new bytes are appended to
//!    it (into its spare room when its size is known, else into one new
//!    buffer of the two lengths together).
//! 2. Requests are parsed one after the other from the buffer (pipelining);
//!    each complete one is answered by queueing a head (written into a
//!    buffer from the source) and a body (`Bytes`: a cached file, a
//!    generated payload, the request's own body for `POST /echo`), in
//!    request order, without copying a body.
//! 3. What is left is an incomplete request: it is kept (the buffer itself
//!    when it starts at the front, else a copy of the rest, sized for the
//!    whole request when its head is complete), or refused when its head is
//!    over the limit.
//!
//! # Memory per connection
//!
//! At most one pending request (its head within `--max-header-bytes`, its
//! body within `--max-body`) plus the responses to one read, which the
//! driver's `max_queued_bytes` bound caps from the other side. An idle
//! connection holds nothing.
//!
//! # Timeouts
//!
//! [`StreamProtocol::deadline`]: `--header-timeout-ms` from the first byte
//! of an incomplete request (a slow client cannot keep it open by trickling
//! bytes), `--keepalive-timeout-ms` from the last activity otherwise.
//!
//! # Pool exhausted
//!
//! No buffer for a head, a pending request, or a receive: the static 503 of
//! [`crate::httpd::response`], then close. Never a panic.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nta_net::{RxBuf, StreamProtocol, TxQueue, Verdict};

use crate::httpd::buf::{append_bytes, copy_to};
use crate::httpd::config::Limits;
use crate::httpd::request::{parse_head, Head, Method, Parsed};
use crate::httpd::response::{write_head, DateCache, HeadFields, Status, CONTINUE, SERVICE_UNAVAILABLE};
use crate::httpd::site::{Lookup, Site};
use crate::httpd::source::PayloadSource;
use crate::httpd::stats::HttpStats;

/// What every worker's protocol shares: limits, content, statistics.
#[derive(Debug)]
pub struct Shared<S> {
    /// Request limits.
    pub limits: Limits,
    /// What is served.
    pub site: Site<S>,
    /// Tallies for `/stats`.
    pub stats: HttpStats,
}

/// The HTTP protocol of one worker. See the module notes.
#[derive(Debug)]
pub struct Http<S: PayloadSource> {
    shared: Arc<Shared<S>>,
    source: S,
    date: DateCache,
}

/// The state of one connection.
#[derive(Debug)]
pub struct HttpConn<B> {
    /// The bytes of an incomplete request.
    partial: Option<B>,
    /// When the incomplete request's first byte arrived.
    request_started: Option<Instant>,
    /// The last activity.
    idle_since: Instant,
    /// `100 Continue` was sent for the pending request.
    continue_sent: bool,
}

/// The bytes being parsed: the received buffer, or (once a body was taken
/// out of it without a copy) the same memory frozen into `Bytes`.
enum Input<B> {
    Buf(B),
    Frozen(Bytes),
}

impl<B: RxBuf> Input<B> {
    fn bytes(&self) -> &[u8] {
        match self {
            Input::Buf(buf) => buf,
            Input::Frozen(bytes) => bytes,
        }
    }

    /// `range` of the input as shared `Bytes`, without a copy.
    fn slice(&mut self, range: Range<usize>) -> Bytes {
        if let Input::Buf(_) = self {
            let Input::Buf(mut buf) = std::mem::replace(self, Input::Frozen(Bytes::new())) else {
                unreachable!("matched just above")
            };
            // Kept while the body is queued: exactly as large as its bytes.
            buf.trim();
            *self = Input::Frozen(buf.freeze());
        }
        match self {
            Input::Frozen(bytes) => bytes.slice(range),
            Input::Buf(_) => unreachable!("frozen just above"),
        }
    }
}

impl<S: PayloadSource> Http<S> {
    /// A worker's protocol over `shared`, with buffers from `source`.
    pub fn new(shared: Arc<Shared<S>>, source: S) -> Http<S> {
        Http { shared, source, date: DateCache::default() }
    }

    /// Answers every complete request in `input`; keeps the incomplete rest.
    fn serve(&mut self, conn: &mut HttpConn<S::Buf>, input: S::Buf, tx: &mut TxQueue, now: Instant) -> Verdict {
        let mut input = Input::Buf(input);
        let mut pos = 0;
        loop {
            let rest_bytes = input.bytes().len() - pos;
            if rest_bytes == 0 {
                return Verdict::Keep;
            }
            match parse_head(&input.bytes()[pos..], &self.shared.limits) {
                Parsed::Partial => return self.keep_partial(conn, input, pos, None, now, tx),
                Parsed::Refused(status) => return self.refuse(status, tx),
                Parsed::Complete(head) => {
                    let total = head.head_bytes + head.body_bytes;
                    if rest_bytes < total {
                        if head.expect_continue && !conn.continue_sent {
                            tx.push(Bytes::from_static(CONTINUE));
                            conn.continue_sent = true;
                        }
                        return self.keep_partial(conn, input, pos, Some(total), now, tx);
                    }
                    conn.request_started = None;
                    conn.continue_sent = false;
                    let verdict = self.respond(&head, &mut input, pos + head.head_bytes..pos + total, tx);
                    pos += total;
                    if verdict != Verdict::Keep {
                        return verdict;
                    }
                }
            }
        }
    }

    /// Keeps `input[pos..]`, an incomplete request of `total` bytes (when its
    /// head is complete), for the next read.
    fn keep_partial(
        &mut self,
        conn: &mut HttpConn<S::Buf>,
        input: Input<S::Buf>,
        pos: usize,
        total: Option<usize>,
        now: Instant,
        tx: &mut TxQueue,
    ) -> Verdict {
        conn.request_started.get_or_insert(now);
        let rest_bytes = input.bytes().len() - pos;
        let wanted = total.unwrap_or(rest_bytes).max(rest_bytes);
        match input {
            // An incomplete head is kept exactly; a body in the receive
            // buffer's room keeps that room (at most one receive buffer).
            Input::Buf(mut buf) if pos == 0 && buf.capacity() >= wanted => {
                if total.is_none() {
                    buf.trim();
                }
                conn.partial = Some(buf);
            }
            input => {
                let Ok(mut kept) = self.source.try_alloc(wanted) else {
                    return self.exhausted(tx);
                };
                append_bytes(&mut kept, &input.bytes()[pos..]);
                conn.partial = Some(kept);
            }
        }
        Verdict::Keep
    }

    /// Answers one complete request.
    fn respond(&mut self, head: &Head, input: &mut Input<S::Buf>, body: Range<usize>, tx: &mut TxQueue) -> Verdict {
        let path = head.target.split(['?', '#']).next().unwrap_or("");
        let (status, content_type, payload, allow) = match (head.method, path) {
            (Method::Unknown, _) => return self.refuse(Status::NotImplemented, tx),
            (Method::Get | Method::Head, "/stats") => {
                let pool = self.source.pool_stats();
                let text = self.shared.stats.render(pool.as_ref());
                match copy_to(&self.source, text.as_bytes()) {
                    Some(text) => (Status::Ok, "text/plain; version=0.0.4", text, None),
                    None => return self.exhausted(tx),
                }
            }
            (Method::Post, "/echo") => (Status::Ok, "application/octet-stream", input.slice(body), None),
            (_, "/echo") => (Status::MethodNotAllowed, "text/plain", Bytes::from_static(b"use POST\n"), Some("POST")),
            (Method::Get | Method::Head, _) => match self.shared.site.lookup(&head.target) {
                Lookup::Found(content) => (Status::Ok, content.content_type, content.body, None),
                Lookup::NotFound => (Status::NotFound, "text/plain", Bytes::from_static(b"not found\n"), None),
                Lookup::BadPath => return self.refuse(Status::BadRequest, tx),
                Lookup::TooLarge => {
                    (Status::InternalServerError, "text/plain", Bytes::from_static(b"file too large\n"), None)
                }
                Lookup::Exhausted => return self.exhausted(tx),
            },
            (Method::Post | Method::Other, _) => {
                (Status::MethodNotAllowed, "text/plain", Bytes::from_static(b"method not allowed\n"), Some("GET, HEAD"))
            }
        };
        let fields = HeadFields {
            status,
            content_type,
            content_length: payload.len(),
            keep_alive: head.keep_alive,
            http10: head.version_minor == 0,
            allow,
        };
        let Some(head_bytes) = write_head(&self.source, self.date.now(), &fields) else {
            return self.exhausted(tx);
        };
        self.shared.stats.count(status);
        tx.push(head_bytes);
        if head.method != Method::Head {
            tx.push(payload);
        }
        if head.keep_alive {
            Verdict::Keep
        } else {
            Verdict::CloseAfterFlush
        }
    }

    /// Refuses a request it cannot read past: the status, then close.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, status: Status, tx: &mut TxQueue) -> Verdict {
        let body = status.line().as_bytes();
        let fields = HeadFields {
            status,
            content_type: "text/plain",
            content_length: body.len(),
            keep_alive: false,
            http10: false,
            allow: None,
        };
        let Some(head) = write_head(&self.source, self.date.now(), &fields) else {
            return self.exhausted(tx);
        };
        self.shared.stats.count(status);
        tx.push(head);
        tx.push(Bytes::from_static(body));
        Verdict::CloseAfterFlush
    }

    /// Cold: no buffer could be had. The static 503, then close.
    #[cold]
    #[inline(never)]
    fn exhausted(&mut self, tx: &mut TxQueue) -> Verdict {
        self.shared.stats.count(Status::ServiceUnavailable);
        tx.push(Bytes::from_static(SERVICE_UNAVAILABLE));
        Verdict::CloseAfterFlush
    }
}

impl<S: PayloadSource> StreamProtocol<S::Buf> for Http<S> {
    type Conn = HttpConn<S::Buf>;

    fn open(&mut self, _local: SocketAddr, _peer: SocketAddr) -> HttpConn<S::Buf> {
        HttpConn { partial: None, request_started: None, idle_since: Instant::now(), continue_sent: false }
    }

    fn on_recv(&mut self, conn: &mut HttpConn<S::Buf>, data: S::Buf, tx: &mut TxQueue) -> Verdict {
        let now = Instant::now();
        conn.idle_since = now;
        let input = match conn.partial.take() {
            None => data,
            Some(mut partial) if partial.capacity() - partial.len() >= data.len() => {
                append_bytes(&mut partial, &data);
                partial
            }
            Some(partial) => {
                let Ok(mut joined) = self.source.try_alloc(partial.len() + data.len()) else {
                    return self.exhausted(tx);
                };
                append_bytes(&mut joined, &partial);
                append_bytes(&mut joined, &data);
                joined
            }
        };
        self.serve(conn, input, tx, now)
    }

    fn on_no_buffer(&mut self, conn: &mut HttpConn<S::Buf>, tx: &mut TxQueue) -> Verdict {
        conn.partial = None;
        self.exhausted(tx)
    }

    fn deadline(&self, conn: &HttpConn<S::Buf>) -> Option<Instant> {
        Some(match conn.request_started {
            Some(started) => started + self.shared.limits.header_timeout,
            None => conn.idle_since + self.shared.limits.keepalive_timeout,
        })
    }
}
