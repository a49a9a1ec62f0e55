//! `leakwatch replay` on real public captures (tests/data/README.md): the
//! offline pipeline reports what a correct sensor reports on each. No
//! privileges needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

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
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab_dvwa\",transport=\"cleartext\"}"
        ) == 2,
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
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab\",transport=\"cleartext\"}"
        ) == 2,
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
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab_google\",transport=\"tls\"}"
        ) == 1,
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
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab_apple\",transport=\"tls\"}"
        ) == 1,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab_apple\",transport=\"cleartext\"}"
        ) != 1
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

/// Findings as (kind, rule, field name) for compact assertions.
fn found(ev: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = ev
        .iter()
        .filter(|e| e["event_type"] == "leak")
        .map(|e| {
            let name = e["evidence"]
                .as_str()
                .unwrap()
                .split('=')
                .next()
                .unwrap()
                .to_owned();
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["rule"].as_str().unwrap().to_owned(),
                name,
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn metric(text: &str, series: &str) -> u64 {
    read::metric(text, series).unwrap_or(0)
}

#[test]
fn form_login_on_a_non_standard_port() {
    let (ev, _) = replay(
        "csl_http-post-auth.pcap",
        &["--watch", "192.168.56.101/32=lab"],
    );
    assert_eq!(
        found(&ev),
        [
            ("password".into(), "password_param".into(), "pass".into()),
            ("username".into(), "username_param".into(), "user".into())
        ]
    );
    assert_eq!(
        ev.iter().find(|e| e["event_type"] == "leak").unwrap()["dest_port"],
        1337
    );
}

#[test]
fn dvwa_login_and_session_cookie_without_the_lookalikes() {
    let (ev, metrics) = replay(
        "sanders_http_dvwa_clearlogin.pcapng",
        &["--watch", "10.2.2.104/32=lab"],
    );
    let f = found(&ev);
    assert_eq!(
        f,
        [
            (
                "auth_token".into(),
                "auth_token_param".into(),
                "phpsessid".into()
            ),
            (
                "password".into(),
                "password_param".into(),
                "password".into()
            ),
            (
                "username".into(),
                "username_param".into(),
                "username".into()
            )
        ],
        "no `login=Login` (a submit button), no `user_token` (anti-CSRF)"
    );
    // The session cookie once per flow: two flows carry it.
    assert_eq!(
        ev.iter()
            .filter(|e| e["event_type"] == "leak" && e["kind"] == "auth_token")
            .count(),
        2
    );
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab\",transport=\"cleartext\"}"
        ),
        2
    );
}

#[test]
fn url_encoded_email_on_bsd_loopback() {
    let (ev, _) = replay(
        "sv_http-urldecode-body.pcap",
        &["--watch", "127.0.0.1/32=lab", "--watch", "::1/128=lab"],
    );
    assert_eq!(
        leaks(&ev),
        [("email".into(), "mail=te…et (13 chars)".into())]
    );
}

#[test]
fn json_login_without_content_type_over_ipv6_loopback() {
    let (ev, _) = replay("sv_http-post-file.pcap", &["--watch", "::1/128=lab"]);
    let f = found(&ev);
    for want in [
        ("password", "password_param", "password"),
        // The response's `Token:` header: a header named for a token.
        ("auth_token", "auth_token_header", "token"),
        ("email", "email_value", "email"),
        // `login_id` in the request; the response's `username` is the same value.
        ("username", "username_param", "login_id"),
    ] {
        assert!(
            f.contains(&(want.0.into(), want.1.into(), want.2.into())),
            "{want:?} in {f:?}"
        );
    }
    // The BEARER header carries the token the response's Token header did:
    // the same value in the same flow is one finding.
    assert_eq!(
        ev.iter()
            .filter(|e| e["event_type"] == "leak" && e["kind"] == "auth_token")
            .count(),
        1
    );
    assert!(ev.iter().all(|e| e["dest_ip"] == "::1"));
}

#[test]
fn mid_stream_http_and_tls_are_told_apart_and_oriented() {
    let (ev, metrics) = replay(
        "sv_mqtt-events-missing-connect.pcap",
        &["--watch", "127.0.0.1/32=lab", "--watch", "::1/128=lab"],
    );
    assert_eq!(
        found(&ev),
        [
            (
                "password".into(),
                "http_basic_auth".into(),
                "authorization".into()
            ),
            (
                "username".into(),
                "http_basic_auth".into(),
                "authorization".into()
            )
        ]
    );
    // The client is the side that sent the request line, whatever the ports say.
    for e in ev.iter().filter(|e| e["event_type"] == "leak") {
        assert_eq!(
            (&e["src_port"], &e["dest_port"]),
            (&39976.into(), &64000.into())
        );
        assert_eq!(e["direction"], "to_server");
    }
    // Port 64001: application data only, no handshake: still TLS.
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab\",transport=\"tls\"}"
        ),
        1
    );
}

#[test]
fn a_cname_chain_teaches_spotifys_cdn_address() {
    let (ev, metrics) = replay("ndpi_punycode-idn.pcap", &[]);
    assert!(leaks(&ev).is_empty());
    // i.scdn.co → scdnco.spotify.map.fastly.net → 146.75.62.248; the NXDOMAIN
    // for the IDN name teaches nothing.
    assert_eq!(
        metric(&metrics, "leakwatch_dns_answers_total{result=\"learned\"}"),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_dns_answers_total{result=\"unrelated\"}"
        ),
        1
    );
}

#[test]
fn ipv6_fragments_are_counted_and_skipped() {
    let (ev, metrics) = replay("zeek_ipv6-fragmented-dns.pcap", &[]);
    assert!(ev.is_empty());
    // The orphan last fragment and the response's later fragments.
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_xdp_packets_total{interface=\"pcap\",reason=\"ipv6_fragment\"}"
        ),
        3
    );
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_dns_answers_total{result=\"unrelated\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_dns_answers_total{result=\"truncated\"}"
        ),
        1,
        "the first fragment alone is a cut answer"
    );
}

#[test]
fn vlan_mpls_and_an_html_contact_address() {
    let (ev, metrics) = replay("zeek_mixed-vlan-mpls.pcap", &["--watch", "0.0.0.0/0=lab"]);
    // Telnet over MPLS, HTTP plain and over VLAN 4093.
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab\",transport=\"cleartext\"}"
        ),
        3
    );
    assert!(
        leaks(&ev).is_empty(),
        "a contact address in a web page is no leak: {ev:?}"
    );
}

#[test]
fn token_in_a_url_and_headers_after_the_blank_line() {
    let (ev, _) = replay("ndpi_zattoo.pcap", &["--watch", "0.0.0.0/0=lab"]);
    let f = found(&ev);
    assert!(f.contains(&(
        "auth_token".into(),
        "auth_token_param".into(),
        "primarytoken".into()
    )));
    assert!(f.contains(&(
        "auth_token".into(),
        "auth_token_header".into(),
        "x-akamai-streaming-sessiontoken".into()
    )));
}

#[test]
fn device_ids_of_an_ad_heavy_app_without_the_traps() {
    let (ev, metrics) = replay("ndpi_1kxun.pcap", &["--watch", "0.0.0.0/0=lab"]);
    let f = found(&ev);
    for name in ["android_id", "udid", "gaid", "model"] {
        assert!(
            f.iter().any(|(k, _, n)| k == "device_info" && n == name),
            "{name} in {f:?}"
        );
    }
    // `access_token=` empty or `null`, `imei=1`: placeholders, not leaks.
    assert!(!f.iter().any(|(_, _, n)| n == "access_token" || n == "imei"));
    // 409 bad checksums: nothing is dropped for them.
    assert!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"lab\",transport=\"cleartext\"}"
        ) >= 86
    );
}

#[test]
fn progress_and_summary_on_request() {
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(data("ndpi_zattoo.pcap"))
        .arg(data("csl_http-post-auth.pcap"))
        .args(["--watch", "0.0.0.0/0=lab", "--progress", "always"])
        .args([
            "--state-dir",
            std::env::temp_dir().join(unique("st")).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains('%') && err.contains("file 1/2"), "{err}");
    assert!(err.contains("from 2 files"), "{err}");
    for section in ["flows", "findings", "replays"] {
        assert!(err.contains(&format!("  {section}")), "{err}");
    }
}

#[test]
fn not_a_capture_names_the_file() {
    let bad = std::env::temp_dir().join(format!("{}.pcap", unique("bad")));
    std::fs::write(&bad, b"this is not a capture at all, just text\n").unwrap();
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&bad)
        .args([
            "--state-dir",
            std::env::temp_dir().join(unique("st")).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("not a pcap or pcapng file"),
        "{err}"
    );
}

/// The lab's own recording (`cargo xtask lab record`): replay reports what the
/// live sensor reports for the same session, learning every address from the
/// DNS answers in the capture.
#[test]
fn the_lab_session_replays_to_the_live_findings() {
    use leakwatch_tests::scenarios;
    let (ev, metrics) = replay("lab_streaming-session.pcap", &[]);
    let mut got = std::collections::BTreeMap::new();
    for e in ev.iter().filter(|e| e["event_type"] == "leak") {
        *got.entry((
            e["service"].as_str().unwrap().to_owned(),
            e["kind"].as_str().unwrap().to_owned(),
        ))
        .or_insert(0u64) += 1;
    }
    assert_eq!(got, scenarios::expected_findings(&scenarios::session()));
    // The login over TLS is a TLS flow, with nothing found in it.
    assert_eq!(
        metric(
            &metrics,
            "leakwatch_flows_total{service=\"qobuz\",transport=\"tls\"}"
        ),
        1
    );
    // The VLAN client's frames carry their tag; the token it reuses is a replay.
    let replay = ev
        .iter()
        .find(|e| e["event_type"] == "replay" && e["kind"] == "auth_token")
        .expect("a replay event");
    assert_eq!(replay["src_ip"], "203.0.113.10");
    assert_eq!(replay["replay"]["first_client_ip"], "192.0.2.10");
    // A dual-stack client is two addresses: its IPv6 login replays its IPv4 one.
    assert!(ev.iter().any(|e| e["event_type"] == "replay"
        && e["kind"] == "password_hash"
        && e["src_ip"] == "2001:db8:c::10"));
    assert!(!ev.iter().any(|e| e["dest_ip"] == "198.51.100.3"));
}

/// `replay` reads the config keys `run` reads: a one-second replay window from
/// the file forgets the first client before the second one sends its token
/// (more than a second later in this capture), so no replay is reported.
#[test]
fn the_config_replay_window_applies_to_replay() {
    let dir = std::env::temp_dir().join(unique("window"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("leakwatch.toml");
    std::fs::write(&config, "replay_window_secs = 1\n").unwrap();
    let (ev, _) = replay("lab_streaming-session.pcap", &[]);
    assert!(ev.iter().any(|e| e["event_type"] == "replay"));
    let (ev, metrics) = replay(
        "lab_streaming-session.pcap",
        &["--config", config.to_str().unwrap()],
    );
    assert!(
        !ev.iter().any(|e| e["event_type"] == "replay"),
        "{:?}",
        ev.iter()
            .filter(|e| e["event_type"] == "replay")
            .collect::<Vec<_>>()
    );
    // The leaks themselves are all still there.
    assert!(ev.iter().filter(|e| e["event_type"] == "leak").count() >= 8);
    // And the flag overrides the file.
    let (ev, _) = replay(
        "lab_streaming-session.pcap",
        &[
            "--config",
            config.to_str().unwrap(),
            "--replay-window",
            "3600",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ev.iter().any(|e| e["event_type"] == "replay"));
    assert!(metrics.contains("leakwatch_replays_total{service=\"qobuz\"} 0"));
}

/// `replay --block MODE` reports what the mode would have blocked, as
/// `would_block` events, and blocks nothing.
#[test]
fn replay_block_reports_what_each_mode_would_have_blocked() {
    let (ev, _) = replay("lab_streaming-session.pcap", &[]);
    assert!(
        !ev.iter()
            .any(|e| e["event_type"] == "would_block" || e["event_type"] == "block"),
        "monitor by default"
    );
    let trigger = |e: &Value| {
        e["event_type"] == "leak"
            && e["direction"] == "to_server"
            && ["password", "password_hash", "auth_token"].contains(&e["kind"].as_str().unwrap())
            && ["high", "critical"].contains(&e["severity"].as_str().unwrap())
    };
    let (ev, metrics) = replay("lab_streaming-session.pcap", &["--block", "reset"]);
    assert!(
        !ev.iter().any(|e| e["event_type"] == "block"),
        "replay never blocks"
    );
    let would: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "would_block")
        .collect();
    // One decision per flow with a trigger finding from its client.
    let mut flows: Vec<u64> = ev
        .iter()
        .filter(|e| trigger(e))
        .map(|e| e["flow_id"].as_u64().unwrap())
        .collect();
    flows.sort_unstable();
    flows.dedup();
    assert_eq!(would.len(), flows.len(), "{would:#?}");
    for w in &would {
        assert_eq!(w["block"]["mode"], "reset");
        assert_eq!(w["block"]["reason"], "finding");
        assert_eq!(w["block"]["scope"], "flow");
        assert!(w["block"]["expires"].is_string());
        assert!(flows.contains(&w["flow_id"].as_u64().unwrap()));
        assert!(w.get("evidence").is_none(), "no evidence in block events");
    }
    assert_eq!(
        read::metric(
            &metrics,
            "leakwatch_would_block_total{service=\"qobuz\",reason=\"finding\",mode=\"reset\"}"
        ),
        Some(would.iter().filter(|w| w["service"] == "qobuz").count() as u64)
    );
    // quarantine: the flows, and each (client, service) pair once.
    let (ev, _) = replay("lab_streaming-session.pcap", &["--block", "quarantine"]);
    let q: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "would_block" && e["block"]["scope"] == "quarantine")
        .collect();
    let mut pairs: Vec<(String, String)> = q
        .iter()
        .map(|e| (e["src_ip"].to_string(), e["service"].to_string()))
        .collect();
    let n = pairs.len();
    pairs.sort();
    pairs.dedup();
    assert!(n > 0 && pairs.len() == n, "{q:#?}");
    // block-cleartext: every cleartext flow to a service, refused at its first
    // payload (the capture interleaves lan and wan: a SYN+ACK may come first);
    // nothing was really refused, so no leak says it was blocked.
    let (ev, _) = replay(
        "lab_streaming-session.pcap",
        &["--block", "block-cleartext"],
    );
    let refused: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "would_block" && e["block"]["reason"] == "cleartext")
        .collect();
    assert_eq!(refused.len(), 10, "{refused:#?}");
    assert!(refused.iter().all(|e| e["dest_port"] == 80
        && e["block"]["mode"] == "block-cleartext"
        && e["block"].get("expires").is_none()));
    assert!(!ev.iter().any(|e| e.get("blocked").is_some()));
    assert!(
        !ev.iter()
            .any(|e| e["event_type"] == "would_block" && e["block"]["reason"] == "finding"),
        "a refused flow is not blocked again"
    );
}
