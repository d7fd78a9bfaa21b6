//! nta-sniffer: reads packets straight out of a live NTA server's pool.
//!
//! # Design notes
//!
//! The server (`nta_net::export`) hands the reader, over a Unix
//! `SOCK_SEQPACKET` socket, read-only descriptors of its pool segments and
//! of one descriptor ring per shard, plus one small read-write *hold
//! region*. The wire protocol and the layouts are in
//! `nta_net::export::proto`; this crate is the reader's side of it.
//!
//! Trust: nothing the server's memory or socket says is believed before it
//! is checked. Shared memory is read only through atomic loads with bounds
//! checks ([`maps`]); every descriptor is validated against the mapped
//! segments ([`validate`]); every fault is counted and skipped, never an
//! out-of-bounds read or a panic. The reader cannot write the pool: the
//! segment descriptors are read-only and sealed, so even a writable mapping
//! fails.
//!
//! Layers, bottom up:
//! - [`sys`]: the syscalls (socket, `SCM_RIGHTS`, poll, fstat, seals).
//! - [`maps`]: shared mappings read with atomic loads.
//! - [`segments`], [`ring`], [`hold`]: the three kinds of shared memory.
//! - [`validate`]: descriptor checks; [`reader`]: the drain loop; [`pace`]:
//!   how long to wait between drains.
//! - [`client`]: the session (attach, events).
//! - outputs: [`filter`], [`packet`] (synthesized headers), [`pcap`],
//!   [`occupancy`], [`stats`], [`map_png`] (lettered with `font`).
//! - commands: [`capture`], [`top`], `map` (in [`cli`]).
//!
//! Glossary: *descriptor*, one published buffer (segment, offset, length,
//! flow, timestamp, seq, generation); *consumer index*, how far the reader
//! has read a ring (in the hold region); *held*, a descriptor whose chunk
//! the server will not free until the consumer index passes it;
//! *snapshot*, one without a hold, read and then checked for reuse
//! (`seq` unchanged).

pub mod capture;
pub mod checksum;
pub mod cli;
pub mod client;
pub mod error;
pub mod filter;
mod font;
pub mod hold;
pub mod map_png;
pub mod maps;
pub mod occupancy;
pub mod pace;
pub mod packet;
pub mod pcap;
pub mod reader;
pub mod ring;
pub mod segments;
pub mod stats;
mod sys;
pub mod top;
pub mod validate;
