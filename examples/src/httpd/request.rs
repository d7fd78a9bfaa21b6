//! Parsing one request head with httparse, and the checks HTTP/1.1 asks
//! for, into a [`Head`] or the status to refuse it with.
//!
//! # What is refused, and with what
//!
//! | input | result |
//! |---|---|
//! | head not complete yet, and longer than `max_header_bytes` | 431 |
//! | more than [`MAX_HEADERS`] headers, or a complete head over the limit | 431 |
//! | anything httparse rejects (bad token, bad version, bare LF junk...) | 400 |
//! | HTTP/1.1 without `Host`, a bad or conflicting `Content-Length` | 400 |
//! | `Transfer-Encoding` (chunked bodies are not supported) | 501 |
//! | `Content-Length` over `max_body_bytes` | 413 |
//!
//! Every refusal closes the connection after the response: the rest of the
//! stream cannot be trusted to start at a request boundary.

use crate::httpd::config::Limits;
use crate::httpd::response::Status;

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 64;

/// The request methods this server tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// A method HTTP defines that this server does not serve (PUT, DELETE,
    /// OPTIONS, ...): 405.
    Other,
    /// A token no HTTP specification defines: 501.
    Unknown,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::Other,
            _ => Method::Unknown,
        }
    }
}

/// A parsed, checked request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The request target, as sent (origin form, with any query).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Bytes of the head, up to and including the blank line.
    pub head_bytes: usize,
    /// Bytes of the body that follows.
    pub body_bytes: usize,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// What parsing the start of a buffer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet (and within the limit).
    Partial,
    /// A complete, acceptable head.
    Complete(Head),
    /// Refuse with this status, then close.
    Refused(Status),
}

/// Parses the request head at the start of `input`. See the module notes.
pub fn parse_head(input: &[u8], limits: &Limits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(input) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        Ok(httparse::Status::Partial) if input.len() > limits.max_header_bytes => {
            return Parsed::Refused(Status::HeaderFieldsTooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(Status::HeaderFieldsTooLarge),
        Err(_) => return Parsed::Refused(Status::BadRequest),
    };
    if head_bytes > limits.max_header_bytes {
        return Parsed::Refused(Status::HeaderFieldsTooLarge);
    }
    let (Some(method), Some(target), Some(version_minor)) = (request.method, request.path, request.version) else {
        return Parsed::Refused(Status::BadRequest);
    };
    let mut content_length: Option<usize> = None;
    let mut has_host = false;
    let mut connection_close = version_minor == 0;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = parse_content_length(header.value) else {
                return Parsed::Refused(Status::BadRequest);
            };
            if content_length.is_some_and(|seen| seen != length) {
                return Parsed::Refused(Status::BadRequest);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Refused(Status::NotImplemented);
        } else if name.eq_ignore_ascii_case("host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version_minor == 0 {
                    connection_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") && header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = true;
        }
    }
    if version_minor == 1 && !has_host {
        return Parsed::Refused(Status::BadRequest);
    }
    let body_bytes = content_length.unwrap_or(0);
    if body_bytes > limits.max_body_bytes {
        return Parsed::Refused(Status::PayloadTooLarge);
    }
    Parsed::Complete(Head {
        method: Method::from_token(method),
        target: target.to_string(),
        version_minor,
        head_bytes,
        body_bytes,
        keep_alive: !connection_close,
        expect_continue,
    })
}

/// A `Content-Length` value: ASCII digits only, no sign, no overflow.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Parsed {
        parse_head(input.as_bytes(), &Limits::default())
    }

    #[test]
    fn a_plain_get() {
        let Parsed::Complete(head) = parse("GET /1k HTTP/1.1\r\nHost: x\r\n\r\n") else { panic!() };
        assert_eq!((head.method, head.target.as_str(), head.version_minor), (Method::Get, "/1k", 1));
        assert_eq!((head.head_bytes, head.body_bytes, head.keep_alive), (29, 0, true));
    }

    #[test]
    fn connection_rules() {
        let keep = |input: &str| match parse(input) {
            Parsed::Complete(head) => head.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(!keep("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n\r\n"));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("GET / HTTP/1.1\r\n"), Parsed::Partial);
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n"), Parsed::Refused(Status::BadRequest), "no Host");
        assert_eq!(parse("G@T / HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Refused(Status::BadRequest));
        assert_eq!(parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), Parsed::Refused(Status::BadRequest));
        assert_eq!(
            parse("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Refused(Status::BadRequest)
        );
        assert_eq!(
            parse("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            Parsed::Refused(Status::BadRequest)
        );
        assert_eq!(
            parse("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Refused(Status::NotImplemented)
        );
        assert_eq!(
            parse("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
            Parsed::Refused(Status::PayloadTooLarge)
        );
        let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(&long), Parsed::Refused(Status::HeaderFieldsTooLarge));
        assert_eq!(parse(&long[..8500]), Parsed::Refused(Status::HeaderFieldsTooLarge));
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            Parsed::Refused(Status::HeaderFieldsTooLarge)
        );
    }

    #[test]
    fn methods() {
        let method = |m: &str| match parse(&format!("{m} / HTTP/1.1\r\nHost: x\r\n\r\n")) {
            Parsed::Complete(head) => head.method,
            other => panic!("{other:?}"),
        };
        assert_eq!(method("HEAD"), Method::Head);
        assert_eq!(method("DELETE"), Method::Other);
        assert_eq!(method("BREW"), Method::Unknown);
    }
}
