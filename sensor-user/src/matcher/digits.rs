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
/// ` +-` and `DDDD`, or by `%` and two bytes and `DDDD`. Walks 16-byte chunks,
/// testing a chunk's positions once the next chunk's masks are known.
fn next_candidate(raw: &[u8], from: usize) -> Option<usize> {
    let chunk = |k: usize| -> (u16, u16, u16) {
        match raw.get(k..k + 16) {
            Some(c) => chunk_masks(c.try_into().expect("16 bytes")),
            None => {
                let mut pad = [0u8; 16];
                if let Some(tail) = raw.get(k..) {
                    pad[..tail.len()].copy_from_slice(tail);
                }
                chunk_masks(&pad)
            }
        }
    };
    let mut k = from;
    let mut prev = chunk(k);
    while k < raw.len() {
        let next = chunk(k + 16);
        if prev.0 != 0 {
            let d = u32::from(prev.0) | u32::from(next.0) << 16;
            let s = u32::from(prev.1) | u32::from(next.1) << 16;
            let p = u32::from(prev.2) | u32::from(next.2) << 16;
            let d4 = d & (d >> 1) & (d >> 2) & (d >> 3);
            let cand = (d4 & (d4 >> 4)) | (d4 & (s >> 4) & (d4 >> 5)) | (d4 & (p >> 4) & (d4 >> 7));
            let cand = cand & 0xffff;
            if cand != 0 {
                return Some(k + cand.trailing_zeros() as usize);
            }
        }
        prev = next;
        k += 16;
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn chunk_masks(c: &[u8; 16]) -> (u16, u16, u16) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; the load is unaligned-safe
    // and reads exactly the 16 bytes of `c`.
    unsafe {
        let v = _mm_loadu_si128(c.as_ptr().cast());
        // Digits: '0'..='9' as signed bytes, via two comparisons.
        let ge0 = _mm_cmpgt_epi8(v, _mm_set1_epi8(b'0' as i8 - 1));
        let le9 = _mm_cmplt_epi8(v, _mm_set1_epi8(b'9' as i8 + 1));
        let d = _mm_and_si128(ge0, le9);
        let s = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'+' as i8)),
            ),
            _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8)),
        );
        let p = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'%' as i8));
        (
            _mm_movemask_epi8(d) as u16,
            _mm_movemask_epi8(s) as u16,
            _mm_movemask_epi8(p) as u16,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn chunk_masks(c: &[u8; 16]) -> (u16, u16, u16) {
    let mut m = (0u16, 0u16, 0u16);
    for (i, b) in c.iter().enumerate() {
        m.0 |= u16::from(b.is_ascii_digit()) << i;
        m.1 |= u16::from(matches!(b, b' ' | b'+' | b'-')) << i;
        m.2 |= u16::from(*b == b'%') << i;
    }
    m
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
