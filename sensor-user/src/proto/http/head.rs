//! HTTP/1.x heads: the one request-head type (method, path, Host, User-Agent)
//! that findings and events carry, start-line recognition, and the in-place
//! byte helpers the framing reads heads with.

use std::borrow::Cow;

use memchr::memchr;

pub use crate::proto::decode::contains_ci;
use crate::proto::fields::{Ctx, FieldSink, form_pairs, percent_decode, unescape_percent};

/// Methods that start an HTTP/1.x request.
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// What the start of a request says. Values are kept as sent; callers decide
/// what may be shown (paths are shown without their query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Host header, lowercased, without port.
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// An app-identifying header's value (`X-App-Id`, `X-Application-Id`,
    /// or `X-Requested-With`, which Android WebViews fill with the app's
    /// package name), the first present.
    pub app_id: Option<String>,
}

/// Headers whose value may name the app that sent the request.
const APP_ID_HEADERS: [&[u8]; 3] = [b"x-app-id", b"x-application-id", b"x-requested-with"];

/// Whether `buf` starts like an HTTP/1.x request ("METHOD SP").
pub fn looks_like_request(buf: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| buf.len() > m.len() && buf.starts_with(m.as_bytes()) && buf[m.len()] == b' ')
}

/// Whether `buf` starts like an HTTP/1.x response.
pub fn looks_like_response(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.")
}

/// Who sent a payload, by its HTTP start line: `Some(true)` the client (a
/// request), `Some(false)` the server (a response). For flows picked up
/// mid-stream, where the kernel could only guess the client from the ports.
pub fn sender_is_client(payload: &[u8]) -> Option<bool> {
    if looks_like_request(payload) {
        Some(true)
    } else if looks_like_response(payload) {
        Some(false)
    } else {
        None
    }
}

/// Bytes that may still grow into a start line.
pub fn could_be_start(b: &[u8], requests: bool) -> bool {
    if requests {
        METHODS.iter().any(|m| m.as_bytes().starts_with(b))
    } else {
        b"HTTP/1.".starts_with(b) || b.starts_with(b"HTTP/1.")
    }
}

/// Parses the request line and headers at the start of `buf`; a head cut short
/// (headers beyond the captured bytes) yields what was readable. `None` unless
/// it starts with an HTTP/1.x request line.
pub fn parse_request_head(buf: &[u8]) -> Option<RequestHead> {
    if !looks_like_request(buf) {
        return None;
    }
    let end = memchr::memmem::find(buf, b"\r\n\r\n").unwrap_or(buf.len());
    let head = &buf[..end];
    let start = head_lines(head).next().unwrap_or(b"");
    let mut parts = start.split(|&b| b == b' ');
    let (_, _, version) = (parts.next(), parts.next()?, parts.next());
    if !version.is_some_and(|v| v.starts_with(b"HTTP/1.")) {
        return None;
    }
    Some(RequestHead::from_head(head))
}

impl RequestHead {
    /// The head of a request already framed (its start line recognised):
    /// lenient, whatever the version says.
    pub fn from_head(head: &[u8]) -> Self {
        let (method, target, _) = request_line(head);
        let path = target.split(|&b| b == b'#').next().unwrap_or(b"");
        let mut h = Self {
            method: text(method).into_owned(),
            path: text(path).into_owned(),
            host: None,
            user_agent: None,
            app_id: None,
        };
        for (name, value) in header_fields(head) {
            if name.eq_ignore_ascii_case(b"host") {
                h.host = Some(strip_port(&text(value)).to_ascii_lowercase());
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                h.user_agent = Some(text(value).into_owned());
            } else if h.app_id.is_none()
                && APP_ID_HEADERS.iter().any(|a| name.eq_ignore_ascii_case(a))
            {
                h.app_id = Some(text(value).trim().to_owned());
            }
        }
        h
    }
}

/// "example.com:8080" → "example.com"; "[2001:db8::1]:80" → "2001:db8::1".
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

pub fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && first.is_ascii_whitespace()
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && last.is_ascii_whitespace()
    {
        b = rest;
    }
    b
}

pub fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Lines of a head, without their line ends (one memchr iterator: a byte-wise
/// split costs more than the rest of the framing).
pub fn head_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', head);
    std::iter::from_fn(move || {
        if start > head.len() {
            return None;
        }
        let end = ends.next().unwrap_or(head.len());
        let line = &head[start..end];
        start = end + 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// Header lines as (name, value), trimmed.
pub fn header_fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head_lines(head).skip(1).filter_map(|line| {
        let colon = memchr(b':', line)?;
        Some((trim(&line[..colon]), trim(&line[colon + 1..])))
    })
}

/// A request line's method, path and query.
pub fn request_line(head: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let start = head_lines(head).next().unwrap_or(b"");
    let mut parts = start.split(|&b| b == b' ');
    let method = parts.next().unwrap_or(b"");
    let target = parts.next().unwrap_or(b"");
    match memchr(b'?', target) {
        Some(q) => (method, &target[..q], &target[q + 1..]),
        None => (method, target, b""),
    }
}

/// Emits a head's fields: the request line's path and query (requests),
/// headers, cookies; `msg` is the message index they carry.
pub fn head_fields<S: FieldSink + ?Sized>(head: &[u8], requests: bool, msg: u64, out: &mut S) {
    // obs-fold (RFC 9112 §5.2): a line starting with a space or tab continues
    // the header before it.
    let unfolded;
    let folded =
        memchr::memchr_iter(b'\n', head).any(|i| matches!(head.get(i + 1), Some(b' ' | b'\t')));
    let head = if folded {
        unfolded = unfold(head);
        &unfolded[..]
    } else {
        head
    };
    if requests {
        let (_, path, query) = request_line(head);
        out.push(Ctx::Query, "path", &percent_decode(&text(path)), msg);
        let query = text(query);
        for (k, v) in form_pairs(query.split('#').next().unwrap_or("")) {
            out.push(Ctx::Query, &k, &v, msg);
        }
    }
    for (name, value) in header_fields(head) {
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let value = text(value);
        // Cookie values are often URL-encoded (`%40`); `+` stays (base64); a
        // quoted value (RFC 6265 allows DQUOTEs around it) is the value inside.
        let cookie = |pair: &str, out: &mut S| {
            let (k, v) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(v);
            out.push(Ctx::Cookie, k, &unescape_percent(v), msg);
        };
        if is(b"cookie") {
            for pair in value.split(';') {
                cookie(pair, out);
            }
        } else if is(b"set-cookie") {
            cookie(value.split(';').next().unwrap_or(""), out);
        } else {
            out.push(Ctx::Header, &text(name), &value, msg);
        }
    }
}

/// `head` with folded header lines joined to the line before, by one space.
fn unfold(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        let crlf = head[i..].starts_with(b"\r\n") && i + 2 < head.len();
        let lf = head[i] == b'\n' && i + 1 < head.len();
        let next = if crlf { i + 2 } else { i + 1 };
        if (crlf || lf) && matches!(head[next], b' ' | b'\t') && !head[next..].starts_with(b" \r\n")
        {
            out.push(b' ');
            i = next;
            while i < head.len() && matches!(head[i], b' ' | b'\t') {
                i += 1;
            }
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_headers_are_one() {
        let mut out = crate::proto::fields::FieldBatch::default();
        head_fields(
            b"GET / HTTP/1.1\r\nX-Auth-Token: abcd\r\n\tefgh\r\nHost: a\r\n\r\n",
            true,
            0,
            &mut out,
        );
        assert!(
            out.fields
                .iter()
                .any(|f| f.name == "x-auth-token" && f.value == "abcd efgh"),
            "{:?}",
            out.fields
        );
        assert!(
            out.fields
                .iter()
                .any(|f| f.name == "host" && f.value == "a")
        );
    }

    #[test]
    fn request_heads() {
        let r = parse_request_head(
            b"GET /api.json/0.2/user/login?email=a%40b.c&password=x HTTP/1.1\r\nHost: WWW.Qobuz.com:80\r\nUser-Agent: Qobuz/6.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api.json/0.2/user/login");
        assert_eq!(r.host.as_deref(), Some("www.qobuz.com"));
        assert_eq!(r.user_agent.as_deref(), Some("Qobuz/6.1"));
        // Cut short: what was readable.
        let r = parse_request_head(b"POST /x HTTP/1.0\r\nHost: [2001:db8::1]:8080\r\nContent-Le")
            .unwrap();
        assert_eq!(r.host.as_deref(), Some("2001:db8::1"));
        assert_eq!(parse_request_head(b"\x16\x03\x01\x02\x00"), None);
        assert_eq!(parse_request_head(b"GETX / HTTP/1.1\r\n"), None);
        assert_eq!(parse_request_head(b"GET / SPDY/3\r\n"), None);
    }
}
