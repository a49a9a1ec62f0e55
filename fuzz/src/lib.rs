//! What the fuzz targets share: feeding a dissector arbitrary two-sided
//! conversations, and the invariants every target checks.

pub mod targets;

use arbitrary::Arbitrary;
use sensor_user::proto::{
    Credential, Dissector, Out,
    coding::{DecodeStats, Limits},
    fields::FieldBatch,
};

/// One step of a conversation: bytes from a side, a gap, or the end of a side.
#[derive(Arbitrary, Debug)]
pub enum Step {
    Client(Vec<u8>),
    Server(Vec<u8>),
    Gap(bool),
    Finish(bool),
}

/// Runs `steps` through `d` (the client on key direction 0) and ends both sides.
pub fn converse(d: &mut dyn Dissector, steps: &[Step]) {
    let mut fields = FieldBatch::default();
    let mut creds: Vec<Credential> = Vec::new();
    let mut decode = DecodeStats::default();
    for s in steps {
        let mut out = Out {
            fields: &mut fields,
            credentials: &mut creds,
            decode: &mut decode,
        };
        match s {
            Step::Client(b) => d.feed(0, true, b, &mut out),
            Step::Server(b) => d.feed(1, false, b, &mut out),
            Step::Gap(client) => d.gap(u8::from(!client), *client, &mut out),
            Step::Finish(client) => d.finish(u8::from(!client), *client, &mut out),
        }
    }
    for dir in 0..2u8 {
        let mut out = Out {
            fields: &mut fields,
            credentials: &mut creds,
            decode: &mut decode,
        };
        d.finish(dir, dir == 0, &mut out);
    }
    let _ = d.request_head();
    // Whatever came out is bounded by what went in.
    let input: usize = steps
        .iter()
        .map(|s| match s {
            Step::Client(b) | Step::Server(b) => b.len(),
            _ => 0,
        })
        .sum();
    let fields_bytes: usize = fields.fields.iter().map(|f| f.value.len()).sum();
    assert!(
        fields_bytes <= (input + 64) * 8 + Limits::default().max_out as usize * 4,
        "fields grew past their input: {fields_bytes} from {input}"
    );
}

/// The registered dissector for protocol `name`.
pub fn dissector(name: &str) -> Box<dyn Dissector> {
    let r = sensor_user::proto::DISSECTORS
        .iter()
        .find(|r| r.protocol.name() == name)
        .expect("a registered dissector");
    (r.make)(&Limits::default())
}
