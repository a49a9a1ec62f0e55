//! Shared by the end-to-end tests: every event they see is checked against the
//! published schema (docs/events.schema.json).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use serde_json::Value;

pub fn assert_valid_events(events: &[Value]) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/events.schema.json"))
            .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    for e in events {
        let errors: Vec<String> = validator
            .iter_errors(e)
            .map(|err| format!("{} at {}", err, err.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "event does not follow docs/events.schema.json: {errors:?}\n{e}"
        );
    }
}
