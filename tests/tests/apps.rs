//! The app inventory and advisories end to end: `leakwatch replay --apps` on
//! a capture built here, and `leakwatch apps` against the live sensor in the
//! lab. Each app version shows its clients, leak kinds and cleartext share; a
//! TLS flow counts for the version its client used in cleartext; an advisory
//! raises `vulnerable_app` for the affected client only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    convo::Conversation,
    http::{RecordingServer, requests_on_one_connection},
    lab::{self, Lab, SERVER_V4},
    netns::unique,
    read,
    scenarios::MD5,
    tls,
};
use serde_json::Value;

mod common;

const ADVISORIES: &str = "[[advisories]]\nid = \"qobuz-ios-old\"\nservice = \"qobuz\"\napp = \"Qobuz\"\nplatform = \"iOS\"\nversions = \"<4.1.0\"\nreference = \"https://example.org/advisory\"\nadvice = \"upgrade the app\"\n";

const OLD_UA: &str = "Qobuz/4.0.3 (iPhone; iOS 12.1)";
const NEW_UA: &str = "Qobuz/6.2.0 (iPhone; iOS 17.2)";

fn login(ua: &str) -> String {
    format!(
        "GET /api.json/0.2/user/login?username=jane&password={MD5} HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: {ua}\r\n\r\n"
    )
}

fn browse(ua: &str) -> String {
    format!(
        "GET /api.json/0.2/catalog/search?query=bach HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: {ua}\r\n\r\n"
    )
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("apps"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The events at `path` are valid and hold one `vulnerable_app`: the old
/// version's client, with its advisory.
fn assert_one_vulnerable_app(path: &Path, client: &str) {
    let ev = read::json_lines(path);
    common::assert_valid_events(&ev);
    let vulnerable: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "vulnerable_app")
        .collect();
    assert_eq!(vulnerable.len(), 1, "{vulnerable:#?}");
    assert_eq!(vulnerable[0]["src_ip"], client);
    assert_eq!(vulnerable[0]["advisory"]["id"], "qobuz-ios-old");
    assert_eq!(vulnerable[0]["app"]["version"], "4.0.3");
}

fn row<'a>(rows: &'a [Value], app: &str, version: Option<&str>) -> &'a Value {
    rows.iter()
        .find(|r| r["app"] == app && r["version"].as_str() == version)
        .unwrap_or_else(|| panic!("no row for {app} {version:?}: {rows:#?}"))
}

/// Parses `replay --apps`'s table into rows of (app, version, clients,
/// cleartext flows, TLS flows, leak kinds, advisories).
fn table(text: &str) -> Vec<Value> {
    text.lines()
        .skip_while(|l| !l.starts_with("SERVICE"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            serde_json::json!({
                "service": w[0], "app": w[1],
                "version": (w[2] != "-").then_some(w[2]),
                "clients": w[4].parse::<u64>().unwrap(),
                "cleartext_flows": w[5].parse::<u64>().unwrap(),
                "tls_flows": w[6].parse::<u64>().unwrap(),
                "share": w[7], "leak_kinds": w[8], "advisories": w[9],
            })
        })
        .collect()
}

#[test]
fn replay_apps_shows_each_version_and_raises_advisories_for_affected_clients() {
    let d = dir();
    let advisories = d.join("advisories.toml");
    std::fs::write(&advisories, ADVISORIES).unwrap();
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Client .10 on the old version: a leaking login, then the same app over
    // TLS. Client .11 on the new version: browsing, no leak. Client .12:
    // TLS only, never seen in cleartext.
    let mut convos = Vec::new();
    let mut c = Conversation::new("192.0.2.10", 41000, "198.51.100.2", 80);
    c.client(login(OLD_UA).as_bytes()).server(ok).close();
    convos.push(c);
    let mut c = Conversation::new("192.0.2.10", 41001, "198.51.100.2", 443);
    c.client(&tls::client_hello("www.qobuz.com")).close();
    convos.push(c);
    let mut c = Conversation::new("192.0.2.11", 41002, "198.51.100.2", 80);
    c.client(browse(NEW_UA).as_bytes()).server(ok).close();
    convos.push(c);
    let mut c = Conversation::new("192.0.2.12", 41003, "198.51.100.2", 443);
    c.client(&tls::client_hello("www.qobuz.com")).close();
    convos.push(c);
    let pcap = d.join("apps.pcap");
    Conversation::write(&pcap, &convos.iter().collect::<Vec<_>>()).unwrap();
    let events = d.join("events.jsonl");
    let metrics = d.join("metrics.txt");
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&pcap)
        .args(["--watch", "198.51.100.2/32=qobuz", "--apps", "--advisories"])
        .arg(&advisories)
        .arg("--events")
        .arg(&events)
        .arg("--metrics-out")
        .arg(&metrics)
        .arg("--state-dir")
        .arg(d.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = table(&String::from_utf8_lossy(&out.stdout));
    let old = row(&rows, "Qobuz", Some("4.0.3"));
    assert_eq!(
        (
            old["clients"].as_u64(),
            old["cleartext_flows"].as_u64(),
            old["tls_flows"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{rows:#?}"
    );
    assert_eq!(old["share"], "50%");
    assert_eq!(old["leak_kinds"], "password_hash,username");
    assert_eq!(old["advisories"], "qobuz-ios-old");
    let new = row(&rows, "Qobuz", Some("6.2.0"));
    assert_eq!(
        (new["clients"].as_u64(), new["tls_flows"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        (new["leak_kinds"].as_str(), new["advisories"].as_str()),
        (Some("-"), Some("-"))
    );
    let un = row(&rows, "unattributed", None);
    assert_eq!(
        (un["clients"].as_u64(), un["tls_flows"].as_u64()),
        (Some(1), Some(1))
    );
    assert_one_vulnerable_app(&events, "192.0.2.10");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(r#"leakwatch_vulnerable_app_clients{service="qobuz",app="Qobuz",platform="iOS",version="4.0.3",advisory="qobuz-ios-old"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"leakwatch_app_clients{service="qobuz",app="Qobuz",platform="iOS",version="6.2.0"} 1"#
        ),
        "{text}"
    );
    // A bad advisories file is one clear line naming file and advisory.
    std::fs::write(&advisories, ADVISORIES.replace("<4.1.0", "<4.x")).unwrap();
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&pcap)
        .arg("--advisories")
        .arg(&advisories)
        .arg("--state-dir")
        .arg(d.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("advisory \"qobuz-ios-old\": versions"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(d);
}

fn apps_json(socket: &Path) -> Vec<Value> {
    let out = Command::new(lab::leakwatch_bin())
        .args(["apps", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn live_apps_over_the_control_socket() {
    if lab::skip_without_root("live_apps_over_the_control_socket") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let web: SocketAddr = format!("{SERVER_V4}:80").parse().unwrap();
    let web443: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let _server = RecordingServer::start(&lab.server, &[web, web443]).expect("server");
    let d = dir();
    let advisories = d.join("advisories.toml");
    std::fs::write(&advisories, ADVISORIES).unwrap();
    let events = d.join("events.jsonl");
    let metrics_addr = "127.0.0.1:9477";
    let _sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            metrics_addr,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--advisories",
                advisories.to_str().unwrap(),
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    let send = |ns, to, req| requests_on_one_connection(ns, to, vec![req]).unwrap();
    send(&lab.client, web, login(OLD_UA).into_bytes());
    send(&lab.client2, web, browse(NEW_UA).into_bytes());
    // The same client, then, over TLS: it counts for the version it used.
    send(&lab.client, web443, tls::client_hello("www.qobuz.com"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = apps_json(&lab.control_socket);
        let done = rows.iter().any(|r| {
            r["version"] == "4.0.3"
                && r["tls_flows"] == 1
                && r["leak_kinds"].as_array().is_some_and(|k| !k.is_empty())
        }) && rows.iter().any(|r| r["version"] == "6.2.0");
        if done || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let old = row(&rows, "Qobuz", Some("4.0.3"));
    assert_eq!(old["clients"], 1, "{rows:#?}");
    assert_eq!(
        (old["cleartext_flows"].as_u64(), old["tls_flows"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(old["cleartext_share"], 0.5);
    assert_eq!(
        old["leak_kinds"],
        serde_json::json!(["password_hash", "username"])
    );
    assert_eq!(old["advisories"], serde_json::json!(["qobuz-ios-old"]));
    assert_eq!(old["platform"], "iOS");
    let new = row(&rows, "Qobuz", Some("6.2.0"));
    assert_eq!(
        (
            new["clients"].as_u64(),
            new["leak_kinds"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );
    assert_one_vulnerable_app(&events, lab::CLIENT_V4);
    let exposition = lab.gateway_http_get(metrics_addr, "/metrics").unwrap();
    assert!(exposition.contains(r#"leakwatch_vulnerable_app_clients{service="qobuz",app="Qobuz",platform="iOS",version="4.0.3",advisory="qobuz-ios-old"} 1"#), "{exposition}");
    let _ = std::fs::remove_dir_all(d);
}
