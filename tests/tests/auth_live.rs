//! Authentication protocols live: FTP and IMAP logins on non-standard ports
//! cross the lab gateway and are reported by the sensor, with the server's
//! verdict, recognised by content alone. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::time::{Duration, Instant};

use leakwatch_tests::{
    dialogue::{LineServer, converse},
    lab::{self, Lab, SERVER_V4},
    netns::unique,
    read,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";

fn ftp(line: &str) -> String {
    let cmd = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
    match cmd.as_str() {
        "USER" => "331 Please specify the password.\r\n".into(),
        "PASS" => "230 Login successful.\r\n".into(),
        _ => "200 OK\r\n".into(),
    }
}

fn imap(line: &str) -> String {
    let tag = line.split(' ').next().unwrap_or("*");
    format!("{tag} OK done\r\n")
}

#[test]
fn ftp_and_imap_logins_on_odd_ports() {
    if lab::skip_without_root("ftp_and_imap_logins_on_odd_ports") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let events = std::env::temp_dir().join(format!("{}.jsonl", unique("auth")));
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
    let ftp_addr = format!("{SERVER_V4}:2121").parse().unwrap();
    let imap_addr = format!("{SERVER_V4}:1143").parse().unwrap();
    let _ftp =
        LineServer::start(&lab.server, ftp_addr, "220 (vsFTPd 3.0.3)\r\n", ftp).expect("ftp");
    let _imap =
        LineServer::start(&lab.server, imap_addr, "* OK IMAP4rev1 ready\r\n", imap).expect("imap");
    let r = converse(
        &lab.client,
        ftp_addr,
        &["USER jane", "PASS ftpSecret77", "QUIT"],
    )
    .expect("ftp login");
    assert!(r[1].starts_with("230"), "{r:?}");
    let r = converse(
        &lab.client,
        imap_addr,
        &["a1 LOGIN carol \"imap Secret 8\"", "a2 LOGOUT"],
    )
    .expect("imap login");
    assert!(r[0].starts_with("a1 OK"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let leaks = loop {
        let ev: Vec<Value> = read::json_lines(&events)
            .into_iter()
            .filter(|e| e["event_type"] == "leak")
            .collect();
        if ev.len() >= 4 || Instant::now() > deadline {
            break ev;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    common::assert_valid_events(&leaks);
    let mut got: Vec<(String, String, String, u64)> = leaks
        .iter()
        .map(|e| {
            (
                e["app_proto"].as_str().unwrap_or("-").to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap_or("-").to_owned(),
                e["dest_port"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("ftp", "password", "accepted", 2121),
        ("ftp", "username", "accepted", 2121),
        ("imap", "password", "accepted", 1143),
        ("imap", "username", "accepted", 1143),
    ]
    .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d));
    assert_eq!(got, want);
    // Redacted: the passwords never appear in full.
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(!text.contains("ftpSecret77") && !text.contains("imap Secret 8"));
    let metrics = lab.gateway_http_get(METRICS, "/metrics").expect("metrics");
    for p in ["ftp", "imap"] {
        assert_eq!(
            read::metric(
                &metrics,
                &format!("leakwatch_flows_total{{service=\"qobuz\",protocol=\"{p}\"}}")
            ),
            Some(1),
            "{p}"
        );
    }
    let _ = std::fs::remove_file(events);
}
