//! WebSocket frames (masking, fragments, permessage-deflate with and without
//! context takeover).

use arbitrary::Arbitrary;
use sensor_user::proto::{
    coding::{DecodeStats, Limits},
    fields::FieldBatch,
    websocket::{Deflate, WsStream},
};

#[derive(Arbitrary, Debug)]
struct Input {
    deflate: bool,
    no_takeover: bool,
    chunks: Vec<Vec<u8>>,
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(i) =
        <Input as arbitrary::Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(data))
    else {
        return;
    };

    let d = Deflate {
        enabled: i.deflate,
        no_context_takeover: i.no_takeover,
    };
    let mut ws = WsStream::new(d, Limits::default());
    let mut out = FieldBatch::default();
    let mut st = DecodeStats::default();
    for c in &i.chunks {
        ws.feed(c, &mut out, &mut st);
    }
}
