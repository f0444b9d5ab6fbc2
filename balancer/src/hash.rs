//! A fixed 64-bit hash for consistent hashing: ketama ring points, Maglev permutations and
//! request keys (client IP, path, header or cookie value).
//!
//! The function is part of the balancer's contract, not an implementation detail: a key must land
//! on the same backend in every process, on every core and after every restart or upgrade, so it
//! is spelled out here (xxHash64-style word rounds, a length-seeded start, MurmurHash3's `fmix64`
//! finalizer) rather than borrowed from `std`, whose hashers are seeded per process and may change
//! between releases. Bytes are read little-endian on every platform. It is not a defence against
//! hash flooding; a client choosing keys can at worst aim all its own requests at one backend.

const PRIME_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME_4: u64 = 0x85EB_CA77_C2B2_AE63;

/// Hashes `bytes` to 64 bits. Equal to [`hash64_seeded`] with seed 0.
///
/// # Examples
///
/// ```
/// use ringway_balancer::hash::hash64;
/// assert_eq!(hash64(b"10.0.0.1"), hash64(b"10.0.0.1"));
/// assert_ne!(hash64(b"10.0.0.1"), hash64(b"10.0.0.2"));
/// ```
#[inline]
pub fn hash64(bytes: &[u8]) -> u64 {
    hash64_seeded(bytes, 0)
}

/// Hashes `bytes` to 64 bits under `seed`; different seeds give independent-looking hashes of
/// the same bytes (ketama uses the point number as the seed, Maglev two fixed seeds).
#[inline]
pub fn hash64_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed
        .wrapping_add(PRIME_3)
        .wrapping_add((bytes.len() as u64).wrapping_mul(PRIME_1));
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        h = merge(h, u64::from_le_bytes(buf));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut buf = [0u8; 8];
        buf[..tail.len()].copy_from_slice(tail);
        h = merge(h, u64::from_le_bytes(buf));
    }
    fmix64(h)
}

/// One xxHash64 round folded into the running state.
#[inline(always)]
fn merge(h: u64, word: u64) -> u64 {
    let k = word
        .wrapping_mul(PRIME_2)
        .rotate_left(31)
        .wrapping_mul(PRIME_1);
    (h ^ k)
        .rotate_left(27)
        .wrapping_mul(PRIME_1)
        .wrapping_add(PRIME_4)
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned outputs: changing them remaps every hashed key in every deployment.
    #[test]
    fn outputs_are_pinned() {
        let pinned = [
            (hash64(b""), PINNED[0]),
            (hash64(b"a"), PINNED[1]),
            (hash64(b"127.0.0.1:9001"), PINNED[2]),
            (hash64_seeded(b"127.0.0.1:9001", 7), PINNED[3]),
        ];
        let got: Vec<String> = pinned.iter().map(|(g, _)| format!("{g:#018x}")).collect();
        assert!(pinned.iter().all(|(g, w)| g == w), "got {got:?}");
    }

    const PINNED: [u64; 4] = [
        0xf490_368a_ba8b_feac,
        0x3b99_5329_182e_fafe,
        0xcbf5_f0bb_cf77_05c0,
        0xb45b_57b2_8e68_de0d,
    ];

    #[test]
    fn length_and_tail_bytes_matter() {
        assert_ne!(hash64(b"ab"), hash64(b"ab\0"));
        assert_ne!(hash64(b"12345678"), hash64(b"12345678\0"));
        assert_ne!(hash64(b"123456789"), hash64(b"123456780"));
        assert_ne!(hash64_seeded(b"x", 1), hash64_seeded(b"x", 2));
    }

    /// Flipping any one input bit flips about half the output bits.
    #[test]
    fn avalanche() {
        let base = *b"GET /index.html HTTP";
        let h0 = hash64(&base);
        let mut total = 0u32;
        let mut cases = 0u32;
        for byte in 0..base.len() {
            for bit in 0..8 {
                let mut flipped = base;
                flipped[byte] ^= 1 << bit;
                let d = (hash64(&flipped) ^ h0).count_ones();
                assert!(
                    (12..=52).contains(&d),
                    "byte {byte} bit {bit}: {d} bits changed"
                );
                total += d;
                cases += 1;
            }
        }
        let mean = f64::from(total) / f64::from(cases);
        assert!((30.0..=34.0).contains(&mean), "mean flipped bits {mean}");
    }
}
