//! docs/events.schema.json itself: it accepts the documented examples and
//! rejects what the event contract forbids.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use serde_json::{Value, json};

mod common;

fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn leak() -> Value {
    json!({
        "timestamp": "2026-11-23T13:37:24.454051Z", "event_type": "leak",
        "src_ip": "192.0.2.10", "src_port": 52688, "dest_ip": "198.51.100.2", "dest_port": 80,
        "proto": "TCP", "interface": "lan0", "service": "qobuz", "destination": "service",
        "kind": "password_hash", "rule": "password_hash_param", "severity": "critical",
        "confidence": "pattern", "evidence": "password=5f…99 (32 chars)", "fingerprint": "83f76f15d1284f9b6422a43c20319cc9",
        "context": "query", "direction": "to_server",
        "http": {"hostname": "www.qobuz.com", "method": "GET", "path": "/api.json/0.2/user/login", "user_agent": "Qobuz/6.1"},
        "app": {"name": "Qobuz", "version": "6.1", "platform": "iOS"}
    })
}

#[test]
fn documented_examples_pass() {
    let mut replay = leak();
    replay["event_type"] = json!("replay");
    replay["replay"] = json!({"first_client_ip": "192.0.2.11", "seconds_since_first": 42});
    let flow = json!({
        "timestamp": "2026-11-23T13:00:00.123456Z", "event_type": "cleartext_flow",
        "src_ip": "2001:db8:c::10", "src_port": 40000, "dest_ip": "2001:db8:5::2", "dest_port": 80,
        "proto": "TCP", "interface": "lan0", "service": "qobuz", "flow": {"transport": "cleartext"}
    });
    let mut canary = leak();
    canary["rule"] = json!("canary");
    canary["confidence"] = json!("confirmed");
    canary["canary"] = json!("qobuz-test-account");
    canary["evidence"] = json!("password=… (32 chars) [md5-hex]");
    let mut vulnerable = flow.clone();
    vulnerable["event_type"] = json!("vulnerable_app");
    vulnerable.as_object_mut().unwrap().remove("flow");
    vulnerable["flow_id"] = json!(1_234_567_890u64);
    vulnerable["app"] = json!({"name": "Qobuz", "version": "4.0.3", "platform": "iOS"});
    vulnerable["advisory"] = json!({"id": "example-2016-1", "reference": "https://example.org/a", "advice": "upgrade the app"});
    let mut third_party = leak();
    third_party["destination"] = json!("third_party");
    third_party["destination_host"] = json!("collector.stats-example.net");
    third_party["dest_ip"] = json!("203.0.113.80");
    common::assert_valid_events(&[leak(), replay, flow, canary, vulnerable, third_party]);
}

#[test]
fn contract_violations_fail() {
    let v = validator();
    let mut with_query = leak();
    with_query["http"]["path"] = json!("/login?password=x");
    let mut no_kind = leak();
    no_kind.as_object_mut().unwrap().remove("kind");
    let mut unknown = leak();
    unknown["secret_value"] = json!("hunter2");
    let mut bad_fp = leak();
    bad_fp["fingerprint"] = json!("hunter2");
    let mut bad_kind = leak();
    bad_kind["kind"] = json!("password_hashes");
    let mut no_confidence = leak();
    no_confidence.as_object_mut().unwrap().remove("confidence");
    let mut no_destination = leak();
    no_destination
        .as_object_mut()
        .unwrap()
        .remove("destination");
    let mut bad_destination = leak();
    bad_destination["destination"] = json!("analytics");
    let mut canary_value = leak();
    canary_value["canary"] = json!("a label with spaces and a value: hunter2");
    for (what, e) in [
        ("query in path", with_query),
        ("leak without kind", no_kind),
        ("unknown field", unknown),
        ("fingerprint", bad_fp),
        ("kind", bad_kind),
        ("leak without confidence", no_confidence),
        ("leak without destination", no_destination),
        ("destination", bad_destination),
        ("canary that is not a label", canary_value),
    ] {
        assert!(!v.is_valid(&e), "{what} should be rejected");
    }
}

/// The Vector example (docs/examples/vector.toml) uses only fields the schema
/// defines, and as labels only bounded ones (never addresses or evidence).
#[test]
fn the_vector_example_uses_schema_fields() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    let props = schema["properties"].as_object().unwrap();
    let vector = std::fs::read_to_string(format!("{root}/docs/examples/vector.toml")).unwrap();
    // `{{ field }}` templates and `.field` paths in the remap program.
    let mut used = Vec::new();
    for part in vector.split("{{").skip(1) {
        used.push(part.split("}}").next().unwrap().trim().to_owned());
    }
    for w in vector.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        if let Some(f) = w.strip_prefix('.')
            && !f.is_empty()
            && f != "message"
        {
            used.push(f.split('.').next().unwrap().to_owned());
        }
    }
    assert!(used.len() >= 6, "{used:?}");
    for f in &used {
        assert!(
            props.contains_key(f),
            "docs/examples/vector.toml uses {f:?}, which events do not carry"
        );
        assert!(
            !["src_ip", "dest_ip", "evidence", "fingerprint"].contains(&f.as_str()),
            "{f} must not become a Loki label"
        );
    }
}
