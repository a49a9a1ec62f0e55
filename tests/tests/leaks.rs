//! Leak detection end to end: real XDP on the gateway, real TCP from the client,
//! the real matcher. Qobuz-style leaks are found (metrics and events, evidence
//! redacted), the same secrets to an unwatched host are not, and a leak split
//! over many small TCP segments (client MSS clamped) is found once. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{net::SocketAddr, time::Duration};

use leakwatch_tests::{
    http::{HttpServer, exchange},
    lab::{self, Lab, OTHER_V4, SERVER_V4},
    netns::unique,
    read,
    wait::wait_for,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";
const MD5: &str = "5f4dcc3b5aa765d61d8327deb882cf99";
const TOKEN: &str = "QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf";

fn login_to(host: &str) -> Vec<u8> {
    format!(
        "GET /api.json/0.2/user/login?email=jane.doe%40example.com&password={MD5}&app_id=950096963 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Qobuz/6.1 (iPhone; iOS 17.2)\r\n\r\n"
    )
    .into_bytes()
}

fn api_call_to(host: &str) -> Vec<u8> {
    format!(
        "GET /api.json/0.2/favorite/getUserFavorites?user_auth_token={TOKEN} HTTP/1.1\r\nHost: {host}\r\nX-User-Auth-Token: {TOKEN}\r\n\r\n"
    )
    .into_bytes()
}

fn login() -> Vec<u8> {
    login_to("www.qobuz.com")
}

fn findings(lab: &Lab, kind: &str) -> u64 {
    let text = lab.gateway_http_get(METRICS, "/metrics").expect("metrics");
    ["critical", "high", "medium", "low"]
        .iter()
        .filter_map(|sev| read::metric(&text, &format!("leakwatch_findings_total{{service=\"qobuz\",kind=\"{kind}\",severity=\"{sev}\"}}")))
        .sum()
}

#[test]
fn qobuz_style_leaks_are_found_and_redacted() {
    if leakwatch_tests::lab::skip_without_root("qobuz_style_leaks_are_found_and_redacted") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let _http = HttpServer::start(
        &lab.server,
        &[format!("{SERVER_V4}:80"), format!("{OTHER_V4}:80")]
            .map(|a| a.parse::<SocketAddr>().unwrap()),
    )
    .expect("http");
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("leaks")));
    let sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");

    for req in [login(), api_call_to("www.qobuz.com")] {
        let resp = exchange(&lab.client, format!("{SERVER_V4}:80").parse().unwrap(), req)
            .expect("request");
        assert!(resp.starts_with(b"HTTP/1.1 200"));
    }
    wait_for("the leaks", Duration::from_secs(10), || {
        findings(&lab, "password_hash") == 1
            && findings(&lab, "email") == 1
            && findings(&lab, "auth_token") >= 1
    });
    // The token travels in a parameter and in a header of the same flow: the
    // same value is one finding.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(findings(&lab, "auth_token"), 1);

    // The same secrets to an unwatched host (whose Host header names no service,
    // so the probe does not learn it either): nothing.
    for req in [login_to("www.example.org"), api_call_to("www.example.org")] {
        exchange(&lab.client, format!("{OTHER_V4}:80").parse().unwrap(), req).expect("request");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(findings(&lab, "password_hash"), 1);

    let ev: Vec<Value> = read::json_lines(&events);
    common::assert_valid_events(&ev);
    let leaks: Vec<&Value> = ev.iter().filter(|e| e["event_type"] == "leak").collect();
    assert_eq!(leaks.len(), 3, "{ev:?}");
    assert!(leaks.iter().all(|e| e["service"] == "qobuz"
        && e["dest_ip"] == SERVER_V4
        && e["src_ip"] == "192.0.2.10"));
    let hash = leaks.iter().find(|e| e["kind"] == "password_hash").unwrap();
    assert_eq!(hash["evidence"], "password=5f…99 (32 chars)");
    assert_eq!(hash["http"]["path"], "/api.json/0.2/user/login");
    assert_eq!(hash["http"]["hostname"], "www.qobuz.com");
    assert_eq!(hash["interface"], "lan0");
    assert_eq!(
        (
            hash["app"]["name"].as_str(),
            hash["app"]["platform"].as_str()
        ),
        (Some("Qobuz"), Some("iOS"))
    );
    assert_eq!(hash["fingerprint"].as_str().map(str::len), Some(32));
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(
        !text.contains(MD5) && !text.contains(TOKEN) && !text.contains("jane.doe@"),
        "a secret in full in the events"
    );

    // logrotate: move the file away, SIGHUP, and new events go to a new file.
    let rotated = events.with_extension("jsonl.1");
    std::fs::rename(&events, &rotated).unwrap();
    sensor.signal(libc::SIGHUP);
    wait_for(
        "the events file to be reopened",
        Duration::from_secs(10),
        || events.exists(),
    );
    exchange(
        &lab.client,
        format!("{SERVER_V4}:80").parse().unwrap(),
        login(),
    )
    .expect("request");
    wait_for(
        "a leak event in the new file",
        Duration::from_secs(10),
        || {
            read::json_lines(&events)
                .iter()
                .any(|e| e["event_type"] == "leak")
        },
    );
    assert_eq!(
        read::json_lines(&rotated).len(),
        ev.len(),
        "nothing more went to the rotated file"
    );
    common::assert_valid_events(&read::json_lines(&events));
    let _ = std::fs::remove_file(events);
    let _ = std::fs::remove_file(rotated);
}

#[test]
fn a_leak_split_over_many_small_segments_is_found_once() {
    if leakwatch_tests::lab::skip_without_root(
        "a_leak_split_over_many_small_segments_is_found_once",
    ) {
        return;
    }
    let lab = Lab::up().expect("lab");
    // The server advertises a tiny MSS: the client's request crosses the gateway
    // in segments of a few dozen bytes.
    lab.server
        .ip(&[
            "route",
            "change",
            "default",
            "via",
            lab::GW_WAN_V4,
            "advmss",
            "40",
        ])
        .expect("route");
    let _http = HttpServer::start(&lab.server, &[format!("{SERVER_V4}:80").parse().unwrap()])
        .expect("http");
    let dump = std::env::temp_dir().join(format!("{}.jsonl", unique("segs")));
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--dump-records",
                dump.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    let resp = exchange(
        &lab.client,
        format!("{SERVER_V4}:80").parse().unwrap(),
        login(),
    )
    .expect("request");
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    wait_for("the leak", Duration::from_secs(10), || {
        findings(&lab, "password_hash") == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(findings(&lab, "password_hash"), 1);
    let segments = read::json_lines(&dump)
        .iter()
        .filter(|r| r["kind"] == "sample" && r["dest_ip"] == SERVER_V4)
        .count();
    // Several, not a fixed number: the client's stack may hand veth a GSO
    // packet of several MSS-sized segments as one frame (autocorking merges
    // more under load; 3 frames were seen on a busy machine).
    assert!(
        segments >= 2,
        "the request should cross in several segments, saw {segments}"
    );
    let _ = std::fs::remove_file(dump);
}
