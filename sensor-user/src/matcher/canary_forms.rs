//! The forms a canary value travels in: the literals derived from it (raw,
//! base64 at three alignments, hex, digests), the escapes tolerated around
//! each byte that is not a letter or digit, and undoing them to confirm a
//! base64 match.

use base64::Engine as _;
use md5::Digest as _;

/// Every literal of `value`: (bytes, form, is a digest).
pub(super) fn derive(value: &str) -> Vec<(Vec<u8>, &'static str, Option<String>)> {
    let v = value.as_bytes();
    let mut out: Vec<(Vec<u8>, &'static str, Option<String>)> = vec![(v.to_vec(), "raw", None)];
    let hex = |b: &[u8], upper: bool| -> Vec<u8> {
        b.iter()
            .flat_map(|x| {
                let s = if upper {
                    format!("{x:02X}")
                } else {
                    format!("{x:02x}")
                };
                s.into_bytes()
            })
            .collect()
    };
    // The standard alphabet; the pattern takes base64url's `-` and `_` too.
    let b64 = |b: &[u8]| -> Vec<u8> {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(b)
            .into_bytes()
    };
    // Alignment k: k bytes of its 3-byte group come before the value, so
    // its whole groups start `(3 - k) % 3` bytes in.
    for k in 0..3usize {
        let s = (3 - k) % 3;
        if v.len() < s {
            continue;
        }
        let whole = (v.len() - s) / 3 * 3;
        out.push((b64(&v[s..s + whole]), "base64", None));
    }
    out.push((hex(v, false), "hex", None));
    let digests: [(&'static str, Vec<u8>); 3] = [
        ("md5", md5::Md5::digest(v).to_vec()),
        ("sha1", sha1::Sha1::digest(v).to_vec()),
        ("sha256", sha2::Sha256::digest(v).to_vec()),
    ];
    for (name, d) in digests {
        let lower = String::from_utf8_lossy(&hex(&d, false)).into_owned();
        let forms: [(&'static str, Vec<u8>); 2] = match name {
            "md5" => [("md5-hex", hex(&d, false)), ("md5-base64", b64(&d))],
            "sha1" => [("sha1-hex", hex(&d, false)), ("sha1-base64", b64(&d))],
            _ => [("sha256-hex", hex(&d, false)), ("sha256-base64", b64(&d))],
        };
        for (form, bytes) in forms {
            out.push((bytes, form, Some(lower.clone())));
        }
    }
    out
}

/// `bytes` with URL escapes undone (twice: `%252B`) and JSON's `\/`, a space
/// taken back to the `+` a form decoder made of it, and base64url's `-` and
/// `_` as the standard alphabet's `+` and `/`.
pub(super) fn unescape(bytes: &[u8]) -> Vec<u8> {
    let once = |b: &[u8]| -> Vec<u8> {
        let hex = |c: u8| (c as char).to_digit(16);
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let escape = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            );
            match (b[i], escape) {
                (b'%', (Some(h), Some(l))) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                    i += 3;
                }
                (b'\\', _) if b.get(i + 1) == Some(&b'/') => {
                    out.push(b'/');
                    i += 2;
                }
                (b' ' | b'-', _) => {
                    out.push(b'+');
                    i += 1;
                }
                (b'_', _) => {
                    out.push(b'/');
                    i += 1;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    };
    once(&once(bytes))
}

/// A base64 decoder that takes a run as found: no padding, loose trailing bits.
pub(super) fn lenient() -> base64::engine::GeneralPurpose {
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true);
    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config)
}

/// The value as it travels in text: each byte that is not a letter or digit
/// may come as itself or escaped — URL (`%2f`, `%2F`, `+` for a space, `%252f`
/// escaped twice), JSON (`\u002f`, `\/`) or HTML/XML (`&amp;`, `&#47;`, `&#x2f;`) — in any mix, as
/// encoders differ in what they escape.
/// In base64 (`b64`), `+` and `/` may also be base64url's `-` and `_`.
pub(super) fn tolerant(v: &[u8], b64: bool) -> String {
    use std::fmt::Write as _;
    let caseless = |s: String| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let mut out = String::new();
    for &b in v {
        if b.is_ascii_alphanumeric() {
            let _ = write!(out, "\\x{b:02x}");
            continue;
        }
        // `%2526`: escaped twice, as a value that was already escaped is.
        let esc = caseless(format!("{b:02x}"));
        let mut alts = vec![
            format!("\\x{b:02x}"),
            format!("%{esc}"),
            format!("%25{esc}"),
        ];
        match b {
            b' ' => alts.push("\\+".into()),
            // A `+` of base64 that a form decoder took for a space.
            b'+' => {
                alts.push(" ".into());
                if b64 {
                    alts.push("-".into());
                }
            }
            b'/' if b64 => alts.push("_".into()),
            _ => {}
        }
        if b.is_ascii() {
            alts.push(format!("\\\\u00{}", caseless(format!("{b:02x}"))));
            alts.push(format!("\\\\\\x{b:02x}"));
            alts.push(format!("&#0*{b};"));
            alts.push(format!("&#[xX]0*{};", caseless(format!("{b:x}"))));
            let named = match b {
                b'&' => "amp",
                b'<' => "lt",
                b'>' => "gt",
                b'"' => "quot",
                b'\'' => "apos",
                _ => "",
            };
            if !named.is_empty() {
                alts.push(format!("&{named};"));
            }
        }
        let _ = write!(out, "(?:{})", alts.join("|"));
    }
    out
}
