//! The watched-address prefilter: a 65 536-bit bitmap per family, one bit per
//! bucket of addresses, set when any watched prefix overlaps the bucket. The XDP
//! program tests two bits (inlined array-map reads) before it pays for LPM-trie
//! lookups, so unwatched traffic stays nearly free.
//!
//! IPv4 buckets are /16s. IPv6 buckets fold the /32 (the usual allocation size):
//! bits 0–15 XOR bits 16–31. A bit may be set for addresses that are not watched
//! (the tries decide); a watched address never finds its bit clear.

/// u64 words per family bitmap (65 536 bits).
pub const BITMAP_WORDS: u32 = 1024;
pub const BUCKETS: u32 = BITMAP_WORDS * 64;

/// Bucket of an IPv4 address (first 4 bytes of `a`).
#[inline(always)]
pub fn bucket_v4(a: &[u8; 16]) -> u32 {
    bucket_ipv4(&[a[0], a[1], a[2], a[3]])
}

/// Bucket of an IPv4 address held in its own 4 bytes (the fast path's).
#[inline(always)]
pub fn bucket_ipv4(a: &[u8; 4]) -> u32 {
    u16::from_be_bytes([a[0], a[1]]) as u32
}

/// Bucket of an IPv6 address.
#[inline(always)]
pub fn bucket_v6(a: &[u8; 16]) -> u32 {
    bucket_ipv6(&[a[0], a[1], a[2], a[3]])
}

/// Bucket of an IPv6 address from its first 4 bytes (the fast path's).
#[inline(always)]
pub fn bucket_ipv6(a: &[u8; 4]) -> u32 {
    (u16::from_be_bytes([a[0], a[1]]) ^ u16::from_be_bytes([a[2], a[3]])) as u32
}

/// Word index and bit mask of a bucket.
#[inline(always)]
pub const fn bit(bucket: u32) -> (u32, u64) {
    (bucket >> 6, 1u64 << (bucket & 63))
}

/// Buckets covered by an IPv4 prefix (`addr` in network order).
pub fn buckets_v4(addr: [u8; 4], prefix_len: u8) -> impl Iterator<Item = u32> {
    let base = u16::from_be_bytes([addr[0], addr[1]]) as u32;
    let span = if prefix_len >= 16 {
        1
    } else {
        1u32 << (16 - prefix_len)
    };
    let base = base & !(span - 1);
    base..base + span
}

/// Buckets covered by an IPv6 prefix.
pub fn buckets_v6(addr: [u8; 16], prefix_len: u8) -> impl Iterator<Item = u32> {
    let hi = u16::from_be_bytes([addr[0], addr[1]]) as u32;
    let lo = u16::from_be_bytes([addr[2], addr[3]]) as u32;
    // Prefixes of /16 or shorter cover every bucket; otherwise enumerate the
    // /32s inside the prefix (at most 2^16) and fold each.
    let (count, lo_base) = if prefix_len <= 16 {
        (BUCKETS, 0)
    } else if prefix_len >= 32 {
        (1, lo)
    } else {
        let span = 1u32 << (32 - prefix_len);
        (span, lo & !(span - 1))
    };
    (0..count).map(move |i| {
        if prefix_len <= 16 {
            i
        } else {
            hi ^ (lo_base + i)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: [u16; 8]) -> [u8; 16] {
        let mut o = [0; 16];
        for (i, w) in s.iter().enumerate() {
            o[i * 2..i * 2 + 2].copy_from_slice(&w.to_be_bytes());
        }
        o
    }

    #[test]
    fn every_address_of_a_prefix_finds_its_bucket() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 51, 100, 77]);
        assert!(buckets_v4([198, 51, 100, 0], 24).any(|b| b == bucket_v4(&a)));
        assert_eq!(buckets_v4([198, 51, 100, 0], 24).count(), 1);
        a[..4].copy_from_slice(&[10, 200, 1, 1]);
        assert!(buckets_v4([10, 0, 0, 0], 8).any(|b| b == bucket_v4(&a)));
        assert_eq!(buckets_v4([10, 0, 0, 0], 8).count(), 256);
        assert_eq!(buckets_v4([0; 4], 0).count(), BUCKETS as usize);

        let x = v6([0x2001, 0xdb8, 5, 0, 0, 0, 0, 2]);
        assert!(buckets_v6(x, 48).any(|b| b == bucket_v6(&x)));
        let y = v6([0x2001, 0xdb9, 0, 0, 0, 0, 0, 1]);
        assert!(buckets_v6(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 31).any(|b| b == bucket_v6(&y)));
        assert_eq!(buckets_v6(x, 30).count(), 4);
        assert_eq!(buckets_v6(x, 12).count(), BUCKETS as usize);
        assert!(buckets_v6(x, 30).all(|b| b < BUCKETS));
    }

    #[test]
    fn bits() {
        assert_eq!(bit(0), (0, 1));
        assert_eq!(bit(65), (1, 2));
        assert_eq!(bit(BUCKETS - 1), (BITMAP_WORDS - 1, 1 << 63));
    }
}
