//! The corpus contract (shared/corpus/MANIFEST.md, as the HTTP-breadth issue
//! tables it): every capture replayed watching every address; each "must" kind
//! appears as a `leak` event, no "never" kind does, and a negative control
//! reports no leak at all. One test per row. No privileges needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use leakwatch_tests::{lab, netns::unique, read};

mod common;

/// Leak kinds `leakwatch replay` reports for `file` (in tests/data).
fn kinds(file: &str) -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(file);
    let dir = std::env::temp_dir().join(unique("contract"));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(&path)
        .args(["--watch", "0.0.0.0/0=any", "--watch", "::/0=any"])
        .args(["--events", events.to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--progress", "never"])
        .output()
        .expect("run leakwatch replay");
    assert!(
        out.status.success(),
        "replay {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    let _ = std::fs::remove_dir_all(dir);
    ev.iter()
        .filter(|e| e["event_type"] == "leak")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// One row: `must` kinds found, `never` kinds not.
fn row(file: &str, must: &[&str], never: &[&str]) {
    let k = kinds(file);
    for m in must {
        assert!(k.contains(*m), "{file}: must report {m}; reported {k:?}");
    }
    for n in never {
        assert!(
            !k.contains(*n),
            "{file}: must not report {n}; reported {k:?}"
        );
    }
}

/// A negative control: no leak at all.
fn silent(file: &str) {
    let k = kinds(file);
    assert!(k.is_empty(), "{file}: a negative control reported {k:?}");
}

const USER_PASS: &[&str] = &["username", "password"];

#[test]
fn csl_http_basic_auth() {
    row("csl_http-basic-auth.pcap", USER_PASS, &[]);
}

#[test]
fn csl_http_post_auth() {
    row("csl_http-post-auth.pcap", USER_PASS, &[]);
}

#[test]
fn csl_http_get_auth() {
    row("csl_http-get-auth.pcap", USER_PASS, &[]);
}

#[test]
fn zeek_http_basic_auth_with_colon() {
    row("zeek_http_basic-auth-with-colon.pcap", USER_PASS, &[]);
}

#[test]
fn sv_mqtt_events_missing_connect() {
    row("sv_mqtt-events-missing-connect.pcap", USER_PASS, &[]);
}

#[test]
fn sanders_http_dvwa_clearlogin() {
    row(
        "sanders_http_dvwa_clearlogin.pcapng",
        &["username", "password", "auth_token"],
        &[],
    );
}

#[test]
fn sanders_http_dvwa_sqlinjection_passwords() {
    row(
        "sanders_http_dvwa_sqlinjection_passwords.pcapng",
        &["password_hash", "person_name", "auth_token"],
        &[],
    );
}

#[test]
fn sanders_http_post() {
    row(
        "sanders_http_post.pcapng",
        &["person_name", "email"],
        &["password", "password_hash"],
    );
}

#[test]
fn sv_http_post_file() {
    row(
        "sv_http-post-file.pcap",
        &["password", "auth_token", "username"],
        &[],
    );
}

#[test]
fn sv_http_urldecode_body() {
    row("sv_http-urldecode-body.pcap", &["email"], &["password"]);
}

#[test]
fn ndpi_zattoo() {
    row("ndpi_zattoo.pcap", &["auth_token"], &["password", "email"]);
}

#[test]
fn ndpi_webex() {
    row("ndpi_webex.pcap", &["device_info"], &["password"]);
}

#[test]
fn ndpi_1kxun() {
    row(
        "ndpi_1kxun.pcap",
        &["device_info"],
        &["password", "password_hash"],
    );
}

#[test]
fn ndpi_netflix() {
    row(
        "ndpi_netflix.pcap",
        &["device_info", "auth_token"],
        &["password"],
    );
}

#[test]
fn ndpi_alexa_app() {
    row("ndpi_alexa-app.pcapng", &["auth_token"], &["password"]);
}

#[test]
fn csl_http_ntlm() {
    row("csl_http-ntlm.pcap", &["password_hash"], &[]);
}

/// The NTLMv2 login inside GRE/ERSPAN (type I) with fragmented outer IPv4:
/// the inner flows are seen because the shared parser decapsulates.
#[test]
fn zeek_erspan() {
    row("zeek_erspan.pcap", &["password_hash"], &[]);
}

/// Inside the mirror: the HTTP flows to 192.168.69.2:80, the outer IPv4
/// fragments put back together (16 datagrams from 55 fragments).
#[test]
fn zeek_erspan_inner_flows_and_outer_fragments() {
    let dir = std::env::temp_dir().join(unique("erspan"));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/zeek_erspan.pcap"))
        .args(["--watch", "192.168.69.2/32=any"])
        .args(["--events", events.to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--progress", "never"])
        .output()
        .expect("run leakwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("16 tunnelled datagrams put together from 55 outer fragments (0 incomplete"),
        "{stderr}"
    );
    let ev = read::json_lines(&events);
    let inner: Vec<_> = ev
        .iter()
        .filter(|e| e["event_type"] == "cleartext_flow")
        .filter(|e| e["dest_ip"] == "192.168.69.2" && e["dest_port"] == 80)
        .collect();
    let ports: BTreeSet<_> = inner.iter().map(|r| r["src_port"].as_u64()).collect();
    assert_eq!(ports.len(), 5, "the 5 HTTP connections: {ports:?}");
    assert!(inner.iter().all(|r| r["src_ip"] == "192.168.69.10"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn csl_ftp() {
    row("csl_ftp.pcap", USER_PASS, &[]);
}

#[test]
fn csl_imap() {
    row("csl_imap.pcap", &["username", "password", "email"], &[]);
}

#[test]
fn csl_smtp() {
    row("csl_smtp.pcap", &["username", "password", "email"], &[]);
}

#[test]
fn negative_controls() {
    for f in [
        "sanders_http_ip4and6.pcapng",
        "sv_tls-subjectaltname.pcap",
        "ndpi_sites.pcapng",
        "ndpi_spotify_tcp.pcap",
        "ndpi_iphone.pcap",
        "zeek_mixed-vlan-mpls.pcap",
        "zeek_pppoe-over-qinq.pcap",
        "zeek_ipv6-fragmented-dns.pcap",
        "ndpi_punycode-idn.pcap",
        "sv_tls-client-hello-frag-01.pcap",
    ] {
        silent(f);
    }
}
