//! Content codings (gzip, deflate, br, stacked): bounded output whatever the
//! input, bombs included.

use arbitrary::Arbitrary;
use sensor_user::proto::coding::{Codings, DecodeStats, Limits};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    header: &'a [u8],
    body: &'a [u8],
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(i) = <Input<'_> as arbitrary::Arbitrary>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };

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
}
