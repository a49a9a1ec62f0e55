//! The head of an HTTP/1.x request: method, path, Host, User-Agent.

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
}

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

/// Parses the request line and headers at the start of `buf`; a head cut short
/// (headers beyond the captured bytes) yields what was readable.
pub fn parse_request_head(buf: &[u8]) -> Option<RequestHead> {
    if !looks_like_request(buf) {
        return None;
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    let mut out = RequestHead {
        method,
        path,
        host: None,
        user_agent: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            out.host = Some(strip_port(value).to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("user-agent") {
            out.user_agent = Some(value.to_owned());
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

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
