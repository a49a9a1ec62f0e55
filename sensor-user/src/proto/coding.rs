//! Content codings (RFC 9110 §8.4): `gzip`, `deflate` (zlib-wrapped, or raw
//! as some servers send it) and `br`, stacked as Content-Encoding lists them.
//! Bounded in bytes, ratio and depth, never in time (replay must stay
//! deterministic); every stop at a bound is counted.

use std::{
    borrow::Cow,
    io::{self, Read},
};

/// One content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

/// Bounds on undoing codings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes one message may inflate to.
    pub max_out: u64,
    /// Output bytes per input byte of one coding.
    pub max_ratio: u64,
    /// Codings stacked on one body.
    pub max_depth: usize,
    /// The memory budget decompression output draws from while it lives
    /// (`max_out` charged up front); a spent budget leaves a body undecoded.
    pub budget: Option<&'static crate::shared::budget::Budget>,
}

impl PartialEq for Limits {
    fn eq(&self, o: &Self) -> bool {
        (self.max_out, self.max_ratio, self.max_depth) == (o.max_out, o.max_ratio, o.max_depth)
            && match (self.budget, o.budget) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

impl Eq for Limits {}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_out: 1024 * 1024,
            max_ratio: 200,
            max_depth: 3,
            budget: None,
        }
    }
}

/// What the bounds stopped (`limit` label of `leakwatch_decode_limits_total`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Inflation stopped at `max_out`.
    pub size: u64,
    /// Inflation stopped at `max_ratio`.
    pub ratio: u64,
    /// Bodies with more codings than `max_depth` (or one not known): not decoded.
    pub depth: u64,
    /// Compressed bodies cut short (sampling budget, a gap): inflated as far as they go.
    pub cut: u64,
    /// HTTP header blocks past 64 KiB without their end (a header without
    /// end, a 10 MB cookie): the rest of the stream is read as raw lines.
    pub head: u64,
    /// HTTP bodies past 256 KiB, a chunked one with endless chunks included:
    /// the rest is skipped, not kept or scanned.
    pub body: u64,
    /// Chunk-size lines past 1 KiB: the body is given up.
    pub chunk_line: u64,
    /// Compressed bodies left undecoded because the memory budget was spent.
    pub budget: u64,
}

impl DecodeStats {
    pub fn add(&mut self, o: Self) {
        self.size += o.size;
        self.ratio += o.ratio;
        self.depth += o.depth;
        self.cut += o.cut;
        self.head += o.head;
        self.body += o.body;
        self.chunk_line += o.chunk_line;
        self.budget += o.budget;
    }

    /// (label, count) pairs, for export.
    pub fn by_limit(self) -> [(&'static str, u64); 8] {
        [
            ("size", self.size),
            ("ratio", self.ratio),
            ("depth", self.depth),
            ("cut", self.cut),
            ("head", self.head),
            ("body", self.body),
            ("chunk_line", self.chunk_line),
            ("budget", self.budget),
        ]
    }
}

/// The codings a body carries, in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Codings {
    list: Vec<Coding>,
    /// A coding this does not know: the body cannot be read.
    unknown: bool,
}

impl Codings {
    /// Adds a Content-Encoding header's list (`gzip, br`).
    pub fn add_header(&mut self, value: &[u8]) {
        for c in value.split(|&b| b == b',') {
            let c = c.trim_ascii().to_ascii_lowercase();
            match c.as_slice() {
                b"gzip" | b"x-gzip" => self.list.push(Coding::Gzip),
                b"deflate" => self.list.push(Coding::Deflate),
                b"br" => self.list.push(Coding::Brotli),
                b"identity" | b"" => {}
                _ => self.unknown = true,
            }
        }
    }

    pub fn is_identity(&self) -> bool {
        self.list.is_empty() && !self.unknown
    }

    /// The body with its codings undone (last applied first), within `limits`;
    /// `None` when it cannot be read at all.
    pub fn undo<'a>(
        &self,
        raw: &'a [u8],
        limits: &Limits,
        stats: &mut DecodeStats,
    ) -> Option<Cow<'a, [u8]>> {
        if self.unknown || self.list.len() > limits.max_depth {
            stats.depth += 1;
            return None;
        }
        let mut data = Cow::Borrowed(raw);
        let mut room = limits.max_out;
        for c in self.list.iter().rev() {
            let out = inflate(*c, &data, room, limits.max_ratio, stats)?;
            room = room.saturating_sub(out.len() as u64);
            data = Cow::Owned(out);
        }
        Some(data)
    }
}

/// One coding undone, at most `room` bytes and `ratio` × the input.
fn inflate(
    c: Coding,
    input: &[u8],
    room: u64,
    ratio: u64,
    stats: &mut DecodeStats,
) -> Option<Vec<u8>> {
    let by_ratio = (input.len() as u64).saturating_mul(ratio);
    let bound = room.min(by_ratio);
    let mut out = Vec::new();
    // One byte past the bound tells a body that reached it from one that fit.
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| r.take(bound + 1).read_to_end(out);
    let result: io::Result<usize> = match c {
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(input), &mut out),
        Coding::Deflate if zlib_header(input) => {
            read(&mut flate2::read::ZlibDecoder::new(input), &mut out)
        }
        Coding::Deflate => read(&mut flate2::read::DeflateDecoder::new(input), &mut out),
        Coding::Brotli => read(
            &mut brotli_decompressor::Decompressor::new(input, 4096),
            &mut out,
        ),
    };
    if out.len() as u64 > bound {
        out.truncate(bound as usize);
        if by_ratio < room {
            stats.ratio += 1;
        } else {
            stats.size += 1;
        }
        return Some(out);
    }
    match result {
        Ok(_) => Some(out),
        // Cut short: what inflated before the cut.
        Err(_) if !out.is_empty() => {
            stats.cut += 1;
            Some(out)
        }
        Err(_) => {
            stats.cut += 1;
            None
        }
    }
}

/// A zlib header (RFC 1950): deflate method, and the check bits.
fn zlib_header(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] & 0x0f == 8 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

#[cfg(test)]
pub(crate) mod tests {
    //! Encoders for fixtures: other modules' tests use them too.
    use std::io::Write as _;

    use super::*;

    pub(crate) fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn raw_deflate(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn brotli(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(b).unwrap();
        drop(w);
        out
    }

    fn codings(h: &str) -> Codings {
        let mut c = Codings::default();
        c.add_header(h.as_bytes());
        c
    }

    #[test]
    fn every_coding_and_a_stack_of_them() {
        let body = b"password=hunter2&email=jane%40example.com";
        let l = Limits::default();
        let mut st = DecodeStats::default();
        for (h, enc) in [
            ("gzip", gzip(body)),
            ("deflate", zlib(body)),
            ("deflate", raw_deflate(body)),
            ("br", brotli(body)),
            ("gzip, br", brotli(&gzip(body))),
            ("deflate, gzip, br", brotli(&gzip(&zlib(body)))),
        ] {
            assert_eq!(
                codings(h).undo(&enc, &l, &mut st).unwrap().as_ref(),
                body,
                "{h}"
            );
        }
        assert_eq!(st, DecodeStats::default());
        // Four deep, or a coding not known: not read, counted.
        let deep = gzip(&gzip(&gzip(&gzip(body))));
        assert!(
            codings("gzip, gzip, gzip, gzip")
                .undo(&deep, &l, &mut st)
                .is_none()
        );
        assert!(codings("zstd").undo(body, &l, &mut st).is_none());
        assert_eq!(st.depth, 2);
    }

    #[test]
    fn bombs_stop_at_the_ratio_and_the_size_and_cuts_go_as_far_as_they_can() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let bomb = gzip(&zeros);
        let mut st = DecodeStats::default();
        let out = codings("gzip")
            .undo(&bomb, &Limits::default(), &mut st)
            .unwrap();
        assert_eq!(out.len() as u64, bomb.len() as u64 * 200, "ratio bound");
        assert_eq!((st.ratio, st.size), (1, 0));
        let loose = Limits {
            max_ratio: 100_000,
            ..Limits::default()
        };
        let out = codings("gzip").undo(&bomb, &loose, &mut st).unwrap();
        assert_eq!(out.len(), 1024 * 1024, "size bound");
        assert_eq!(st.size, 1);
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let gz = gzip(&text);
        let out = codings("gzip")
            .undo(&gz[..gz.len() / 2], &loose, &mut st)
            .unwrap();
        assert!(!out.is_empty() && text.starts_with(&out));
        assert_eq!(st.cut, 1);
    }
}
