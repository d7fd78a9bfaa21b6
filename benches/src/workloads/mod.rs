//! The six workloads, P1 to P6, each generic over [`Peer`](crate::peers::Peer).
//!
//! Each workload is deterministic given its seed: sizes and choices come from
//! [`SplitMix64`](crate::rng::SplitMix64). Each has a parameter struct with
//! three scales ([`Scale`]): `Full` (the figures), `Quick` (for
//! `nta-bench all --quick`, about three minutes in all) and `Tiny` (for
//! `cargo test`, which checks accounting, never speed).

pub mod churn;
pub mod cross_thread;
pub mod fill;
pub mod footprint;
pub mod free_order;
pub mod interleave;
pub mod packet_mix;

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// The sizes the issue specifies.
    Full,
    /// Scaled down so that every workload on every peer takes ~3 minutes.
    Quick,
    /// A few thousand operations, for tests.
    Tiny,
}

/// Default seed of every workload.
pub const DEFAULT_SEED: u64 = 0x4E54_4120_2006;

/// Nanoseconds in `elapsed`, saturating.
pub(crate) fn nanos(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
