//! Content codings for crafted HTTP bodies (what a client or server sends
//! with `Content-Encoding`), shared by the breadth tests.

use std::io::Write as _;

/// `gzip`.
#[must_use]
pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// `deflate` as some servers send it: raw, without the zlib wrapper.
#[must_use]
pub fn deflate_raw(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// `br`.
#[must_use]
pub fn brotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
    w.write_all(b).expect("writing to a Vec");
    drop(w);
    out
}
