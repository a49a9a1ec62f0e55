//! HTTP as a flow: recognised by its start lines, requests one way and
//! responses the other, authentication read across both.

use super::{
    HttpStream, RequestHead, auth, could_be_start, looks_like_request, looks_like_response,
};
use crate::proto::{Dissector, Out, Protocol, Recognition, Registration, coding::Limits};

/// HTTP/1.x: recognised by a request line from the client or a status line
/// from the server.
pub const REGISTRATION: Registration = Registration {
    protocol: Protocol::Http,
    recognise,
    make: |limits| Box::new(HttpDissector::new(*limits)),
};

fn recognise(client: &[u8], server: &[u8]) -> Recognition {
    // Blank lines may come before a message.
    fn skip(mut b: &[u8]) -> &[u8] {
        while let Some(rest) = b.strip_prefix(b"\r\n") {
            b = rest;
        }
        b
    }
    let (c, s) = (skip(client), skip(server));
    if looks_like_request(c) {
        return Recognition::Yes("request line");
    }
    if looks_like_response(s) {
        return Recognition::Yes("status line");
    }
    // Wait while neither side said anything that rules HTTP out.
    let open = |b: &[u8], requests| b.is_empty() || could_be_start(b, requests);
    if open(c, true) && open(s, false) {
        Recognition::NeedMore
    } else {
        Recognition::No
    }
}

/// Both directions of an HTTP flow: requests one way, responses the other;
/// NTLM and Digest authentication read across them ([`auth`]).
#[derive(Debug)]
pub struct HttpDissector {
    /// By key direction.
    sides: [Option<HttpStream>; 2],
    auth: auth::Auth,
    limits: Limits,
}

impl HttpDissector {
    pub fn new(limits: Limits) -> Self {
        Self {
            sides: [None, None],
            auth: auth::Auth::default(),
            limits,
        }
    }

    fn side(&mut self, dir: u8, client: bool) -> &mut HttpStream {
        let limits = self.limits;
        let s =
            self.sides[usize::from(dir & 1)].get_or_insert_with(|| HttpStream::new(client, limits));
        s.set_requests(client);
        s
    }

    /// Reads the authentication headers the side just framed, and takes its
    /// decoding counts.
    fn authenticate(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        if let Some(s) = self.sides[usize::from(dir & 1)].as_mut() {
            out.decode.add(std::mem::take(&mut s.decode));
            for (name, value) in s.auth.drain(..) {
                self.auth
                    .header(dir, client, &name, &value, out.credentials);
            }
        }
    }
}

impl Dissector for HttpDissector {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn heap_bytes(&self) -> usize {
        self.sides
            .iter()
            .flatten()
            .map(HttpStream::heap_bytes)
            .sum()
    }

    fn feed(&mut self, dir: u8, client: bool, data: &[u8], out: &mut Out<'_>) {
        self.side(dir, client).feed(data, out.fields);
        self.authenticate(dir, client, out);
        // A 101 on one side switches the other to WebSocket too.
        if let Some(ext) = self.sides[usize::from(dir & 1)]
            .as_mut()
            .and_then(|s| s.switched.take())
            && let Some(other) = self.sides[usize::from(dir & 1) ^ 1].as_mut()
        {
            other.to_websocket(&ext);
        }
    }

    fn gap(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        self.side(dir, client).gap(out.fields);
        self.authenticate(dir, client, out);
    }

    fn finish(&mut self, dir: u8, client: bool, out: &mut Out<'_>) {
        self.side(dir, client).finish(out.fields);
        self.authenticate(dir, client, out);
    }

    fn request_head(&self) -> Option<RequestHead> {
        self.sides
            .iter()
            .flatten()
            .find(|s| s.requests)
            .and_then(HttpStream::head)
    }
}
