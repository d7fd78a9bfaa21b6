//! `nta-httpd`: an HTTP/1.1 server whose payload buffers come from the NTA
//! pool, built as one more protocol on nta-net's drivers.
//!
//! # Design
//!
//! nta-net's drivers (epoll, io_uring, tokio) own the sockets: accept,
//! receive into pool buffers, the send queue and its per-connection bound,
//! timeouts, graceful close. This module is only the protocol they call
//! ([`conn::Http`], a `StreamProtocol`) and what it serves:
//!
//! - [`request`]: one request head, parsed with httparse and checked;
//! - [`response`]: response heads written into pool buffers, `Date`;
//! - [`site`]: the demo site or the files under `--root`, cached in pool
//!   buffers;
//! - [`stats`]: `GET /stats` in Prometheus text format;
//! - [`source`]: `--alloc nta|system`, the pool or the heap;
//! - [`buf`]: filling buffers;
//! - [`server`]: workers, banner, signals; [`config`]: the flags;
//! - [`harness`]: one connection driven without a socket (tests, fuzzing).
//!
//! # Zero copy
//!
//! A response is two `Bytes`: a head written once into a pool buffer, and
//! a body that already lives in the pool (a cached file, a generated
//! payload, or a slice of the request buffer for `POST /echo`). The driver
//! sends both with one vectored `sendmsg`; no body byte is copied in user
//! space. A receive buffer is trimmed to what arrived and freed once the
//! requests in it are answered (or kept, exactly, if one is incomplete).
//!
//! # Bad input
//!
//! Malformed requests get 400, oversized heads 431, oversized bodies 413,
//! unknown methods 501 and known but unsupported ones 405; each refusal
//! closes the connection after the response. A client too slow to send its
//! request is closed at `--header-timeout-ms`. An exhausted pool yields a
//! static 503, never a crash.

pub mod buf;
pub mod config;
pub mod conn;
pub mod harness;
pub mod request;
pub mod response;
pub mod server;
pub mod site;
pub mod source;
pub mod stats;

pub use config::{Alloc, HttpdArgs, Limits};
pub use conn::{Http, HttpConn, Shared};
pub use server::{httpd_main, Httpd};
