//! Content decoding that dissectors share: what a body's bytes are once its
//! transfer and content codings are undone, and the fields they hold.
//!
//! - Content codings: in [`super::coding`] (gzip, deflate, br; bounded).
//! - Bodies: form, JSON (strict, else lenient for cut or sloppy JSON) or text
//!   lines, by the declared type or, when none is usable, by what they look like.
//! - Text: non-empty lines as nameless fields, `Name: value` lines as headers.

use super::fields::{Ctx, FieldSink, form_pairs, json_pairs, json_pairs_lenient};

/// Whether `hay` holds `needle`, ASCII case-insensitively.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A text line longer than this is cut into pieces.
pub const MAX_LINE: usize = 4096;

/// The size on a chunk-size line (hex, extensions after `;` ignored).
pub fn chunk_size_line(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&ch| ch == b';').next().unwrap_or(b"");
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
}

/// What a body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Form,
    Json,
    Other,
}

impl BodyType {
    /// What a Content-Type header says a body is.
    pub fn declared(content_type: &[u8]) -> Self {
        if contains_ci(content_type, b"x-www-form-urlencoded") {
            Self::Form
        } else if contains_ci(content_type, b"json") {
            Self::Json
        } else {
            Self::Other
        }
    }
}

/// Emits the fields of a (decoded) body of declared type `declared`, message
/// `msg`, if the sink wants its bytes.
pub fn body_fields<S: FieldSink + ?Sized>(body: &[u8], declared: BodyType, msg: u64, out: &mut S) {
    if !out.wants(body) {
        return;
    }
    let text = String::from_utf8_lossy(body);
    let kind = match declared {
        // Apps often send JSON or forms without (or with a generic)
        // Content-Type: go by what the body looks like.
        BodyType::Other => sniff(&text),
        // A "form" that is a JSON document (Netflix's appboot) is JSON.
        BodyType::Form if sniff(&text) == BodyType::Json => BodyType::Json,
        t => t,
    };
    match kind {
        BodyType::Form => {
            for (k, v) in form_pairs(text.trim()) {
                out.push(Ctx::Body, &k, &v, msg);
            }
        }
        BodyType::Json => {
            let pairs = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    let mut pairs = Vec::new();
                    json_pairs(&v, "", &mut pairs);
                    pairs
                }
                // Cut short (sampling, a gap) or sloppy: keep its key/value
                // pairs all the same.
                Err(_) => json_pairs_lenient(&text),
            };
            if pairs.is_empty() {
                lines_of(&text, Ctx::Body, msg, out);
            }
            for (k, v, number) in pairs {
                if number {
                    out.push_number(Ctx::Body, &k, &v, msg);
                } else {
                    out.push(Ctx::Body, &k, &v, msg);
                }
            }
        }
        BodyType::Other => {
            lines_of(&text, Ctx::Body, msg, out);
            super::html::records(&text, msg, out);
        }
    }
}

/// What an undeclared body is: JSON (an object or array), a form (one line of
/// `k=v` pairs in URL characters), else text.
pub fn sniff(text: &str) -> BodyType {
    let t = text.trim();
    if t.starts_with('{') || t.starts_with('[') {
        BodyType::Json
    } else if t.contains('=')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=&%+-_.~*!'()[],;:@/".contains(&b))
    {
        BodyType::Form
    } else {
        BodyType::Other
    }
}

/// `Name: value` with a header-token name (letters, digits, `-`, `_`).
pub fn header_shaped(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let value = value.trim();
    let token = (1..=64).contains(&name.len())
        && name.bytes().any(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (token && !value.is_empty() && !value.starts_with("//")).then_some((name, value))
}

/// Non-empty lines of `text` as nameless fields, long lines in pieces (and
/// header-shaped ones as headers as well).
pub fn lines_of<S: FieldSink + ?Sized>(text: &str, ctx: Ctx, msg: u64, out: &mut S) {
    for line in text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
    {
        // `Name: value` lines are headers of whatever protocol this is (mail,
        // a sloppy client putting headers after the blank line): header rules
        // see them too.
        if let Some((name, value)) = header_shaped(line) {
            out.push(Ctx::Header, name, value, msg);
        }
        let mut rest = line;
        while !rest.is_empty() {
            let mut end = rest.len().min(MAX_LINE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            out.push(ctx, "", &rest[..end], msg);
            rest = &rest[end..];
        }
    }
}
