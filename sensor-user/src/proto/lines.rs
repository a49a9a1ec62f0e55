//! The fallback dissector: a flow no registered protocol recognised, read as
//! text lines (a custom protocol, a sloppy client) so pattern rules still see
//! it. Lines are emitted once complete (a line longer than the bound is cut).

use memchr::memrchr;

use super::{
    Dissector, Out, Protocol,
    decode::{MAX_LINE, lines_of},
    fields::{Ctx, FieldSink},
};

/// Emits the complete lines at the start of `b` (all of it when `all`) as
/// fields of message `message`; returns the bytes consumed.
pub fn emit(b: &[u8], out: &mut (impl FieldSink + ?Sized), all: bool, message: u64) -> usize {
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
        lines_of(&String::from_utf8_lossy(chunk), Ctx::Raw, message, out);
    }
    cut
}

/// Text lines of each key direction.
#[derive(Debug, Default)]
pub struct Lines {
    /// Each direction's unfinished last line.
    bufs: [Vec<u8>; 2],
}

impl Lines {
    /// Feeds one direction's bytes through its buffer.
    pub fn feed_dir(&mut self, dir: u8, data: &[u8], out: &mut dyn FieldSink) {
        let buf = &mut self.bufs[usize::from(dir & 1)];
        if buf.is_empty() {
            let used = emit(data, out, false, 0);
            buf.extend_from_slice(&data[used..]);
        } else {
            buf.extend_from_slice(data);
            let used = emit(buf, out, false, 0);
            buf.drain(..used);
        }
    }

    /// Emits what direction `dir` still holds.
    pub fn flush_dir(&mut self, dir: u8, out: &mut dyn FieldSink) {
        let buf = std::mem::take(&mut self.bufs[usize::from(dir & 1)]);
        emit(&buf, out, true, 0);
    }
}

impl Dissector for Lines {
    fn protocol(&self) -> Protocol {
        Protocol::Other
    }

    fn feed(&mut self, dir: u8, _client: bool, data: &[u8], out: &mut Out<'_>) {
        self.feed_dir(dir, data, out.fields);
    }

    fn gap(&mut self, dir: u8, _client: bool, out: &mut Out<'_>) {
        self.flush_dir(dir, out.fields);
    }

    fn finish(&mut self, dir: u8, _client: bool, out: &mut Out<'_>) {
        self.flush_dir(dir, out.fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fields::FieldBatch;

    #[test]
    fn complete_lines_go_at_once_the_rest_at_the_end() {
        let mut l = Lines::default();
        let mut out = FieldBatch::default();
        l.feed_dir(0, b"USER jane\r\nPASS hun", &mut out);
        assert_eq!(out.fields.len(), 1);
        l.feed_dir(0, b"ter2\r\nQUIT", &mut out);
        assert_eq!(out.fields.len(), 2);
        l.flush_dir(0, &mut out);
        assert_eq!(out.fields.len(), 3);
        assert_eq!(l.protocol(), Protocol::Other);
    }
}
