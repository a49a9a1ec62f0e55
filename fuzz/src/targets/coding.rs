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
    // A smaller output bound than the daemon's 1 MiB: the same bounding code
    // runs, and each input costs a tenth of the work (inputs inflating to
    // 1 MiB held a long run to ~500 executions a second).
    let limits = Limits {
        max_out: 64 * 1024,
        ..Limits::default()
    };
    let mut st = DecodeStats::default();
    if let Some(out) = c.undo(i.body, &limits, &mut st) {
        assert!(
            out.len() as u64 <= limits.max_out.max(i.body.len() as u64),
            "{} bytes",
            out.len()
        );
    }
}
