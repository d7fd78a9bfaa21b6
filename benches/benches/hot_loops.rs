//! Criterion benches for the hot loops of P1 (packet mix), P4 (free order)
//! and P5 (cross-thread), on every peer.
//!
//! `cargo bench -p nta-bench` runs them all; `cargo bench -p nta-bench -- p1`
//! only P1. The `nta-bench` binary is the tool for the full tables and the
//! NTA/peer ratios; these benches are for iterating on one hot loop.
//!
//! Every peer is built with `PeerConfig::default()`: NTA's hugepages off,
//! like the tables.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use nta_bench::peers::{with_peer, Peer, PeerConfig, PeerKind, PeerVisitor};
use nta_bench::workloads::cross_thread::{self, CrossThreadParams};
use nta_bench::workloads::free_order::{run_cell, FreeOrder};
use nta_bench::workloads::packet_mix::SlidingWindow;
use nta_bench::workloads::{Scale, DEFAULT_SEED};

/// Objects per P4 batch: one batch is allocated, then freed in order.
const P4_BATCH: usize = 16 * 1024;
/// Object size of the P4 bench (a small packet header).
const P4_OBJECT_BYTES: usize = 64;

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
}

struct PacketMix<'g, 'c>(&'g mut BenchmarkGroup<'c, WallTime>);

impl PeerVisitor for PacketMix<'_, '_> {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let mut window = SlidingWindow::new(1024, DEFAULT_SEED);
        window.fill(peer);
        self.0.bench_function(peer.name(), |b| b.iter(|| window.step(peer)));
        window.drain(peer);
    }
}

struct FreeOrderBench<'g, 'c>(&'g mut BenchmarkGroup<'c, WallTime>, FreeOrder);

impl PeerVisitor for FreeOrderBench<'_, '_> {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        let order = self.1;
        // One iteration is one object allocated and freed, timed in batches.
        self.0.bench_function(format!("{}/{}", order.name(), peer.name()), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let batch = left.min(P4_BATCH);
                    let cell = run_cell(peer, P4_OBJECT_BYTES, order, batch);
                    elapsed += Duration::from_nanos(cell.alloc_ns + cell.free_ns);
                    left -= batch;
                }
                elapsed
            })
        });
    }
}

struct CrossThread<'g, 'c>(&'g mut BenchmarkGroup<'c, WallTime>);

impl PeerVisitor for CrossThread<'_, '_> {
    type Output = ();
    fn visit<P: Peer>(self, peer: &P) {
        // The workload times itself from the start barrier to the consumer's
        // last free; thread spawn and join stay outside the figure.
        self.0.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                let params = CrossThreadParams { pairs: iters.max(1), ..CrossThreadParams::at(Scale::Tiny) };
                Duration::from_nanos(cross_thread::run(peer, &params).elapsed_ns)
            })
        });
    }
}

fn p1_packet_mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("p1_packet_mix");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for kind in PeerKind::ALL {
        if let Err(error) = with_peer(kind, PeerConfig::default(), PacketMix(&mut group)) {
            eprintln!("p1 {}: {error}", kind.name());
        }
    }
    group.finish();
}

fn p4_free_order(c: &mut Criterion) {
    let mut group = c.benchmark_group("p4_free_order_64B");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for order in FreeOrder::ALL {
        for kind in PeerKind::ALL {
            if let Err(error) = with_peer(kind, PeerConfig::default(), FreeOrderBench(&mut group, order)) {
                eprintln!("p4 {}: {error}", kind.name());
            }
        }
    }
    group.finish();
}

fn p5_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("p5_cross_thread");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for kind in PeerKind::ALL {
        if let Err(error) = with_peer(kind, PeerConfig::default(), CrossThread(&mut group)) {
            eprintln!("p5 {}: {error}", kind.name());
        }
    }
    group.finish();
}

criterion_group!(benches, p1_packet_mix, p4_free_order, p5_cross_thread);
criterion_main!(benches);
