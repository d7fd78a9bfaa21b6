//! Every workload in its tiny configuration, on every peer, checking its own
//! accounting (never its speed).

use nta_bench::peers::{with_peer, NtaPeer, Peer, PeerConfig, PeerKind, PeerVisitor};
use nta_bench::sizes::IMIX_SIZES;
use nta_bench::workloads::churn::{self, ChurnParams};
use nta_bench::workloads::cross_thread::{self, CrossThreadParams};
use nta_bench::workloads::fill::{self, FillParams};
use nta_bench::workloads::footprint::{self, FootprintParams};
use nta_bench::workloads::free_order::{self, FreeOrderParams};
use nta_bench::workloads::packet_mix::{self, PacketMixParams};
use nta_bench::workloads::Scale;

/// Runs `check` on every peer, built with `config`.
fn on_every_peer<V: PeerVisitor<Output = ()> + Clone>(config: impl Fn(PeerKind) -> PeerConfig, visitor: V) {
    for kind in PeerKind::ALL {
        with_peer(kind, config(kind), visitor.clone()).unwrap_or_else(|error| panic!("{}: {error}", kind.name()));
    }
}

#[derive(Clone)]
struct PacketMix;
impl PeerVisitor for PacketMix {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = PacketMixParams::at(Scale::Tiny);
        let result = packet_mix::run(peer, &params);
        assert_eq!(result.failed_allocs, 0, "{}", peer.name());
        assert_eq!(result.pairs, params.pairs);
        assert!(result.paired.is_none());
        let max_live = (params.window * IMIX_SIZES[2]) as u64;
        assert!(result.peak_live_requested_bytes > 0 && result.peak_live_requested_bytes <= max_live);
    }
}

#[test]
fn p1_packet_mix_accounts_on_every_peer() {
    on_every_peer(|_| PeerConfig::default(), PacketMix);
}

#[derive(Clone)]
struct PairedFrees;
impl PeerVisitor for PairedFrees {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = PacketMixParams { paired_frees: true, ..PacketMixParams::at(Scale::Tiny) };
        let result = packet_mix::run(peer, &params);
        assert_eq!(result.failed_allocs, 0, "{}", peer.name());
        // 5000 pairs: one group of four blocks of 1250.
        assert_eq!(result.pairs, params.pairs);
        let paired = result.paired.expect("the paired mode reports its blocks");
        assert_eq!(paired.pairs_each, params.pairs / 2);
        assert!(paired.sized_ns > 0 && paired.unsized_ns > 0);
        assert!(paired.sized_ns + paired.unsized_ns <= result.elapsed_ns);
    }
}

#[test]
fn p1_paired_frees_time_both_kinds_of_blocks_on_every_peer() {
    on_every_peer(|_| PeerConfig::default(), PairedFrees);
}

#[test]
fn p1_interleaved_runs_nta_and_the_three_allocators_by_blocks_in_turn() {
    let nta = NtaPeer::new(PeerConfig::default()).unwrap();
    let params = PacketMixParams { interleave: true, pairs: 20_000, ..PacketMixParams::at(Scale::Tiny) };
    let result = packet_mix::run(&nta, &params);
    let lanes = result.interleaved.expect("the interleaved mode reports its lanes");
    // 20000 pairs in blocks of 20000 (below PAIRED_BLOCK): one round.
    assert_eq!((lanes.block, lanes.rounds), (20_000, 1));
    let names: Vec<&str> = lanes.lanes.iter().map(|l| l.alloc.as_str()).collect();
    assert_eq!(names, ["nta", "system", "jemalloc", "mimalloc"]);
    for lane in &lanes.lanes {
        assert_eq!((lane.steps, lane.failed_allocs), (20_000, 0), "{}", lane.alloc);
        assert!(lane.ns > 0 && lane.ns_per_step() > 0.0, "{}", lane.alloc);
    }
    // The top-level fields are the given peer's lane.
    assert_eq!((result.pairs, result.elapsed_ns), (lanes.lanes[0].steps, lanes.lanes[0].ns));
    assert!(result.peak_live_requested_bytes > 0);
    // More pairs than a block: whole blocks, the rest dropped.
    let params = PacketMixParams { pairs: 2 * packet_mix::PAIRED_BLOCK + 7, ..params };
    let lanes = packet_mix::run(&nta, &params).interleaved.unwrap();
    assert_eq!((lanes.block, lanes.rounds), (packet_mix::PAIRED_BLOCK, 2));
    assert!(lanes.lanes.iter().all(|l| l.steps == 2 * packet_mix::PAIRED_BLOCK));
}

#[test]
fn p6_interleaved_times_the_four_allocators_and_samples_nothing() {
    let nta = NtaPeer::new(PeerConfig::default()).unwrap();
    let params = ChurnParams { interleave: true, ..ChurnParams::at(Scale::Tiny) };
    let result = churn::run(&nta, &params);
    let lanes = result.interleaved.as_ref().expect("the interleaved mode reports its lanes");
    // 20000 operations: one block.
    assert_eq!((lanes.block, lanes.rounds), (params.ops, 1));
    let names: Vec<&str> = lanes.lanes.iter().map(|l| l.alloc.as_str()).collect();
    assert_eq!(names, ["nta", "system", "jemalloc", "mimalloc"]);
    for lane in &lanes.lanes {
        assert_eq!((lane.steps, lane.failed_allocs), (params.ops, 0), "{}", lane.alloc);
        assert!(lane.steps_per_sec() > 0.0, "{}", lane.alloc);
    }
    assert_eq!((result.ops, result.elapsed_ns), (lanes.lanes[0].steps, lanes.lanes[0].ns));
    // NTA's lane did its warm-up and its block: every operation is one of the three kinds.
    assert_eq!(result.allocs + result.frees + result.shrinks, params.ops + params.target_live as u64);
    assert!(result.samples.is_empty());
    let time = lanes.time_ratio("nta", "mimalloc").unwrap();
    assert!(time > 0.0 && time.is_finite());
    // Everything was freed: NTA holds nothing live.
    assert_eq!(nta.pool().stats().in_use_bytes, 0);
}

#[derive(Clone)]
struct Footprint;
impl PeerVisitor for Footprint {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = FootprintParams::at(Scale::Tiny);
        let result = footprint::run(peer, &params);
        assert_eq!(result.failed_allocs, 0, "{}", peer.name());
        let min_live = (params.window * IMIX_SIZES[0]) as u64;
        assert!(result.peak_live_requested_bytes >= min_live, "{}", peer.name());
        if matches!(peer.name(), "pow2" | "mempool") {
            // The models' held bytes are exact and cover every live byte.
            assert!(result.held_ratio().unwrap() >= 1.0, "{}", peer.name());
        }
    }
}

#[test]
fn p2_footprint_accounts_on_every_peer() {
    on_every_peer(|_| PeerConfig::default(), Footprint);
}

#[derive(Clone)]
struct Fill;
impl PeerVisitor for Fill {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = FillParams::at(Scale::Tiny);
        let result = fill::run(peer, &params);
        let name = peer.name();
        assert!(!result.cap_violated, "{name}");
        // 4096, 2048, ..., 32: eight failures.
        assert_eq!(result.phases.len(), 8, "{name}");
        let mut previous = 0;
        for phase in &result.phases {
            assert!((0.0..=1.0).contains(&phase.utilization), "{name}: {phase:?}");
            assert!(phase.failed_request_bytes <= phase.max_request_bytes, "{name}");
            assert!(phase.live_requested_bytes >= previous, "{name}: nothing is freed");
            previous = phase.live_requested_bytes;
        }
        // Only the mempool can fail at once (a first request above 2048 B).
        assert!(name == "mempool" || result.phases[0].utilization > 0.0, "{name}");
        // Only the mempool can fail at once (a first request above 2048 B).
        assert!(name == "mempool" || result.phases[0].utilization > 0.0, "{name}");
        if let Some(map) = &result.final_map {
            let used_bytes = (map.used_granules() * 32) as u64;
            assert!(used_bytes >= previous, "{name}: every live byte is painted");
        }
        if matches!(name, "pow2" | "mempool") {
            assert!(result.first_map.is_some() && result.final_map.is_some(), "{name} has maps");
        }
    }
}

#[test]
fn p3_fill_reports_utilization_between_0_and_1() {
    let capacity = FillParams::at(Scale::Tiny).capacity_bytes;
    on_every_peer(
        |_| PeerConfig { capacity_bytes: Some(capacity), nta_shards: Some(1), ..PeerConfig::default() },
        Fill,
    );
}

#[derive(Clone)]
struct FreeOrder;
impl PeerVisitor for FreeOrder {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = FreeOrderParams::at(Scale::Tiny);
        let cells = free_order::run(peer, &params);
        assert_eq!(cells.len(), 15);
        for cell in cells {
            assert_eq!(cell.objects, params.objects);
            assert_eq!(cell.failed_allocs, 0, "{}: {cell:?}", peer.name());
        }
    }
}

#[test]
fn p4_free_order_fills_every_cell() {
    on_every_peer(|_| PeerConfig::default(), FreeOrder);
}

#[derive(Clone)]
struct CrossThread;
impl PeerVisitor for CrossThread {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = CrossThreadParams::at(Scale::Tiny);
        let result = cross_thread::run(peer, &params);
        assert_eq!(result.failed_allocs, 0, "{}", peer.name());
        assert_eq!(result.pairs_completed, params.pairs);
        assert!(result.requested_bytes >= params.pairs * IMIX_SIZES[0] as u64);
    }
}

#[test]
fn p5_cross_thread_frees_every_buffer() {
    on_every_peer(|_| PeerConfig::default(), CrossThread);
}

#[derive(Clone)]
struct Churn;
impl PeerVisitor for Churn {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let params = ChurnParams::at(Scale::Tiny);
        let result = churn::run(peer, &params);
        assert_eq!(result.ops, result.allocs + result.frees + result.shrinks + result.failed_allocs);
        assert_eq!(result.samples.len() as u64, params.samples);
        assert!(result.shrinks > 0 && result.frees > 0);
        if peer.name() != "mempool" {
            assert_eq!(result.failed_allocs, 0, "{}", peer.name());
        }
    }
}

#[test]
fn p6_churn_counts_every_operation() {
    on_every_peer(|_| PeerConfig::default(), Churn);
}

#[test]
fn workloads_are_deterministic_given_the_seed() {
    #[derive(Clone)]
    struct Twice;
    impl PeerVisitor for Twice {
        type Output = ();
        fn visit<P: Peer>(self, peer: &P) {
            let params = FillParams::at(Scale::Tiny);
            let first = fill::run(peer, &params);
            let second = fill::run(peer, &params);
            assert_eq!(first.phases, second.phases);
        }
    }
    let capacity = FillParams::at(Scale::Tiny).capacity_bytes;
    with_peer(PeerKind::Pow2, PeerConfig { capacity_bytes: Some(capacity), ..PeerConfig::default() }, Twice).unwrap();
}

/// Every workload frees everything it allocates: NTA's own accounting
/// returns to zero and its invariant walk passes afterwards.
#[test]
fn every_workload_leaves_an_nta_pool_empty() {
    use nta_bench::peers::NtaPeer;

    fn check(peer: &NtaPeer, what: &str) {
        peer.settle();
        peer.pool().validate().unwrap_or_else(|error| panic!("{what}: {error}"));
        let stats = peer.pool().stats();
        assert_eq!(stats.in_use_bytes, 0, "{what}: {stats:?}");
    }

    let peer = NtaPeer::new(PeerConfig::default()).unwrap();
    packet_mix::run(&peer, &PacketMixParams::at(Scale::Tiny));
    check(&peer, "P1");
    footprint::run(&peer, &FootprintParams::at(Scale::Tiny));
    check(&peer, "P2");
    free_order::run(&peer, &FreeOrderParams::at(Scale::Tiny));
    check(&peer, "P4");
    cross_thread::run(&peer, &CrossThreadParams::at(Scale::Tiny));
    check(&peer, "P5");
    churn::run(&peer, &ChurnParams::at(Scale::Tiny));
    check(&peer, "P6");
    let params = FillParams::at(Scale::Tiny);
    let capped = NtaPeer::new(PeerConfig {
        capacity_bytes: Some(params.capacity_bytes),
        nta_shards: Some(1),
        ..PeerConfig::default()
    })
    .unwrap();
    fill::run(&capped, &params);
    check(&capped, "P3");
}
