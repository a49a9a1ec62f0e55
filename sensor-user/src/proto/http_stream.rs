//! Incremental HTTP/1.x over one direction of a reassembled TCP stream: requests
//! or responses, pipelined, with Content-Length, chunked and (responses)
//! close-delimited bodies, gzip decoded within a bound. Produces decoded fields
//! for the matcher; a stream that is not HTTP is split into raw lines.

use std::io::Read as _;

use super::fields::{Ctx, FieldBatch, form_pairs, json_pairs, percent_decode};

/// Largest header block; beyond it the stream is treated as raw.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept per message (the rest is skipped, not scanned).
const MAX_BODY: usize = 256 * 1024;
/// Bytes a gzip body may inflate to.
const MAX_INFLATED: u64 = 1024 * 1024;
/// A raw line longer than this is cut into pieces.
const MAX_LINE: usize = 4096;

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// The start of a request: context for findings (never with parameter values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    Form,
    Json,
    Other,
}

#[derive(Debug)]
enum State {
    /// Waiting for a start line (also after a gap: resynchronising).
    Start,
    /// Reading a Content-Length body: bytes still due.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Reading chunk data: bytes still due (+2 for its CRLF).
    ChunkData(u64),
    /// Reading trailers after the last chunk.
    Trailers,
    /// A response body that ends with the connection.
    UntilClose,
    /// Not HTTP: raw lines.
    Raw,
}

#[derive(Debug)]
pub struct HttpStream {
    /// Whether this direction carries requests (client → server).
    requests: bool,
    state: State,
    buf: Vec<u8>,
    body: Vec<u8>,
    body_type: BodyType,
    gzip: bool,
    /// Messages started in this direction.
    pub messages: u64,
    /// Heads of the requests seen (requests direction), oldest first, bounded.
    pub heads: Vec<Head>,
    /// Bytes skipped: bodies over the bound, resynchronisation.
    pub skipped: u64,
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

impl HttpStream {
    pub fn new(requests: bool) -> Self {
        Self {
            requests,
            state: State::Start,
            buf: Vec::new(),
            body: Vec::new(),
            body_type: BodyType::Other,
            gzip: false,
            messages: 0,
            heads: Vec::new(),
            skipped: 0,
        }
    }

    /// Whether the stream turned out not to be HTTP.
    pub fn is_raw(&self) -> bool {
        matches!(self.state, State::Raw)
    }

    fn looks_like_start(&self, b: &[u8]) -> bool {
        if self.requests {
            METHODS.iter().any(|m| b.starts_with(m))
        } else {
            b.starts_with(b"HTTP/1.")
        }
    }

    /// Bytes that may still grow into a start line.
    fn could_be_start(&self, b: &[u8]) -> bool {
        if self.requests {
            METHODS.iter().any(|m| m.starts_with(b) || b.starts_with(m))
        } else {
            b"HTTP/1.".starts_with(b) || b.starts_with(b"HTTP/1.")
        }
    }

    /// Feeds reassembled bytes; decoded fields go to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut FieldBatch) {
        self.buf.extend_from_slice(data);
        loop {
            let progressed = match self.state {
                State::Start => self.start(out),
                State::Length(n) => self.length_body(n, out),
                State::ChunkSize => self.chunk_size(out),
                State::ChunkData(n) => self.chunk_data(n),
                State::Trailers => self.trailers(out),
                State::UntilClose => {
                    self.take_body(self.buf.len());
                    false
                }
                State::Raw => {
                    self.raw_lines(out, false);
                    false
                }
            };
            if !progressed {
                break;
            }
        }
    }

    /// Part of the stream was lost: drop what was pending, finish the current
    /// body with what arrived, and look for the next message.
    pub fn gap(&mut self, out: &mut FieldBatch) {
        match self.state {
            State::Raw => self.raw_lines(out, true),
            State::Start => {}
            _ => self.end_body(out),
        }
        self.buf.clear();
        if !matches!(self.state, State::Raw) {
            self.state = State::Start;
        }
    }

    /// The stream ended (FIN/RST/idle): flush what is pending.
    pub fn finish(&mut self, out: &mut FieldBatch) {
        match self.state {
            State::UntilClose
            | State::Length(_)
            | State::ChunkSize
            | State::ChunkData(_)
            | State::Trailers => self.end_body(out),
            State::Raw => self.raw_lines(out, true),
            State::Start => {}
        }
    }

    fn start(&mut self, out: &mut FieldBatch) -> bool {
        // Skip blank lines between pipelined messages.
        while self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
        }
        if self.buf.is_empty() {
            return false;
        }
        if !self.looks_like_start(&self.buf) {
            if self.could_be_start(&self.buf) {
                return false;
            }
            if self.messages == 0 {
                // Never HTTP: scan it raw.
                self.state = State::Raw;
                return true;
            }
            // After a gap or garbage: resynchronise on the next start line.
            let next = (1..self.buf.len()).find(|&i| self.looks_like_start(&self.buf[i..]));
            let skip = next.unwrap_or(self.buf.len().saturating_sub(16));
            self.skipped += skip as u64;
            self.buf.drain(..skip);
            return next.is_some();
        }
        let Some(end) = find(&self.buf, b"\r\n\r\n")
            .map(|e| e + 4)
            .or_else(|| find(&self.buf, b"\n\n").map(|e| e + 2))
        else {
            if self.buf.len() > MAX_HEAD {
                self.state = State::Raw;
                return true;
            }
            return false;
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        self.messages += 1;
        self.head(&head, out);
        true
    }

    fn head(&mut self, head: &[u8], out: &mut FieldBatch) {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let start = lines.next().unwrap_or("");
        let msg = self.messages - 1;
        let mut h = Head::default();
        let mut status = 0u16;
        if self.requests {
            let mut parts = start.split(' ');
            h.method = parts.next().unwrap_or("").to_owned();
            let target = parts.next().unwrap_or("");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            h.path = path.to_owned();
            out.push(Ctx::Query, "path", &percent_decode(path), msg);
            for (k, v) in form_pairs(query.split('#').next().unwrap_or("")) {
                out.push(Ctx::Query, &k, &v, msg);
            }
        } else {
            status = start
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        let (mut length, mut chunked) = (None, false);
        self.body_type = BodyType::Other;
        self.gzip = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let lname = name.to_ascii_lowercase();
            match lname.as_str() {
                "cookie" => {
                    for pair in value.split(';') {
                        let (k, v) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
                        out.push(Ctx::Cookie, k, v, msg);
                    }
                }
                "set-cookie" => {
                    let first = value.split(';').next().unwrap_or("");
                    let (k, v) = first.trim().split_once('=').unwrap_or((first.trim(), ""));
                    out.push(Ctx::Cookie, k, v, msg);
                }
                _ => out.push(Ctx::Header, name, value, msg),
            }
            match lname.as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-type" => {
                    let v = value.to_ascii_lowercase();
                    self.body_type = if v.contains("x-www-form-urlencoded") {
                        BodyType::Form
                    } else if v.contains("json") {
                        BodyType::Json
                    } else {
                        BodyType::Other
                    };
                }
                "content-encoding" => self.gzip = value.to_ascii_lowercase().contains("gzip"),
                "host" => h.host = Some(value.to_ascii_lowercase()),
                "user-agent" => h.user_agent = Some(value.to_owned()),
                _ => {}
            }
        }
        if self.requests {
            if self.heads.len() >= 64 {
                self.heads.remove(0);
            }
            self.heads.push(h);
        }
        self.body.clear();
        let bodiless = !self.requests && (status < 200 || status == 204 || status == 304);
        self.state = if chunked {
            State::ChunkSize
        } else if let Some(n) = length.filter(|&n| n > 0) {
            State::Length(n)
        } else if length.is_none() && !self.requests && !bodiless {
            State::UntilClose
        } else {
            State::Start
        };
    }

    /// Moves `n` buffered bytes into the body (up to the bound).
    fn take_body(&mut self, n: usize) {
        let room = MAX_BODY.saturating_sub(self.body.len()).min(n);
        self.body.extend_from_slice(&self.buf[..room]);
        self.skipped += (n - room) as u64;
        self.buf.drain(..n);
    }

    fn length_body(&mut self, due: u64, out: &mut FieldBatch) -> bool {
        let n = (self.buf.len() as u64).min(due) as usize;
        self.take_body(n);
        let left = due - n as u64;
        if left == 0 {
            self.end_body(out);
            self.state = State::Start;
            true
        } else {
            self.state = State::Length(left);
            false
        }
    }

    fn chunk_size(&mut self, out: &mut FieldBatch) -> bool {
        let Some(eol) = find(&self.buf, b"\n") else {
            if self.buf.len() > 1024 {
                self.state = State::Start;
                self.buf.clear();
            }
            return false;
        };
        let line: Vec<u8> = self.buf.drain(..=eol).collect();
        let text = String::from_utf8_lossy(&line);
        let size = text
            .trim()
            .split(';')
            .next()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
        match size {
            Some(0) => self.state = State::Trailers,
            Some(n) => self.state = State::ChunkData(n + 2),
            None => {
                // Not a chunk size: the body is broken; keep what we have.
                self.end_body(out);
                self.state = State::Start;
            }
        }
        true
    }

    fn chunk_data(&mut self, due: u64) -> bool {
        let n = (self.buf.len() as u64).min(due) as usize;
        // The last two bytes of `due` are the chunk's CRLF: not body.
        let data_left = due.saturating_sub(2);
        let data_n = (n as u64).min(data_left) as usize;
        self.take_body(data_n);
        self.buf.drain(..n - data_n);
        let left = due - n as u64;
        if left == 0 {
            self.state = State::ChunkSize;
            true
        } else {
            self.state = State::ChunkData(left);
            false
        }
    }

    fn trailers(&mut self, out: &mut FieldBatch) -> bool {
        let Some(eol) = find(&self.buf, b"\n") else {
            return false;
        };
        let line: Vec<u8> = self.buf.drain(..=eol).collect();
        if line == b"\r\n" || line == b"\n" {
            self.end_body(out);
            self.state = State::Start;
        }
        true
    }

    /// Decodes and emits the collected body.
    fn end_body(&mut self, out: &mut FieldBatch) {
        let raw = std::mem::take(&mut self.body);
        if raw.is_empty() {
            return;
        }
        let msg = self.messages.saturating_sub(1);
        let body = if self.gzip {
            let mut d = Vec::new();
            match flate2::read::MultiGzDecoder::new(&raw[..])
                .take(MAX_INFLATED)
                .read_to_end(&mut d)
            {
                Ok(_) => d,
                // A cut gzip stream still yields what inflated before the cut.
                Err(_) if !d.is_empty() => d,
                Err(_) => return,
            }
        } else {
            raw
        };
        let text = String::from_utf8_lossy(&body);
        match self.body_type {
            BodyType::Form => {
                for (k, v) in form_pairs(text.trim()) {
                    out.push(Ctx::Body, &k, &v, msg);
                }
            }
            BodyType::Json => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    let mut pairs = Vec::new();
                    json_pairs(&v, "", &mut pairs);
                    for (k, v) in pairs {
                        out.push(Ctx::Body, &k, &v, msg);
                    }
                }
                Err(_) => lines_of(&text, Ctx::Body, msg, out),
            },
            BodyType::Other => lines_of(&text, Ctx::Body, msg, out),
        }
    }

    /// Emits complete raw lines (all pending bytes when `all`).
    fn raw_lines(&mut self, out: &mut FieldBatch, all: bool) {
        let cut = if all {
            self.buf.len()
        } else {
            self.buf
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        let cut = if cut == 0 && self.buf.len() > MAX_LINE {
            self.buf.len()
        } else {
            cut
        };
        if cut == 0 {
            return;
        }
        let chunk: Vec<u8> = self.buf.drain(..cut).collect();
        lines_of(
            &String::from_utf8_lossy(&chunk),
            Ctx::Raw,
            self.messages,
            out,
        );
    }
}

/// Non-empty lines of `text` as nameless fields, long lines in pieces.
fn lines_of(text: &str, ctx: Ctx, msg: u64, out: &mut FieldBatch) {
    for line in text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
    {
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
    use super::*;

    fn fields(requests: bool, parts: &[&[u8]]) -> (Vec<(Ctx, String, String)>, HttpStream) {
        let mut s = HttpStream::new(requests);
        let mut out = FieldBatch::default();
        for p in parts {
            s.feed(p, &mut out);
        }
        s.finish(&mut out);
        (
            out.fields
                .into_iter()
                .map(|f| (f.ctx, f.name, f.value))
                .collect(),
            s,
        )
    }

    fn has(f: &[(Ctx, String, String)], ctx: Ctx, name: &str, value: &str) -> bool {
        f.iter()
            .any(|(c, n, v)| *c == ctx && n == name && v == value)
    }

    #[test]
    fn request_query_headers_cookies() {
        let req = b"GET /api.json/0.2/user/login?email=jane%40example.com&password=5f4d HTTP/1.1\r\nHost: www.qobuz.com\r\nX-User-Auth-Token: tok123\r\nCookie: arl=abc; sid=fr1\r\nUser-Agent: Qobuz/6.1\r\n\r\n";
        let (f, s) = fields(true, &[req]);
        assert!(has(&f, Ctx::Query, "email", "jane@example.com"));
        assert!(has(&f, Ctx::Query, "password", "5f4d"));
        assert!(has(&f, Ctx::Header, "x-user-auth-token", "tok123"));
        assert!(has(&f, Ctx::Cookie, "arl", "abc") && has(&f, Ctx::Cookie, "sid", "fr1"));
        assert_eq!(s.heads[0].path, "/api.json/0.2/user/login");
        assert_eq!(s.heads[0].host.as_deref(), Some("www.qobuz.com"));
        assert_eq!(s.heads[0].user_agent.as_deref(), Some("Qobuz/6.1"));
    }

    #[test]
    fn form_and_json_bodies_pipelined() {
        let form = b"POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 30\r\n\r\nuser=jane&pass=hunter2%21&x=1\n";
        let json =
            br#"{"firstname":"Jane","birthday":"1990-02-28","email":"jane\u0040example.com"}"#;
        let mut two = form.to_vec();
        two.extend_from_slice(format!("POST /register HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len()).as_bytes());
        two.extend_from_slice(json);
        let (f, s) = fields(true, &[&two]);
        assert_eq!(s.messages, 2);
        assert!(has(&f, Ctx::Body, "pass", "hunter2!"));
        assert!(has(&f, Ctx::Body, "firstname", "Jane"));
        assert!(has(&f, Ctx::Body, "email", "jane@example.com"));
    }

    #[test]
    fn every_split_position_gives_the_same_fields() {
        let msg = b"POST /a?t=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n9\r\npassword=\r\n7\r\nhunter2\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (whole, _) = fields(true, &[msg]);
        assert!(has(&whole, Ctx::Body, "password", "hunter2"), "{whole:?}");
        for cut in 1..msg.len() {
            let (a, b) = msg.split_at(cut);
            let (split, _) = fields(true, &[a, b]);
            assert_eq!(split, whole, "cut at {cut}");
        }
    }

    #[test]
    fn gzip_json_response() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(br#"{"user_auth_token":"QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"}"#)
            .unwrap();
        let gz = enc.finish().unwrap();
        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nSet-Cookie: sp_dc=AQBxyz; Path=/\r\n\r\n", gz.len()).into_bytes();
        resp.extend_from_slice(&gz);
        let (f, _) = fields(false, &[&resp]);
        assert!(
            has(
                &f,
                Ctx::Body,
                "user_auth_token",
                "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"
            ),
            "{f:?}"
        );
        assert!(has(&f, Ctx::Cookie, "sp_dc", "AQBxyz"));
    }

    #[test]
    fn close_delimited_response_and_raw_streams() {
        let (f, _) = fields(
            false,
            &[b"HTTP/1.0 200 OK\r\n\r\n<td>5f4dcc3b5aa765d61d8327deb882cf99</td>\n"],
        );
        assert!(has(
            &f,
            Ctx::Body,
            "",
            "<td>5f4dcc3b5aa765d61d8327deb882cf99</td>"
        ));
        let (f, s) = fields(true, &[b"USER anonymous\r\nPASS jane@exa", b"mple.com\r\n"]);
        assert!(s.is_raw());
        assert!(has(&f, Ctx::Raw, "", "PASS jane@example.com"), "{f:?}");
    }

    #[test]
    fn resynchronises_after_a_gap() {
        let mut s = HttpStream::new(true);
        let mut out = FieldBatch::default();
        s.feed(
            b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
            &mut out,
        );
        s.gap(&mut out);
        s.feed(
            b"tail of the lost body\r\nGET /next?token=zz HTTP/1.1\r\n\r\n",
            &mut out,
        );
        assert!(
            out.fields
                .iter()
                .any(|f| f.ctx == Ctx::Query && f.name == "token" && f.value == "zz"),
            "{:?}",
            out.fields
        );
        assert!(s.skipped > 0);
    }
}
