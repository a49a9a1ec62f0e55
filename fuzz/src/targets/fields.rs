//! The field extractors: forms, JSON (strict and lenient), multipart, XML,
//! documents inside values, HTML user tables, text lines, heads.

use arbitrary::Arbitrary;
use sensor_user::proto::{
    decode::{BodyType, body_fields},
    fields::{FieldBatch, form_pairs, json_pairs_lenient},
    http::{head::head_fields, parse_request_head},
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    kind: u8,
    boundary: &'a str,
    body: &'a [u8],
}

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let Ok(i) = <Input<'_> as arbitrary::Arbitrary>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };

    let declared = match i.kind % 5 {
        0 => BodyType::Form,
        1 => BodyType::Json,
        2 => BodyType::Multipart(i.boundary.to_owned()),
        3 => BodyType::Xml,
        _ => BodyType::Other,
    };
    let mut out = FieldBatch::default();
    body_fields(i.body, &declared, 0, &mut out);
    head_fields(i.body, i.kind & 1 == 0, 0, &mut out);
    let _ = parse_request_head(i.body);
    let text = String::from_utf8_lossy(i.body);
    let _ = form_pairs(&text).count();
    let _ = json_pairs_lenient(&text);
}
