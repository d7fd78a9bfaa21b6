//! Zero-copy export of the pool to reader processes: NTA's sniffer reads
//! packets where they lie, and the allocator postpones the free of chunks
//! a reader holds (seed 002). [`proto`] is the wire protocol and the
//! shared layouts; [`Exporter`] is the server side.
//!
//! # Design
//!
//! - **Segments** are nta-core's sealed memfds (`nta-seg-N`, see
//!   [`nta_core::export`]): a reader gets a read-only descriptor of each,
//!   so it can neither write the pool nor map it writable. From the first
//!   reader's attach on (not at bind: watching seals the segments, and an
//!   unsealed pool can still give free pages back to the OS), the exporter
//!   learns of every segment mapped or released through a
//!   [`nta_core::SegmentListener`] and announces it on each reader's
//!   socket, before any chunk in a new segment is published.
//! - **Descriptors** come from the drivers' published-buffer hook
//!   ([`crate::hook`]): every rx and tx buffer that lies in the pool is
//!   located ([`nta_core::Pool::locate`]) and written, with its flow, time
//!   and TCP stream offset, to the reader's ring of the shard that owns
//!   the chunk (a buffer above 2 MiB, a run that no shard owns, goes to
//!   ring 0 as one descriptor per segment it spans, since a reader maps
//!   segments one by one). Rings are single-producer (the exporter's lock)
//!   and single-consumer, lossy: a full ring drops and counts, it never
//!   waits.
//! - **Holds**: a descriptor is outstanding until the reader's consumer
//!   index passes it. While readers are attached the exporter installs a
//!   [`nta_core::FreeHook`]: the free of a chunk with a held outstanding
//!   descriptor is postponed until that descriptor retires (see `tracker`,
//!   which counts descriptors per chunk, keyed by
//!   [`nta_core::Pool::chunk_start`], so a slice from the middle of a
//!   frozen buffer holds its whole chunk); snapshot descriptors are
//!   invalidated instead (the slot's `seq` is zeroed before the chunk can
//!   be reused), which is how a snapshot reader detects a torn read. Each
//!   reader has a quota of held bytes. The occupancy file marks held
//!   chunks, so `nta-sniffer map` can colour them.
//! - **Leases**: a reader bumps a heartbeat in its hold region. The
//!   exporter thread polls heartbeats and consumer indexes every few
//!   milliseconds; a stopped heartbeat, a closed socket or a garbage index
//!   evicts the reader, which drops its holds and completes the postponed
//!   frees. Nothing a reader writes can make the server free a chunk
//!   before the application freed it: retiring a hold only completes a
//!   free that was already requested.
//! - **Cost when nobody is attached**: the hook is not installed and the
//!   publish hook has no subscriber, so frees and receives pay one
//!   predictable branch each.
//!
//! # Security
//!
//! The socket is created with mode 0600 and every peer's uid is checked
//! with `SO_PEERCRED` (ours, or one in [`ExportConfig::allow_uids`]).
//! Rings and the occupancy file are sealed (`F_SEAL_FUTURE_WRITE`) and
//! handed over read-only; the hold region is sealed against resizing so
//! that a reader cannot truncate it under the server's mapping. Messages a
//! reader sends are parsed as untrusted; junk ends its session.

mod clock;
mod exporter;
pub mod proto;
mod region;
mod session;
mod tracker;

pub use exporter::{ExportConfig, ExportCounters, Exporter};
