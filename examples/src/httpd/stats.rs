//! `GET /stats`: the pool, the drivers and the HTTP layer in Prometheus
//! text format (version 0.0.4). Every name starts with `nta_`.
//!
//! HTTP counters are atomics shared by the workers (`Relaxed`: tallies for
//! reporting, publishing nothing else). Driver counters are each worker's
//! [`nta_net::Counters`], summed. Pool figures are a [`nta_core::Stats`]
//! snapshot (exact at rest); with `--alloc system` there is no pool and the
//! `nta_pool_*` gauges read 0.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nta_core::Stats;
use nta_net::export::Exporter;
use nta_net::Counters;
use parking_lot::RwLock;

use crate::httpd::response::Status;

/// Requests refused or failed, by kind (the `kind` label).
pub const ERROR_KINDS: [(Status, &str); 8] = [
    (Status::BadRequest, "bad_request"),
    (Status::NotFound, "not_found"),
    (Status::MethodNotAllowed, "method_not_allowed"),
    (Status::PayloadTooLarge, "body_too_large"),
    (Status::HeaderFieldsTooLarge, "header_too_large"),
    (Status::InternalServerError, "internal"),
    (Status::NotImplemented, "not_implemented"),
    (Status::ServiceUnavailable, "pool_exhausted"),
];

/// The HTTP layer's tallies, shared by the workers.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Refusals and failures, indexed like [`ERROR_KINDS`].
    pub errors: [AtomicU64; ERROR_KINDS.len()],
    /// The drivers' counters, one per worker (set once they started).
    pub workers: RwLock<Vec<Arc<Counters>>>,
    /// The pool's exporter, when the pool is exported.
    pub export: std::sync::OnceLock<Arc<Exporter>>,
}

impl HttpStats {
    /// Counts a response with `status`.
    #[inline]
    pub fn count(&self, status: Status) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status != Status::Ok {
            self.count_error(status);
        }
    }

    #[cold]
    fn count_error(&self, status: Status) {
        if let Some(index) = ERROR_KINDS.iter().position(|(kind, _)| *kind == status) {
            self.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The whole exposition text.
    pub fn render(&self, pool: Option<&Stats>) -> String {
        let mut out = String::with_capacity(4096);
        let pool = pool.copied().unwrap_or_default();
        let export = self.export.get();
        let held = export.map_or(0, |e| e.held_bytes());
        let readers = export.map_or(0, |e| e.readers() as u64);
        let gauges: [(&str, &str, u64); 9] = [
            ("nta_pool_in_use_bytes", "Bytes of pool chunks in use.", pool.in_use_bytes),
            ("nta_pool_free_bytes", "Bytes of mapped pool memory not in use.", pool.free_bytes),
            ("nta_pool_mapped_bytes", "Bytes of pool segments mapped.", pool.mapped_bytes),
            ("nta_pool_largest_free_bytes", "The largest free extent.", pool.largest_free_bytes),
            ("nta_pool_held_bytes", "Bytes attached sniffers hold (their frees wait).", held),
            ("nta_export_readers", "Sniffers attached to the export socket.", readers),
            ("nta_pool_remote_frees_queued", "Frees queued to another shard, in total.", pool.remote_frees_queued),
            ("nta_pool_failed_allocs", "Allocations the pool refused, in total.", pool.failed_allocs),
            (
                "nta_pool_discarded_bytes",
                "Free pages given back to the OS by decay while their segments stay mapped, in total.",
                pool.discarded_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            metric(&mut out, name, help, "gauge", &[("", value)]);
        }
        metric(
            &mut out,
            "nta_pool_segments",
            "Mapped pool segments by backing.",
            "gauge",
            &[
                ("backing=\"hugetlb\"", pool.segments_hugetlb),
                ("backing=\"thp\"", pool.segments_thp),
                ("backing=\"small\"", pool.segments_small),
            ],
        );
        let workers = self.workers.read();
        let sum = |field: fn(&Counters) -> &AtomicU64| workers.iter().map(|c| Counters::get(field(c))).sum::<u64>();
        let open = workers.iter().map(|c| c.open_connections()).sum::<u64>();
        metric(&mut out, "nta_http_connections_open", "Connections open now.", "gauge", &[("", open)]);
        let totals: [(&str, &str, u64); 9] = [
            ("nta_http_connections_total", "Connections accepted.", sum(|c| &c.accepted)),
            ("nta_http_requests_total", "Requests answered.", self.requests.load(Ordering::Relaxed)),
            ("nta_http_timeouts_total", "Connections closed by a timeout.", sum(|c| &c.timed_out)),
            ("nta_net_rx_bytes_total", "Bytes received.", sum(|c| &c.rx_bytes)),
            ("nta_net_tx_bytes_total", "Bytes sent.", sum(|c| &c.tx_bytes)),
            ("nta_net_alloc_failures_total", "Receive buffers the source refused.", sum(|c| &c.alloc_failures)),
            ("nta_net_accept_backoffs_total", "Accept pauses for want of descriptors.", sum(|c| &c.accept_backoffs)),
            ("nta_net_rx_paused_total", "Reads paused by the per-connection bound.", sum(|c| &c.rx_paused)),
            ("nta_net_ring_empty_total", "io_uring receives that found the ring dry.", sum(|c| &c.ring_empty)),
        ];
        for (name, help, value) in totals {
            metric(&mut out, name, help, "counter", &[("", value)]);
        }
        let errors: Vec<(String, u64)> = ERROR_KINDS
            .iter()
            .zip(&self.errors)
            .map(|((_, kind), count)| (format!("kind=\"{kind}\""), count.load(Ordering::Relaxed)))
            .collect();
        let labelled: Vec<(&str, u64)> = errors.iter().map(|(label, count)| (label.as_str(), *count)).collect();
        metric(&mut out, "nta_http_errors_total", "Requests refused or failed, by kind.", "counter", &labelled);
        out
    }
}

/// One metric family: HELP, TYPE, and a sample per label set.
fn metric(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_text_has_the_required_names() {
        let stats = HttpStats::default();
        stats.count(Status::Ok);
        stats.count(Status::NotFound);
        stats.workers.write().push(Arc::default());
        let pool = Stats { in_use_bytes: 4096, mapped_bytes: 2 << 20, ..Stats::default() };
        let text = stats.render(Some(&pool));
        for line in [
            "nta_pool_in_use_bytes 4096",
            "nta_pool_mapped_bytes 2097152",
            "nta_pool_held_bytes 0",
            "nta_http_requests_total 2",
            "nta_http_connections_open 0",
            "nta_http_errors_total{kind=\"not_found\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("nta_"), "{line}");
        }
    }
}
