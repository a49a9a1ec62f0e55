//! Records of people in HTML: a page that dumps a user table (an SQL
//! injection's result, an admin listing) shows `Label: value` pairs split by
//! `<br>`, `<td>` or `<li>`, one record per `<pre>`, `<tr>` or `<li>` block. A
//! record that holds a hex digest (32, 40 or 64 hex digits: MD5, SHA-1,
//! SHA-256) and a name is a dumped account: its digest is offered as a
//! `password` field and its name under its label, for the pattern rules.

use super::fields::{Ctx, FieldSink};

/// Labels that name a person.
const NAME_LABELS: [&str; 8] = [
    "first_name",
    "firstname",
    "last_name",
    "lastname",
    "surname",
    "name",
    "full_name",
    "fullname",
];

fn is_digest(s: &str) -> bool {
    matches!(s.len(), 32 | 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `text` without its tags.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Splits `text` at any of `seps` (ASCII case-insensitive).
fn split_ci<'a>(text: &'a str, seps: &[&str]) -> Vec<&'a str> {
    let lower = text.to_ascii_lowercase();
    let mut cuts = vec![0];
    for sep in seps {
        cuts.extend(lower.match_indices(sep).map(|(i, _)| i));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(text.len());
    cuts.windows(2)
        .filter_map(|w| text.get(w[0]..w[1]))
        .collect()
}

/// The tags records are split by (after their `<`, any case).
const BLOCK_TAGS: [&[u8]; 4] = [b"pre", b"td", b"li", b"br"];

/// Whether `b` holds a run of 32 or more hex digits (a digest could be there).
fn has_digest_run(b: &[u8]) -> bool {
    let mut run = 0;
    for &c in b {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Emits the fields of the dumped accounts in an HTML `text`, message `msg`.
pub fn records<S: FieldSink + ?Sized>(text: &str, msg: u64, out: &mut S) {
    // Cheap first (SIMD searches): most bodies have none of the block tags a
    // dumped table comes in, most pages no digest.
    let b = text.as_bytes();
    let tagged = memchr::memchr_iter(b'<', b).any(|i| {
        let t = &b[i + 1..b.len().min(i + 4)];
        BLOCK_TAGS
            .iter()
            .any(|tag| t.len() >= tag.len() && t[..tag.len()].eq_ignore_ascii_case(tag))
    });
    if !tagged || !has_digest_run(b) || !super::fields::contains_ci(b, b"name") {
        return;
    }
    for block in split_ci(text, &["<pre", "</pre", "<tr", "</tr", "<li", "<hr"]) {
        let mut digests = Vec::new();
        let mut names = Vec::new();
        for piece in split_ci(block, &["<br", "<td", "\n"]) {
            let line = strip_tags(piece);
            let line = line.trim();
            if is_digest(line) {
                digests.push(line.to_owned());
                continue;
            }
            let Some((label, value)) = line.split_once(':') else {
                continue;
            };
            let label = label.trim().to_ascii_lowercase().replace([' ', '-'], "_");
            let value = value.trim();
            if is_digest(value) {
                digests.push(value.to_owned());
            } else if !value.is_empty() && NAME_LABELS.contains(&label.as_str()) {
                names.push((label, value.to_owned()));
            }
        }
        if digests.is_empty() || names.is_empty() {
            continue;
        }
        for d in &digests {
            out.push(Ctx::Body, "password", d, msg);
        }
        for (label, value) in &names {
            out.push(Ctx::Body, label, value, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    fn fields(html: &str) -> Vec<(String, String)> {
        let mut out = FieldBatch::default();
        records(html, 0, &mut out);
        out.fields.into_iter().map(|f| (f.name, f.value)).collect()
    }

    #[test]
    fn a_dumped_user_table_and_what_is_not_one() {
        let page = "<pre>ID: 1<br />First name: <br />Surname: Gordon\nBrown\ngordonb\ne99a18c428cb38d5f260853678922e03</pre><pre>ID: 2<br />Surname: Pablo\n0d107d09f5bbe40cade3de5c71e9e9b7</pre>";
        assert_eq!(
            fields(page),
            [
                ("password".into(), "e99a18c428cb38d5f260853678922e03".into()),
                ("surname".into(), "Gordon".into()),
                ("password".into(), "0d107d09f5bbe40cade3de5c71e9e9b7".into()),
                ("surname".into(), "Pablo".into()),
            ]
        );
        // A digest without a name (an ETag, a commit id), a name without one.
        assert!(fields("<td>Build: 0d107d09f5bbe40cade3de5c71e9e9b7</td>").is_empty());
        assert!(fields("<li>Name: Gordon</li>").is_empty());
        assert!(fields("Surname: Gordon e99a18c428cb38d5f260853678922e03").is_empty());
    }
}
