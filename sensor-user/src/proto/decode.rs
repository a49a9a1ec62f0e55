//! Content decoding that dissectors share: what a body's bytes are once its
//! transfer and content codings are undone, and the fields they hold.
//!
//! - Content codings: in [`super::coding`] (gzip, deflate, br; bounded).
//! - Bodies: form, JSON (strict, else lenient for cut or sloppy JSON),
//!   `multipart/form-data`, XML/SOAP or text lines, by the declared type or,
//!   when none is usable, by what they look like.
//! - Values that are documents themselves — JSON in a form value, a form or
//!   JSON in a JSON string, base64/base64url-encoded JSON or forms (decoded only
//!   when the result parses) — are opened too, to [`MAX_NESTING`] levels.
//! - A date split into fields (`birth_day`, `birth_month`, `birth_year`) is
//!   offered as one `birthdate`.
//! - Text: non-empty lines as nameless fields, `Name: value` lines as headers.

use base64::Engine as _;

use super::{
    fields::{Ctx, FieldSink, form_pairs, json_pairs, json_pairs_lenient},
    multipart, xml,
};

/// Levels of documents inside values opened.
pub const MAX_NESTING: usize = 3;

pub use super::fields::contains_ci;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyType {
    Form,
    Json,
    /// `multipart/form-data` with its boundary.
    Multipart(String),
    Xml,
    Other,
}

impl BodyType {
    /// What a Content-Type header says a body is.
    pub fn declared(content_type: &[u8]) -> Self {
        if contains_ci(content_type, b"x-www-form-urlencoded") {
            Self::Form
        } else if contains_ci(content_type, b"json") {
            Self::Json
        } else if let Some(b) = multipart::boundary(content_type) {
            Self::Multipart(b)
        } else if contains_ci(content_type, b"xml") || contains_ci(content_type, b"soap") {
            Self::Xml
        } else {
            Self::Other
        }
    }
}

/// Emits the fields of a (decoded) body of declared type `declared`, message
/// `msg`, if the sink wants its bytes.
pub fn body_fields<S: FieldSink + ?Sized>(body: &[u8], declared: &BodyType, msg: u64, out: &mut S) {
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
        t => t.clone(),
    };
    let pairs: Vec<(String, String, bool)> = match kind {
        BodyType::Form => form_pairs(text.trim())
            .map(|(k, v)| (k, v, false))
            .collect(),
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
            pairs
        }
        BodyType::Multipart(b) => multipart::parts(body, &b)
            .into_iter()
            .map(|(k, v)| (k, v, false))
            .collect(),
        BodyType::Xml => xml::pairs(&text)
            .into_iter()
            .map(|(k, v)| (k, v, false))
            .collect(),
        BodyType::Other => {
            lines_of(&text, Ctx::Body, msg, out);
            super::html::records(&text, msg, out);
            return;
        }
    };
    if let Some(date) = split_date(&pairs) {
        out.push(Ctx::Body, "birthdate", &date, msg);
    }
    for (k, v, number) in pairs {
        emit(&k, &v, number, msg, 0, out);
    }
}

/// Pushes one body field, then opens its value if it is a document itself.
fn emit<S: FieldSink + ?Sized>(
    k: &str,
    v: &str,
    number: bool,
    msg: u64,
    depth: usize,
    out: &mut S,
) {
    if number {
        out.push_number(Ctx::Body, k, v, msg);
        return;
    }
    out.push(Ctx::Body, k, v, msg);
    if depth < MAX_NESTING {
        nested(v, msg, depth + 1, out);
    }
}

/// The fields of a value that is JSON, a form, or either in base64.
fn nested<S: FieldSink + ?Sized>(v: &str, msg: u64, depth: usize, out: &mut S) {
    let t = v.trim();
    if t.len() < 3 {
        return;
    }
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(t)
    {
        let mut pairs = Vec::new();
        json_pairs(&j, "", &mut pairs);
        for (k, v, n) in pairs {
            emit(&k, &v, n, msg, depth, out);
        }
        return;
    }
    if looks_like_form(t) {
        for (k, v) in form_pairs(t) {
            emit(&k, &v, false, msg, depth, out);
        }
        return;
    }
    if t.len() >= 16
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/-_=".contains(&b))
        && let Some(d) = unbase64(t)
        && let Ok(s) = std::str::from_utf8(&d)
    {
        let s = s.trim();
        // Decoded only when the result parses as a document.
        let json = (s.starts_with('{') || s.starts_with('['))
            && serde_json::from_str::<serde_json::Value>(s).is_ok();
        if json || looks_like_form(s) {
            nested(s, msg, depth, out);
        }
    }
}

/// Base64 or base64url, padded or not.
fn unbase64(t: &str) -> Option<Vec<u8>> {
    let t = t.trim_end_matches('=');
    let url = t.contains(['-', '_']);
    let engine = if url {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    engine.decode(t).ok()
}

/// `name=value&…` with a field-name first key and no spaces.
fn looks_like_form(t: &str) -> bool {
    let Some((k, v)) = t.split_once('=') else {
        return false;
    };
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-[]".contains(&b))
        && k.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && !v.starts_with('=')
        && !t.contains(char::is_whitespace)
}

/// A date split over day, month and year fields (`birth_day`, `dob_month`,
/// `birthYear`, …), as `YYYY-MM-DD`.
fn split_date(pairs: &[(String, String, bool)]) -> Option<String> {
    let (mut d, mut m, mut y) = (None, None, None);
    for (k, v, _) in pairs {
        let k = k.to_ascii_lowercase();
        let part = ["birth", "dob", "bday", "date_of_birth", "dateofbirth"]
            .iter()
            .find_map(|p| k.strip_prefix(p))
            .map(|r| r.trim_start_matches(['_', '-', '.']));
        let Some(part) = part else {
            continue;
        };
        let n: Option<u32> = v.trim().parse().ok();
        match part {
            "day" | "d" => d = n,
            "month" | "m" => m = n,
            "year" | "y" => y = n,
            _ => {}
        }
    }
    let (d, m, y) = (d?, m?, y?);
    ((1..=31).contains(&d) && (1..=12).contains(&m) && (1000..=9999).contains(&y))
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// What an undeclared body is: JSON (an object or array), a form (one line of
/// `k=v` pairs in URL characters), else text.
pub fn sniff(text: &str) -> BodyType {
    let t = text.trim();
    if t.starts_with('{') || t.starts_with('[') {
        BodyType::Json
    } else if t.starts_with("<?xml") || t.starts_with("<soap") || t.starts_with("<SOAP") {
        BodyType::Xml
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::proto::fields::FieldBatch;

    fn fields(body: &str, declared: &BodyType) -> Vec<(String, String)> {
        let mut out = FieldBatch::default();
        body_fields(body.as_bytes(), declared, 0, &mut out);
        out.fields.into_iter().map(|f| (f.name, f.value)).collect()
    }

    fn has(f: &[(String, String)], k: &str, v: &str) -> bool {
        f.iter().any(|(a, b)| a == k && b == v)
    }

    #[test]
    fn documents_inside_values_to_the_depth_bound() {
        let inner = r#"{"password":"hunter2x","user":"jane"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("email=jane%40example.com&pin=1");
        let form = format!(
            "data={}&blob={b64}&f={b64url}",
            crate::proto::fields::percent_decode(inner).replace('"', "%22")
        );
        let f = fields(&form, &BodyType::Form);
        assert!(has(&f, "password", "hunter2x"), "{f:?}");
        assert!(has(&f, "email", "jane@example.com"), "{f:?}");
        let json = r#"{"payload":"token=QkX3u9rVb0dY7nWq2LpZsT5h&x=1","n":"notbase64atall!!"}"#;
        let f = fields(json, &BodyType::Json);
        assert!(has(&f, "token", "QkX3u9rVb0dY7nWq2LpZsT5h"), "{f:?}");
        // Four levels down is past the bound.
        let mut v = r#"{"password":"deepest1"}"#.to_owned();
        for _ in 0..4 {
            v = serde_json::json!({ "d": v }).to_string();
        }
        assert!(!has(&fields(&v, &BodyType::Json), "password", "deepest1"));
        // Base64 that does not decode to a document stays a value.
        let f = fields("sig=c2lnbmF0dXJlIGJ5dGVzIGhlcmU", &BodyType::Form);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_split_birthdate_is_one() {
        let f = fields(
            "birth_day=7&birth_month=3&birth_year=1990&x=1",
            &BodyType::Form,
        );
        assert!(has(&f, "birthdate", "1990-03-07"), "{f:?}");
        let f = fields(
            r#"{"dobDay":"31","dobMonth":"12","dobYear":"1985"}"#,
            &BodyType::Json,
        );
        assert!(has(&f, "birthdate", "1985-12-31"), "{f:?}");
        assert!(
            !fields(
                "birth_day=7&birth_month=13&birth_year=1990",
                &BodyType::Form
            )
            .iter()
            .any(|(k, _)| k == "birthdate")
        );
    }

    #[test]
    fn xml_and_multipart_bodies() {
        let f = fields(
            "<?xml version=\"1.0\"?><login><user>jane</user><password>s&amp;cret</password></login>",
            &BodyType::Other,
        );
        assert!(has(&f, "password", "s&cret"), "{f:?}");
        let ct = BodyType::declared(b"multipart/form-data; boundary=XyZ");
        let f = fields(
            "--XyZ\r\nContent-Disposition: form-data; name=\"pass\"\r\n\r\nhunter2\r\n--XyZ--\r\n",
            &ct,
        );
        assert!(has(&f, "pass", "hunter2"), "{f:?}");
    }
}
