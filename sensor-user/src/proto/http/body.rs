//! Body framing of [`HttpStream`]: Content-Length, chunked (sizes, data,
//! trailers) and the decoding of a collected body, within the caps (`MAX_BODY`,
//! `MAX_CHUNK_LINE`), which are counted when they bite.

use memchr::memchr;

use super::{Cursor, HttpStream, MAX_BODY, MAX_CHUNK_LINE, State};
use crate::proto::{
    decode::{body_fields, chunk_size_line},
    fields::FieldSink,
};

impl HttpStream {
    /// Moves `n` pending bytes into the body (up to the bound).
    pub(super) fn take_body(&mut self, c: &mut Cursor<'_>, n: usize) {
        let room = MAX_BODY.saturating_sub(self.body.len()).min(n);
        if room < n && !self.body_capped {
            self.body_capped = true;
            self.decode.body += 1;
        }
        self.body.extend_from_slice(&c.rest()[..room]);
        self.skipped += (n - room) as u64;
        c.pos += n;
    }

    pub(super) fn length_body<S: FieldSink + ?Sized>(
        &mut self,
        c: &mut Cursor<'_>,
        due: u64,
        out: &mut S,
    ) -> bool {
        let have = c.rest().len() as u64;
        if self.body.is_empty() && have >= due && due <= MAX_BODY as u64 {
            // The whole body is here: decode it in place, no copy.
            let n = due as usize;
            self.decode_body(&c.rest()[..n], out);
            c.pos += n;
            self.state = State::Start;
            return true;
        }
        let n = have.min(due) as usize;
        self.take_body(c, n);
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

    pub(super) fn chunk_size<S: FieldSink + ?Sized>(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut S,
    ) -> bool {
        let b = c.rest();
        let Some(eol) = memchr(b'\n', b) else {
            if b.len() > MAX_CHUNK_LINE {
                self.decode.chunk_line += 1;
                self.state = State::Start;
                c.pos = c.b.len();
            }
            return false;
        };
        let size = chunk_size_line(&b[..eol]);
        c.pos += eol + 1;
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

    pub(super) fn chunk_data(&mut self, c: &mut Cursor<'_>, due: u64) -> bool {
        let n = (c.rest().len() as u64).min(due) as usize;
        // The last two bytes of `due` are the chunk's CRLF: not body.
        let data_left = due.saturating_sub(2);
        let data_n = (n as u64).min(data_left) as usize;
        self.take_body(c, data_n);
        c.pos += n - data_n;
        let left = due - n as u64;
        if left == 0 {
            self.state = State::ChunkSize;
            true
        } else {
            self.state = State::ChunkData(left);
            false
        }
    }

    pub(super) fn trailers<S: FieldSink + ?Sized>(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut S,
    ) -> bool {
        let b = c.rest();
        let Some(eol) = memchr(b'\n', b) else {
            return false;
        };
        let blank = eol == 0 || (eol == 1 && b[0] == b'\r');
        c.pos += eol + 1;
        if blank {
            self.end_body(out);
            self.state = State::Start;
        }
        true
    }

    /// Decodes and emits the collected body, if the sink wants it.
    pub(super) fn end_body<S: FieldSink + ?Sized>(&mut self, out: &mut S) {
        if self.body.is_empty() {
            return;
        }
        // Lend the body out; its allocation is kept for the next message.
        let mut raw = std::mem::take(&mut self.body);
        self.decode_body(&raw, out);
        raw.clear();
        self.body = raw;
    }

    pub(super) fn decode_body<S: FieldSink + ?Sized>(&mut self, raw: &[u8], out: &mut S) {
        let msg = self.messages.saturating_sub(1);
        // Decompression output draws from the memory budget while it lives:
        // its bound is charged up front; a spent budget leaves it undecoded.
        let max = self.limits.max_out;
        let charged = match self.limits.budget {
            Some(b) if !self.codings.is_identity() => {
                if b.used().saturating_add(max) > b.limit() {
                    self.decode.budget += 1;
                    return;
                }
                b.charge(max);
                Some(b)
            }
            _ => None,
        };
        if let Some(body) = self.codings.undo(raw, &self.limits, &mut self.decode) {
            body_fields(&body, &self.body_type, msg, out);
        }
        if let Some(b) = charged {
            b.credit(max);
        }
    }
}
