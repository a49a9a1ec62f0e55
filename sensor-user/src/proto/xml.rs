//! XML and SOAP bodies: element names as field names for their text, attribute
//! names for their values, namespace prefixes dropped, entities decoded.

/// Decodes the five predefined entities and character references.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..end];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        if let Some(c) = c {
            out.push(c);
            rest = &rest[end + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Whether `text` is an XML document (a declaration, or a root element).
pub fn looks_like_xml(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with("<?xml")
        || (t.starts_with('<')
            && !t[1..]
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("!doctype html")
            && !t.to_ascii_lowercase().starts_with("<html"))
}

/// (name, value) pairs: each leaf element's text, each attribute.
pub fn pairs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let content = &rest[..lt];
        rest = &rest[lt..];
        let Some(gt) = rest.find('>') else {
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = local(name.trim());
            if let Some((open, has_child)) = stack.pop()
                && open == name
                && !has_child
            {
                let v = unescape(content.trim());
                if !v.is_empty() {
                    out.push((name.to_owned(), v));
                }
            }
            continue;
        }
        if let Some(parent) = stack.last_mut() {
            parent.1 = true;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let mut words = tag.splitn(2, char::is_whitespace);
        let name = local(words.next().unwrap_or("")).to_owned();
        for attr in attributes(words.next().unwrap_or("")) {
            out.push(attr);
        }
        if !self_closing {
            stack.push((name, false));
        }
    }
    out
}

/// `k="v"` / `k='v'` attributes (namespace declarations skipped).
fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(end) = after[1..].find(q) else {
            break;
        };
        let val = &after[1..=end];
        if !key.starts_with("xmlns") {
            out.push((local(key).to_owned(), unescape(val)));
        }
        rest = &after[end + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soap_login_attributes_and_entities() {
        let body = r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><m:Login xmlns:m="urn:x" device_id="0123456789abcdef"><m:username>jane</m:username><m:password>p&amp;ss&#x21;</m:password><m:empty/></m:Login></soap:Body></soap:Envelope>"#;
        assert_eq!(
            pairs(body),
            [
                ("device_id".to_owned(), "0123456789abcdef".to_owned()),
                ("username".to_owned(), "jane".to_owned()),
                ("password".to_owned(), "p&ss!".to_owned()),
            ]
        );
        assert!(looks_like_xml(body));
        assert!(!looks_like_xml("<!DOCTYPE html><html></html>"));
    }
}
