//! `leakwatch run` attached by XDP to a gateway's veths in network namespaces,
//! real TCP through it: the ring delivers only what the sampling policy says, the
//! counters agree, errors are clear, and SIGKILL leaves no XDP program behind.
//! Needs root; `cargo xtask test` runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test, with its backtrace"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use leakwatch_tests::{
    http::{HttpServer, exchange},
    lab::{self, LAN_IF, Lab, WAN_IF},
    netns::unique,
    read,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9477";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn dump_path() -> PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", unique("records")))
}

/// Reads the record dump until `done` holds or 10 s pass.
fn wait_records(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = read::json_lines(path);
        if done(&recs) || Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_port(r: &Value, ip: &str, port: u16) -> bool {
    (r["dest_ip"] == ip && r["dest_port"] == port) || (r["src_ip"] == ip && r["src_port"] == port)
}

fn has_flag(r: &Value, f: &str) -> bool {
    r["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

/// `metric{labels…} value` from an exposition.
fn metric(text: &str, series: &str) -> u64 {
    read::metric(text, series).unwrap_or_else(|| panic!("{series} not in the exposition:\n{text}"))
}

/// Every metric family of the real exposition is in docs/metrics.md, and every
/// metric the doc lists is exposed.
fn exposition_matches_the_docs(text: &str) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("leakwatch_"))
        .map(str::to_owned)
        .collect();
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut it = l.split(' ');
            let (name, ty) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            match ty {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            }
        })
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exposed but not in docs/metrics.md: {undocumented:?}"
    );
    // Every documented metric is exposed from the start, except those whose labels
    // only traffic creates (a TLS version of a service; an app version seen,
    // or one an advisory names, which the once-a-second export may not have
    // written yet; a third-party host a followed app sent a leak to).
    let only_with_traffic = [
        "leakwatch_tls_flows_total",
        "leakwatch_app_clients",
        "leakwatch_vulnerable_app_clients",
        "leakwatch_third_party_findings",
    ];
    let missing: Vec<_> = documented
        .difference(&exposed)
        .filter(|m| !only_with_traffic.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exposed: {missing:?}"
    );
}

fn request(path: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Qobuz/6.1 (iPhone; iOS 17.2)\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn live_traffic_is_sampled_as_the_policy_says() {
    if leakwatch_tests::lab::skip_without_root("live_traffic_is_sampled_as_the_policy_says") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let _http = HttpServer::start(
        &lab.server,
        &[
            sa("198.51.100.2:80"),
            sa("198.51.100.3:80"),
            sa("198.51.100.3:9000"),
            sa("[2001:db8:5::2]:80"),
        ],
    )
    .expect("http servers");
    let dump = dump_path();
    let mut sensor = lab
        .start_sensor(
            &lab::leakwatch_bin(),
            METRICS,
            &[
                "--watch",
                "198.51.100.2/32=qobuz",
                "--watch",
                "2001:db8:5::2/128=qobuz",
                "--head-bytes",
                "4096",
                "--tail-every",
                "0",
                "--dump-records",
                dump.to_str().unwrap(),
            ],
        )
        .expect("sensor");

    let login = request(
        "/api.json/0.2/user/login",
        "www.qobuz.com",
        b"email=a%40example.com&password=5f4dcc3b5aa765d61d8327deb882cf99",
    );
    let big = request("/upload", "www.qobuz.com", &vec![b'z'; 64 * 1024]);
    let probe = request("/", "unwatched.example", b"x=1");
    let quiet = request("/", "unwatched.example", b"x=2");
    for (addr, req) in [
        ("198.51.100.2:80", &login),
        ("198.51.100.2:80", &big),
        ("198.51.100.3:80", &probe),
        ("198.51.100.3:9000", &quiet),
        ("[2001:db8:5::2]:80", &login),
    ] {
        let resp =
            exchange(&lab.client, sa(addr), req.clone()).expect("request through the gateway");
        assert!(
            resp.starts_with(b"HTTP/1.1 200 OK"),
            "{addr}: traffic must pass untouched"
        );
    }

    let recs = wait_records(&dump, |r| {
        r.iter().filter(|x| x["kind"] == "probe").count() >= 1
            && r.iter()
                .filter(|x| x["dest_ip"] == "2001:db8:5::2" && x["kind"] == "sample")
                .count()
                >= 1
            && r.iter()
                .filter(|x| x["tcp_flags"].as_str().is_some_and(|f| f.contains('F')))
                .count()
                >= 6
    });
    assert!(!recs.is_empty(), "no records dumped");

    // Nothing about the unwatched, non-probe flow leaves the kernel.
    assert!(
        !recs.iter().any(|r| is_port(r, "198.51.100.3", 9000)),
        "unwatched flow reached userspace"
    );
    // The unwatched flow to a probe port: exactly its first client payload.
    let probes: Vec<_> = recs
        .iter()
        .filter(|r| is_port(r, "198.51.100.3", 80))
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0]["kind"], "probe");
    assert_eq!(probes[0]["payload_len"], probe.len());
    assert!(has_flag(probes[0], "from_client") && has_flag(probes[0], "first_payload"));

    // Watched v4 flows: client records arrive on the LAN side, server ones on the WAN side.
    let watched: Vec<_> = recs
        .iter()
        .filter(|r| is_port(r, "198.51.100.2", 80))
        .collect();
    assert!(watched.iter().all(|r| r["service"] == "qobuz"));
    for r in &watched {
        let expect_if = if has_flag(r, "from_client") {
            LAN_IF
        } else {
            WAN_IF
        };
        assert_eq!(r["interface"], expect_if, "{r}");
    }
    // The SYN+ACK and FINs of both flows are reported as metadata; bare SYNs
    // are deferred (sensor_common::admit), counted, and not recorded.
    let syns: Vec<_> = watched
        .iter()
        .filter(|r| r["kind"] == "meta" && r["tcp_flags"].as_str().unwrap().contains('S'))
        .collect();
    assert_eq!(syns.len(), 2, "the SYN+ACK of two flows: {syns:?}");
    assert!(syns.iter().all(|r| !has_flag(r, "from_client")), "{syns:?}");
    // Sampled records carry whole frames (no truncation at 1500-byte MTU).
    for r in watched.iter().filter(|r| r["kind"] == "sample") {
        assert_eq!(r["cap_len"], r["pkt_len"], "{r}");
        assert!(!has_flag(r, "truncated"));
    }
    // Per flow (source port), the client's sampled payload: the whole login, and
    // for the 64 KiB upload at least the 4096-byte head but far from all of it.
    let mut per_flow = std::collections::BTreeMap::<u64, u64>::new();
    for r in watched
        .iter()
        .filter(|r| r["kind"] == "sample" && has_flag(r, "from_client"))
    {
        *per_flow.entry(r["src_port"].as_u64().unwrap()).or_default() +=
            r["payload_len"].as_u64().unwrap();
    }
    let mut sampled: Vec<u64> = per_flow.into_values().collect();
    sampled.sort_unstable();
    assert_eq!(sampled.len(), 2, "two watched v4 flows");
    assert_eq!(sampled[0], login.len() as u64);
    assert!(
        sampled[1] >= 4096 && sampled[1] < big.len() as u64 / 2,
        "upload sampled {} bytes",
        sampled[1]
    );
    // The server's answers are sampled too.
    assert!(
        watched
            .iter()
            .any(|r| r["kind"] == "sample" && !has_flag(r, "from_client"))
    );
    // IPv6 watched flow.
    assert!(recs.iter().any(|r| r["dest_ip"] == "2001:db8:5::2"
        && r["kind"] == "sample"
        && r["service"] == "qobuz"));

    // The kernel counters agree.
    let text = lab.gateway_http_get(METRICS, "/metrics").expect("metrics");
    exposition_matches_the_docs(&text);
    let lan = |reason: &str| {
        metric(
            &text,
            &format!("leakwatch_xdp_packets_total{{interface=\"{LAN_IF}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(lan("probe"), 1);
    assert!(lan("syn_deferred") >= 2, "the watched flows' SYNs");
    assert!(lan("sampled_head") >= 3);
    assert!(lan("over_budget") > 0, "the upload's tail is over budget");
    assert!(lan("unwatched") > 0);
    assert_eq!(lan("ring_full"), 0);
    let samples = recs.iter().filter(|r| r["kind"] == "sample").count() as u64;
    assert_eq!(
        metric(&text, "leakwatch_ring_records_total{kind=\"sample\"}"),
        samples
    );
    assert_eq!(
        lan("sampled_head")
            + metric(
                &text,
                &format!(
                    "leakwatch_xdp_packets_total{{interface=\"{WAN_IF}\",reason=\"sampled_head\"}}"
                )
            ),
        samples
    );

    // SIGKILL: no chance to clean up, yet the kernel drops the links.
    assert!(lab.gateway.xdp_attached(LAN_IF).unwrap());
    sensor.signal(libc::SIGKILL);
    sensor.wait_timeout(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (lab.gateway.xdp_attached(LAN_IF).unwrap() || lab.gateway.xdp_attached(WAN_IF).unwrap())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !lab.gateway.xdp_attached(LAN_IF).unwrap(),
        "XDP program left on {LAN_IF}"
    );
    assert!(
        !lab.gateway.xdp_attached(WAN_IF).unwrap(),
        "XDP program left on {WAN_IF}"
    );
    let _ = std::fs::remove_file(dump);
}

#[test]
fn sigterm_shuts_down_cleanly_and_detaches() {
    if leakwatch_tests::lab::skip_without_root("sigterm_shuts_down_cleanly_and_detaches") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let mut sensor = lab
        .start_sensor(&lab::leakwatch_bin(), METRICS, &[])
        .expect("sensor");
    sensor.signal(libc::SIGTERM);
    let st = sensor.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(st.success(), "exit status {st}");
    assert!(!lab.gateway.xdp_attached(LAN_IF).unwrap());
}

/// Type=notify: the daemon tells systemd READY once attached and serving,
/// WATCHDOG while its pipeline turns, STOPPING on SIGTERM.
#[test]
fn tells_systemd_ready_watchdog_and_stopping() {
    if leakwatch_tests::lab::skip_without_root("tells_systemd_ready_watchdog_and_stopping") {
        return;
    }
    let lab = Lab::up().expect("lab");
    let path = std::env::temp_dir().join(format!("{}.sock", unique("notify")));
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sensor = lab
        .start_sensor_env(
            &lab::leakwatch_bin(),
            METRICS,
            &[],
            &[("NOTIFY_SOCKET", path.as_os_str())],
        )
        .expect("sensor");
    let mut said = Vec::new();
    let mut buf = [0u8; 256];
    let mut next = |said: &mut Vec<String>| {
        let n = sock.recv(&mut buf).expect("a notification within 5 s");
        said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    next(&mut said);
    assert_eq!(said[0], "READY=1\n", "{said:?}");
    next(&mut said);
    assert_eq!(said[1], "WATCHDOG=1\n", "{said:?}");
    sensor.signal(libc::SIGTERM);
    while !said.iter().any(|s| s.starts_with("STOPPING=1")) {
        next(&mut said);
    }
    assert!(
        sensor
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
    let _ = std::fs::remove_file(path);
}

fn run_expect_failure(cmd: &mut std::process::Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run leakwatch");
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        out.status
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn clear_errors_for_missing_interface_busy_interface_and_no_privileges() {
    if leakwatch_tests::lab::skip_without_root(
        "clear_errors_for_missing_interface_busy_interface_and_no_privileges",
    ) {
        return;
    }
    let lab = Lab::up().expect("lab");
    let bin = lab::leakwatch_bin();
    let bin_s = bin.to_str().unwrap();

    let err = run_expect_failure(lab.gateway.command(bin_s).args(["run", "--iface", "nope0"]));
    assert!(err.contains("interface \"nope0\" does not exist"), "{err}");

    // A service name nobody declared is a typo, not a new service.
    let err = run_expect_failure(lab.gateway.command(bin_s).args([
        "run",
        "--iface",
        LAN_IF,
        "--watch",
        "10.0.0.0/8=netflx",
    ]));
    assert!(err.contains("no service \"netflx\""), "{err}");

    // A metrics port already taken fails the start before anything is attached.
    let taken = lab
        .gateway
        .run(|| std::net::TcpListener::bind("127.0.0.1:9479"))
        .unwrap()
        .unwrap();
    let err = run_expect_failure(lab.gateway.command(bin_s).args([
        "run",
        "--iface",
        LAN_IF,
        "--metrics-addr",
        "127.0.0.1:9479",
    ]));
    assert!(
        err.contains("metrics_addr 127.0.0.1:9479: cannot listen"),
        "{err}"
    );
    assert!(
        !lab.gateway.xdp_attached(LAN_IF).unwrap(),
        "nothing attached"
    );
    drop(taken);

    let _first = lab.start_sensor(&bin, METRICS, &[]).expect("sensor");
    let err = run_expect_failure(lab.gateway.command(bin_s).args([
        "run",
        "--iface",
        LAN_IF,
        "--metrics-addr",
        "127.0.0.1:9478",
    ]));
    assert!(
        err.contains(&format!(
            "interface {LAN_IF}: another XDP program is already attached"
        )),
        "{err}"
    );

    // An unprivileged user: copy the binary where anyone may run it.
    let dir = std::env::temp_dir().join(unique("bin"));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("leakwatch");
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = run_expect_failure(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&copy)
            .args(["run", "--iface", "lo"]),
    );
    assert!(
        err.contains("needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN") && err.contains("run it as root"),
        "{err}"
    );
    // Root without CAP_PERFMON (and CAP_SYS_ADMIN, which stands for it): named
    // before the kernel would answer with a verifier dump.
    let err = run_expect_failure(
        std::process::Command::new("setpriv")
            .args(["--bounding-set", "-perfmon,-sys_admin"])
            .arg(&bin)
            .args(["run", "--iface", "lo", "--control-socket"])
            .arg(dir.join("control.sock")),
    );
    assert!(err.contains("needs CAP_PERFMON to load"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
