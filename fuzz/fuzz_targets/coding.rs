//! Content codings (gzip, deflate, br, stacked): bounded output whatever the
//! input, bombs included.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensor_user::proto::coding::{Codings, DecodeStats, Limits};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    header: &'a [u8],
    body: &'a [u8],
}

fuzz_target!(|i: Input<'_>| {
    let mut c = Codings::default();
    c.add_header(i.header);
    let limits = Limits::default();
    let mut st = DecodeStats::default();
    if let Some(out) = c.undo(i.body, &limits, &mut st) {
        assert!(
            out.len() as u64 <= limits.max_out.max(i.body.len() as u64),
            "{} bytes",
            out.len()
        );
    }
});
