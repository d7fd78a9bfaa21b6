//! The Internet checksum (RFC 1071), fast.
//!
//! # Design notes
//!
//! The ones'-complement sum of 16-bit big-endian words equals the folded
//! sum of 32-bit big-endian words (end-around carry is associative), so
//! [`add`] reads 8 bytes at a time, adds both 32-bit halves into a 64-bit
//! accumulator (no carry is lost before 2^32 additions, far beyond any
//! packet), and [`finish`] folds to 16 bits and complements. An odd tail
//! byte counts as the high byte of a word padded with zero. Sums of pieces
//! of even length can be chained by passing the accumulator along.

/// Adds `bytes` (big-endian 16-bit words) to the running sum `acc`.
#[inline]
pub fn add(mut acc: u64, bytes: &[u8]) -> u64 {
    // Four independent sums over 32-byte blocks, so the additions overlap.
    let mut blocks = bytes.chunks_exact(32);
    let mut lanes = [0u64; 4];
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let v = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            *lane += (v >> 32) + (v & 0xffff_ffff);
        }
    }
    acc += lanes.iter().sum::<u64>();
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        let v = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (ones' complement, end-around carry).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds a running sum to 16 bits and complements it: the checksum field.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The running sum of `bytes` (as [`add`] from 0) when the caller summed
/// its middle, `bytes[head..tail]`, itself as native-endian 64-bit words
/// (each added as two 32-bit halves into `words`), as a copy loop that
/// reads 8 bytes at a time can: the ones'-complement sum is byte-order
/// independent (RFC 1071), so the words' sum is folded, put in network
/// order, and byte-swapped once more if it starts at an odd offset.
/// `tail - head` must be a multiple of 8.
#[inline]
pub fn with_words(bytes: &[u8], head: usize, tail: usize, words: u64) -> u64 {
    debug_assert!(head <= tail && tail <= bytes.len() && (tail - head) % 8 == 0);
    with_edges(&bytes[..head], &bytes[tail..], words)
}

/// [`with_words`] given the head and tail bytes themselves (the middle,
/// summed as `words`, is a multiple of 8 bytes long).
#[inline]
pub fn with_edges(head: &[u8], tail: &[u8], words: u64) -> u64 {
    let mid = if cfg!(target_endian = "little") { fold(words).swap_bytes() } else { fold(words) };
    // The middle and the tail start at offsets of the same parity.
    let from_head = fold(u64::from(mid) + add(0, tail));
    let from_head = if head.len() % 2 == 1 { from_head.swap_bytes() } else { from_head };
    add(0, head) + u64::from(from_head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook 16-bit-at-a-time sum.
    fn reference(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in bytes.chunks(2) {
            acc += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn equals_the_reference_on_every_length_and_chains() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in (0..70).chain([1499, 1500, 2999]) {
            assert_eq!(finish(add(0, &data[..len])), reference(&data[..len]), "length {len}");
        }
        assert_eq!(finish(add(add(0, &data[..40]), &data[40..1001])), reference(&data[..1001]));
        assert_eq!(finish(add(0, &[0xff; 4096])), reference(&[0xff; 4096]));
    }

    /// [`with_words`] equals [`add`] for every head offset and length.
    #[test]
    fn word_sums_of_a_copy_equal_the_byte_sum() {
        let data: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for head in 0..8 {
            for len in head..200 {
                let bytes = &data[..len];
                let n = (len - head) / 8;
                let tail = head + 8 * n;
                let words = bytes[head..tail]
                    .chunks_exact(8)
                    .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                    .fold(0u64, |a, v| a + (v >> 32) + (v & 0xffff_ffff));
                assert_eq!(
                    finish(with_words(bytes, head, tail, words)),
                    finish(add(0, bytes)),
                    "head {head} len {len}"
                );
            }
        }
    }
}
