//! What apps really send over HTTP, through `leakwatch replay`: compressed
//! bodies (gzip, deflate, br), multipart, XML, documents inside values,
//! quoted cookies, folded headers, split birthdates, WebSocket (masked,
//! fragmented, permessage-deflate), and responses (an account exchange's token
//! yes, a settings document's `pw` no). Each with a lookalike that must stay
//! silent. No privileges needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{collections::BTreeSet, process::Command};

use leakwatch_tests::{
    convo::Conversation,
    encode::{brotli, deflate_raw, gzip},
    lab,
    netns::unique,
    read,
};
use serde_json::Value;

mod common;

const CLIENT: &str = "192.0.2.20";
const SERVER: &str = "198.51.100.8";

/// Replays `convos` watching every address; returns the leak events.
fn leaks(convos: &[&Conversation]) -> Vec<Value> {
    replay(|p| Conversation::write(p, convos)).0
}

/// Replays the capture `write` makes, watching every address; returns the
/// leak events (checked against the schema) and what replay printed.
fn replay(write: impl FnOnce(&std::path::Path) -> std::io::Result<()>) -> (Vec<Value>, String) {
    let dir = std::env::temp_dir().join(unique("breadth"));
    std::fs::create_dir_all(&dir).unwrap();
    let (pcap, events) = (dir.join("c.pcap"), dir.join("events.jsonl"));
    write(&pcap).unwrap();
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&pcap)
        .args(["--watch", "0.0.0.0/0=any", "--progress", "never"])
        .args(["--events", events.to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .output()
        .expect("run leakwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    let _ = std::fs::remove_dir_all(dir);
    let leaks = ev
        .into_iter()
        .filter(|e| e["event_type"] == "leak")
        .collect();
    (leaks, stderr)
}

/// (source port, kind) of each leak.
fn found(ev: &[Value]) -> BTreeSet<(u64, String)> {
    ev.iter()
        .map(|e| {
            (
                e["src_port"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn post(port: u16, path: &str, headers: &str, body: &[u8]) -> Conversation {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: api.example\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut c = Conversation::new(CLIENT, port, SERVER, 80);
    c.client(&req)
        .server(b"HTTP/1.1 204 No Content\r\n\r\n")
        .close();
    c
}

const FORM: &[u8] = b"email=jane.doe%40example.com&password=hunter2%21x";

#[test]
fn compressed_multipart_xml_and_nested_bodies() {
    let json_gz = post(
        41001,
        "/v1/signup",
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        &gzip(br#"{"email":"jane.doe@example.com","password":"hunter2!x"}"#),
    );
    let form_deflate = post(
        41002,
        "/v1/login",
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: deflate\r\n",
        &deflate_raw(FORM),
    );
    let form_br = post(
        41003,
        "/v1/login",
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: br\r\n",
        &brotli(FORM),
    );
    let multipart = post(
        41004,
        "/v1/profile",
        "Content-Type: multipart/form-data; boundary=XyZ\r\n",
        b"--XyZ\r\nContent-Disposition: form-data; name=\"first_name\"\r\n\r\nJane\r\n--XyZ\r\nContent-Disposition: form-data; name=\"birth_day\"\r\n\r\n7\r\n--XyZ\r\nContent-Disposition: form-data; name=\"birth_month\"\r\n\r\n3\r\n--XyZ\r\nContent-Disposition: form-data; name=\"birth_year\"\r\n\r\n1990\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\npassword=notAField1\r\n--XyZ--\r\n",
    );
    let soap = post(
        41005,
        "/soap",
        "Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"Login\"\r\n",
        br#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><m:Login xmlns:m="urn:a"><m:username>jdoe</m:username><m:password>s0ap&amp;Secret</m:password></m:Login></soap:Body></soap:Envelope>"#,
    );
    // A base64url JSON document in a form value.
    let nested = post(
        41006,
        "/track",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        b"v=2&data=eyJkZXZpY2VfaWQiOiI5Nzc0ZDU2ZDY4MmU1NDljIiwiZW1haWwiOiJqYW5lLmRvZUBleGFtcGxlLmNvbSJ9",
    );
    let ev = leaks(&[
        &json_gz,
        &form_deflate,
        &form_br,
        &multipart,
        &soap,
        &nested,
    ]);
    let f = found(&ev);
    for want in [
        (41001, "email"),
        (41001, "password"),
        (41002, "password"),
        (41003, "password"),
        (41004, "person_name"),
        (41004, "birthdate"),
        (41005, "username"),
        (41005, "password"),
        (41006, "device_info"),
        (41006, "email"),
    ] {
        assert!(
            f.contains(&(want.0, want.1.to_owned())),
            "{want:?} in {f:?}"
        );
    }
    // The file part is not a field.
    assert!(
        !ev.iter()
            .any(|e| e["src_port"] == 41004 && e["kind"] == "password")
    );
}

#[test]
fn cookies_folded_headers_and_responses() {
    let mut cookies = Conversation::new(CLIENT, 41011, SERVER, 80);
    cookies
        .client(b"GET /home HTTP/1.1\r\nHost: a.example\r\nCookie: session-token=\"eftFmY5F5rTgws7n+eCdXZSTyHcDykNl3M1pco3RVKjy\"; comment_author_email_3f=someone@example.org; lc-main=en_US\r\nX-User-Auth-Token:\r\n\tQkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf\r\n\r\n")
        .server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .close();
    // An account exchange's token; a settings document's short `pw`.
    let mut login = Conversation::new(CLIENT, 41012, SERVER, 80);
    let body = br#"{"user_auth_token":"Zt8pQ2mVx7LsRk4NwYb6HcJd"}"#;
    login
        .client(b"GET /api/user/login?app_id=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .server(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .server(body)
        .close();
    let mut settings = Conversation::new(CLIENT, 41013, SERVER, 80);
    let body = b"autoplay=1&pw=abcd&theme=dark";
    settings
        .client(b"GET /setting HTTP/1.1\r\nHost: a\r\n\r\n")
        .server(format!("HTTP/1.1 200 OK\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
        .server(body)
        .close();
    let ev = leaks(&[&cookies, &login, &settings]);
    let f = found(&ev);
    assert!(f.contains(&(41011, "auth_token".into())), "{f:?}");
    assert!(f.contains(&(41012, "auth_token".into())), "{f:?}");
    assert!(!ev.iter().any(|e| e["src_port"] == 41013), "{ev:?}");
    // The folded header is one value; `comment_author_*` is no session cookie
    // (its e-mail is personal data all the same).
    let evidence: Vec<&str> = ev
        .iter()
        .filter(|e| e["kind"] == "auth_token")
        .map(|e| e["evidence"].as_str().unwrap())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with("x-user-auth-token=") && e.ends_with("(32 chars)")),
        "{evidence:?}"
    );
    assert!(
        !evidence.iter().any(|e| e.starts_with("comment_author")),
        "{evidence:?}"
    );
}

fn ws_frame(fin: bool, rsv1: bool, opcode: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    let m = if key.is_some() { 0x80 } else { 0 };
    f.push(m | payload.len() as u8);
    let mut p = payload.to_vec();
    if let Some(k) = key {
        f.extend_from_slice(&k);
        for (i, x) in p.iter_mut().enumerate() {
            *x ^= k[i % 4];
        }
    }
    f.extend_from_slice(&p);
    f
}

fn pmd(c: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    out
}

#[test]
fn websocket_masked_fragmented_and_deflated() {
    let key = Some([1, 2, 3, 4]);
    let mut plain = Conversation::new(CLIENT, 41021, SERVER, 80);
    let msg = br#"{"op":"auth","password":"wsSecret9x"}"#;
    plain
        .client(b"GET /socket HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        .client(&ws_frame(false, false, 1, key, &msg[..12]))
        .client(&ws_frame(true, false, 0, key, &msg[12..]))
        .close();
    let mut deflated = Conversation::new(CLIENT, 41022, SERVER, 80);
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let m1 = pmd(&mut c, br#"{"hello":1}"#);
    let m2 = pmd(&mut c, br#"{"email":"jane.doe@example.com","hello":1}"#);
    deflated
        .client(b"GET /socket HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        .server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        .client(&ws_frame(true, true, 1, key, &m1))
        .client(&ws_frame(true, true, 1, key, &m2))
        .close();
    // Lookalike: the same bytes without an upgrade are not a WebSocket.
    let mut no_upgrade = Conversation::new(CLIENT, 41023, SERVER, 80);
    no_upgrade
        .client(b"GET /socket HTTP/1.1\r\nHost: ws.example\r\n\r\n")
        .server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        .client(&ws_frame(true, false, 1, key, msg))
        .close();
    let ev = leaks(&[&plain, &deflated, &no_upgrade]);
    let f = found(&ev);
    assert!(f.contains(&(41021, "password".into())), "{f:?}");
    assert!(f.contains(&(41022, "email".into())), "{f:?}");
    assert!(!f.iter().any(|(p, _)| *p == 41023), "{f:?}");
}

/// A capture taken with a snap length (`tcpdump -s 128`, what admins keep for
/// days) replays: what fits in the first 128 bytes of each frame is analysed,
/// and the cut records are counted in the summary.
#[test]
fn a_snap_length_capture_replays() {
    let mut c = Conversation::new(CLIENT, 41031, SERVER, 80);
    c.client(b"GET /l?password=hunter2x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: a very long user agent string that goes past the snap length\r\n\r\n")
        .server(b"HTTP/1.1 204 No Content\r\n\r\n")
        .close();
    let (ev, stderr) = replay(|p| Conversation::write_snapped(p, &[&c], 128));
    assert!(ev.iter().any(|e| e["kind"] == "password"), "{ev:?}");
    // Only the request is longer than 128 bytes: one cut record, said once.
    assert!(
        stderr.contains("warning: 1 record cut by the capture's snap length"),
        "{stderr}"
    );
}
