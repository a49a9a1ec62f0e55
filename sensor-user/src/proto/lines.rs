//! The fallback dissector: a stream no registered protocol recognised, read as
//! text lines (mail, a custom protocol, a sloppy client) so pattern rules still
//! see it. Lines are emitted once complete (a line longer than the bound is cut).

use memchr::memrchr;

use super::{
    Dissector, Protocol,
    decode::{MAX_LINE, lines_of},
    fields::{Ctx, FieldSink},
};

#[derive(Debug, Default)]
pub struct Lines {
    /// An unfinished last line.
    buf: Vec<u8>,
    /// The message index its fields carry.
    message: u64,
}

impl Lines {
    /// Lines whose fields carry message index `message`.
    pub fn new(message: u64) -> Self {
        Self {
            buf: Vec::new(),
            message,
        }
    }

    /// Emits the complete lines at the start of `b` (all of it when `all`);
    /// returns the bytes consumed.
    pub fn emit(&self, b: &[u8], out: &mut (impl FieldSink + ?Sized), all: bool) -> usize {
        let cut = if all {
            b.len()
        } else {
            memrchr(b'\n', b).map_or(0, |i| i + 1)
        };
        let cut = if cut == 0 && b.len() > MAX_LINE {
            b.len()
        } else {
            cut
        };
        if cut == 0 {
            return 0;
        }
        let chunk = &b[..cut];
        if out.wants(chunk) {
            lines_of(&String::from_utf8_lossy(chunk), Ctx::Raw, self.message, out);
        }
        cut
    }
}

impl Dissector for Lines {
    fn protocol(&self) -> Protocol {
        Protocol::Other
    }

    fn feed(&mut self, data: &[u8], out: &mut dyn FieldSink) {
        if self.buf.is_empty() {
            let used = self.emit(data, out, false);
            self.buf.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.emit(&buf, out, false);
            buf.drain(..used);
            self.buf = buf;
        }
    }

    fn gap(&mut self, out: &mut dyn FieldSink) {
        self.finish(out);
    }

    fn finish(&mut self, out: &mut dyn FieldSink) {
        let buf = std::mem::take(&mut self.buf);
        self.emit(&buf, out, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    #[test]
    fn complete_lines_go_at_once_the_rest_at_the_end() {
        let mut l = Lines::new(0);
        let mut out = FieldBatch::default();
        l.feed(b"USER jane\r\nPASS hun", &mut out);
        assert_eq!(out.fields.len(), 1);
        l.feed(b"ter2\r\nQUIT", &mut out);
        assert_eq!(out.fields.len(), 2);
        l.finish(&mut out);
        assert_eq!(out.fields.len(), 3);
        assert_eq!(l.protocol(), Protocol::Other);
    }
}
