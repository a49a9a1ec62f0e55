//! Decoded fields of a flow direction, serialized for the matcher.
//!
//! Every field (a query parameter, a header, a cookie, a form or JSON body value,
//! a raw line) becomes one line of the matcher's input stream:
//!
//! ```text
//! \x1e <context char> \x1f <name> = <value> \n
//! ```
//!
//! Names are lowercased; values are decoded (percent-encoding, JSON escapes) and
//! any control character in them becomes a space, so a line never contains the
//! separators. Rules match within one line; a match is traced back to its field by
//! the stream offset where it ends.

/// Where a field came from (a rule's `context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ctx {
    Query,
    Header,
    Cookie,
    Body,
    /// A line of a non-HTTP payload, or of an HTTP body that is neither form nor JSON.
    Raw,
}

impl Ctx {
    pub const fn code(self) -> u8 {
        match self {
            Self::Query => b'q',
            Self::Header => b'h',
            Self::Cookie => b'c',
            Self::Body => b'b',
            Self::Raw => b'r',
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Header => "header",
            Self::Cookie => "cookie",
            Self::Body => "body",
            Self::Raw => "raw",
        }
    }
}

/// Longest value kept per field: secrets are far shorter; bounds memory.
pub const MAX_VALUE: usize = 8 * 1024;

/// One field as emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub ctx: Ctx,
    pub name: String,
    pub value: String,
    /// Index of the HTTP message (in this direction) the field belongs to.
    pub message: u64,
    /// A JSON number rather than a string.
    pub number: bool,
}

/// Where a parser puts decoded fields. `wants` sees the raw bytes of a section
/// (an HTTP head, a body after de-chunking and inflation, a run of raw lines)
/// before it is decoded: a sink may decline it, and decoding is skipped.
pub trait FieldSink {
    fn wants(&mut self, _raw: &[u8]) -> bool {
        true
    }
    /// One look at the raw bytes of `sections` sections together (a whole
    /// message): false means none of them is wanted, and `wants` is not asked.
    fn wants_all(&mut self, _raw: &[u8], _sections: u64) -> bool {
        true
    }
    fn push(&mut self, ctx: Ctx, name: &str, value: &str, message: u64);
    /// A JSON number (not a string), written as sent.
    fn push_number(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        self.push(ctx, name, value, message);
    }
}

impl FieldSink for FieldBatch {
    fn push(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        FieldBatch::push(self, ctx, name, value, message);
    }
    fn push_number(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        FieldBatch::push(self, ctx, name, value, message);
        if let Some(f) = self.fields.last_mut() {
            f.number = true;
        }
    }
}

/// Fields produced by one feed of data, with their serialized form.
#[derive(Debug, Default)]
pub struct FieldBatch {
    pub fields: Vec<Field>,
}

impl FieldBatch {
    pub fn push(&mut self, ctx: Ctx, name: &str, value: &str, message: u64) {
        /// At most `max` bytes (on a char boundary), control characters as spaces;
        /// one allocation when there is nothing to replace (the common case).
        fn clean(s: &str, max: usize) -> String {
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let s = &s[..end];
            if s.bytes().any(|b| b < 0x20 || b == 0x7f) || s.chars().any(char::is_control) {
                s.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect()
            } else {
                s.to_owned()
            }
        }
        // `_android_id`, `__udid`: SDKs prefix their parameters; the name is the same.
        let mut name = clean(name.trim_start_matches('_'), 256);
        name.make_ascii_lowercase();
        if name.bytes().any(|b| b >= 0x80) {
            name = name.to_lowercase();
        }
        self.fields.push(Field {
            ctx,
            name,
            value: clean(value, MAX_VALUE),
            message,
            number: false,
        });
    }

    /// Appends every field's line to `out`; returns each line's end offset
    /// (relative to the start of `out` as given, plus `base`).
    pub fn serialize(&self, base: u64, out: &mut Vec<u8>) -> Vec<u64> {
        let start = out.len();
        let mut ends = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            out.push(0x1e);
            out.push(f.ctx.code());
            out.push(0x1f);
            out.extend_from_slice(f.name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(f.value.as_bytes());
            out.push(b'\n');
            ends.push(base + (out.len() - start) as u64);
        }
        ends
    }
}

/// Percent-decoding of a query or form value (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    decode(s, true)
}

/// Percent-decoding that leaves `+` alone (cookie values: base64 tokens keep it).
pub fn unescape_percent(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('%') {
        decode(s, false).into()
    } else {
        s.into()
    }
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `hay` holds `needle`, ASCII case-insensitively.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `a=1&b=2` pairs, decoded.
pub fn form_pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
}

/// Every scalar of a JSON document as (key, value, is a number): the key is the
/// nearest object key (array elements inherit their array's key), strings
/// unescaped, numbers and booleans as written.
pub fn json_pairs(v: &serde_json::Value, key: &str, out: &mut Vec<(String, String, bool)>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                json_pairs(v, k, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                json_pairs(v, key, out);
            }
        }
        Value::String(s) => out.push((key.to_owned(), s.clone(), false)),
        Value::Number(n) => out.push((key.to_owned(), n.to_string(), true)),
        Value::Bool(b) => out.push((key.to_owned(), b.to_string(), false)),
        Value::Null => {}
    }
}

/// `(key, value, is a number)` pairs of JSON that does not parse, typically a
/// body cut short by sampling or a gap: `"key": "string"` and `"key": 123`
/// wherever they occur, and strings of arrays under their array's key.
pub fn json_pairs_lenient(text: &str) -> Vec<(String, String, bool)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut array_key = String::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // A string starting at the quote at `i`: (unescaped, index after it).
    let string = |i: usize| -> Option<(String, usize)> {
        let mut j = i + 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => {
                    let raw = &text[i..=j];
                    let v = serde_json::from_str::<String>(raw)
                        .unwrap_or_else(|_| text[i + 1..j].to_owned());
                    return Some((v, j + 1));
                }
                _ => j += 1,
            }
        }
        None
    };
    while i < b.len() {
        if b[i] == b'[' {
            // A bare array (no key) clears the array key.
            array_key.clear();
        }
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let Some((s, next)) = string(i) else { break };
        let j = skip_ws(next);
        if j < b.len() && b[j] == b':' {
            let v = skip_ws(j + 1);
            match b.get(v) {
                Some(b'"') => {
                    let Some((val, after)) = string(v) else { break };
                    out.push((s, val, false));
                    i = after;
                }
                Some(c) if c.is_ascii_digit() || *c == b'-' => {
                    let end = (v + 1..b.len())
                        .find(|&k| !(b[k].is_ascii_digit() || b".eE+-".contains(&b[k])))
                        .unwrap_or(b.len());
                    out.push((s, text[v..end].to_owned(), true));
                    i = end;
                }
                Some(b'[') => {
                    array_key = s;
                    i = v + 1;
                }
                _ => i = v,
            }
        } else {
            out.push((array_key.clone(), s, false));
            i = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_plus() {
        assert_eq!(percent_decode("a%40b.com"), "a@b.com");
        assert_eq!(percent_decode("x+y%2By"), "x y+y");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(unescape_percent("a%40b+c="), "a@b+c=");
    }

    #[test]
    fn forms_and_json() {
        let p: Vec<_> = form_pairs("email=a%40b.com&password=&flag").collect();
        assert_eq!(
            p,
            [
                ("email".into(), "a@b.com".into()),
                ("password".into(), String::new()),
                ("flag".into(), String::new())
            ]
        );
        let v: serde_json::Value = serde_json::from_str(
            r#"{"user":{"email":"a\u0040b.com","ids":[1,2]},"ok":true,"n":null}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        json_pairs(&v, "", &mut out);
        assert!(out.contains(&("email".into(), "a@b.com".into(), false)));
        assert!(out.contains(&("ids".into(), "2".into(), true)));
        assert!(out.contains(&("ok".into(), "true".into(), false)));
    }

    #[test]
    fn json_cut_short_still_gives_its_pairs() {
        let cut = r#"{"user":{"email":"a\u0040b.com","ids":[1,2]},"tags":["x","y"],"n":12, "password": "hun"#;
        let p = json_pairs_lenient(cut);
        assert!(
            p.contains(&("email".into(), "a@b.com".into(), false)),
            "{p:?}"
        );
        assert!(p.contains(&("tags".into(), "y".into(), false)), "{p:?}");
        assert!(p.contains(&("n".into(), "12".into(), true)), "{p:?}");
        assert!(
            !p.iter().any(|(k, _, _)| k == "password"),
            "an unfinished string is dropped"
        );
    }

    #[test]
    fn lines_and_offsets() {
        let mut b = FieldBatch::default();
        b.push(Ctx::Query, "Email", "a@b.com", 0);
        b.push(Ctx::Header, "X-Token", "t\nok\x1e", 0);
        let mut out = b"prev".to_vec();
        let ends = b.serialize(100, &mut out);
        assert_eq!(
            &out[4..],
            b"\x1eq\x1femail=a@b.com\n\x1eh\x1fx-token=t ok \n"
        );
        assert_eq!(ends, [100 + 17, 100 + 17 + 17]);
    }
}
