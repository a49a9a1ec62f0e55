//! `multipart/form-data` (RFC 7578): each part's name and value; file parts and
//! binary parts are skipped.

/// The boundary of a `multipart/form-data` Content-Type, if that is what it is.
pub fn boundary(content_type: &[u8]) -> Option<String> {
    let ct = String::from_utf8_lossy(content_type);
    let lower = ct.to_ascii_lowercase();
    if !lower.contains("multipart/form-data") {
        return None;
    }
    let i = lower.find("boundary=")?;
    let b = ct[i + 9..].split(';').next()?.trim().trim_matches('"');
    (!b.is_empty()).then(|| b.to_owned())
}

/// (name, value) of each text part of `body`.
pub fn parts(body: &[u8], boundary: &str) -> Vec<(String, String)> {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let cuts: Vec<usize> = finder.find_iter(body).collect();
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(h) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, value) = (&part[..h], &part[h + 4..]);
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let head = String::from_utf8_lossy(head);
        let mut name = None;
        let mut skip = false;
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                skip |= lower.contains("filename=");
                name = param(line, "name");
            } else if let Some(t) = lower.strip_prefix("content-type:") {
                let t = t.trim();
                skip |= !(t.starts_with("text/") || t.contains("json") || t.contains("x-www-form"));
            }
        }
        let Some(name) = name else {
            continue;
        };
        // Binary parts: not text, not fields.
        if skip || std::str::from_utf8(value).is_err() {
            continue;
        }
        out.push((name, String::from_utf8_lossy(value).into_owned()));
    }
    out
}

/// `key="value"` (or unquoted) in a header's parameters.
fn param(line: &str, key: &str) -> Option<String> {
    for p in line.split(';').skip(1) {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parts_named_files_and_binary_skipped() {
        let ct = b"multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let b = boundary(ct).unwrap();
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\njane@example.com\r\n--{b}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2!\r\n--{b}\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\u{89}PNG\r\n--{b}\r\nContent-Disposition: form-data; name=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\nxyz\r\n--{b}--\r\n"
        );
        assert_eq!(
            parts(body.as_bytes(), &b),
            [
                ("email".to_owned(), "jane@example.com".to_owned()),
                ("password".to_owned(), "hunter2!".to_owned())
            ]
        );
        assert_eq!(boundary(b"application/json"), None);
    }
}
