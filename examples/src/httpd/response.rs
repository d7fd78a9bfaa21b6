//! Response heads, written straight into a buffer from the payload source
//! (a pool chunk with `--alloc nta`), trimmed and frozen: the head and the
//! body (a cached file, a slice of the request) go out as two `Bytes` in one
//! vectored send, with no copy of the body.
//!
//! `Date` is formatted once a second ([`DateCache`]). When not even a head
//! buffer can be had (the pool is exhausted) the answer is a static 503
//! ([`SERVICE_UNAVAILABLE`]), which needs no allocation.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nta_net::{BufSource, RxBuf};

use crate::httpd::buf::append_bytes;

/// The statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 100, before a body the client holds back.
    Continue,
    /// 200.
    Ok,
    /// 400: malformed request.
    BadRequest,
    /// 404.
    NotFound,
    /// 405: a method this resource does not allow.
    MethodNotAllowed,
    /// 413: body over `--max-body`.
    PayloadTooLarge,
    /// 431: head over `--max-header-bytes`.
    HeaderFieldsTooLarge,
    /// 500.
    InternalServerError,
    /// 501: an unknown method, or chunked request bodies.
    NotImplemented,
    /// 503: the pool is exhausted.
    ServiceUnavailable,
}

impl Status {
    /// Code and reason phrase.
    pub fn line(self) -> &'static str {
        match self {
            Status::Continue => "100 Continue",
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            Status::InternalServerError => "500 Internal Server Error",
            Status::NotImplemented => "501 Not Implemented",
            Status::ServiceUnavailable => "503 Service Unavailable",
        }
    }

    /// The numeric code.
    pub fn code(self) -> u16 {
        self.line()[..3].parse().expect("every status line starts with its code")
    }
}

/// The answer when the pool cannot give even a head buffer: static, so it
/// needs no allocation (and so carries no `Date`).
pub const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: nta-httpd\r\n\
Content-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\npool exhausted, retry";

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The `Date` header value, formatted once per second.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    /// The current `Date` value.
    pub fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

/// What a response head says.
#[derive(Clone, Copy, Debug)]
pub struct HeadFields<'a> {
    /// Status.
    pub status: Status,
    /// `Content-Type`.
    pub content_type: &'a str,
    /// `Content-Length` (also for HEAD, which sends no body).
    pub content_length: usize,
    /// Whether the connection stays open.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (a kept-alive 1.0 connection must say so).
    pub http10: bool,
    /// `Allow`, for 405.
    pub allow: Option<&'a str>,
}

/// Writes a response head into a fresh buffer of exactly its length from
/// `source` (no trim needed); `None` when the source is exhausted.
pub fn write_head<S: BufSource>(source: &S, date: &str, fields: &HeadFields<'_>) -> Option<Bytes> {
    let mut length_digits = [0u8; 20];
    let connection = match (fields.keep_alive, fields.http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    let allow = fields.allow.map_or(("", "", ""), |allow| ("Allow: ", allow, "\r\n"));
    let parts: [&[u8]; 14] = [
        b"HTTP/1.1 ",
        fields.status.line().as_bytes(),
        b"\r\nServer: nta-httpd\r\nDate: ",
        date.as_bytes(),
        b"\r\nContent-Type: ",
        fields.content_type.as_bytes(),
        b"\r\nContent-Length: ",
        format_decimal(fields.content_length, &mut length_digits),
        b"\r\n",
        connection.as_bytes(),
        allow.0.as_bytes(),
        allow.1.as_bytes(),
        allow.2.as_bytes(),
        b"\r\n",
    ];
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut buf = source.try_alloc(total).ok()?;
    for part in parts {
        append_bytes(&mut buf, part);
    }
    Some(buf.freeze())
}

/// `value` in decimal, in `digits`.
fn format_decimal(mut value: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_in_a_pool_buffer() {
        let pool = nta_core::Pool::builder().capacity(8 << 20).checked(true).build().unwrap();
        let fields = HeadFields {
            status: Status::MethodNotAllowed,
            content_type: "text/plain",
            content_length: 1234,
            keep_alive: false,
            http10: false,
            allow: Some("GET, HEAD"),
        };
        let head = write_head(&pool, "Sun, 22 Nov 2026 07:00:00 GMT", &fields).unwrap();
        assert!(pool.contains(head.as_ptr()));
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: nta-httpd\r\nDate: Sun, 22 Nov 2026 07:00:00 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 1234\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\n"
        );
        assert_eq!(Status::HeaderFieldsTooLarge.code(), 431);
        let mut digits = [0u8; 20];
        assert_eq!(format_decimal(0, &mut digits), b"0");
        assert_eq!(format_decimal(usize::MAX, &mut digits), usize::MAX.to_string().as_bytes());
        assert!(SERVICE_UNAVAILABLE.ends_with(b"\r\n\r\npool exhausted, retry"));
        assert_eq!(SERVICE_UNAVAILABLE.split(|&b| b == b'\n').next_back().unwrap().len(), 21, "Content-Length");
    }
}
