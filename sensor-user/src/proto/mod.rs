//! Protocols: what the bytes of one flow say.
//!
//! A protocol is a [`Dissector`] in its own file plus one line in [`DISSECTORS`].
//! A dissector sees both directions of one flow (as reassembled bytes, each
//! call naming its key direction and whether that side is the client), and
//! hands out two things:
//! - named fields for the pattern rules (query parameters, headers, body
//!   fields, text lines), through the per-direction [`FieldSink`];
//! - [`Credential`]s its protocol's semantics name (`PASS x` is a password
//!   whatever `x` looks like), with the server's verdict when it gave one.
//!
//! [`Dissection`] holds a flow's first bytes until a registered dissector
//! recognises them by content (banners, commands, magic bytes; never the
//! port), then hands everything to it; a flow nobody recognises is read as text
//! lines ([`lines`]). Content decoding dissectors share lives in [`decode`].

pub mod coding;
pub mod decode;
pub mod fields;
pub mod ftp;
pub mod html;
pub mod http;
pub mod imap;
pub mod lines;
pub mod mqtt;
pub mod multipart;
pub mod ntlm;
pub mod pop3;
pub mod sasl;
pub mod smtp;
pub mod tls;
pub mod user_agent;
pub mod websocket;
pub mod xml;

use fields::FieldSink;
use http::RequestHead;

/// A flow's application protocol (`protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Ftp,
    Pop3,
    Imap,
    Smtp,
    Mqtt,
    Tls,
    /// Recognised by no dissector: read as text lines.
    Other,
}

impl Protocol {
    pub const ALL: [Self; 8] = [
        Self::Http,
        Self::Ftp,
        Self::Pop3,
        Self::Imap,
        Self::Smtp,
        Self::Mqtt,
        Self::Tls,
        Self::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ftp => "ftp",
            Self::Pop3 => "pop3",
            Self::Imap => "imap",
            Self::Smtp => "smtp",
            Self::Mqtt => "mqtt",
            Self::Tls => "tls",
            Self::Other => "other",
        }
    }
}

/// How bad a credential's leak is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Low,
    Medium,
    High,
    Critical,
}

/// What the server said of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }
}

/// A secret or personal value a protocol's semantics name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The leak kind (`username`, `password`, `password_hash`, `email`, `person_name`).
    pub kind: &'static str,
    /// The rule id it is reported under (`ftp_pass`, `ntlm_response`, …).
    pub rule: &'static str,
    pub level: Level,
    /// Where it was (`USER`, `LOGIN`, `Authorization: NTLM`), for evidence.
    pub name: String,
    pub ctx: fields::Ctx,
    pub value: String,
    /// Key direction it travelled in, and whether that is the client's.
    pub dir: u8,
    pub from_client: bool,
    pub outcome: Option<Outcome>,
    /// For challenge–response hashes: whether the challenge was seen too.
    pub crackable: Option<bool>,
}

impl Credential {
    /// A credential sent by the client in key direction `dir`.
    pub fn client(
        dir: u8,
        kind: &'static str,
        rule: &'static str,
        level: Level,
        name: &str,
        value: &str,
    ) -> Self {
        Self {
            kind,
            rule,
            level,
            name: name.to_owned(),
            ctx: fields::Ctx::Raw,
            value: value.to_owned(),
            dir,
            from_client: true,
            outcome: None,
            crackable: None,
        }
    }
}

/// Where a dissector's output goes.
pub struct Out<'a> {
    /// Fields of the direction being fed, for the pattern rules.
    pub fields: &'a mut dyn FieldSink,
    pub credentials: &'a mut Vec<Credential>,
    /// What content-decoding bounds stopped.
    pub decode: &'a mut coding::DecodeStats,
}

/// One flow, dissected.
pub trait Dissector: Send + std::fmt::Debug {
    fn protocol(&self) -> Protocol;
    /// Reassembled bytes of key direction `dir`, in order; `client`: whether
    /// that side is the client (settled by the flow's role before each call).
    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>);
    /// Bytes of `dir` were lost before its next `feed`.
    fn gap(&mut self, dir: u8, client: bool, out: &mut Out<'_>);
    /// Direction `dir` ended (FIN, RST, idle): emit what is pending.
    fn finish(&mut self, dir: u8, client: bool, out: &mut Out<'_>);
    /// The latest request the client sent, as context for findings.
    fn request_head(&self) -> Option<RequestHead> {
        None
    }
    /// Cleartext ended (the server accepted STARTTLS): what follows is TLS.
    fn encrypted(&self) -> bool {
        false
    }
    /// Heap bytes the dissector holds (buffers), for the memory budget.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// What a dissector makes of a flow's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// Its protocol, recognised by what the string says (`"request line"`).
    Yes(&'static str),
    No,
    /// Too few bytes to tell.
    NeedMore,
}

/// A registered dissector: how it recognises its protocol from the first
/// bytes each side sent (either may be empty), and how it is made.
pub struct Registration {
    pub protocol: Protocol,
    pub recognise: fn(client: &[u8], server: &[u8]) -> Recognition,
    pub make: fn(&coding::Limits) -> Box<dyn Dissector>,
}

/// Every dissector, tried in order on a flow's first bytes.
pub const DISSECTORS: &[Registration] = &[
    http::REGISTRATION,
    smtp::REGISTRATION,
    ftp::REGISTRATION,
    pop3::REGISTRATION,
    imap::REGISTRATION,
    mqtt::REGISTRATION,
];

/// First bytes held per side while undecided; past this, no dissector
/// recognised them.
const MAX_UNDECIDED: usize = 256;

/// The protocol of a flow whose sides began with `client` and `server`, if
/// one is recognised (`all`: no more bytes will come, so waiting is over).
pub fn recognise(client: &[u8], server: &[u8], all: bool) -> Option<(usize, &'static str)> {
    let mut waiting = false;
    for (i, r) in DISSECTORS.iter().enumerate() {
        match (r.recognise)(client, server) {
            Recognition::Yes(by) => return Some((i, by)),
            Recognition::NeedMore => waiting = true,
            Recognition::No => {}
        }
    }
    let full = client.len() >= MAX_UNDECIDED || server.len() >= MAX_UNDECIDED;
    (!waiting || all || full).then_some((usize::MAX, "nothing"))
}

/// The protocol a flow's first bytes name (`Other` when none does yet).
pub fn protocol_of(client: &[u8], server: &[u8]) -> Protocol {
    match recognise(client, server, true) {
        Some((i, _)) => DISSECTORS.get(i).map_or(Protocol::Other, |r| r.protocol),
        None => Protocol::Other,
    }
}

/// A flow's dissector, chosen by content.
#[derive(Debug)]
pub struct Dissection {
    /// Bytes of each key direction not yet given to the dissector: while
    /// undecided, and after the decision for the side that did not decide it
    /// (replayed on that side's next call, so its fields go to its own sink).
    held: [Vec<u8>; 2],
    /// Which key direction is the client, as last told.
    client_dir: Option<u8>,
    decided: Option<(Box<dyn Dissector>, Option<&'static str>)>,
    limits: coding::Limits,
}

impl Default for Dissection {
    fn default() -> Self {
        Self::new(coding::Limits::default())
    }
}

impl Dissection {
    /// A flow whose bodies are decoded within `limits`.
    pub fn new(limits: coding::Limits) -> Self {
        Self {
            held: [Vec::new(), Vec::new()],
            client_dir: None,
            decided: None,
            limits,
        }
    }

    /// The protocol, once recognised.
    pub fn protocol(&self) -> Option<Protocol> {
        self.decided.as_ref().map(|(d, _)| d.protocol())
    }

    /// What the protocol was recognised by, once it was.
    pub fn recognised_by(&self) -> Option<&'static str> {
        self.decided.as_ref().and_then(|(_, by)| *by)
    }

    pub fn request_head(&self) -> Option<RequestHead> {
        self.decided.as_ref().and_then(|(d, _)| d.request_head())
    }

    /// Heap bytes held: undecided bytes and the dissector's buffers.
    pub fn heap_bytes(&self) -> usize {
        self.held[0].capacity()
            + self.held[1].capacity()
            + self.decided.as_ref().map_or(0, |(d, _)| d.heap_bytes())
    }

    /// Whether the flow went over to TLS (STARTTLS accepted).
    pub fn encrypted(&self) -> bool {
        self.decided.as_ref().is_some_and(|(d, _)| d.encrypted())
    }

    fn sides(&self) -> (&[u8], &[u8]) {
        let c = usize::from(self.client_dir.unwrap_or(0) & 1);
        (&self.held[c], &self.held[c ^ 1])
    }

    fn decide(&mut self, all: bool) {
        let (client, server) = self.sides();
        if let Some((i, by)) = recognise(client, server, all) {
            self.decided = Some(match DISSECTORS.get(i) {
                Some(r) => ((r.make)(&self.limits), Some(by)),
                None => (Box::new(lines::Lines::default()), None),
            });
        }
    }

    /// Gives direction `dir` its held bytes, then `data`.
    fn pass(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        let d = usize::from(dir & 1);
        let held = std::mem::take(&mut self.held[d]);
        if let Some((dissector, _)) = self.decided.as_mut() {
            if !held.is_empty() {
                dissector.feed(dir, client, &held, out);
            }
            if !data.is_empty() {
                dissector.feed(dir, client, data, out);
            }
        }
    }

    pub fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        self.note_role(dir, client);
        if self.decided.is_some() {
            self.pass(dir, client, data, out);
            return;
        }
        self.held[usize::from(dir & 1)].extend_from_slice(data);
        self.decide(false);
        if self.decided.is_some() {
            self.pass(dir, client, &[], out);
        }
    }

    /// Bytes of `dir` were lost: what it held is dropped (what follows a gap
    /// is not a start).
    pub fn gap(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        self.held[usize::from(dir & 1)].clear();
        if let Some((d, _)) = self.decided.as_mut() {
            d.gap(dir, client, out);
        }
    }

    /// Direction `dir` ended: a flow still undecided is decided with what it
    /// has, and the direction's pending bytes are given and finished.
    pub fn finish(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        self.note_role(dir, client);
        if self.decided.is_none() {
            self.decide(true);
        }
        self.pass(dir, client, &[], out);
        if let Some((d, _)) = self.decided.as_mut() {
            d.finish(dir, client, out);
        }
    }

    fn note_role(&mut self, dir: u8, client: bool) {
        self.client_dir = Some(if client { dir & 1 } else { (dir & 1) ^ 1 });
    }
}

/// Lines of `data` (CRLF or LF) that are complete, and the unfinished rest,
/// kept in `buf` between calls; a line over `max` is cut. For the line-based
/// protocols.
pub fn complete_lines(buf: &mut Vec<u8>, data: &[u8], max: usize) -> Vec<Vec<u8>> {
    buf.extend_from_slice(data);
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
        let end = start + i;
        let line = &buf[start..end];
        lines.push(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
        start = end + 1;
    }
    buf.drain(..start);
    if buf.len() > max {
        lines.push(std::mem::take(buf));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    /// (kind, value, outcome) of each credential, for asserting.
    pub fn found(c: &[Credential]) -> Vec<(&str, &str, Option<Outcome>)> {
        c.iter()
            .map(|c| (c.kind, c.value.as_str(), c.outcome))
            .collect()
    }

    /// Feeds (dir, bytes) pairs, client = direction 0; returns fields and credentials.
    pub fn run(parts: &[(u8, &[u8])]) -> (Dissection, FieldBatch, Vec<Credential>) {
        let mut d = Dissection::default();
        let mut fields = FieldBatch::default();
        let mut creds = Vec::new();
        let mut decode = coding::DecodeStats::default();
        for (dir, b) in parts {
            let mut out = Out {
                fields: &mut fields,
                credentials: &mut creds,
                decode: &mut decode,
            };
            d.feed(*dir, *dir == 0, b, &mut out);
        }
        for dir in 0..2 {
            let mut out = Out {
                fields: &mut fields,
                credentials: &mut creds,
                decode: &mut decode,
            };
            d.finish(dir, dir == 0, &mut out);
        }
        (d, fields, creds)
    }

    #[test]
    fn recognised_by_content_one_byte_at_a_time() {
        let req = b"GET /x?password=hunter2 HTTP/1.1\r\nHost: a\r\n\r\n";
        let parts: Vec<(u8, &[u8])> = req.chunks(1).map(|c| (0, c)).collect();
        let (d, out, _) = run(&parts);
        assert_eq!(d.protocol(), Some(Protocol::Http));
        assert_eq!(d.recognised_by(), Some("request line"));
        assert!(out.fields.iter().any(|f| f.value == "hunter2"));
        // A status line from the server says HTTP too.
        let (d, _, _) = run(&[(1, b"HTTP/1.1 200 OK\r\n\r\n")]);
        assert_eq!(d.protocol(), Some(Protocol::Http));
    }

    #[test]
    fn anything_else_is_text_lines_with_both_sides_kept() {
        let (d, out, creds) = run(&[(1, b"hello there\r\n"), (0, b"token: abc\r\n")]);
        assert_eq!(d.protocol(), Some(Protocol::Other));
        assert_eq!(d.recognised_by(), None);
        assert!(creds.is_empty());
        assert!(out.fields.iter().any(|f| f.value == "hello there"));
        assert!(out.fields.iter().any(|f| f.value == "token: abc"));
    }

    #[test]
    fn lines_are_cut_where_they_end() {
        let mut buf = Vec::new();
        assert!(complete_lines(&mut buf, b"USER a", 100).is_empty());
        let l = complete_lines(&mut buf, b"b\r\nPASS c\nPA", 100);
        assert_eq!(l, [b"USER ab".to_vec(), b"PASS c".to_vec()]);
        assert_eq!(buf, b"PA");
        assert_eq!(complete_lines(&mut buf, b"SSSS", 4), [b"PASSSS".to_vec()]);
    }
}
