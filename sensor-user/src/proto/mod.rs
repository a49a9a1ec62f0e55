//! Protocols: what the bytes of one flow direction say.
//!
//! A protocol is a [`Dissector`] in its own file plus one line in [`DISSECTORS`]:
//! bytes of one direction in, named fields out, and what it recognised the
//! protocol by. [`Stream`] holds a direction's first bytes until a registered
//! dissector recognises them (or none can), then hands everything to it; a
//! stream nobody recognises is read as text lines ([`lines::Lines`]).
//! Content decoding dissectors share lives in [`decode`].

pub mod decode;
pub mod fields;
pub mod http;
pub mod lines;
pub mod tls;
pub mod user_agent;

use fields::FieldSink;
use http::RequestHead;

/// A flow's application protocol (`protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    /// Recognised by no dissector: read as text lines.
    Other,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Other => "other",
        }
    }
}

/// One direction of one flow, dissected.
pub trait Dissector: Send + std::fmt::Debug {
    fn protocol(&self) -> Protocol;
    /// Reassembled bytes, in order; fields go to `out` (which may decline a
    /// section's raw bytes before they are decoded).
    fn feed(&mut self, data: &[u8], out: &mut dyn FieldSink);
    /// Bytes were lost before the next `feed`.
    fn gap(&mut self, out: &mut dyn FieldSink);
    /// The direction ended (FIN, RST, idle): emit what is pending.
    fn finish(&mut self, out: &mut dyn FieldSink);
    /// Which side this direction is, learned after it was created (a flow
    /// picked up mid-stream learns it from its first start line).
    fn set_requests(&mut self, _requests: bool) {}
    /// The latest request this direction carried, as context for findings.
    fn request_head(&self) -> Option<RequestHead> {
        None
    }
}

/// What a dissector makes of a direction's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// Its protocol, recognised by what the string says (`"request line"`).
    Yes(&'static str),
    No,
    /// Too few bytes to tell.
    NeedMore,
}

/// A registered dissector: how it recognises its protocol from a direction's
/// first bytes (`requests`: the direction is client → server), and how it is made.
pub struct Registration {
    pub protocol: Protocol,
    pub recognise: fn(first: &[u8], requests: bool) -> Recognition,
    pub make: fn(requests: bool) -> Box<dyn Dissector>,
}

/// Every dissector, tried in order on a direction's first bytes.
pub const DISSECTORS: &[Registration] = &[http::REGISTRATION];

/// First bytes held while undecided; past this, no dissector recognised them.
const MAX_UNDECIDED: usize = 64;

/// A direction's dissector, chosen by content.
#[derive(Debug)]
pub struct Stream {
    requests: bool,
    state: State,
}

#[derive(Debug)]
enum State {
    /// First bytes, while some dissector needs more to tell.
    Undecided(Vec<u8>),
    Decided {
        dissector: Box<dyn Dissector>,
        /// What the protocol was recognised by (`None`: nothing recognised it).
        by: Option<&'static str>,
    },
}

impl Stream {
    pub fn new(requests: bool) -> Self {
        Self {
            requests,
            state: State::Undecided(Vec::new()),
        }
    }

    /// The protocol, once recognised.
    pub fn protocol(&self) -> Option<Protocol> {
        match &self.state {
            State::Undecided(_) => None,
            State::Decided { dissector, .. } => Some(dissector.protocol()),
        }
    }

    /// What the protocol was recognised by, once it was.
    pub fn recognised_by(&self) -> Option<&'static str> {
        match &self.state {
            State::Decided { by, .. } => *by,
            State::Undecided(_) => None,
        }
    }

    /// Picks the dissector for `first`, or `None` while one needs more bytes.
    fn choose(&self, first: &[u8], all: bool) -> Option<State> {
        let mut waiting = false;
        for r in DISSECTORS {
            match (r.recognise)(first, self.requests) {
                Recognition::Yes(by) => {
                    return Some(State::Decided {
                        dissector: (r.make)(self.requests),
                        by: Some(by),
                    });
                }
                Recognition::NeedMore => waiting = true,
                Recognition::No => {}
            }
        }
        (all || !waiting || first.len() >= MAX_UNDECIDED).then(|| State::Decided {
            dissector: Box::new(lines::Lines::new(0)),
            by: None,
        })
    }

    pub fn feed(&mut self, data: &[u8], out: &mut dyn FieldSink) {
        match &mut self.state {
            State::Decided { dissector, .. } => dissector.feed(data, out),
            State::Undecided(held) if held.is_empty() => {
                if let Some(s) = self.choose(data, false) {
                    self.state = s;
                    self.feed(data, out);
                } else {
                    self.state = State::Undecided(data.to_vec());
                }
            }
            State::Undecided(held) => {
                let mut first = std::mem::take(held);
                first.extend_from_slice(data);
                match self.choose(&first, false) {
                    Some(s) => {
                        self.state = s;
                        self.feed(&first, out);
                    }
                    None => self.state = State::Undecided(first),
                }
            }
        }
    }

    /// Bytes were lost: undecided first bytes are dropped (what follows a gap
    /// is not a stream's start).
    pub fn gap(&mut self, out: &mut dyn FieldSink) {
        match &mut self.state {
            State::Decided { dissector, .. } => dissector.gap(out),
            State::Undecided(held) => held.clear(),
        }
    }

    /// The direction ended. Undecided bytes were a prefix some protocol could
    /// still have grown from; too short to hold a field, they are dropped.
    pub fn finish(&mut self, out: &mut dyn FieldSink) {
        match &mut self.state {
            State::Decided { dissector, .. } => dissector.finish(out),
            State::Undecided(held) => held.clear(),
        }
    }

    pub fn set_requests(&mut self, requests: bool) {
        self.requests = requests;
        if let State::Decided { dissector, .. } = &mut self.state {
            dissector.set_requests(requests);
        }
    }

    pub fn request_head(&self) -> Option<RequestHead> {
        match &self.state {
            State::Decided { dissector, .. } => dissector.request_head(),
            State::Undecided(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    fn stream(requests: bool, parts: &[&[u8]]) -> (Stream, FieldBatch) {
        let mut s = Stream::new(requests);
        let mut out = FieldBatch::default();
        for p in parts {
            s.feed(p, &mut out);
        }
        (s, out)
    }

    #[test]
    fn recognised_by_content_one_byte_at_a_time() {
        let req = b"GET /x?password=hunter2 HTTP/1.1\r\nHost: a\r\n\r\n";
        let parts: Vec<&[u8]> = req.chunks(1).collect();
        let (s, out) = stream(true, &parts);
        assert_eq!(s.protocol(), Some(Protocol::Http));
        assert_eq!(s.recognised_by(), Some("request line"));
        assert!(out.fields.iter().any(|f| f.value == "hunter2"));
        // A response in the response direction; the same bytes as a request are not.
        let (s, _) = stream(false, &[b"HTTP/1.1 200 OK\r\n\r\n"]);
        assert_eq!(s.protocol(), Some(Protocol::Http));
        let (s, _) = stream(true, &[b"HTTP/1.1 200 OK\r\n\r\n"]);
        assert_eq!(s.protocol(), Some(Protocol::Other));
    }

    #[test]
    fn anything_else_is_text_lines() {
        let (mut s, mut out) = stream(true, &[b"USER jane\r\n", b"PASS x\r\n"]);
        assert_eq!(s.protocol(), Some(Protocol::Other));
        assert_eq!(s.recognised_by(), None);
        s.finish(&mut out);
        assert_eq!(out.fields.len(), 2);
        // A prefix that could still be a method waits; a gap drops it.
        let (mut s, mut out) = stream(true, &[b"GE"]);
        assert_eq!(s.protocol(), None);
        s.gap(&mut out);
        s.feed(b"xyz\n", &mut out);
        assert_eq!(s.protocol(), Some(Protocol::Other));
    }
}
