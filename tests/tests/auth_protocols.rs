//! Cleartext authentication protocols through `leakwatch replay`: the real
//! captures of the corpus contract (FTP, IMAP, SMTP, HTTP NTLM) and crafted
//! conversations for each protocol and variant, each with a lookalike that
//! must stay silent. Protocols are recognised by content: the crafted ones run
//! on odd ports. No privileges needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use leakwatch_tests::{convo::Conversation, lab, netns::unique, read};
use serde_json::Value;

mod common;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Replays `file` watching every address; returns (leak events, metrics).
fn replay_all(file: &std::path::Path) -> (Vec<Value>, String) {
    let dir = std::env::temp_dir().join(unique("auth"));
    std::fs::create_dir_all(&dir).unwrap();
    let (events, metrics) = (dir.join("events.jsonl"), dir.join("metrics.txt"));
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(file)
        .args(["--watch", "0.0.0.0/0=any", "--watch", "::/0=any"])
        .args(["--events", events.to_str().unwrap()])
        .args(["--metrics-out", metrics.to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--progress", "never"])
        .output()
        .expect("run leakwatch replay");
    assert!(
        out.status.success(),
        "replay {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = read::json_lines(&events);
    common::assert_valid_events(&ev);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (
        ev.into_iter()
            .filter(|e| e["event_type"] == "leak")
            .collect(),
        text,
    )
}

fn kinds(ev: &[Value]) -> BTreeSet<String> {
    ev.iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Replays crafted conversations; returns the leak events.
fn crafted(convos: &[&Conversation]) -> Vec<Value> {
    let path = std::env::temp_dir().join(format!("{}.pcap", unique("crafted")));
    Conversation::write(&path, convos).unwrap();
    let (ev, _) = replay_all(&path);
    let _ = std::fs::remove_file(path);
    ev
}

/// (kind, rule, outcome) of each leak.
fn found(ev: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = ev
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["rule"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut r: Vec<_> = v
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    r.sort();
    r
}

fn assert_kinds(file: &str, must: &[&str]) -> Vec<Value> {
    let (ev, _) = replay_all(&data(file));
    let k = kinds(&ev);
    for m in must {
        assert!(k.contains(*m), "{file}: no {m} in {k:?}");
    }
    ev
}

#[test]
fn csl_ftp_anonymous_login() {
    let ev = assert_kinds("csl_ftp.pcap", &["username", "password", "email"]);
    assert!(
        ev.iter()
            .all(|e| e["severity"] == "low" && e["outcome"] == "accepted"),
        "{ev:?}"
    );
    assert!(ev.iter().all(|e| e["app_proto"] == "ftp"));
    // One flow: one flow_id; the sensor names itself.
    let ids: BTreeSet<u64> = ev.iter().map(|e| e["flow_id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ev:?}");
    assert!(
        ev.iter()
            .all(|e| e["host"].as_str().is_some_and(|h| !h.is_empty()))
    );
}

#[test]
fn csl_imap_login_and_addresses() {
    let ev = assert_kinds("csl_imap.pcap", &["username", "password", "email"]);
    let pass: Vec<_> = ev.iter().filter(|e| e["kind"] == "password").collect();
    assert_eq!(pass.len(), 1);
    assert_eq!(pass[0]["outcome"], "accepted");
    // Message ids look like addresses and are not.
    assert!(
        !ev.iter()
            .any(|e| e["evidence"].as_str().unwrap().starts_with("message-id=")),
        "{ev:?}"
    );
}

#[test]
fn csl_smtp_auth_login_envelope_and_name() {
    let ev = assert_kinds(
        "csl_smtp.pcap",
        &["username", "password", "email", "person_name"],
    );
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "password" && e["outcome"] == "accepted")
    );
}

#[test]
fn csl_http_ntlm_seven_hashes_without_challenge() {
    let ev = assert_kinds("csl_http-ntlm.pcap", &["password_hash", "username"]);
    let hashes: Vec<_> = ev.iter().filter(|e| e["kind"] == "password_hash").collect();
    assert_eq!(hashes.len(), 7, "{hashes:?}");
    assert!(
        hashes
            .iter()
            .all(|e| e["crackable"] == false && e["rule"] == "ntlm_response")
    );
    // The session cookie is not a secret.
    assert!(!ev.iter().any(|e| e["context"] == "cookie"));
}

const CLIENT: &str = "192.0.2.10";
const SERVER: &str = "198.51.100.7";

#[test]
fn ftp_pop3_imap_smtp_on_odd_ports() {
    let mut ftp = Conversation::new(CLIENT, 40001, SERVER, 2121);
    ftp.server(b"220 (vsFTPd 3.0.3)\r\n")
        .client(b"USER jane\r\n")
        .server(b"331 Please specify the password.\r\n")
        .client(b"PASS hunter2\r\n")
        .server(b"530 Login incorrect.\r\n")
        .close();
    let mut pop = Conversation::new(CLIENT, 40002, SERVER, 1110);
    pop.server(b"+OK POP3 ready\r\n")
        .client(b"AUTH LOGIN\r\n")
        .server(b"+ VXNlcm5hbWU6\r\n")
        .client(b"Ym9i\r\n")
        .server(b"+ UGFzc3dvcmQ6\r\n")
        .client(b"czNjcmV0UGFzcw==\r\n")
        .server(b"+OK\r\n")
        .close();
    let mut imap = Conversation::new(CLIENT, 40003, SERVER, 1143);
    imap.server(b"* OK IMAP4rev1 ready\r\n")
        .client(b"a1 LOGIN {5}\r\n")
        .server(b"+ go on\r\n")
        .client(b"carol {10}\r\n")
        .server(b"+ go on\r\n")
        .client(b"imapPass99\r\n")
        .server(b"a1 OK LOGIN done\r\n")
        .close();
    let mut smtp = Conversation::new(CLIENT, 40004, SERVER, 2525);
    smtp.server(b"220 mx.example ESMTP\r\n")
        .client(b"EHLO me\r\n")
        .server(b"250 AUTH PLAIN CRAM-MD5\r\n")
        .client(b"AUTH CRAM-MD5\r\n")
        .server(b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n")
        .client(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n")
        .server(b"235 ok\r\n")
        .close();
    let ev = crafted(&[&ftp, &pop, &imap, &smtp]);
    assert_eq!(
        found(&ev),
        row(&[
            ("username", "ftp_user", "rejected"),
            ("password", "ftp_pass", "rejected"),
            ("username", "pop3_user", "accepted"),
            ("password", "pop3_pass", "accepted"),
            ("username", "imap_user", "accepted"),
            ("password", "imap_pass", "accepted"),
            ("username", "smtp_user", "accepted"),
            ("password_hash", "smtp_cram_md5", "accepted"),
        ])
    );
    let protos: BTreeSet<&str> = ev
        .iter()
        .map(|e| e["app_proto"].as_str().unwrap())
        .collect();
    assert_eq!(
        protos,
        ["ftp", "imap", "pop3", "smtp"].into_iter().collect()
    );
}

#[test]
fn starttls_ends_cleartext_a_refused_one_does_not() {
    let mut ok = Conversation::new(CLIENT, 40011, SERVER, 587);
    ok.server(b"220 mx ESMTP\r\n")
        .client(b"STARTTLS\r\n")
        .server(b"220 go ahead\r\n")
        .client(b"AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n")
        .close();
    let mut refused = Conversation::new(CLIENT, 40012, SERVER, 587);
    refused
        .server(b"220 mx ESMTP\r\n")
        .client(b"STARTTLS\r\n")
        .server(b"454 TLS not available\r\n")
        .client(b"AUTH PLAIN AGJvYgBidWlsZGVyMTIz\r\n")
        .server(b"235 ok\r\n")
        .close();
    let mut stls = Conversation::new(CLIENT, 40013, SERVER, 110);
    stls.server(b"+OK\r\n")
        .client(b"STLS\r\n")
        .server(b"+OK begin TLS\r\n")
        .client(b"USER dave\r\nPASS hidden\r\n")
        .close();
    let ev = crafted(&[&ok, &refused, &stls]);
    assert_eq!(
        found(&ev),
        row(&[
            ("username", "smtp_user", "accepted"),
            ("password", "smtp_pass", "accepted")
        ])
    );
    assert!(ev.iter().all(|e| e["src_port"] == 40012));
}

/// A CONNECT (3.1.1 or 5) with or without username and password.
fn mqtt_connect(version: u8, creds: Option<(&str, &str)>) -> Vec<u8> {
    let mut v = vec![0, 4, b'M', b'Q', b'T', b'T', version];
    v.extend_from_slice(&[if creds.is_some() { 0xc2 } else { 0x02 }, 0, 60]);
    if version >= 5 {
        v.push(0);
    }
    v.extend_from_slice(&[0, 2, b'i', b'd']);
    if let Some((u, p)) = creds {
        for f in [u, p] {
            v.extend_from_slice(&(f.len() as u16).to_be_bytes());
            v.extend_from_slice(f.as_bytes());
        }
    }
    let mut pkt = vec![0x10, v.len() as u8];
    pkt.extend_from_slice(&v);
    pkt
}

#[test]
fn mqtt_connect_with_flags_and_without() {
    let mut v4 = Conversation::new(CLIENT, 40021, SERVER, 11883);
    v4.client(&mqtt_connect(4, Some(("player", "mqttSecret1"))))
        .server(b"\x20\x02\x00\x00")
        .close();
    let mut v5 = Conversation::new(CLIENT, 40022, SERVER, 1883);
    v5.client(&mqtt_connect(5, Some(("speaker", "mqttSecret2"))))
        .close();
    let mut bare = Conversation::new(CLIENT, 40023, SERVER, 1883);
    bare.client(&mqtt_connect(4, None)).close();
    let ev = crafted(&[&v4, &v5, &bare]);
    assert_eq!(
        found(&ev),
        row(&[
            ("username", "mqtt_user", "-"),
            ("password", "mqtt_pass", "-"),
            ("username", "mqtt_user", "-"),
            ("password", "mqtt_pass", "-"),
        ])
    );
    assert!(!ev.iter().any(|e| e["src_port"] == 40023));
}

fn b64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// An NTLMSSP AUTHENTICATE (UTF-16 names) with an `nt`-byte response.
fn ntlm_type3(user: &str, domain: &str, nt: usize) -> Vec<u8> {
    let u16s = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let parts = [
        vec![0u8; 24],
        vec![0x5a; nt],
        u16s(domain),
        u16s(user),
        u16s("PC"),
        Vec::new(),
    ];
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&3u32.to_le_bytes());
    let mut payload = Vec::new();
    for p in &parts {
        let off = 72 + payload.len() as u32;
        m.extend_from_slice(&(p.len() as u16).to_le_bytes());
        m.extend_from_slice(&(p.len() as u16).to_le_bytes());
        m.extend_from_slice(&off.to_le_bytes());
        payload.extend_from_slice(p);
    }
    m.extend_from_slice(&0x0008_0001u32.to_le_bytes());
    m.resize(72, 0);
    m.extend_from_slice(&payload);
    m
}

fn ntlm_type2() -> Vec<u8> {
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&2u32.to_le_bytes());
    m.resize(24, 0);
    m.extend_from_slice(&[0x11; 8]);
    m.resize(48, 0);
    m
}

#[test]
fn ntlm_crackable_spnego_v2_anonymous_and_digest() {
    let mut with_challenge = Conversation::new(CLIENT, 40031, SERVER, 8080);
    with_challenge
        .client(b"GET /sites HTTP/1.1\r\nHost: sp.example\r\nAuthorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAFASgKAAAADw==\r\n\r\n")
        .server(format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM {}\r\nContent-Length: 0\r\n\r\n", b64(&ntlm_type2())).as_bytes())
        .client(format!("GET /sites HTTP/1.1\r\nHost: sp.example\r\nAuthorization: NTLM {}\r\n\r\n", b64(&ntlm_type3("erin", "CORP", 24))).as_bytes())
        .server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .close();
    // SPNEGO-wrapped NTLMv2 to a proxy, without a challenge seen.
    let mut spnego = vec![0xa1, 0x82, 0x01, 0x00, 0x30, 0x81];
    spnego.extend_from_slice(&ntlm_type3("frank", "SP", 80));
    let mut proxy = Conversation::new(CLIENT, 40032, SERVER, 3128);
    proxy
        .client(format!("GET http://x.example/ HTTP/1.1\r\nHost: x.example\r\nProxy-Authorization: Negotiate {}\r\n\r\n", b64(&spnego)).as_bytes())
        .close();
    let mut anon = Conversation::new(CLIENT, 40033, SERVER, 80);
    anon.client(
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: NTLM {}\r\n\r\n",
            b64(&ntlm_type3("", "", 0))
        )
        .as_bytes(),
    )
    .close();
    let mut digest = Conversation::new(CLIENT, 40034, SERVER, 80);
    digest
        .client(b"GET /dir/index.html HTTP/1.1\r\nHost: d\r\nAuthorization: Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", response=\"6629fae49393a05397450978507c4ef1\"\r\n\r\n")
        .close();
    let ev = crafted(&[&with_challenge, &proxy, &anon, &digest]);
    let hashes: Vec<_> = ev.iter().filter(|e| e["kind"] == "password_hash").collect();
    assert_eq!(hashes.len(), 3, "{ev:?}");
    let by_port = |p: u16| hashes.iter().find(|e| e["src_port"] == p).unwrap();
    assert_eq!(by_port(40031)["crackable"], true);
    assert_eq!(by_port(40031)["severity"], "critical");
    assert_eq!(by_port(40032)["crackable"], false);
    assert!(
        by_port(40032)["evidence"]
            .as_str()
            .unwrap()
            .contains("NetNTLMv2")
    );
    assert_eq!(by_port(40034)["rule"], "digest_response");
    assert!(
        !ev.iter().any(|e| e["src_port"] == 40033),
        "anonymous: {ev:?}"
    );
    let users: BTreeSet<&str> = ev
        .iter()
        .filter(|e| e["kind"] == "username")
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["digest_user", "ntlm_user"].into_iter().collect());
}

#[test]
fn lookalikes_stay_silent() {
    // FTP and POP3 commands inside an HTTP body, and a text protocol that only
    // mentions them.
    let mut http = Conversation::new(CLIENT, 40041, SERVER, 80);
    http.client(b"POST /notes HTTP/1.1\r\nHost: n\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n\r\nUSER someone\r\nPASS notASecret1\r\n\r\n")
        .server(b"HTTP/1.1 204 No Content\r\n\r\n")
        .close();
    let mut chat = Conversation::new(CLIENT, 40042, SERVER, 6667);
    chat.client(b"NICK guest\r\nPRIVMSG #c :try USER x then PASS y\r\n")
        .close();
    let ev = crafted(&[&http, &chat]);
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn protocols_are_counted_in_flows_total() {
    let mut ftp = Conversation::new(CLIENT, 40051, SERVER, 2121);
    ftp.server(b"220 ftpd ready\r\n")
        .client(b"USER a\r\n")
        .close();
    let mut imap = Conversation::new(CLIENT, 40052, SERVER, 1143);
    imap.server(b"* OK ready\r\n")
        .client(b"a CAPABILITY\r\n")
        .close();
    let path = std::env::temp_dir().join(format!("{}.pcap", unique("flows")));
    Conversation::write(&path, &[&ftp, &imap]).unwrap();
    let (_, metrics) = replay_all(&path);
    let _ = std::fs::remove_file(path);
    for p in ["ftp", "imap"] {
        assert_eq!(
            read::metric(
                &metrics,
                &format!("leakwatch_flows_total{{transport=\"cleartext\",protocol=\"{p}\"}}")
            ),
            Some(1),
            "{metrics}"
        );
    }
}
