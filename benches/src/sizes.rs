//! Request-size distributions shared by the workloads.
//!
//! - **IMIX**: the "simple IMIX" of network testing, 64, 594 and 1518 bytes in
//!   the ratio 7:4:1 (mean 361.8 bytes).
//! - **Long tail**: a Pareto distribution (shape [`PARETO_SHAPE`], minimum
//!   [`PARETO_MIN_BYTES`]) capped at [`LONG_TAIL_MAX_BYTES`], for the churn
//!   workload's mix of small headers and rare large reassembly buffers.

use crate::rng::SplitMix64;

/// The IMIX packet sizes in bytes.
pub const IMIX_SIZES: [usize; 3] = [64, 594, 1518];
/// The IMIX weights, in the order of [`IMIX_SIZES`].
pub const IMIX_WEIGHTS: [u64; 3] = [7, 4, 1];
/// Mean IMIX size in bytes: (7·64 + 4·594 + 1518) / 12.
pub const IMIX_MEAN_BYTES: f64 = (7.0 * 64.0 + 4.0 * 594.0 + 1518.0) / 12.0;

/// Pareto shape of the long-tailed distribution.
pub const PARETO_SHAPE: f64 = 1.2;
/// Smallest long-tailed size in bytes.
pub const PARETO_MIN_BYTES: f64 = 64.0;
/// Largest long-tailed size in bytes (well under NTA's 2 MiB maximum).
pub const LONG_TAIL_MAX_BYTES: usize = 256 << 10;

/// One IMIX packet size.
#[inline]
pub fn imix(rng: &mut SplitMix64) -> usize {
    match rng.below(12) {
        0..=6 => IMIX_SIZES[0],
        7..=10 => IMIX_SIZES[1],
        _ => IMIX_SIZES[2],
    }
}

/// One long-tailed size (Pareto by inverse transform, capped).
#[inline]
pub fn long_tail(rng: &mut SplitMix64) -> usize {
    // 1 - u lies in (0, 1], so the power is finite.
    let u = 1.0 - rng.unit_f64();
    let bytes = PARETO_MIN_BYTES / u.powf(1.0 / PARETO_SHAPE);
    (bytes as usize).min(LONG_TAIL_MAX_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imix_ratio_is_7_4_1() {
        let mut rng = SplitMix64::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..120_000 {
            let size = imix(&mut rng);
            let index = IMIX_SIZES.iter().position(|&s| s == size).unwrap();
            counts[index] += 1;
        }
        for (count, weight) in counts.iter().zip(IMIX_WEIGHTS) {
            let expected = 10_000.0 * weight as f64;
            assert!((f64::from(*count) - expected).abs() < expected * 0.05);
        }
    }

    #[test]
    fn long_tail_is_bounded() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..10_000 {
            let size = long_tail(&mut rng);
            assert!((64..=LONG_TAIL_MAX_BYTES).contains(&size));
        }
    }
}
