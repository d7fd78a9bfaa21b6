//! Benchmarks of NTA against the allocators users would pick instead.
//!
//! Layout (one concept per file):
//! - [`peers`]: the allocators behind one trait, [`peers::Peer`];
//! - [`workloads`]: P1..P6, generic over the trait;
//! - [`trace`] and [`replay`]: the allocation-trace format and its replay;
//!   [`alloc_log`]: the converter from `tools/alloc_trace.c` logs to traces;
//! - [`frag_map`]: the PNG fragmentation map of P3;
//! - [`report`]: markdown tables and JSON lines; [`goals`]: issue 10's goals,
//!   with verdicts computed from the figures;
//! - [`suite`]: runs every workload on every peer and builds the reports;
//!   [`trace_table`]: the recorded traces on NTA and the three peers;
//!   [`results`]: `nta-bench results`, which writes benches/RESULTS.md;
//! - [`rng`], [`sizes`], [`spsc`], [`mem_stats`]: shared pieces.

pub mod alloc_log;
pub mod frag_map;
pub mod goals;
pub mod mem_stats;
pub mod peers;
pub mod replay;
pub mod report;
pub mod results;
pub mod rng;
pub mod sizes;
pub mod spsc;
pub mod suite;
pub mod trace;
pub mod trace_table;
pub mod workloads;
