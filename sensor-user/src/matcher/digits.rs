//! The digit-run trigger: does a section hold a run of N or more digits, as card
//! numbers travel (one run, or groups with single ` `, `+`, `-` or `%20`
//! separators)? Hyperscan tracks long digit repeats slowly wherever digits are
//! common (ids, lengths, timestamps); this scans 16 bytes per step with SSE2 and
//! looks closer only where 4 digits, an optional separator and 4 more digits meet
//! — which every card form contains.

/// Whether `raw` holds a run of at least `need` digits (see the module doc).
pub fn has_run(raw: &[u8], need: usize) -> bool {
    let mut from = 0;
    while let Some(p) = next_candidate(raw, from) {
        if run_at(raw, p + 4) >= need {
            return true;
        }
        from = p + 1;
    }
    false
}

/// Digits in the longest run of the digit-and-separator stretch around `at`.
pub fn run_at(raw: &[u8], at: usize) -> usize {
    let part = |b: &u8| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'%');
    let at = at.min(raw.len());
    let from = raw[..at]
        .iter()
        .rposition(|b| !part(b))
        .map_or(0, |i| i + 1);
    let to = raw[at..]
        .iter()
        .position(|b| !part(b))
        .map_or(raw.len(), |i| at + i);
    let w = &raw[from..to];
    let (mut best, mut cur, mut k) = (0, 0, 0);
    while k < w.len() {
        if w[k].is_ascii_digit() {
            cur += 1;
            best = best.max(cur);
            k += 1;
            continue;
        }
        let sep = if w[k..].starts_with(b"%20") {
            3
        } else {
            usize::from(matches!(w[k], b' ' | b'+' | b'-'))
        };
        if sep > 0 && cur > 0 && w.get(k + sep).is_some_and(u8::is_ascii_digit) {
            k += sep;
        } else {
            cur = 0;
            k += sep.max(1);
        }
    }
    best
}

/// Bytes past a position the candidate test looks at (`DDDD%20DDDD` is 11):
/// within the next 16-byte chunk.
const LOOKAHEAD: usize = 11;

/// The first position ≥ `from` where `DDDD` is followed by `DDDD`, by one of
/// ` +-` and `DDDD`, or by `%` and two bytes and `DDDD`.
fn next_candidate(raw: &[u8], from: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::walk_avx2(raw, from) };
        }
        x86::walk_sse2(raw, from)
    }
    #[cfg(not(target_arch = "x86_64"))]
    walk::<Portable>(raw, from)
}

/// Byte-class masks of one chunk of `W` bytes (bit i: byte i).
trait Lanes {
    const W: usize;
    /// `'0'..='9'`.
    fn digits(c: &[u8]) -> u64;
    /// ` `, `+` or `-`; and `%`.
    fn seps(c: &[u8]) -> (u64, u64);
}

/// Walks `W`-byte chunks, testing a chunk's positions once the next chunk's
/// digits are known (the test looks `LOOKAHEAD` bytes ahead); separator masks
/// are computed only where four digits in a row occur.
#[inline(always)]
fn walk<L: Lanes>(raw: &[u8], from: usize) -> Option<usize> {
    let w = L::W;
    let low = (1u64 << w) - 1;
    let mut pad = [0u8; 32];
    let mut k = from;
    let mut prev = chunk::<L>(raw, k, &mut pad);
    while k < raw.len() {
        let next = chunk::<L>(raw, k + w, &mut pad);
        if prev.0 != 0 {
            let d = prev.0 | next.0 << w;
            let d4 = d & (d >> 1) & (d >> 2) & (d >> 3);
            if d4 & low != 0 {
                let s = prev.1 | next.1 << w;
                let p = prev.2 | next.2 << w;
                let cand =
                    (d4 & (d4 >> 4)) | (d4 & (s >> 4) & (d4 >> 5)) | (d4 & (p >> 4) & (d4 >> 7));
                let cand = cand & low;
                if cand != 0 {
                    return Some(k + cand.trailing_zeros() as usize);
                }
            }
        }
        prev = next;
        k += w;
    }
    None
}

/// Masks of the chunk at `k` (zero past the end of `raw`); separators only
/// when the chunk has digits. Inlined, like everything `walk` calls, so the
/// AVX2 instantiation compiles with AVX2.
#[inline(always)]
fn chunk<L: Lanes>(raw: &[u8], k: usize, pad: &mut [u8; 32]) -> (u64, u64, u64) {
    let c = if let Some(c) = raw.get(k..k + L::W) {
        c
    } else {
        *pad = [0; 32];
        if let Some(tail) = raw.get(k..) {
            pad[..tail.len()].copy_from_slice(tail);
        }
        &pad[..L::W]
    };
    let d = L::digits(c);
    let (s, p) = if d == 0 { (0, 0) } else { L::seps(c) };
    (d, s, p)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm256_and_si256, _mm256_cmpeq_epi8,
        _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    use super::{Lanes, walk};

    pub struct Sse2;
    pub struct Avx2;

    impl Lanes for Sse2 {
        const W: usize = 16;
        #[inline(always)]
        fn digits(c: &[u8]) -> u64 {
            debug_assert_eq!(c.len(), 16);
            // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned load
            // reads the 16 bytes of `c` (walk passes exactly W bytes).
            unsafe {
                let v = _mm_loadu_si128(c.as_ptr().cast());
                // '0'..='9' as signed bytes (bytes ≥ 0x80 are negative: never digits).
                let ge0 = _mm_cmpgt_epi8(v, _mm_set1_epi8(b'0' as i8 - 1));
                let le9 = _mm_cmplt_epi8(v, _mm_set1_epi8(b'9' as i8 + 1));
                u64::from(_mm_movemask_epi8(_mm_and_si128(ge0, le9)) as u16)
            }
        }
        #[inline(always)]
        fn seps(c: &[u8]) -> (u64, u64) {
            // SAFETY: as in `digits`.
            unsafe {
                let v = _mm_loadu_si128(c.as_ptr().cast());
                let s = _mm_or_si128(
                    _mm_or_si128(
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)),
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'+' as i8)),
                    ),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8)),
                );
                let p = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'%' as i8));
                (
                    u64::from(_mm_movemask_epi8(s) as u16),
                    u64::from(_mm_movemask_epi8(p) as u16),
                )
            }
        }
    }

    impl Lanes for Avx2 {
        const W: usize = 32;
        #[inline(always)]
        fn digits(c: &[u8]) -> u64 {
            debug_assert_eq!(c.len(), 32);
            // SAFETY: only reached through `walk_avx2` (AVX2 present); the
            // unaligned load reads the 32 bytes of `c`.
            unsafe {
                let v = _mm256_loadu_si256(c.as_ptr().cast());
                let ge0 = _mm256_cmpgt_epi8(v, _mm256_set1_epi8(b'0' as i8 - 1));
                let le9 = _mm256_cmpgt_epi8(_mm256_set1_epi8(b'9' as i8 + 1), v);
                u64::from(_mm256_movemask_epi8(_mm256_and_si256(ge0, le9)) as u32)
            }
        }
        #[inline(always)]
        fn seps(c: &[u8]) -> (u64, u64) {
            // SAFETY: as in `digits`.
            unsafe {
                let v = _mm256_loadu_si256(c.as_ptr().cast());
                let s = _mm256_or_si256(
                    _mm256_or_si256(
                        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b' ' as i8)),
                        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'+' as i8)),
                    ),
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'-' as i8)),
                );
                let p = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'%' as i8));
                (
                    u64::from(_mm256_movemask_epi8(s) as u32),
                    u64::from(_mm256_movemask_epi8(p) as u32),
                )
            }
        }
    }

    pub fn walk_sse2(raw: &[u8], from: usize) -> Option<usize> {
        walk::<Sse2>(raw, from)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn walk_avx2(raw: &[u8], from: usize) -> Option<usize> {
        walk::<Avx2>(raw, from)
    }
}

#[cfg(not(target_arch = "x86_64"))]
struct Portable;

#[cfg(not(target_arch = "x86_64"))]
impl Lanes for Portable {
    const W: usize = 16;
    fn digits(c: &[u8]) -> u64 {
        c.iter()
            .enumerate()
            .fold(0, |m, (i, b)| m | u64::from(b.is_ascii_digit()) << i)
    }
    fn seps(c: &[u8]) -> (u64, u64) {
        c.iter().enumerate().fold((0, 0), |(s, p), (i, b)| {
            (
                s | u64::from(matches!(b, b' ' | b'+' | b'-')) << i,
                p | u64::from(*b == b'%') << i,
            )
        })
    }
}

const _: () = assert!(LOOKAHEAD < 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_separators() {
        // `|` marks the position asked about.
        let run = |s: &str| run_at(s.replace('|', "").as_bytes(), s.find('|').unwrap());
        assert_eq!(run("x=41111111|11111111&"), 16);
        assert_eq!(run("n=4111 1111|-1111+1111 x"), 16);
        assert_eq!(run("n=4111%201111|%201111%201111"), 16);
        // A double separator ends the run; dots are not separators.
        assert_eq!(run("GA1.2.1234|56789.987654321"), 9);
        assert_eq!(run("1234  5678|"), 4);
    }

    #[test]
    fn card_forms_are_found_anywhere_in_a_section() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111+1111+1111+1111",
            "4111%201111%201111%201111",
            "3782 822463 10005",
            "3782%20822463%2010005",
        ] {
            for pad in 0..80 {
                let s = format!("{}card={card}&x=1", "a".repeat(pad));
                assert!(has_run(s.as_bytes(), 13), "{card} after {pad}");
                let s = format!("{}{card}", "b".repeat(pad));
                assert!(has_run(s.as_bytes(), 13), "{card} ending at {pad}");
            }
        }
    }

    #[test]
    fn shorter_runs_and_lookalikes_are_not() {
        for s in [
            "",
            "_ga=GA1.2.123456789.987654321",
            r#"{"id":12345,"duration":213,"ts":"2026-11-23"}"#,
            "4111 1111 1111",
            "1234.5678.9012.3456",
            "4111  1111  1111  1111",
        ] {
            assert!(!has_run(s.as_bytes(), 13), "{s}");
        }
    }

    /// The SIMD candidate search agrees with a byte-by-byte reading.
    #[test]
    fn agrees_with_a_plain_scan() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"0123456789 +-%2a.";
        for len in [1usize, 15, 16, 17, 63, 64, 65, 79, 80, 81, 200] {
            for _ in 0..300 {
                let raw: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let digits = |i: usize| {
                    raw.get(i..i + 4)
                        .is_some_and(|w| w.iter().all(u8::is_ascii_digit))
                };
                let candidate = |i: usize| {
                    digits(i)
                        && (digits(i + 4)
                            || (raw.get(i + 4).is_some_and(|b| b" +-".contains(b))
                                && digits(i + 5))
                            || (raw.get(i + 4) == Some(&b'%') && digits(i + 7)))
                };
                let plain = (0..raw.len()).any(|i| candidate(i) && run_at(&raw, i + 4) >= 13);
                assert_eq!(
                    has_run(&raw, 13),
                    plain,
                    "{}",
                    String::from_utf8_lossy(&raw)
                );
            }
        }
    }
}
