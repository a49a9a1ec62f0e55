//! The fallback dissector (text lines), and recognition by content: the same
//! conversation through `Dissection`, which picks whichever dissector its
//! first bytes name.
#![no_main]

use leakwatch_fuzz::{Step, converse};
use libfuzzer_sys::fuzz_target;
use sensor_user::proto::{
    Dissection, Out,
    coding::{DecodeStats, Limits},
    fields::FieldBatch,
    lines::Lines,
};

fuzz_target!(|steps: Vec<Step>| {
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
            leakwatch_fuzz::Step::Client(b) => d.feed(0, true, b, &mut out),
            leakwatch_fuzz::Step::Server(b) => d.feed(1, false, b, &mut out),
            leakwatch_fuzz::Step::Gap(c) => d.gap(u8::from(!c), *c, &mut out),
            leakwatch_fuzz::Step::Finish(c) => d.finish(u8::from(!c), *c, &mut out),
        }
    }
    let _ = (d.protocol(), d.encrypted(), d.request_head());
});
