//! SIGHUP reloads the config without losing state: the watched services
//! change while an open flow keeps being matched, and a broken config is
//! reported and changes nothing. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use leakwatch_tests::{
    http::RecordingServer,
    lab::{self, Lab, OTHER_V4, SERVER_V4},
    netns::unique,
    read,
    wait::wait_for,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";

fn connect(lab: &Lab, to: SocketAddr) -> TcpStream {
    let s = lab
        .client
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn ask(s: &mut TcpStream, req: &str) {
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while !out.ends_with(b"\r\n\r\nok") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed");
        out.extend_from_slice(&buf[..n]);
    }
}

fn metric(lab: &Lab, series: &str) -> u64 {
    let text = lab.gateway_http_get(METRICS, "/metrics").unwrap();
    read::metric(&text, series).unwrap_or_else(|| panic!("{series} not exposed"))
}

fn token_leaks(events: &std::path::Path, host: &str) -> usize {
    read::json_lines(events)
        .iter()
        .filter(|e: &&Value| {
            e["event_type"] == "leak" && e["kind"] == "auth_token" && e["dest_ip"] == host
        })
        .count()
}

const CONFIG: &str = "[[services]]\nid = \"qobuz\"\ncidrs = [\"198.51.100.2/32\"]\n";

fn leak(token: &str) -> String {
    format!(
        "GET /api.json/0.2/favorite/getUserFavorites?user_auth_token={token} HTTP/1.1\r\nHost: a.example\r\n\r\n"
    )
}

#[test]
fn sighup_reloads_services_and_keeps_open_flows() {
    if lab::skip_without_root("sighup_reloads_services_and_keeps_open_flows") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let (srv, other) = (
        format!("{SERVER_V4}:80").parse().unwrap(),
        format!("{OTHER_V4}:80").parse().unwrap(),
    );
    let _servers = RecordingServer::start(&lab.server, &[srv, other]).expect("servers");
    let dir = std::env::temp_dir().join(unique("reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, events) = (dir.join("leakwatch.toml"), dir.join("events.jsonl"));
    std::fs::write(&config, CONFIG).unwrap();
    let sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--config",
                config.to_str().unwrap(),
                "--events",
                events.to_str().unwrap(),
            ],
        )
        .expect("sensor");
    let statics = "leakwatch_watched_addresses{family=\"ipv4\",source=\"static\"}";
    let before = metric(&lab, statics);
    let hash = |lab: &Lab| {
        let text = lab.gateway_http_get(METRICS, "/metrics").unwrap();
        text.lines()
            .find(|l| l.starts_with("leakwatch_config_info{"))
            .unwrap()
            .to_owned()
    };
    let hash0 = hash(&lab);
    // A flow opens to the watched service before the reload.
    let mut open = connect(&lab, srv);
    ask(&mut open, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");

    // The admin adds a service on the other address, and reloads.
    std::fs::write(
        &config,
        format!("{CONFIG}\n[[services]]\nid = \"internal_radio\"\ncidrs = [\"{OTHER_V4}/32\"]\n"),
    )
    .unwrap();
    sensor.signal(libc::SIGHUP);
    wait_for("the new static prefix", Duration::from_secs(15), || {
        metric(&lab, statics) == before + 1
    });
    assert_eq!(
        metric(&lab, "leakwatch_config_reload_total{result=\"ok\"}"),
        1
    );
    assert_ne!(hash(&lab), hash0, "leakwatch_config_info follows the file");
    // The new service's series exist at 0 for alerts, as at start.
    assert_eq!(
        metric(
            &lab,
            "leakwatch_findings_total{service=\"internal_radio\",kind=\"email\"}"
        ),
        0
    );

    // The open flow is still matched, and the new service's traffic is too.
    ask(&mut open, &leak("QkX3u9rVb0dY7nWq2LpZsT5hGmJc8aEf"));
    let mut fresh = connect(&lab, other);
    ask(&mut fresh, &leak("Zr2Tn5Kv8Hm3Jd6Fs1Gb4Yc0PLx7Qw9a"));
    wait_for("both findings", Duration::from_secs(15), || {
        token_leaks(&events, SERVER_V4) == 1 && token_leaks(&events, OTHER_V4) == 1
    });
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    assert!(ev.iter().any(|e| e["service"] == "internal_radio"));

    // A broken config: reported, counted, and nothing changes.
    std::fs::write(
        &config,
        "[[services]]\nid = \"x\"\ncidrs = [\"not a prefix\"]\n",
    )
    .unwrap();
    sensor.signal(libc::SIGHUP);
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(15),
        || metric(&lab, "leakwatch_config_reload_total{result=\"error\"}") == 1,
    );
    assert_eq!(
        metric(&lab, statics),
        before + 1,
        "the running config stays"
    );
    let mut again = connect(&lab, other);
    ask(&mut again, &leak("Hm3Jd6Fs1Gb4Yc0PLx7Qw9aZr2Tn5Kv8"));
    wait_for(
        "the still-watched service's finding",
        Duration::from_secs(15),
        || token_leaks(&events, OTHER_V4) == 2,
    );
    drop(sensor);
    let _ = std::fs::remove_dir_all(dir);
}

/// Learned addresses survive a restart: written at exit, read back at start.
#[test]
fn a_restart_keeps_learned_addresses() {
    if lab::skip_without_root("a_restart_keeps_learned_addresses") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let other: SocketAddr = format!("{OTHER_V4}:80").parse().unwrap();
    let _server = RecordingServer::start(&lab.server, &[other]).expect("server");
    let learned = "leakwatch_watched_addresses{family=\"ipv4\",source=\"host\"}";
    let mut sensor = lab
        .start_sensor(&lab::leakwatch_bin(), METRICS, &[])
        .expect("sensor");
    assert_eq!(metric(&lab, learned), 0);
    // A new flow names a Qobuz host: its address is learned from the probe.
    let mut s = connect(&lab, other);
    ask(&mut s, "GET / HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n");
    wait_for(
        "the address learned from Host",
        Duration::from_secs(15),
        || metric(&lab, learned) == 1,
    );
    sensor.signal(libc::SIGTERM);
    assert!(
        sensor
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
    let file = lab.state_dir.join("learned.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(OTHER_V4) && text.contains("qobuz"), "{text}");
    // With the name it was learned from: its policy bits come back with it.
    assert!(text.contains(r#""names":["www.qobuz.com"]"#), "{text}");
    // The next start watches it at once.
    let _again = lab
        .start_sensor(&lab::leakwatch_bin(), METRICS, &[])
        .expect("sensor again");
    assert_eq!(metric(&lab, learned), 1);
}
