//! WebSocket (RFC 6455) after an HTTP Upgrade: frames read, client-to-server
//! payloads unmasked (masking is not encryption), fragmented messages joined,
//! `permessage-deflate` (RFC 7692: RSV1, with and without context takeover)
//! inflated, and text messages dissected like bodies (JSON, forms, lines).

use flate2::{Decompress, FlushDecompress};

use super::{
    coding::{DecodeStats, Limits},
    decode::{BodyType, body_fields},
    fields::FieldSink,
};

/// What the 101 response agreed for `permessage-deflate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deflate {
    pub enabled: bool,
    /// Each message is compressed alone (no shared window) in this direction.
    pub no_context_takeover: bool,
}

impl Deflate {
    /// From the response's `Sec-WebSocket-Extensions`, for the client's
    /// (`client`) or the server's messages.
    pub fn negotiated(extensions: &str, client: bool) -> Self {
        let e = extensions.to_ascii_lowercase();
        if !e.contains("permessage-deflate") {
            return Self::default();
        }
        let flag = if client {
            "client_no_context_takeover"
        } else {
            "server_no_context_takeover"
        };
        Self {
            enabled: true,
            no_context_takeover: e.contains(flag),
        }
    }
}

/// One direction of a WebSocket connection.
pub struct WsStream {
    buf: Vec<u8>,
    /// The message being joined: its opcode, whether compressed, its bytes.
    message: Option<(u8, bool, Vec<u8>)>,
    deflate: Deflate,
    inflater: Decompress,
    limits: Limits,
    messages: u64,
    /// Frames past the bounds, or not frames at all: stop reading.
    broken: bool,
}

impl std::fmt::Debug for WsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("deflate", &self.deflate)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl WsStream {
    pub fn new(deflate: Deflate, limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            message: None,
            deflate,
            inflater: Decompress::new(false),
            limits,
            messages: 0,
            broken: false,
        }
    }

    /// Bytes were lost: the frame under way is dropped.
    pub fn gap(&mut self) {
        self.buf.clear();
        self.message = None;
    }

    /// Reads frames from `data`; complete text messages' fields go to `out`.
    pub fn feed<S: FieldSink + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut S,
        stats: &mut DecodeStats,
    ) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while let Some((frame_len, fin, rsv1, opcode, payload)) = frame(&self.buf[at..]) {
            at += frame_len;
            if opcode >= 8 {
                continue; // control frames: close, ping, pong
            }
            let max = self.limits.max_out as usize;
            match (&mut self.message, opcode) {
                (None, 1 | 2) => self.message = Some((opcode, rsv1, payload)),
                (Some((_, _, m)), 0) if m.len() + payload.len() <= max => {
                    m.extend_from_slice(&payload);
                }
                _ => {
                    // A continuation with nothing to continue, or a message past
                    // the bound: resynchronise on the next message.
                    self.message = None;
                    continue;
                }
            }
            if fin && let Some((op, compressed, m)) = self.message.take() {
                self.message_done(op, compressed, &m, out, stats);
            }
        }
        self.buf.drain(..at);
        if self.buf.len() > self.limits.max_out as usize + 14 {
            self.broken = true;
            self.buf = Vec::new();
        }
    }

    fn message_done<S: FieldSink + ?Sized>(
        &mut self,
        opcode: u8,
        compressed: bool,
        m: &[u8],
        out: &mut S,
        stats: &mut DecodeStats,
    ) {
        self.messages += 1;
        let text = if compressed && self.deflate.enabled {
            if self.deflate.no_context_takeover {
                self.inflater.reset(false);
            }
            let mut input = m.to_vec();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let bound = (self.limits.max_out as usize)
                .min(input.len().saturating_mul(self.limits.max_ratio as usize));
            let mut outbuf = Vec::new();
            let mut consumed = 0usize;
            loop {
                outbuf.reserve(16 * 1024);
                let (in_before, out_before) = (self.inflater.total_in(), outbuf.len());
                if self
                    .inflater
                    .decompress_vec(&input[consumed..], &mut outbuf, FlushDecompress::Sync)
                    .is_err()
                {
                    stats.cut += 1;
                    break;
                }
                consumed += (self.inflater.total_in() - in_before) as usize;
                if outbuf.len() > bound {
                    outbuf.truncate(bound);
                    stats.size += 1;
                    break;
                }
                // Done when a round neither read nor wrote anything.
                if outbuf.len() == out_before && self.inflater.total_in() == in_before {
                    break;
                }
            }
            outbuf
        } else {
            m.to_vec()
        };
        if opcode == 1 {
            body_fields(&text, &BodyType::Other, self.messages - 1, out);
        }
    }
}

/// One frame at the start of `b`: (its length, FIN, RSV1, opcode, unmasked payload).
fn frame(b: &[u8]) -> Option<(usize, bool, bool, u8, Vec<u8>)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let key = if masked {
        let k: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let mut payload = b.get(at..at.checked_add(len)?)?.to_vec();
    if let Some(k) = key {
        for (i, x) in payload.iter_mut().enumerate() {
            *x ^= k[i % 4];
        }
    }
    Some((at + len, b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f, payload))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    /// A frame: `fin`, `rsv1`, `opcode`, masked with `key` when given.
    pub fn frame(
        fin: bool,
        rsv1: bool,
        opcode: u8,
        key: Option<[u8; 4]>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
        let m = if key.is_some() { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(m | payload.len() as u8);
        } else {
            f.push(m | 0x7e);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let mut p = payload.to_vec();
        if let Some(k) = key {
            f.extend_from_slice(&k);
            for (i, x) in p.iter_mut().enumerate() {
                *x ^= k[i % 4];
            }
        }
        f.extend_from_slice(&p);
        f
    }

    /// permessage-deflate payload of `text` (the sync flush's tail removed).
    pub fn deflated(c: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    fn values(s: &mut WsStream, frames: &[Vec<u8>]) -> Vec<(String, String)> {
        let mut out = FieldBatch::default();
        let mut st = DecodeStats::default();
        for f in frames {
            s.feed(f, &mut out, &mut st);
        }
        out.fields.into_iter().map(|f| (f.name, f.value)).collect()
    }

    #[test]
    fn masked_fragmented_and_deflated_messages() {
        let key = Some([0x37, 0xfa, 0x21, 0x3d]);
        let mut s = WsStream::new(Deflate::default(), Limits::default());
        let msg = br#"{"action":"login","password":"wsSecret9"}"#;
        let v = values(
            &mut s,
            &[
                frame(false, false, 1, key, &msg[..10]),
                frame(true, false, 9, key, b"ping"),
                frame(true, false, 0, key, &msg[10..]),
            ],
        );
        assert!(
            v.contains(&("password".into(), "wsSecret9".into())),
            "{v:?}"
        );
        // permessage-deflate with context takeover: the second message uses the
        // first's window.
        for no_takeover in [false, true] {
            let mut c = flate2::Compress::new(flate2::Compression::default(), false);
            let d = Deflate {
                enabled: true,
                no_context_takeover: no_takeover,
            };
            let mut s = WsStream::new(d, Limits::default());
            let one = deflated(&mut c, br#"{"token":"QkX3u9rVb0dY7nWq2LpZsT5h"}"#);
            if no_takeover {
                c.reset();
            }
            let two = deflated(
                &mut c,
                br#"{"token":"QkX3u9rVb0dY7nWq2LpZsT5h","email":"jane@example.com"}"#,
            );
            let v = values(
                &mut s,
                &[
                    frame(true, true, 1, key, &one),
                    frame(true, true, 1, key, &two),
                ],
            );
            assert!(
                v.contains(&("email".into(), "jane@example.com".into())),
                "{no_takeover}: {v:?}"
            );
        }
        assert_eq!(
            Deflate::negotiated("permessage-deflate; client_no_context_takeover", true),
            Deflate {
                enabled: true,
                no_context_takeover: true
            }
        );
    }
}
