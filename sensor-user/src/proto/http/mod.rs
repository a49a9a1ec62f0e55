//! Incremental HTTP/1.x over one direction of a reassembled TCP stream: requests
//! or responses, pipelined, with Content-Length, chunked and (responses)
//! close-delimited bodies, gzip decoded within a bound. Produces decoded fields
//! for the matcher; a stream that is not HTTP is split into raw lines.
//!
//! Framing reads bytes in place and allocates nothing per header; a section (the
//! head, the body, a run of raw lines) is decoded into fields only when the sink
//! wants it (the matcher's trigger prefilter), which most sections are not.
//! Bodies are decoded by the shared [`super::decode`] layer.

pub mod auth;
mod body;
mod dissector;
pub mod head;

pub use dissector::{HttpDissector, REGISTRATION};

use memchr::memmem;

pub use head::{
    METHODS, RequestHead, could_be_start, looks_like_request, looks_like_response,
    parse_request_head, sender_is_client,
};
use head::{contains_ci, head_fields, head_lines, header_fields, text};

use super::{
    coding::{Codings, DecodeStats, Limits},
    decode::BodyType,
    fields::FieldSink,
    lines,
    websocket::{Deflate, WsStream},
};

/// Largest header block; beyond it the stream is treated as raw.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept per message (the rest is skipped, not scanned).
const MAX_BODY: usize = 256 * 1024;
/// Longest chunk-size line waited for.
const MAX_CHUNK_LINE: usize = 1024;

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
    /// After a 101 to an Upgrade: WebSocket frames.
    WebSocket,
}

#[derive(Debug)]
pub struct HttpStream {
    /// Whether this direction carries requests (client → server).
    requests: bool,
    state: State,
    /// Bytes received and not yet consumed (a message's unfinished part).
    buf: Vec<u8>,
    body: Vec<u8>,
    /// This message's body went past `MAX_BODY` (counted once).
    body_capped: bool,
    body_type: BodyType,
    codings: Codings,
    limits: Limits,
    /// What the coding bounds stopped, since the dissector last took it.
    pub decode: DecodeStats,
    /// The latest request head, raw: parsed into a `Head` only when a finding
    /// needs it.
    last_head: Vec<u8>,
    /// Messages started in this direction.
    pub messages: u64,
    /// Bytes skipped: bodies over the bound, resynchronisation.
    pub skipped: u64,
    /// Authentication headers (NTLM, Negotiate, Digest) framed and not yet read.
    auth: Vec<(String, String)>,
    ws: Option<WsStream>,
    /// A 101 switched this side to WebSocket, with these extensions: the
    /// other side follows.
    pub switched: Option<String>,
}

/// Unconsumed input: the stream's buffer, or a caller's slice read in place.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.b[self.pos..]
    }
}

/// The end of a head: built once (a searcher per call costs more than the search).
static HEAD_END: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));

impl HttpStream {
    /// Heap bytes held: the unconsumed input, the body, the last head.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.body.capacity() + self.last_head.capacity()
    }

    /// A direction carrying requests (`requests`) or responses, whose bodies
    /// are decoded within `limits`.
    pub fn new(requests: bool, limits: Limits) -> Self {
        Self {
            requests,
            state: State::Start,
            buf: Vec::new(),
            body: Vec::new(),
            body_capped: false,
            body_type: BodyType::Other,
            codings: Codings::default(),
            limits,
            decode: DecodeStats::default(),
            last_head: Vec::new(),
            messages: 0,
            skipped: 0,
            auth: Vec::new(),
            ws: None,
            switched: None,
        }
    }

    /// The other side switched to WebSocket (`extensions` as the 101 agreed
    /// them): this side follows, from its next byte.
    pub fn to_websocket(&mut self, extensions: &str) {
        let d = Deflate::negotiated(extensions, self.requests);
        (self.ws, self.state) = (Some(WsStream::new(d, self.limits)), State::WebSocket);
    }

    /// The latest request's method, path (without parameters), host and User-Agent.
    pub fn head(&self) -> Option<RequestHead> {
        (!self.last_head.is_empty()).then(|| RequestHead::from_head(&self.last_head))
    }

    /// Sets which side this direction is, while nothing was parsed yet (a flow
    /// picked up mid-stream learns it from its first start line).
    pub fn set_requests(&mut self, requests: bool) {
        if self.messages == 0 && self.buf.is_empty() {
            self.requests = requests;
        }
    }

    fn looks_like_start(&self, b: &[u8]) -> bool {
        if self.requests {
            looks_like_request(b)
        } else {
            looks_like_response(b)
        }
    }

    fn could_be_start(&self, b: &[u8]) -> bool {
        could_be_start(b, self.requests)
    }

    /// Feeds reassembled bytes; decoded fields go to `out`. With nothing
    /// pending (the usual case), `data` is read in place and only an unfinished
    /// tail is kept.
    pub fn feed<S: FieldSink + ?Sized>(&mut self, data: &[u8], out: &mut S) {
        if self.buf.is_empty() {
            let used = self.run(data, out);
            self.buf.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.run(&buf, out);
            buf.drain(..used);
            self.buf = buf;
        }
    }

    /// Runs the state machine over `input`; returns the bytes consumed.
    fn run<S: FieldSink + ?Sized>(&mut self, input: &[u8], out: &mut S) -> usize {
        let mut c = Cursor { b: input, pos: 0 };
        loop {
            let progressed = match self.state {
                State::Start => self.start(&mut c, out),
                State::Length(n) => self.length_body(&mut c, n, out),
                State::ChunkSize => self.chunk_size(&mut c, out),
                State::ChunkData(n) => self.chunk_data(&mut c, n),
                State::Trailers => self.trailers(&mut c, out),
                State::UntilClose => {
                    let n = c.rest().len();
                    self.take_body(&mut c, n);
                    false
                }
                State::Raw => {
                    self.raw_lines(&mut c, out, false);
                    false
                }
                State::WebSocket => {
                    let rest = c.rest();
                    if let Some(ws) = self.ws.as_mut() {
                        ws.feed(rest, out, &mut self.decode);
                    }
                    c.pos += rest.len();
                    false
                }
            };
            if !progressed {
                break;
            }
        }
        c.pos
    }

    /// Part of the stream was lost: drop what was pending, finish the current
    /// body with what arrived, and look for the next message.
    pub fn gap<S: FieldSink + ?Sized>(&mut self, out: &mut S) {
        self.flush(out);
        if let Some(ws) = self.ws.as_mut() {
            ws.gap();
        } else if !matches!(self.state, State::Raw) {
            self.state = State::Start;
        }
    }

    /// The stream ended (FIN/RST/idle): flush what is pending.
    pub fn finish<S: FieldSink + ?Sized>(&mut self, out: &mut S) {
        self.flush(out);
    }

    /// Emits what a body or raw run holds so far; drops the pending bytes.
    fn flush<S: FieldSink + ?Sized>(&mut self, out: &mut S) {
        match self.state {
            State::UntilClose
            | State::Length(_)
            | State::ChunkSize
            | State::ChunkData(_)
            | State::Trailers => self.end_body(out),
            State::Raw => {
                let buf = std::mem::take(&mut self.buf);
                self.raw_lines(&mut Cursor { b: &buf, pos: 0 }, out, true);
            }
            // A head cut short (a snap length, a gap, the end): what was read
            // of it still says something.
            State::Start if self.looks_like_start(&self.buf) => {
                let head = std::mem::take(&mut self.buf);
                self.messages += 1;
                if out.wants(&head) {
                    self.decode_head(&head, out);
                }
            }
            State::Start | State::WebSocket => {}
        }
        self.buf.clear();
    }

    fn start<S: FieldSink + ?Sized>(&mut self, c: &mut Cursor<'_>, out: &mut S) -> bool {
        // Skip blank lines between pipelined messages.
        while c.rest().starts_with(b"\r\n") {
            c.pos += 2;
        }
        let b = c.rest();
        if b.is_empty() {
            return false;
        }
        if !self.looks_like_start(b) {
            if self.could_be_start(b) {
                return false;
            }
            if self.messages == 0 {
                // Never HTTP: scan it raw.
                self.state = State::Raw;
                return true;
            }
            // After a gap or garbage: resynchronise on the next start line.
            let next = (1..b.len()).find(|&i| self.looks_like_start(&b[i..]));
            let skip = next.unwrap_or(b.len().saturating_sub(16));
            self.skipped += skip as u64;
            c.pos += skip;
            return next.is_some();
        }
        let Some(end) = HEAD_END
            .find(b)
            .map(|e| e + 4)
            .or_else(|| memmem::find(b, b"\n\n").map(|e| e + 2))
        else {
            if b.len() > MAX_HEAD {
                self.decode.head += 1;
                self.state = State::Raw;
                return true;
            }
            return false;
        };
        self.messages += 1;
        let head = &b[..end];
        self.frame_head(head);
        // The whole message in hand with a plain body: one prefilter scan says
        // whether either section needs a look (most messages: neither).
        let whole = match self.state {
            State::Length(n)
                if self.codings.is_identity()
                    && n <= MAX_BODY as u64
                    && (b.len() - end) as u64 >= n =>
            {
                Some(n as usize)
            }
            _ => None,
        };
        if let Some(n) = whole {
            if out.wants_all(&b[..end + n], 2) {
                if out.wants(head) {
                    self.decode_head(head, out);
                }
                self.decode_body(&b[end..end + n], out);
            }
            c.pos += end + n;
            self.state = State::Start;
        } else {
            if out.wants(head) {
                self.decode_head(head, out);
            }
            c.pos += end;
        }
        true
    }

    /// Emits a head's fields (message index: this head's).
    fn decode_head<S: FieldSink + ?Sized>(&self, head: &[u8], out: &mut S) {
        head_fields(head, self.requests, self.messages - 1, out);
    }

    /// Reads a head's framing (body length and coding, content type) and keeps
    /// a request's head for findings.
    fn frame_head(&mut self, head: &[u8]) {
        let mut status = 0u16;
        if self.requests {
            self.last_head.clear();
            self.last_head.extend_from_slice(head);
        } else {
            status = head_lines(head)
                .next()
                .and_then(|l| l.split(|&b| b == b' ').nth(1))
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                .unwrap_or(0);
        }
        let (mut length, mut chunked) = (None, false);
        let (mut upgrade, mut extensions) = (false, String::new());
        self.body_type = BodyType::Other;
        self.codings = Codings::default();
        for (name, value) in header_fields(head) {
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            // Framing headers; the length check first keeps the common miss cheap.
            match name.len() {
                14 if is(b"content-length") => {
                    length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
                17 if is(b"transfer-encoding") => chunked = contains_ci(value, b"chunked"),
                12 if is(b"content-type") => self.body_type = BodyType::declared(value),
                16 if is(b"content-encoding") => self.codings.add_header(value),
                7 if is(b"upgrade") => upgrade = contains_ci(value, b"websocket"),
                24 if is(b"sec-websocket-extensions") => extensions = text(value).into_owned(),
                13 | 16 | 18 | 19 if auth::wanted(name, value, self.requests) => {
                    self.auth
                        .push((text(name).into_owned(), text(value).into_owned()));
                }
                _ => {}
            }
        }
        self.body.clear();
        self.body_capped = false;
        if status == 101 && upgrade {
            // The connection now carries WebSocket frames, this way and the
            // other (the dissector switches the requests' side).
            self.state = State::WebSocket;
            self.ws = Some(WsStream::new(
                Deflate::negotiated(&extensions, false),
                self.limits,
            ));
            self.switched = Some(extensions);
            return;
        }
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

    /// Emits complete raw lines (all pending bytes when `all`).
    fn raw_lines<S: FieldSink + ?Sized>(&mut self, c: &mut Cursor<'_>, out: &mut S, all: bool) {
        let used = lines::emit(c.rest(), out, all, self.messages);
        c.pos += used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;
    use crate::proto::{
        decode::{BodyType, header_shaped, sniff},
        fields::Ctx,
    };

    fn fields(requests: bool, parts: &[&[u8]]) -> (Vec<(Ctx, String, String)>, HttpStream) {
        let mut s = HttpStream::new(requests, Limits::default());
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
        assert_eq!(s.head().unwrap().path, "/api.json/0.2/user/login");
        assert_eq!(s.head().unwrap().host.as_deref(), Some("www.qobuz.com"));
        assert_eq!(s.head().unwrap().user_agent.as_deref(), Some("Qobuz/6.1"));
    }

    #[test]
    fn header_lines_in_a_text_body_are_headers_too() {
        let body = "Referer: http://x/\r\nx-Akamai-Streaming-SessionToken: Dt46JYB5U5QSAzOGtIVxFvmxvGA=\r\n\r\n:)";
        let req = format!(
            "POST /control HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (f, _) = fields(true, &[req.as_bytes()]);
        assert!(
            has(
                &f,
                Ctx::Header,
                "x-akamai-streaming-sessiontoken",
                "Dt46JYB5U5QSAzOGtIVxFvmxvGA="
            ),
            "{f:?}"
        );
        assert_eq!(header_shaped("http://x/"), None);
        assert_eq!(header_shaped(":)"), None);
    }

    #[test]
    fn undeclared_bodies_are_sniffed() {
        let json = br#"{"login_id":"toto","password":"tototo"}"#;
        let mut req = format!(
            "POST /api/v4/users/login HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            json.len()
        )
        .into_bytes();
        req.extend_from_slice(json);
        let (f, _) = fields(true, &[&req]);
        assert!(has(&f, Ctx::Body, "password", "tototo"), "{f:?}");
        let form = b"user=jane&pass=hunter2%21";
        let mut req = format!(
            "POST /login HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            form.len()
        )
        .into_bytes();
        req.extend_from_slice(form);
        let (f, _) = fields(true, &[&req]);
        assert!(has(&f, Ctx::Body, "pass", "hunter2!"), "{f:?}");
        assert_eq!(sniff("hello world = nice"), BodyType::Other);
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
        let gz = crate::proto::coding::tests::gzip(
            br#"{"user_auth_token":"QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"}"#,
        );
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

    /// Decompression output draws from the memory budget: with room, the body
    /// is decoded and the budget is whole again after; spent, the body is left
    /// undecoded and counted.
    #[test]
    fn decompression_draws_from_the_memory_budget() {
        use crate::shared::budget::Budget;
        let gz = crate::proto::coding::tests::gzip(
            br#"{"user_auth_token":"QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"}"#,
        );
        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", gz.len()).into_bytes();
        resp.extend_from_slice(&gz);
        let budget: &'static Budget = Box::leak(Box::new(Budget::new(4 << 20)));
        for (used, decoded) in [(0, true), ((3 << 20) + 1, false)] {
            budget.charge(used);
            let limits = Limits {
                budget: Some(budget),
                ..Limits::default()
            };
            let mut s = HttpStream::new(false, limits);
            let mut out = FieldBatch::default();
            s.feed(&resp, &mut out);
            let found = out.fields.iter().any(|f| f.name == "user_auth_token");
            assert_eq!(found, decoded, "with {used} bytes already used");
            assert_eq!(s.decode.budget, u64::from(!decoded));
            assert_eq!(budget.used(), used, "the output's charge is given back");
            budget.credit(used);
        }
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
        assert!(matches!(s.state, State::Raw));
        assert!(has(&f, Ctx::Raw, "", "PASS jane@example.com"), "{f:?}");
    }

    #[test]
    fn resynchronises_after_a_gap() {
        let mut s = HttpStream::new(true, Limits::default());
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

    /// Hostile shapes stay within their caps, counted: a 10 MB cookie (a head
    /// without end within 64 KiB), a body past 256 KiB, endless chunks, an
    /// endless chunk-size line.
    #[test]
    fn heads_bodies_and_chunks_past_their_caps_are_counted_and_bounded() {
        let mut cookie = b"GET / HTTP/1.1\r\nCookie: a=".to_vec();
        cookie.extend(std::iter::repeat_n(b'x', 10 << 20));
        // As it arrives: segment by segment.
        let mut s = HttpStream::new(true, Limits::default());
        let mut out = FieldBatch::default();
        let mut most = 0;
        for seg in cookie.chunks(1400) {
            s.feed(seg, &mut out);
            most = most.max(s.buf.len());
        }
        assert_eq!(s.decode.head, 1);
        assert!(matches!(s.state, State::Raw));
        assert!(most <= 2 * MAX_HEAD, "held at most {most} bytes of it");

        let big = vec![b'q'; 300 * 1024];
        let head = format!("POST /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n", big.len());
        let (_, s) = fields(true, &[head.as_bytes(), &big[..100_000], &big[100_000..]]);
        assert_eq!(s.decode.body, 1, "once per message");
        assert!(s.body.capacity() <= MAX_BODY * 2);

        let mut chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..400 {
            chunked.extend_from_slice(b"400\r\n");
            chunked.extend(std::iter::repeat_n(b'c', 0x400));
            chunked.extend_from_slice(b"\r\n");
        }
        let parts: Vec<&[u8]> = chunked.chunks(1400).collect();
        let (_, s) = fields(true, &parts);
        assert_eq!(s.decode.body, 1, "endless chunks: the body capped");
        assert!(s.body.len() <= MAX_BODY);

        let mut endless = b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'f', 4096));
        let (_, s) = fields(true, &[&endless]);
        assert_eq!(s.decode.chunk_line, 1);
    }
}
