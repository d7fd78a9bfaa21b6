//! Zero-copy export of the pool to reader processes (the sniffer): the
//! protocol ([`proto`]) and the server side.

pub mod proto;
