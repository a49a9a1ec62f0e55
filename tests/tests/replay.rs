//! `leakwatch replay` on real public captures (tests/data/README.md): the
//! offline pipeline reports what a correct sensor reports on each. No
//! privileges needed.

use std::{path::PathBuf, process::Command};

use leakwatch_tests::{lab, netns::unique, read};
use serde_json::Value;

mod common;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Replays `file` with `args`; returns (events, metrics exposition).
fn replay(file: &str, args: &[&str]) -> (Vec<Value>, String) {
    let dir = std::env::temp_dir().join(unique("replay"));
    std::fs::create_dir_all(&dir).unwrap();
    let (events, metrics) = (dir.join("events.jsonl"), dir.join("metrics.txt"));
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(data(file))
        .args([
            "--events",
            events.to_str().unwrap(),
            "--metrics-out",
            metrics.to_str().unwrap(),
        ])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(args)
        .output()
        .expect("run leakwatch replay");
    assert!(
        out.status.success(),
        "replay {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (ev, text)
}

fn leaks(ev: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ev
        .iter()
        .filter(|e| e["event_type"] == "leak")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["evidence"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn credential_in_a_url_query() {
    let (ev, metrics) = replay(
        "csl_http-get-auth.pcap",
        &["--watch", "192.168.56.101/32=lab_dvwa"],
    );
    assert_eq!(
        leaks(&ev),
        [
            ("password".into(), "password=qw…34 (10 chars)".into()),
            ("username".into(), "login=… (5 chars)".into())
        ]
    );
    assert!(
        metrics.contains("leakwatch_flows_total{service=\"lab_dvwa\",transport=\"cleartext\"} 2"),
        "{metrics}"
    );
    // Deterministic: the same input gives the same events.
    let (again, _) = replay(
        "csl_http-get-auth.pcap",
        &["--watch", "192.168.56.101/32=lab_dvwa"],
    );
    assert_eq!(leaks(&again), leaks(&ev));
    assert_eq!(
        again
            .iter()
            .map(|e| e["timestamp"].clone())
            .collect::<Vec<_>>(),
        ev.iter()
            .map(|e| e["timestamp"].clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn basic_auth_with_a_colon_on_a_raw_ip_capture() {
    let (ev, _) = replay(
        "zeek_http_basic-auth-with-colon.pcap",
        &["--watch", "172.24.133.205/32=lab"],
    );
    // User `test` (4 characters), password `1:34` (4 characters: split at the first colon).
    assert_eq!(
        leaks(&ev),
        [
            ("password".into(), "authorization=… (4 chars)".into()),
            ("username".into(), "authorization=… (4 chars)".into())
        ]
    );
    assert_eq!(
        ev.iter().find(|e| e["event_type"] == "leak").unwrap()["timestamp"],
        "2024-08-28T07:56:29.595812Z"
    );
}

#[test]
fn no_leak_in_plain_ipv4_and_ipv6_requests() {
    let (ev, metrics) = replay(
        "sanders_http_ip4and6.pcapng",
        &[
            "--watch",
            "172.16.16.139/32=lab",
            "--watch",
            "2001:db8:1:2::1000/128=lab",
        ],
    );
    assert!(leaks(&ev).is_empty(), "{ev:?}");
    assert_eq!(
        ev.iter()
            .filter(|e| e["event_type"] == "cleartext_flow")
            .count(),
        2
    );
    assert!(ev.iter().any(|e| e["dest_ip"] == "2001:db8:1:2::1000"));
    assert!(
        metrics.contains("leakwatch_flows_total{service=\"lab\",transport=\"cleartext\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_client_hello_over_three_segments_teaches_its_sni() {
    let config = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &config,
        "[[services]]\nid = \"lab_google\"\ndomains = [\"google.com\"]\n",
    )
    .unwrap();
    let (ev, metrics) = replay(
        "sv_tls-client-hello-frag-01.pcap",
        &["--config", config.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(config);
    assert!(leaks(&ev).is_empty());
    assert!(
        metrics.contains("leakwatch_probes_total{result=\"incomplete\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leakwatch_probes_total{result=\"sni\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leakwatch_flows_total{service=\"lab_google\",transport=\"tls\"} 1"),
        "{metrics}"
    );
}

#[test]
fn pppoe_over_qinq() {
    let config = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &config,
        "[[services]]\nid = \"lab_apple\"\ndomains = [\"xp.apple.com\"]\n",
    )
    .unwrap();
    let (ev, metrics) = replay(
        "zeek_pppoe-over-qinq.pcap",
        &["--config", config.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(config);
    assert!(leaks(&ev).is_empty());
    // Parsed through both VLAN tags and PPPoE: the SNI is learned, the flow is TLS.
    assert!(
        metrics.contains("leakwatch_probes_total{result=\"sni\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leakwatch_flows_total{service=\"lab_apple\",transport=\"tls\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("leakwatch_flows_total{service=\"lab_apple\",transport=\"cleartext\"} 1")
    );
}

#[test]
fn a_damaged_capture_names_the_file_and_keeps_what_was_read() {
    let src = std::fs::read(data("csl_http-get-auth.pcap")).unwrap();
    let cut = std::env::temp_dir().join(format!("{}.pcap", unique("cut")));
    // Cut inside the last packet: every earlier one is still read.
    std::fs::write(&cut, &src[..src.len() - 10]).unwrap();
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&cut)
        .args([
            "--watch",
            "192.168.56.101/32=lab_dvwa",
            "--state-dir",
            std::env::temp_dir().join(unique("st")).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_file(&cut);
    assert!(!out.status.success());
    // Where packet 32 starts: the 24-byte file header, then 16 bytes and the
    // captured bytes per packet (little-endian pcap).
    let mut at = 24;
    for _ in 0..31 {
        let caplen = u32::from_le_bytes(src[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    assert!(
        err.contains(&cut.display().to_string())
            && err.contains(&format!("damaged at byte {at} (after packet 31)")),
        "{err}"
    );
    assert!(
        err.contains("replayed 31 packets") && err.contains(" password "),
        "what was read is reported: {err}"
    );
}
