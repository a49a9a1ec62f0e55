//! The fallback dissector (text lines), and recognition by content: the same
//! conversation through `Dissection`, which picks whichever dissector its
//! first bytes name.

use crate::{Step, converse};
use sensor_user::proto::{
    Dissection, Out,
    coding::{DecodeStats, Limits},
    fields::FieldBatch,
    lines::Lines,
};

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(steps) = <Vec<Step> as arbitrary::Arbitrary>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };

    converse(&mut Lines::default(), &steps);
    let mut d = Dissection::new(Limits::default());
    let mut fields = FieldBatch::default();
    let mut creds = Vec::new();
    let mut decode = DecodeStats::default();
    for s in &steps {
        let mut out = Out {
            fields: &mut fields,
            credentials: &mut creds,
            decode: &mut decode,
        };
        match s {
            crate::Step::Client(b) => d.feed(0, true, b, &mut out),
            crate::Step::Server(b) => d.feed(1, false, b, &mut out),
            crate::Step::Gap(c) => d.gap(u8::from(!c), *c, &mut out),
            crate::Step::Finish(c) => d.finish(u8::from(!c), *c, &mut out),
        }
    }
    let _ = (d.protocol(), d.encrypted(), d.request_head());
}
