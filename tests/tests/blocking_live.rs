//! Blocking end to end: the real sensor on the lab gateway, real TCP from the
//! clients. Per mode: the leaking connection is reset and the server sees
//! nothing after it; quarantine refuses the app's cleartext retry while its TLS
//! passes; unwatched hosts and allow-listed clients are untouched; dry-run
//! passes everything and says what it would have done; a masquerading gateway
//! blocks on its LAN side; killing the daemon restores all traffic. Needs root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    http::RecordingServer,
    lab::{self, CLIENT_V4, CLIENT2_V4, Lab, OTHER_V4, SERVER_V4, SERVER_V6},
    netns::{Netns, unique},
    process::ChildGuard,
    read,
    scenarios::MD5,
};
use serde_json::Value;

mod common;

const METRICS: &str = "127.0.0.1:9477";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The Qobuz app's login: e-mail and the password's MD5 in the query; keep-alive.
fn login() -> Vec<u8> {
    format!(
        "GET /api.json/0.2/user/login?email=jane.doe%40example.com&password={MD5}&app_id=950096963 HTTP/1.1\r\nHost: www.qobuz.com\r\nUser-Agent: Qobuz/6.1.2 (iPhone; iOS 17.2)\r\n\r\n"
    )
    .into_bytes()
}

/// The app's next request on the same connection, with nothing secret in it.
fn next() -> Vec<u8> {
    b"GET /api.json/0.2/catalog/search?query=bach HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n".to_vec()
}

/// The first bytes of a TLS ClientHello record.
const HELLO: &[u8] = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00";

/// A TCP connection opened from `ns` (the socket stays in that namespace).
fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = ns
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A TCP connection from `ns` on the local address `from` (an IPv4 client
/// reusing a port, as an ephemeral port comes round again), 5 s at most.
fn connect_from(ns: &Netns, from: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        panic!("IPv4 only");
    };
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    ns.run(move || {
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let (local, remote) = (sockaddr(from), sockaddr(to));
        let one: libc::c_int = 1;
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: plain socket calls on a new fd, with valid pointers and
        // lengths; the fd is owned by the TcpStream (or closed) afterwards.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = TcpStream::from_raw_fd(fd);
            let set = |opt, value: *const libc::c_void, size: usize| {
                libc::setsockopt(fd, libc::SOL_SOCKET, opt, value, size as libc::socklen_t) == 0
            };
            let ok = set(
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>(),
            ) && set(
                libc::SO_SNDTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>(),
            ) && libc::bind(fd, (&raw const local).cast(), len) == 0
                && libc::connect(fd, (&raw const remote).cast(), len) == 0;
            if ok {
                Ok(s)
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    })
    .unwrap()
}

/// Sends `req` and reads the lab server's response (`200 OK`, body "ok").
fn ask(s: &mut TcpStream, req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"\r\n\r\nok") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

/// Sends `req` on a connection the sensor should have blocked: the RST it
/// answers with resets the connection.
fn assert_reset(s: &mut TcpStream, req: &[u8], what: &str) {
    match ask(s, req) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a reset connection, got {other:?}"),
    }
}

fn events_path() -> PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", unique("blocking")))
}

/// Events once `done` holds (10 s at most), schema-checked.
fn wait_events(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = read::json_lines(path);
        if done(&ev) || Instant::now() > deadline {
            common::assert_valid_events(&ev);
            return ev;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn of_type<'a>(ev: &'a [Value], t: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event_type"] == t).collect()
}

fn metrics(lab: &Lab) -> String {
    lab.gateway_http_get(METRICS, "/metrics").unwrap()
}

/// `leakwatch blocks …` against the lab sensor's control socket.
fn blocks(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new(lab::leakwatch_bin())
        .arg("blocks")
        .args(args)
        .arg("--control-socket")
        .arg(&lab.control_socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "leakwatch blocks {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Scheduling policy (0 other, 1 fifo) by thread name, from /proc.
fn thread_policies(pid: u32) -> std::collections::HashMap<String, u32> {
    let mut out = std::collections::HashMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3;
        // the policy is field 41.
        let policy = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3))
            .and_then(|p| p.parse().ok());
        if let Some(p) = policy {
            out.insert(comm.trim().to_owned(), p);
        }
    }
    out
}

fn start(lab: &Lab, events: &Path, extra: &[&str]) -> ChildGuard {
    let mut args = vec![
        "--watch",
        "198.51.100.2/32=qobuz",
        "--watch",
        "2001:db8:5::2/128=qobuz",
        "--events",
        events.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lab.start_sensor(&lab::leakwatch_bin(), METRICS, &args)
        .expect("sensor")
}

#[test]
fn reset_cuts_the_leaking_connection() {
    if lab::skip_without_root("reset_cuts_the_leaking_connection") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let (srv, srv6, other) = (
        sa(&format!("{SERVER_V4}:80")),
        sa(&format!("[{SERVER_V6}]:80")),
        sa(&format!("{OTHER_V4}:80")),
    );
    let server = RecordingServer::start(&lab.server, &[srv, srv6, other]).expect("servers");
    let events = events_path();
    let sensor = start(
        &lab,
        &events,
        &["--block", "reset", "--realtime-priority", "5"],
    );
    // The threads a block waits for run SCHED_FIFO (1); the others do not.
    let policies = thread_policies(sensor.pid());
    for name in ["ring", "pipeline", "matcher-0"] {
        assert_eq!(policies.get(name), Some(&1), "{name}: {policies:?}");
    }
    assert_eq!(policies.get("leakwatch"), Some(&0), "{policies:?}");

    // IPv4, IPv6, and the VLAN-tagged client: each login is found, its
    // connection blocked, the next request reset, and nothing of it arrives.
    let cases = [
        (&lab.client, srv, CLIENT_V4, lab::LAN_IF),
        (&lab.client, srv6, lab::CLIENT_V6, lab::LAN_IF),
        (&lab.client2, srv, CLIENT2_V4, lab::LAN2_IF),
    ];
    let mut last = None;
    for (i, (ns, to, client, iface)) in cases.into_iter().enumerate() {
        let mut c = connect(ns, to);
        let local = c.local_addr().unwrap();
        last = Some(local);
        let sent = Instant::now();
        ask(&mut c, &login()).expect("the login itself passes");
        let ev = wait_events(&events, |e| of_type(e, "block").len() > i);
        let b = of_type(&ev, "block");
        let b = b.last().expect("a block event");
        eprintln!("{client}: blocked {:?} after the login", sent.elapsed());
        assert_eq!(b["src_ip"], client);
        assert_eq!(b["interface"], iface);
        assert_eq!(b["block"]["mode"], "reset");
        assert_eq!(b["block"]["reason"], "finding");
        assert_eq!(b["kind"], "password_hash");
        assert!(b["block"]["expires"].is_string());
        assert_reset(&mut c, &next(), client);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            server.from(local),
            login(),
            "{client}: the server saw nothing after the login"
        );
        // A new connection of the client is not blocked (reset, not quarantine).
        let mut fresh = connect(ns, to);
        ask(&mut fresh, &next()).expect("a new connection passes");
    }
    let m = metrics(&lab);
    // One RST per blocked flow's next packet (more only when one is lost).
    let rst = |iface: &str| {
        read::metric(
            &m,
            &format!("leakwatch_xdp_packets_total{{interface=\"{iface}\",reason=\"blocked_rst\"}}"),
        )
        .unwrap()
    };
    assert!(rst("lan0") >= 2 && rst("lan1") >= 1, "{m}");
    assert_eq!(rst("wan0"), 0);
    assert_eq!(
        read::metric(
            &m,
            "leakwatch_blocks_total{service=\"qobuz\",reason=\"finding\",mode=\"reset\"}"
        ),
        Some(3)
    );
    assert_eq!(
        read::metric(&m, "leakwatch_blocks_active{scope=\"flow\"}"),
        Some(3)
    );
    assert!(!m.contains(CLIENT_V4), "no address in any label");

    // An unwatched host gets the same credentials and keeps its connection
    // (its Host names no service: a catalog Host would make it watched).
    let mut c = connect(&lab.client, other);
    let elsewhere = String::from_utf8(login())
        .unwrap()
        .replace("www.qobuz.com", "www.example.org");
    ask(&mut c, elsewhere.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    ask(&mut c, &next()).expect("unwatched: untouched");

    // The control socket is the root's alone; without a sensor the command says so.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&lab.control_socket)
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new(lab::leakwatch_bin())
        .args([
            "blocks",
            "list",
            "--control-socket",
            "/nonexistent/control.sock",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is `leakwatch run` running"),
        "{err}"
    );
    // Nothing about blocks but counts on the metrics port.
    assert!(
        !lab.gateway_http_get(METRICS, "/metrics")
            .unwrap()
            .contains("198.51.100.2")
    );

    // The list shows the blocks; lifting one removes it.
    let list: Vec<Value> = blocks(&lab, &["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list.iter()
            .all(|b| b["enforced"] == true && b["reason"] == "finding")
    );
    let table = blocks(&lab, &["list"]);
    assert!(
        table.contains("CLIENT") && table.contains(CLIENT2_V4),
        "{table}"
    );
    let id = list[0]["id"].as_u64().unwrap().to_string();
    assert!(blocks(&lab, &["lift", &id]).contains("lifted"));
    assert_eq!(blocks(&lab, &["list", "--json"]).lines().count(), 2);

    // The VLAN client's port comes round again while its flow is blocked (an
    // ephemeral port reused, here on purpose): the new connection's SYN
    // passes — no RST can answer a SYN, so a dropped one would time out for
    // the block's hour — and it is a new flow: its login is found and
    // blocked afresh, in place of the old connection's block.
    let mut again = connect_from(&lab.client2, last.unwrap(), srv)
        .expect("a new connection on a blocked flow's ports connects");
    ask(&mut again, &login()).expect("its login passes");
    let ev = wait_events(&events, |e| of_type(e, "block").len() > 3);
    assert_eq!(of_type(&ev, "block").len(), 4, "blocked afresh");
    assert_reset(&mut again, &next(), "the new connection");
    assert_eq!(blocks(&lab, &["list", "--json"]).lines().count(), 2);

    let _ = std::fs::remove_file(events);
}

#[test]
fn quarantine_refuses_the_apps_cleartext_retry_and_passes_its_tls() {
    if lab::skip_without_root("quarantine_refuses_the_apps_cleartext_retry") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let (srv, tls) = (
        sa(&format!("{SERVER_V4}:80")),
        sa(&format!("{SERVER_V4}:443")),
    );
    let server = RecordingServer::start(&lab.server, &[srv, tls]).expect("servers");
    let config = std::env::temp_dir().join(format!("{}.toml", unique("blocking")));
    std::fs::write(
        &config,
        format!(
            "[blocking]\nmode = \"quarantine\"\nquarantine_secs = 600\nallow_clients = [\"{CLIENT2_V4}/32\"]\n"
        ),
    )
    .unwrap();
    let events = events_path();
    let _sensor = start(&lab, &events, &["--config", config.to_str().unwrap()]);

    let mut c = connect(&lab.client, srv);
    ask(&mut c, &login()).unwrap();
    let ev = wait_events(&events, |e| of_type(e, "block").len() >= 2);
    let scopes: Vec<(&str, &str)> = of_type(&ev, "block")
        .iter()
        .map(|b| {
            (
                b["block"]["scope"].as_str().unwrap(),
                b["block"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(scopes, [("flow", "finding"), ("quarantine", "quarantine")]);
    assert_reset(&mut c, &next(), "the leaking connection");

    // The app retries in cleartext: refused at its first payload.
    let mut retry = connect(&lab.client, srv);
    let local = retry.local_addr().unwrap();
    assert_reset(&mut retry, &login(), "the cleartext retry");
    let ev = wait_events(&events, |e| {
        e.iter()
            .any(|x| x["event_type"] == "block" && x["src_port"] == local.port())
    });
    let refused = ev
        .iter()
        .find(|x| x["event_type"] == "block" && x["src_port"] == local.port())
        .unwrap();
    assert_eq!(refused["block"]["reason"], "quarantine");
    // Its payload never left, and its leak says so.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.from(local).is_empty(),
        "the retry reached the server"
    );
    let ev = wait_events(&events, |e| {
        e.iter()
            .any(|x| x["event_type"] == "leak" && x["src_port"] == local.port())
    });
    assert!(ev.iter().any(|x| x["event_type"] == "leak"
        && x["src_port"] == local.port()
        && x["blocked"] == true));

    // Its TLS flow to the same service passes.
    let mut t = connect(&lab.client, tls);
    let tls_local = t.local_addr().unwrap();
    t.write_all(HELLO).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.from(tls_local) != HELLO && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.from(tls_local), HELLO, "TLS passes under quarantine");

    // An allow-listed client leaks and is not blocked.
    let mut a = connect(&lab.client2, srv);
    ask(&mut a, &login()).unwrap();
    wait_events(&events, |e| {
        e.iter()
            .any(|x| x["event_type"] == "leak" && x["src_ip"] == CLIENT2_V4)
    });
    std::thread::sleep(Duration::from_millis(500));
    ask(&mut a, &next()).expect("allow-listed: untouched");

    let m = metrics(&lab);
    assert_eq!(
        read::metric(
            &m,
            "leakwatch_xdp_packets_total{interface=\"lan0\",reason=\"cleartext_drop\"}"
        ),
        Some(1)
    );
    assert_eq!(
        read::metric(
            &m,
            "leakwatch_blocks_skipped_total{reason=\"allow_listed\"}"
        ),
        Some(1)
    );
    assert_eq!(
        read::metric(&m, "leakwatch_blocks_active{scope=\"quarantine\"}"),
        Some(1)
    );
    let list = blocks(&lab, &["list", "--json"]);
    assert!(list.contains("\"scope\":\"quarantine\""), "{list}");
    let _ = std::fs::remove_file(events);
    let _ = std::fs::remove_file(config);
}

#[test]
fn dry_run_passes_everything_and_reports_what_it_would_block() {
    if lab::skip_without_root("dry_run_passes_everything") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let srv = sa(&format!("{SERVER_V4}:80"));
    let server = RecordingServer::start(&lab.server, &[srv]).expect("server");
    let events = events_path();
    let _sensor = start(&lab, &events, &["--block", "dry-run"]);
    let mut c = connect(&lab.client, srv);
    let local = c.local_addr().unwrap();
    ask(&mut c, &login()).unwrap();
    let ev = wait_events(&events, |e| {
        of_type(e, "would_block")
            .iter()
            .any(|w| w["block"]["reason"] == "finding")
    });
    ask(&mut c, &next()).expect("dry-run passes");
    let mut want = login();
    want.extend_from_slice(&next());
    assert_eq!(server.from(local), want);
    assert!(of_type(&ev, "block").is_empty());
    let reasons: Vec<&str> = of_type(&ev, "would_block")
        .iter()
        .map(|w| w["block"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"cleartext") && reasons.contains(&"finding"),
        "{reasons:?}"
    );
    let m = metrics(&lab);
    for (series, want) in [
        (
            "leakwatch_would_block_total{service=\"qobuz\",reason=\"finding\",mode=\"dry-run\"}",
            1,
        ),
        (
            "leakwatch_would_block_total{service=\"qobuz\",reason=\"cleartext\",mode=\"dry-run\"}",
            1,
        ),
        (
            "leakwatch_xdp_notes_total{interface=\"lan0\",reason=\"would_block\"}",
            1,
        ),
        ("leakwatch_xdp_packets_total{reason=\"blocked_drop\"}", 0),
        ("leakwatch_xdp_packets_total{reason=\"cleartext_drop\"}", 0),
    ] {
        assert_eq!(read::metric(&m, series), Some(want), "{series}");
    }
    let _ = std::fs::remove_file(events);
}

#[test]
fn a_masquerading_gateway_blocks_on_its_lan_side_and_a_dead_daemon_blocks_nothing() {
    if lab::skip_without_root("a_masquerading_gateway_blocks_on_its_lan_side") {
        return;
    }
    let lab = Lab::up().expect("lab");
    lab.masquerade().expect("nat");
    // Qobuz is reset on findings; Deezer's cleartext is refused outright.
    let (srv, deezer, tls) = (
        sa(&format!("{SERVER_V4}:80")),
        sa(&format!("{OTHER_V4}:80")),
        sa(&format!("{OTHER_V4}:443")),
    );
    let server = RecordingServer::start(&lab.server, &[srv, deezer, tls]).expect("servers");
    let config = std::env::temp_dir().join(format!("{}.toml", unique("blocking")));
    std::fs::write(
        &config,
        "[blocking]\nmode = \"reset\"\n[blocking.services]\ndeezer = \"block-cleartext\"\n",
    )
    .unwrap();
    let events = events_path();
    let mut sensor = start(
        &lab,
        &events,
        &[
            "--config",
            config.to_str().unwrap(),
            "--watch",
            &format!("{OTHER_V4}/32=deezer"),
        ],
    );

    // reset: found on lan0 with the LAN tuple, the client's connection reset.
    let mut c = connect(&lab.client, srv);
    ask(&mut c, &login()).unwrap();
    let ev = wait_events(&events, |e| !of_type(e, "block").is_empty());
    let b = of_type(&ev, "block")[0];
    assert_eq!(b["src_ip"], CLIENT_V4, "the LAN side's tuple");
    assert_eq!(b["interface"], lab::LAN_IF);
    assert_eq!(b["block"]["mode"], "reset");
    assert_reset(&mut c, &next(), "reset behind NAT");
    std::thread::sleep(Duration::from_millis(300));
    let got = server.at(srv);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.ip().to_string(), lab::GW_WAN_V4, "masqueraded");
    assert_eq!(got[0].1, login(), "nothing after the login arrived");

    // block-cleartext: the request never leaves.
    let mut d = connect(&lab.client, deezer);
    assert_reset(&mut d, &login(), "cleartext to Deezer");
    let ev = wait_events(&events, |e| {
        of_type(e, "block")
            .iter()
            .any(|b| b["block"]["reason"] == "cleartext")
    });
    let r = of_type(&ev, "block")
        .into_iter()
        .find(|b| b["block"]["reason"] == "cleartext")
        .unwrap();
    assert_eq!(r["src_ip"], CLIENT_V4);
    assert_eq!(r["service"], "deezer");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.at(deezer).is_empty(),
        "the refused request did not arrive"
    );

    // TLS to Deezer passes, masqueraded.
    let mut t = connect(&lab.client, tls);
    t.write_all(HELLO).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.at(tls).iter().any(|(_, b)| b.as_slice() == HELLO) {
        assert!(Instant::now() < deadline, "TLS did not pass");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The daemon dies: its program goes with it, and what it refused flows.
    sensor.signal(libc::SIGKILL);
    sensor.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(!lab.gateway.xdp_attached(lab::LAN_IF).unwrap());
    let mut d = connect(&lab.client, deezer);
    ask(&mut d, &login()).expect("fail-open: cleartext flows again");
    ask(&mut d, &next()).expect("fail-open: and goes on");
    let mut want = login();
    want.extend_from_slice(&next());
    assert_eq!(
        server.at(deezer).first().map(|(_, b)| b.clone()),
        Some(want)
    );
    let _ = std::fs::remove_file(events);
    let _ = std::fs::remove_file(config);
}
