//! HTTP breadth live: a gzip'd JSON login, a brotli form and a multipart
//! profile cross the lab gateway and are found by the sensor. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    encode::{brotli, gzip},
    http::{HttpServer, exchange},
    lab::{self, Lab, SERVER_V4},
    netns::unique,
    read,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";

fn request(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: www.qobuz.com\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn compressed_and_multipart_bodies_live() {
    if lab::skip_without_root("compressed_and_multipart_bodies_live") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let addr: SocketAddr = format!("{SERVER_V4}:80").parse().unwrap();
    let _http = HttpServer::start(&lab.server, &[addr]).expect("http");
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("breadth")));
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                &format!("{SERVER_V4}/32=qobuz"),
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    let gz = gzip(br#"{"email":"live.user@example.com","password":"gzSecret!42"}"#);
    let br = brotli(b"username=liveuser&password=brSecret%2142");
    let mp = b"--B\r\nContent-Disposition: form-data; name=\"last_name\"\r\n\r\nLovelace\r\n--B\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nada@example.com\r\n--B--\r\n";
    for req in [
        request(
            "/api.json/0.2/user/signup",
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            &gz,
        ),
        request(
            "/api.json/0.2/user/login",
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: br\r\n",
            &br,
        ),
        request(
            "/api.json/0.2/user/update",
            "Content-Type: multipart/form-data; boundary=B\r\n",
            mp,
        ),
    ] {
        let resp = exchange(&lab.client, addr, req).expect("request");
        assert!(resp.starts_with(b"HTTP/1.1 200"));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let kinds = loop {
        let ev: Vec<Value> = read::json_lines(&events);
        let k: std::collections::BTreeSet<(String, String)> = ev
            .iter()
            .filter(|e| e["event_type"] == "leak")
            .map(|e| {
                (
                    e["http"]["path"].as_str().unwrap_or("").to_owned(),
                    e["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if k.len() >= 6 || Instant::now() > deadline {
            common::assert_valid_events(&ev);
            break k;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (path, kind) in [
        ("/api.json/0.2/user/signup", "email"),
        ("/api.json/0.2/user/signup", "password"),
        ("/api.json/0.2/user/login", "username"),
        ("/api.json/0.2/user/login", "password"),
        ("/api.json/0.2/user/update", "person_name"),
        ("/api.json/0.2/user/update", "email"),
    ] {
        assert!(
            kinds.contains(&(path.to_owned(), kind.to_owned())),
            "{path} {kind}: {kinds:?}"
        );
    }
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(!text.contains("gzSecret") && !text.contains("brSecret"));
    let _ = std::fs::remove_file(events);
}
