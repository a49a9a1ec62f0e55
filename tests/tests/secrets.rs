//! Secrets stay secret: planted secrets sent in cleartext are found, and no
//! output — events, the record log, metrics, `blocks list`, the replay summary,
//! logs at debug level — carries any of them in full, unless the admin asked
//! for evidence in full, and then only the events file does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    convo::Conversation,
    http::RecordingServer,
    lab::{self, Lab, SERVER_V4},
    netns::unique,
    read,
};

/// Planted values: a password, its MD5 (the Qobuz app's), a session token and
/// an e-mail address. None may appear in full in any output.
const PASSWORD: &str = "Pl4nted-Passw0rd!z";
const MD5: &str = "9b1f3a7c5e2d4b6a8c0e1f2a3b4c5d6e";
const TOKEN: &str = "PLx7Qw9Zr2Tn5Kv8Hm3Jd6Fs1Gb4Yc0";
const EMAIL: &str = "planted.person@example.com";

fn planted() -> [&'static str; 5] {
    [PASSWORD, "Pl4nted-Passw0rd%21z", MD5, TOKEN, EMAIL]
}

fn requests() -> [String; 3] {
    [
        format!(
            "GET /api.json/0.2/user/login?email={}&password={MD5}&app_id=950096963 HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n",
            EMAIL.replace('@', "%40")
        ),
        format!(
            "POST /api.json/0.2/user/signup HTTP/1.1\r\nHost: www.qobuz.com\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nusername=planted&password=Pl4nted-Passw0rd%21z",
            "username=planted&password=Pl4nted-Passw0rd%21z".len()
        ),
        format!(
            "GET /api.json/0.2/favorite/getUserFavorites?user_auth_token={TOKEN} HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"
        ),
    ]
}

/// Every planted value found in `text`, by name of the output.
fn leaked(what: &str, text: &str) -> Vec<String> {
    planted()
        .iter()
        .filter(|s| text.contains(*s))
        .map(|s| format!("{what} carries {s}"))
        .collect()
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("secrets"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Replays the planted capture with `args`; (events, every other output).
fn replay(pcap: &Path, d: &Path, args: &[&str]) -> (String, Vec<(String, String)>) {
    let events = d.join(format!("{}.jsonl", unique("ev")));
    let metrics = d.join(format!("{}.prom", unique("m")));
    let out = Command::new(lab::leakwatch_bin())
        .arg("replay")
        .arg(pcap)
        .arg("--events")
        .arg(&events)
        .arg("--metrics-out")
        .arg(&metrics)
        .arg("--state-dir")
        .arg(d.join("state"))
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = std::fs::read_to_string(&events).unwrap();
    let others = vec![
        (
            "summary".into(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        (
            "debug log".into(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        ("metrics".into(), std::fs::read_to_string(&metrics).unwrap()),
    ];
    (ev, others)
}

#[test]
fn replay_outputs_hold_no_planted_secret() {
    let d = dir();
    let pcap = d.join("planted.pcap");
    let convos: Vec<Conversation> = requests()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut c = Conversation::new("192.0.2.10", 41000 + i as u16, "198.51.100.2", 80);
            c.client(r.as_bytes())
                .server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .close();
            c
        })
        .collect();
    Conversation::write(&pcap, &convos.iter().collect::<Vec<_>>()).unwrap();
    let watch = ["--watch", "198.51.100.2/32=qobuz"];
    for evidence in ["redacted", "fingerprint"] {
        let mut args = watch.to_vec();
        args.extend(["--evidence", evidence, "--block", "reset"]);
        let (ev, others) = replay(&pcap, &d, &args);
        let kinds: Vec<serde_json::Value> = ev
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for k in ["password", "password_hash", "auth_token", "email"] {
            assert!(
                kinds
                    .iter()
                    .any(|e| e["event_type"] == "leak" && e["kind"] == k),
                "{evidence}: {k} not found: {ev}"
            );
        }
        assert!(kinds.iter().any(|e| e["event_type"] == "would_block"));
        let mut bad = leaked(&format!("events ({evidence})"), &ev);
        for (what, text) in &others {
            bad.extend(leaked(&format!("{what} ({evidence})"), text));
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }
    // Asked for: in full in the events file, and only there.
    let mut args = watch.to_vec();
    args.extend(["--evidence", "full"]);
    let (ev, others) = replay(&pcap, &d, &args);
    assert!(ev.contains(MD5) && ev.contains(TOKEN), "{ev}");
    let mut bad = Vec::new();
    for (what, text) in &others {
        bad.extend(leaked(&format!("{what} (full)"), text));
    }
    assert!(bad.is_empty(), "{bad:#?}");
    let _ = std::fs::remove_dir_all(d);
}

/// Canary values of a test account: the password, a token and an e-mail.
const CANARY_PW: &str = "Canary-Pa55w0rd!q";
const CANARY_TOKEN: &str = "cnryTok3nQ8wE4rT6yU1iO9pA";
const CANARY_MAIL: &str = "canary.audit@example.com";

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Every literal a canary value gives, derived here independently of the
/// sensor: any of them in an output is a leak of the canary.
fn canary_literals(v: &str) -> Vec<Vec<u8>> {
    use base64::{
        Engine as _,
        engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
    };
    use md5::Digest as _;
    let b = v.as_bytes();
    let mut out: Vec<String> = vec![v.to_owned(), hex(b), hex(b).to_uppercase()];
    out.push(
        b.iter()
            .map(|&c| {
                if c.is_ascii_alphanumeric() {
                    (c as char).to_string()
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect(),
    );
    for d in [
        md5::Md5::digest(b).to_vec(),
        sha1::Sha1::digest(b).to_vec(),
        sha2::Sha256::digest(b).to_vec(),
    ] {
        out.extend([
            hex(&d),
            hex(&d).to_uppercase(),
            STANDARD_NO_PAD.encode(&d),
            URL_SAFE_NO_PAD.encode(&d),
        ]);
    }
    // Base64 at each alignment: the characters of whole 3-byte groups.
    for s in 0..3 {
        let whole = (b.len() - s) / 3 * 3;
        out.push(STANDARD_NO_PAD.encode(&b[s..s + whole]));
        out.push(URL_SAFE_NO_PAD.encode(&b[s..s + whole]));
    }
    out.into_iter().map(String::into_bytes).collect()
}

/// The canaries file (0600) of the three canary values, in `d`.
fn canaries_file(d: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let canaries = d.join("canaries.toml");
    std::fs::write(
        &canaries,
        format!(
            "[[canaries]]\nlabel = \"qobuz-test-pw\"\nkind = \"password\"\nvalue = \"{CANARY_PW}\"\n\n\
             [[canaries]]\nlabel = \"qobuz-test-token\"\nkind = \"auth_token\"\nvalue = \"{CANARY_TOKEN}\"\n\n\
             [[canaries]]\nlabel = \"qobuz-test-mail\"\nkind = \"email\"\nvalue = \"{CANARY_MAIL}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&canaries, std::fs::Permissions::from_mode(0o600)).unwrap();
    canaries
}

/// Requests that leak the canaries in several encodings, and a pattern finding.
fn canary_requests() -> [String; 4] {
    use base64::Engine as _;
    use md5::Digest as _;
    let md5 = hex(&md5::Md5::digest(CANARY_PW.as_bytes()));
    let nested = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{{\"who\":\"{CANARY_MAIL}\"}}"));
    let body = format!("{{\"blob\":\"{CANARY_PW}\",\"n\":1}}");
    [
        // The Qobuz app's shape: md5(password) in the query.
        format!(
            "GET /api.json/0.2/user/login?username=audit&password={md5} HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"
        ),
        // Names no rule knows: only the canaries find these.
        format!(
            "POST /api.json/0.2/sync HTTP/1.1\r\nHost: www.qobuz.com\r\nX-Opaque: {CANARY_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!("GET /api.json/0.2/ping?d={nested} HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"),
        // A pattern finding beside them, shown in full as asked.
        format!(
            "GET /api.json/0.2/x?user_auth_token={TOKEN} HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n"
        ),
    ]
}

/// Every canary literal found in any of `outputs`, by output.
fn canary_leaks(outputs: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut bad = Vec::new();
    for v in [CANARY_PW, CANARY_TOKEN, CANARY_MAIL] {
        for lit in canary_literals(v) {
            for (what, bytes) in outputs {
                if bytes.windows(lit.len()).any(|w| w == lit.as_slice()) {
                    bad.push(format!("{what} carries {}", String::from_utf8_lossy(&lit)));
                }
            }
        }
    }
    bad
}

/// Canaries are found in any field and encoding, reported `confirmed` with
/// their label, and no canary value or literal derived from one reaches any
/// output or file — even with `--evidence full`, which shows the other
/// findings' values.
#[test]
fn canary_values_reach_no_output_even_with_full_evidence() {
    let d = dir();
    let canaries = canaries_file(&d);
    let requests = canary_requests();
    let pcap = d.join("canaries.pcap");
    let convos: Vec<Conversation> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut c = Conversation::new("192.0.2.10", 42000 + i as u16, "198.51.100.2", 80);
            c.client(r.as_bytes())
                .server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .close();
            c
        })
        .collect();
    Conversation::write(&pcap, &convos.iter().collect::<Vec<_>>()).unwrap();
    let (ev, others) = replay(
        &pcap,
        &d,
        &[
            "--watch",
            "198.51.100.2/32=qobuz",
            "--evidence",
            "full",
            "--canaries",
            canaries.to_str().unwrap(),
        ],
    );
    let events: Vec<serde_json::Value> = ev
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let leaks: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event_type"] == "leak")
        .collect();
    for (label, kind) in [
        ("qobuz-test-pw", "password_hash"),
        ("qobuz-test-pw", "password"),
        ("qobuz-test-token", "auth_token"),
        ("qobuz-test-mail", "email"),
    ] {
        assert!(
            leaks.iter().any(|e| e["canary"] == label
                && e["kind"] == kind
                && e["confidence"] == "confirmed"
                && e["rule"] == "canary"),
            "{label} as {kind} not reported confirmed: {ev}"
        );
    }
    assert!(
        leaks
            .iter()
            .filter(|e| e["canary"].is_null())
            .all(|e| e["confidence"] == "pattern"),
        "{ev}"
    );
    assert!(
        ev.contains(TOKEN),
        "--evidence full shows the pattern finding's value"
    );
    // Every output, and every file the run left in its state directory.
    let mut outputs: Vec<(String, Vec<u8>)> = vec![("events".into(), ev.into_bytes())];
    outputs.extend(others.into_iter().map(|(w, t)| (w, t.into_bytes())));
    let mut dirs = vec![d.join("state")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                outputs.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    assert!(
        outputs.len() > 4,
        "the state directory holds the key and the rules cache"
    );
    let bad = canary_leaks(&outputs);
    assert!(bad.is_empty(), "{bad:#?}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn live_outputs_hold_no_planted_secret() {
    if lab::skip_without_root("live_outputs_hold_no_planted_secret") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let web: SocketAddr = format!("{SERVER_V4}:80").parse().unwrap();
    let _server = RecordingServer::start(&lab.server, &[web]).expect("server");
    let d = dir();
    let (events, records, log) = (d.join("ev.jsonl"), d.join("rec.jsonl"), d.join("log"));
    let canaries = canaries_file(&d);
    let metrics_addr = "127.0.0.1:9477";
    let mut sensor = lab
        .start_sensor_logged(
            &lab::leakwatch_bin(),
            metrics_addr,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--block",
                "dry-run",
                "--events",
                events.to_str().unwrap(),
                "--dump-records",
                records.to_str().unwrap(),
                "--canaries",
                canaries.to_str().unwrap(),
            ],
            &[("RUST_LOG", std::ffi::OsStr::new("debug"))],
            &log,
        )
        .expect("sensor");
    for r in requests().into_iter().chain(canary_requests()) {
        let mut s = lab
            .client
            .run(move || TcpStream::connect_timeout(&web, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(r.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ev = read::json_lines(&events);
        let tokens = ev
            .iter()
            .filter(|e| e["event_type"] == "leak" && e["kind"] == "auth_token")
            .count();
        if tokens > 0 || Instant::now() > deadline {
            assert!(tokens > 0, "the planted token was not found: {ev:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let exposition = lab.gateway_http_get(metrics_addr, "/metrics").unwrap();
    let list = Command::new(lab::leakwatch_bin())
        .args(["blocks", "list", "--json", "--control-socket"])
        .arg(&lab.control_socket)
        .output()
        .unwrap();
    assert!(list.status.success());
    sensor.signal(libc::SIGTERM);
    let _ = sensor.wait_timeout(Duration::from_secs(10));
    let mut bad = Vec::new();
    for (what, path) in [
        ("events", &events),
        ("records", &records),
        ("debug log", &log),
    ] {
        bad.extend(leaked(what, &std::fs::read_to_string(path).unwrap()));
    }
    bad.extend(leaked("metrics", &exposition));
    bad.extend(leaked(
        "blocks list",
        &String::from_utf8_lossy(&list.stdout),
    ));
    let mut outputs: Vec<(String, Vec<u8>)> = [
        ("events", &events),
        ("records", &records),
        ("debug log", &log),
    ]
    .iter()
    .map(|(w, p)| ((*w).to_owned(), std::fs::read(p).unwrap()))
    .collect();
    outputs.push(("metrics".into(), exposition.clone().into_bytes()));
    outputs.push(("blocks list".into(), list.stdout.clone()));
    bad.extend(canary_leaks(&outputs));
    let ev = read::json_lines(&events);
    assert!(
        ev.iter()
            .any(|e| e["canary"] == "qobuz-test-pw" && e["confidence"] == "confirmed"),
        "the live sensor reports the canary: {ev:?}"
    );
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("DEBUG"),
        "the log was at debug level"
    );
    let _ = std::fs::remove_dir_all(d);
}
