//! The body hash the origin reports in `X-Body-Fnv` for `/sink` (64-bit FNV-1a, 16 lowercase
//! hex digits), so a test or the load generator can check a body arrived intact without the
//! origin keeping it.

/// Incremental 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hasher over no bytes yet.
    pub(crate) fn new() -> Fnv1a64 {
        Fnv1a64(Self::OFFSET)
    }

    /// Hashes more bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// The hash of every byte so far.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The 64-bit FNV-1a hash of `bytes`, as the origin reports it in `X-Body-Fnv` (16 hex digits).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    h.finish()
}

/// Appends `n` as exactly 16 lowercase hex digits, the `X-Body-Fnv` form.
pub(crate) fn push_hex16(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut split = Fnv1a64::new();
        split.update(b"foo");
        split.update(b"bar");
        assert_eq!(split.finish(), fnv1a64(b"foobar"));
        let mut v = Vec::new();
        push_hex16(&mut v, 0xab);
        assert_eq!(v, b"00000000000000ab");
    }
}
